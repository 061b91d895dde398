"""How a train-sae run is evaluated at its end (and again by `eval-sae`): one SAE or transcoder on
held-out sequences (`evaluate`), the SAEs of a multi-hook run together (`evaluate_multi`), with the
figures and the report's text, and the numbers the CLI prints (`headline`). log.jsonl is read back
here too (`read_log`): a torn or damaged log never stops a report."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from superposition.lm.config import LMSAEConfig
from superposition.lm.evals import evaluate_sae, evaluate_saes
from superposition.lm.hooks import MLP_PAIR, read_names
from superposition.lm.store import ActivationStore
from superposition.report.output import FigureSpec, Result
from superposition.runs.targets import LMRun
from superposition.sae.formats import load as load_sae
from superposition.viz.sae import density_histogram, depth_profile, training_curves

# The numbers a person looks at first: printed by the CLI and highlighted in the report.
HEADLINE_KEYS = (
    "l0", "mse", "explained_variance", "fvu", "ce_loss_clean", "ce_loss_with_sae", "ce_loss_zero_ablation",
    "ce_loss_recovered", "kl_div", "frac_dead", "frac_dense",
)  # fmt: skip
# per-hook numbers drawn against depth in a multi-hook run's report
DEPTH_KEYS = ("l0", "explained_variance", "ce_loss_recovered", "frac_dead", "token_likeness", "mean_abs_dla")


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
