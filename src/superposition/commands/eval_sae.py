"""`superposition eval-sae SAE`: evaluate an SAE spliced into its language model on held-out text.

A train-sae run is re-evaluated in place (its summary.json, figures and report.html are replaced);
any other SAE, or a run evaluated on another model or hook, is written to `--out`. A multi-hook
run's evaluation (`evaluate_multi`) is also here: train-sae calls it at the end of training.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from pydantic import Field

from superposition.atomic import refuse_links
from superposition.commands.base import ModelOptions, SAEOptions, command
from superposition.commands.targets import LMRun, load_run, local_path
from superposition.errors import SuperpositionError
from superposition.lm.config import LMSAEConfig
from superposition.lm.evals import evaluate_sae, evaluate_saes
from superposition.lm.hooks import MLP_PAIR, read_names
from superposition.lm.store import ActivationStore
from superposition.report.output import FigureSpec, Result, write_output, write_result
from superposition.sae.formats import load as load_sae
from superposition.viz.sae import density_histogram, depth_profile, training_curves

# The numbers a person looks at first: printed by the CLI and highlighted in the report.
HEADLINE_KEYS = (
    "l0", "mse", "explained_variance", "fvu", "ce_loss_clean", "ce_loss_with_sae", "ce_loss_zero_ablation",
    "ce_loss_recovered", "kl_div", "frac_dead", "frac_dense",
)  # fmt: skip
# per-hook numbers drawn against depth in a multi-hook run's report
DEPTH_KEYS = ("l0", "explained_variance", "ce_loss_recovered", "frac_dead", "token_likeness", "mean_abs_dla")


class EvalOptions(ModelOptions, SAEOptions):
    """Options of `eval-sae`."""

    sequences: int | None = Field(
        None, gt=0, description="held-out sequences to evaluate on (default: the run's eval_sequences)"
    )


@command(
    "eval-sae",
    "evaluate an SAE on its language model: L0, explained variance, CE loss recovered",
    EvalOptions,
    kind="evaluation",
    in_place=True,
    out_required=False,
)
def run(opts: EvalOptions, out: Path | None) -> Result:
    """Into the train-sae run itself when `out` is None, else into the folder `out`."""
    where = local_path(opts.sae)
    if out is None and where is not None and where.is_dir():
        refuse_links(where, "SAE")  # written in place: never through a link planted in the run
    loaded = load_run(opts.sae, opts.model, opts.hook, opts.device, opts.dtype)
    if not loaded.is_run or out is not None:
        if out is None:
            raise SuperpositionError(
                f"out: {loaded.path} is not a train-sae run on its own model and hook; "
                "give `out` DIR for the evaluation"
            )
        config = {"command": "eval-sae", **opts.model_dump()}

        def produce(tmp):
            lm, hooked = loaded.load_model()  # once: the evaluation and the transfer table share it
            result = evaluate(loaded, tmp, lm, hooked, sequences=opts.sequences)
            if opts.model is not None:
                _add_transfer(opts, loaded, lm, hooked, result)
            return result

        return write_output(out, "evaluation", produce, config)[1]
    result = evaluate(loaded, loaded.path, sequences=opts.sequences)
    write_result(loaded.path, result, None)  # the run keeps its own config.json
    result.folder = loaded.path
    return result


def _add_transfer(opts: EvalOptions, loaded: LMRun, lm_b, hooked_b, result: Result) -> None:
    """With `model` other than the SAE's own: Kissane et al.'s transfer table (lm/transfer.py) on the
    same held-out tokens of both models, and CE loss recovered on each, into summary["transfer"]
    (model b's is the evaluation's own, on the same sequences)."""
    from superposition.lm.transfer import same_tokenizer, transfer_table

    own = load_run(opts.sae, None, opts.hook, opts.device, opts.dtype)
    if own.cfg.model_name == loaded.cfg.model_name or loaded.sae.transcodes:
        return
    lm_a, hooked_a = own.load_model()
    same_tokenizer(lm_a.tokenizer, lm_b.tokenizer, own.cfg.model_name, loaded.cfg.model_name)
    cfg = loaded.cfg
    seqs = ActivationStore.for_run(cfg, lm_b, hooked_b, holdout=True).first_sequences(
        opts.sequences or cfg.eval_sequences
    )
    print(
        f"transfer: {own.cfg.model_name} against {cfg.model_name} on the same {seqs.shape[0]} sequences",
        file=sys.stderr,
        flush=True,
    )
    table = transfer_table(
        {own.cfg.model_name: hooked_a, cfg.model_name: hooked_b},
        lm_a.tokenizer,
        loaded.sae,
        cfg.hook_name,
        seqs,
        cfg.model_batch_size,
        device=cfg.device,
    )
    own_eval = evaluate_sae(
        hooked_a,
        lm_a.tokenizer,
        loaded.sae,
        cfg.hook_name,
        seqs,
        batch_size=cfg.model_batch_size,
        device=cfg.device,
    )
    table[own.cfg.model_name]["ce_loss_recovered"] = own_eval["ce_loss_recovered"]
    table[cfg.model_name]["ce_loss_recovered"] = result.summary["ce_loss_recovered"]
    result.summary["transfer"] = table
    a, b = own.cfg.model_name, cfg.model_name
    result.message += (
        f"\ntransfer {a} -> {b}: CE loss recovered {table[a]['ce_loss_recovered']:.3f} -> "
        f"{table[b]['ce_loss_recovered']:.3f}, EV {table[a]['explained_variance']:.3f} -> "
        f"{table[b]['explained_variance']:.3f}, L0 {table[a]['l0']:.1f} -> {table[b]['l0']:.1f}; "
        "latent frequency "
        f"correlation {table['freq_correlation']:.3f}, max-activation correlation "
        f"{table['max_activation_correlation']:.3f} ({table['excluded_outlier_positions']} outlier positions "
        "left out)"
    )


def read_log(path: Path) -> list[dict]:
    """The rows of a log.jsonl (none if there is no such file). A line that does not parse (the
    torn last line a kill -9 or a full disk leaves) is dropped, and so is every value that is not a
    number (but hook_name): a resumed run, its figures and its report survive a damaged log."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict) or not isinstance(row.get("step"), int) or isinstance(row["step"], bool):
            continue
        rows.append({k: v for k, v in row.items() if (k == "hook_name" and isinstance(v, str)) or (
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v))})  # fmt: skip
    return rows


