"""`superposition eval-sae SAE`: evaluate an SAE spliced into its language model on held-out text.

A train-sae run is re-evaluated in place (its summary.json, figures and report.html are replaced);
any other SAE, or a run evaluated on another model or hook, is written to `--out`. The evaluation
itself is runs/evaluate.py's, which train-sae runs at the end of training too.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import Field

from superposition.atomic import refuse_links
from superposition.commands.base import ModelOptions, SAEOptions, command
from superposition.errors import SuperpositionError
from superposition.lm.evals import evaluate_sae
from superposition.lm.store import ActivationStore
from superposition.report.output import Result, write_output, write_result
from superposition.runs.evaluate import evaluate
from superposition.runs.targets import LMRun, load_run, local_path


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
            own = _own_model(opts, loaded, lm) if opts.model is not None else None  # checked before any work
            result = evaluate(loaded, tmp, lm, hooked, sequences=opts.sequences)
            if own is not None:
                _add_transfer(opts, loaded, lm, hooked, result, own)
            return result

        return write_output(out, "evaluation", produce, config)[1]
    result = evaluate(loaded, loaded.path, sequences=opts.sequences)
    write_result(loaded.path, result, None)  # the run keeps its own config.json
    result.folder = loaded.path
    return result


def _own_model(opts: EvalOptions, loaded: LMRun, lm_b):
    """For a transfer table (`model` other than the SAE's own): the SAE's own run and model, checked
    against the other model's tokenizer before anything is evaluated; None when there is nothing to
    compare (the same model, or a transcoder)."""
    from superposition.lm.transfer import same_tokenizer

    own = load_run(opts.sae, None, opts.hook, opts.device, opts.dtype)
    if own.cfg.model_name == loaded.cfg.model_name or loaded.sae.transcodes:
        return None
    lm_a, hooked_a = own.load_model()
    same_tokenizer(lm_a.tokenizer, lm_b.tokenizer, own.cfg.model_name, loaded.cfg.model_name)
    return own, lm_a, hooked_a


def _add_transfer(opts: EvalOptions, loaded: LMRun, lm_b, hooked_b, result: Result, own_model) -> None:
    """With `model` other than the SAE's own: Kissane et al.'s transfer table (lm/transfer.py) on the
    same held-out tokens of both models, and CE loss recovered on each, into summary["transfer"]
    (model b's is the evaluation's own, on the same sequences)."""
    from superposition.lm.transfer import transfer_table

    own, lm_a, hooked_a = own_model
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