def evaluate(
    loaded: LMRun,
    folder: Path,
    lm=None,
    hooked=None,
    training: dict | None = None,
    sequences: int | None = None,
) -> Result:
    """Evaluate one SAE (or transcoder) on held-out sequences; the summary keeps what `folder`'s
    summary.json already held (a run's training record) and adds `training`."""
    cfg, sae = loaded.cfg, loaded.sae.batched
    if lm is None:
        lm, hooked = loaded.load_model()
    seqs = ActivationStore.for_run(cfg, lm, hooked, holdout=True).first_sequences(
        sequences or cfg.eval_sequences
    )
    print(
        f"evaluating on {seqs.shape[0]} held-out sequences ({seqs.numel()} tokens)",
        file=sys.stderr,
        flush=True,
    )
    metrics = evaluate_sae(
        hooked, lm.tokenizer, sae, cfg.hook_name, seqs, batch_size=cfg.model_batch_size,
        dead_threshold=cfg.dead_feature_threshold, device=cfg.device,
    )  # fmt: skip
    old = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else {}
    summary = {
        **old, **(training or {}), **metrics, "model_name": cfg.model_name, **lm.identity,
        "hook_name": cfg.hook_name,
        "architecture": sae.cfg.architecture, "d_sae": sae.cfg.d_sae, "eval_sequences": seqs.shape[0],
        **({} if loaded.is_run else {"sae": str(loaded.path), "sae_format": sae.metadata.get("format")}),
    }  # fmt: skip
    rows = read_log(folder / "log.jsonl")
    figures = [
        FigureSpec(
            "latent_density",
            "Latent density on held-out text (log10 of the fraction of tokens a latent fires on).",
            density_histogram({cfg.architecture: summary["density"]}, cfg.dead_feature_threshold),
        )
    ]
    if rows:
        figures.append(
            FigureSpec(
                "training_curves",
                "Training metrics against tokens seen.",
                training_curves(rows, ["mse", "l0", "explained_variance", "tokens_per_s"]),
            )
        )
    return Result(
        title=f"SAE on {cfg.model_name} at {cfg.hook_name}",
        explanation=_EXPLANATION,
        summary=summary,
        figures=figures,
        highlights={k: summary[k] for k in HEADLINE_KEYS if k != "mse"},
        message=headline(summary),
    )


def evaluate_multi(out: Path, cfg: LMSAEConfig, hooks: list[str], lm, hooked, training: dict) -> Result:
    """A multi-hook run's evaluation: each hook's SAE (saes/<hook>/) on the same held-out
    sequences in one pass over them (lm/evals.evaluate_saes: one clean forward pass per batch for
    every hook), the usual metrics plus token-likeness and direct logit attribution
    (lm/analysis.DepthStats); summary.json keeps one record per hook under "hooks"."""
    seqs = ActivationStore.for_run(cfg, lm, hooked, holdout=True).first_sequences(cfg.eval_sequences)
    print(
        f"evaluating {len(hooks)} SAEs on {seqs.shape[0]} held-out sequences ({seqs.numel()} tokens)",
        file=sys.stderr,
        flush=True,
    )
    saes = {hook: load_sae(out / "saes" / hook).to(cfg.device) for hook in hooks}
    metrics = evaluate_saes(
        hooked, lm.tokenizer, saes, seqs, batch_size=cfg.model_batch_size,
        dead_threshold=cfg.dead_feature_threshold, device=cfg.device, depth=True,
    )  # fmt: skip
    records = {
        hook: {"hook_name": hook, "layer": hooked.parse(read_names(hook)[0])[0], **metrics[hook]}
        for hook in hooks
    }
    summary = {
        **training, "model_name": cfg.model_name, **lm.identity, "architecture": cfg.architecture,
        "d_sae": cfg.sae_width(hooked.widths(hooks[0])[0]), "eval_sequences": seqs.shape[0], "hooks": records,
    }  # fmt: skip
    if len(hooks) > 1 and all(MLP_PAIR.match(h) for h in hooks):  # transcoders: every MLP replaced at once
        from superposition.lm.evals import PerLayer, evaluate_substitution

        layers = {int(MLP_PAIR.match(h).group(1)): saes[h] for h in hooks}
        joint = evaluate_substitution(hooked, lm.tokenizer, PerLayer(layers), sorted(layers), seqs,
                                      cfg.model_batch_size, cfg.device)  # fmt: skip
        summary["all_mlps_replaced"] = {k: v for k, v in joint.items() if k != "fvu_per_layer"}
    rows = [r for path in [out / "log.jsonl", *sorted(out.glob("log.rank*.jsonl"))] for r in read_log(path)]
    figures = [
        FigureSpec(
            "depth",
            "Each hook's SAE against its layer: sparsity, reconstruction, CE loss recovered, dead latents, "
            "token-likeness (share of a latent's activation mass on the token it fires on most often, mean "
            "over latents) and mean |direct logit attribution| per active latent.",
            depth_profile(records, DEPTH_KEYS),
        ),
        FigureSpec(
            "latent_density",
            "Latent density on held-out text, per hook.",
            density_histogram({h: r["density"] for h, r in records.items()}, cfg.dead_feature_threshold),
        ),
    ]
    if rows:
        figures.append(
            FigureSpec(
                "training_curves",
                "Training metrics against tokens seen, one line per hook.",
                training_curves(rows, ["mse", "l0", "explained_variance"], group="hook_name"),
            )
        )
    return Result(
        title=f"SAEs on {cfg.model_name} at {len(hooks)} hooks",
        explanation=_EXPLANATION_MULTI,
        summary=summary,
        figures=figures,
        highlights={
            f"{h}: {k}": r[k]
            for h, r in records.items()
            for k in ("l0", "explained_variance", "ce_loss_recovered")
        },
        message=headline(summary),
    )


def headline(summary: dict) -> str:
    """The numbers to print: the headline metrics, or for a multi-hook run a row per hook."""
    if summary.get("architecture") == "clt":
        keys = ("ce_loss_recovered", "kl_div", "mean_fvu")
        return "\n".join(f"{k:>22}  {summary[k]:.4g}" for k in keys)
    if summary.get("architecture") == "crosscoder":
        lines = [
            f"{'source':<24}  {'explained_variance':>18}  {'ce_loss_recovered':>18}  L0 {summary['l0']:.4g}"
        ]
        for name, r in summary["sources"].items():
            lines.append(f"{name:<24}  {r['explained_variance']:>18.4g}  {r['ce_loss_recovered']:>18.4g}")
        if "bands" in summary:
            b = summary["bands"]
            lines.append(
                f"bands: a-only {b['a_only']}, b-only {b['b_only']}, shared {b['shared']}, "
                f"other {b['other']}; flagged by latent scaling {summary['latent_scaling']['flagged']}"
            )
        return "\n".join(lines)
    if "hooks" not in summary:
        return "\n".join(f"{k:>22}  {summary[k]:.4g}" for k in HEADLINE_KEYS)
    width = max(len(h) for h in summary["hooks"])
    lines = [f"{'hook':<{width}}  " + "  ".join(f"{k:>18}" for k in DEPTH_KEYS)]
    for h, r in summary["hooks"].items():
        lines.append(f"{h:<{width}}  " + "  ".join(f"{r[k]:>18.4g}" for k in DEPTH_KEYS))
    return "\n".join(lines)


_EXPLANATION_MULTI = (
    "One sparse autoencoder per hook point, all trained from the same forward passes of the model and "
    "evaluated on the same held-out sequences (every 20th packed sequence is never trained on). Each SAE "
    "is in saes/&lt;hook&gt;/ and summary.json has one record per hook under <code>hooks</code>. "
    "Token-likeness near 1 means latents fire on one token each (as early layers tend to); direct logit "
    "attribution measures how much active latents push the logit of the next token directly (late layers)."
)


_EXPLANATION = (
    "A sparse autoencoder trained on a language model's activations at one hook point, evaluated on "
    "held-out sequences (every 20th packed sequence is never trained on). CE loss recovered is "
    "(CE with zero-ablation − CE with the SAE spliced in) / (CE with zero-ablation − clean CE): 1 means the "
    "reconstruction is as good as the real activations for next-token prediction. Special tokens (BOS) are "
    "left as they are."
)
