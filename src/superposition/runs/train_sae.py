"""`superposition train-sae` and `eval-sae`: an SAE on a language model's activations, through
the one SAE trainer, into a run directory:

    RUN_DIR/config.json          every setting (LMSAEConfig); --resume reads it back
    RUN_DIR/checkpoint/          model, Adam state, store position: resumes exactly
    RUN_DIR/log.jsonl, log.csv   training metrics every `log_every` steps (+ tensorboard/ if installed)
    RUN_DIR/sae/                 the SAE: cfg.json + sae_weights.safetensors (DESIGN.md layout)
    RUN_DIR/summary.json         evaluation (l0, mse, explained_variance, ce_loss_*, kl_div, ...)
    RUN_DIR/*.png, report.html   density histogram, training curves, the report
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from superposition.errors import SuperpositionError
from superposition.files import (
    atomic_write_text,
    describe_write_failure,
    resolve_out,
    staged_directory,
    target_lock,
    write_failure,
    write_marker,
)
from superposition.lm.config import LMSAEConfig
from superposition.lm.e2e import EndToEndObjective, SequenceSource
from superposition.lm.evals import evaluate_sae
from superposition.lm.hooks import HookedModel, pair_name
from superposition.lm.model import LoadedModel, load_model
from superposition.lm.store import ActivationStore
from superposition.report.html import FigureSpec, close_figures, render_report, save_figures
from superposition.resources import require_memory
from superposition.sae import BatchedSAE, checkpoint, make_sae
from superposition.sae.base import training_bytes
from superposition.sae.io import load_sae, save_sae
from superposition.sae.metrics import explained_variance
from superposition.sae.train import SAETrainer
from superposition.seeding import derive_seed
from superposition.viz.sae import density_histogram, training_curves

RUN_KIND = "train-sae run"
LOG_KEYS = [
    "step", "tokens", "lr", "mse", "l0", "explained_variance", "auxk", "l1", "kl", "downstream_mse",
    "tokens_per_s",
]  # fmt: skip


@dataclass
class LMRun:
    """An SAE on a language model, ready to evaluate or analyse: a `train-sae` run directory, or an
    SAE in any readable format (formats/) with the model and hook it reads (`is_run` False)."""

    path: Path
    cfg: LMSAEConfig
    sae: BatchedSAE
    is_run: bool = True

    def load_model(self) -> tuple[LoadedModel, HookedModel]:
        """The run's language model, checked against the SAE: the hook's width must be its d_in."""
        lm = load_model(self.cfg.model_name, self.cfg.device, self.cfg.dtype)
        hooked = HookedModel(lm.model)
        widths = hooked.widths(self.cfg.hook_name)  # one hook, or a transcoder's MLP input and output
        where = self.path / "sae" if self.is_run or (self.path / "sae").is_dir() else self.path
        if len(widths) != (2 if self.sae.transcodes else 1):
            raise SuperpositionError(
                f"{where}: a {self.sae.cfg.architecture} cannot read hook {self.cfg.hook_name}; "
                + (
                    "transcoders read blocks.L.mlp"
                    if self.sae.transcodes
                    else "blocks.L.mlp is for transcoders"
                )
            )
        for what, have, want in (
            ("d_in", self.sae.cfg.d_in, widths[0]),
            ("d_out", self.sae.d_out, widths[-1]),
        ):
            if have != want:
                raise SuperpositionError(
                    f"{where}: the SAE's {what} is {have}, but {self.cfg.hook_name} of "
                    f"{self.cfg.model_name} has width {want}"
                )
        return lm, hooked


def load_run(path: str | Path, model: str | None = None, hook: str | None = None) -> LMRun:
    """A train-sae run directory (config.json + sae/), or any SAE `load_sae` reads (a SAELens,
    sparsify, Gemma Scope or dictionary_learning folder or file, an hf:// path). `model` and `hook`
    replace the ones the run or the SAE names (so an SAE can be evaluated on another model of the
    same width); an SAE that names none needs them. A one-line error says what is missing."""
    where = Path(path).expanduser().absolute() if not str(path).startswith("hf://") else Path(str(path))
    overrides = {k: v for k, v in (("model_name", model), ("hook_name", hook)) if v is not None}
    if (where / "config.json").is_file() and (where / "sae").is_dir():
        cfg = LMSAEConfig.build(json.loads((where / "config.json").read_text()), str(where / "config.json"))
        cfg = LMSAEConfig.build({**cfg.model_dump(), **overrides}, "--model/--hook")
        return LMRun(where, cfg, load_sae(where / "sae").to(cfg.device), is_run=not overrides)
    try:
        sae = load_sae(path)
    except SuperpositionError as err:
        raise SuperpositionError(
            f"{where}: not a train-sae run directory (config.json + sae/), nor an SAE: {err}"
        ) from None
    hook_name = pair_name(sae.cfg.hook_name) if sae.transcodes else sae.cfg.hook_name
    values = {"model_name": sae.cfg.model_name, "hook_name": hook_name, **overrides}
    for key, flag in (("model_name", "--model"), ("hook_name", "--hook")):
        if not values[key]:
            raise SuperpositionError(
                f"{flag}: {where} does not name the {key.split('_')[0]} it reads; give {flag}"
            )
    for key in ("context_size", "prepend_bos"):
        if key in sae.metadata:
            values[key] = sae.metadata[key]
    cfg = LMSAEConfig.build(
        {**values, "architecture": sae.cfg.architecture, "d_sae": sae.cfg.d_sae}, str(where)
    )
    return LMRun(where, cfg, sae.to(cfg.device), is_run=False)


class RunLogger:
    """Training metrics to log.jsonl and log.csv, and to TensorBoard / W&B when available."""

    def __init__(self, out: Path, cfg: LMSAEConfig, resume_step: int | None) -> None:
        """resume_step: the step a resumed run continues from; rows logged at or after it (by the
        interrupted process, after its last checkpoint) are dropped, since those steps run again."""
        self.out, self.cfg = out, cfg
        rows = []
        if resume_step is not None and (out / "log.jsonl").is_file():
            lines = (out / "log.jsonl").read_text().splitlines()
            rows = [r for r in (json.loads(x) for x in lines if x.strip()) if r.get("step", 0) < resume_step]
        # the kept rows replace both logs atomically (a kill here must not lose them); then append
        atomic_write_text(out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        table = io.StringIO()
        writer = csv.DictWriter(table, LOG_KEYS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out / "log.csv", table.getvalue())
        # line-buffered: every row reaches the file at once, so a killed run keeps its log
        self.jsonl = open(out / "log.jsonl", "a", buffering=1)
        self.csv_file = open(out / "log.csv", "a", newline="", buffering=1)
        self.csv = csv.DictWriter(self.csv_file, LOG_KEYS, extrasaction="ignore")
        self.tb = None
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self.tb = None
        self.wandb = None
        if cfg.wandb:
            try:
                import wandb
            except ImportError:
                raise SuperpositionError(
                    "wandb: enabled but the wandb package is not installed (pip install wandb)"
                ) from None
            self.wandb = wandb.init(
                project=cfg.wandb_project, config=cfg.model_dump(), dir=str(out), resume="allow"
            )
        self.t0, self.tokens0 = time.time(), None
        self.opt = None  # the trainer's optimiser, for the learning rate

    def __call__(self, step: int, x, out) -> dict:
        cfg = self.cfg
        tokens = (step + 1) * cfg.batch_size_tokens
        if self.tokens0 is None:
            self.t0, self.tokens0 = time.time(), tokens
        rate = (tokens - self.tokens0) / max(time.time() - self.t0, 1e-9)
        ev = explained_variance(x[:, :1].float(), out.x_hat[:, :1].float())[0]
        l0 = out.l0[0].item() if out.l0 is not None else (out.z[:, 0] != 0).sum(-1).float().mean().item()
        lr = self.opt.param_groups[0]["lr"] if self.opt is not None else float("nan")
        row = {
            "step": step,
            "tokens": tokens,
            "lr": lr,
            "mse": out.terms["mse"][0].item(),
            "l0": l0,
            "explained_variance": ev.item(),
            "tokens_per_s": rate,
        }
        for key in ("auxk", "l1", "kl", "downstream_mse"):
            if key in out.terms:
                row[key] = out.terms[key][0].item()
        self.jsonl.write(json.dumps(row) + "\n")
        self.csv.writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "tokens"):
                    self.tb.add_scalar(f"train/{k}", v, tokens)
        if self.wandb is not None:
            self.wandb.log(row, step=step)
        return {"tok/s": f"{rate:,.0f}", "L0": f"{l0:.1f}", "EV": f"{ev.item():.3f}"}

    def close(self) -> None:
        self.jsonl.close()
        self.csv_file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _prepare_out(out: Path, resume: bool) -> None:
    """A new run needs an absent or empty folder (a run is written in place, so it never replaces
    anything); --resume needs a train-sae run (one stopped before its first checkpoint restarts)."""
    if out.exists() and not out.is_dir():
        raise SuperpositionError(f"--out {out}: exists and is not a directory")
    if resume:
        if not (out / "config.json").is_file():
            raise SuperpositionError(f"--resume: {out} holds no train-sae run")
        if not checkpoint.exists(out / "checkpoint"):
            print(f"--resume: {out} has no checkpoint yet; starting it again from step 0", file=sys.stderr)
    elif out.is_dir() and any(out.iterdir()):
        raise SuperpositionError(
            f"--out {out}: not empty; continue it with --resume or choose another folder"
        )


def train_lm_sae(cfg: LMSAEConfig, out: str | Path, resume: bool = False) -> Path:
    """Train (or with resume=True, continue) an SAE; then evaluate it. Returns the run directory.
    One process at a time may write a run (`target_lock`)."""
    out = resolve_out(out)
    with target_lock(out):
        return _train(cfg, out, resume)


def _train(cfg: LMSAEConfig, out: Path, resume: bool) -> Path:
    _prepare_out(out, resume)
    if resume:
        cfg = LMSAEConfig.build(json.loads((out / "config.json").read_text()), f"{out / 'config.json'}")
    torch.manual_seed(derive_seed(cfg.seed, "lm-run"))
    lm = load_model(cfg.model_name, cfg.device, cfg.dtype)
    hooked = HookedModel(lm.model)
    widths = hooked.widths(cfg.hook_name)  # [d_in], or a transcoder's [d_in, d_out]
    d_in = widths[0]
    store = ActivationStore.for_run(cfg, lm, hooked)
    store.first_sequences(1, quiet=True)  # unreadable or too little text: say so before writing anything
    sae_cfg, train_cfg = cfg.sae_config(*widths), cfg.train_config()
    buffer = 2 * store.buffer_sequences * cfg.context_size * store.d_in * 4  # a buffer and its shuffled copy
    need = training_bytes(1, d_in, sae_cfg.d_sae, cfg.batch_size_tokens) + buffer
    require_memory(need, f"train-sae (d_in {d_in}, d_sae {sae_cfg.d_sae}, batch {cfg.batch_size_tokens})",
                   "lower d_sae, expansion_factor, batch_size_tokens or n_batches_in_buffer")  # fmt: skip
    sae = make_sae(sae_cfg, torch.Generator().manual_seed(derive_seed(cfg.seed, "sae-init"))).to(cfg.device)
    existed = out.exists()
    try:
        return _train_and_evaluate(cfg, out, resume, lm, hooked, store, sae, train_cfg)
    except BaseException as err:
        resumable = checkpoint.exists(out / "checkpoint")
        if not resume and not resumable:  # nothing to resume: leave nothing
            shutil.rmtree(out, ignore_errors=True)
            if existed:
                out.mkdir()
        if write_failure(err):
            step = checkpoint.latest_step(out / "checkpoint")
            then = f"; continue with --resume once there is room (from step {step})"
            raise SuperpositionError(
                f"--out {out}: cannot write there ({describe_write_failure(err)})"
                + (then if resumable else "")
            ) from None
        raise
    finally:
        store.close()


def _train_and_evaluate(cfg: LMSAEConfig, out: Path, resume: bool, lm, hooked, store, sae, train_cfg) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        atomic_write_text(out / "config.json", json.dumps(cfg.model_dump(), indent=1))
        write_marker(out, RUN_KIND)
    source, objective = store, None
    if cfg.loss != "local":  # end-to-end: whole sequences, and the KL through the rest of the model
        source = SequenceSource(store, hooked, lm.tokenizer, cfg.hook_name, cfg.downstream_hooks)
        objective = EndToEndObjective(source, cfg.kl_coefficient, cfg.downstream_coefficient)
    trainer = SAETrainer(sae, source, train_cfg, checkpoint_dir=out / "checkpoint", objective=objective)
    resumed = resume and checkpoint.exists(out / "checkpoint")
    if resumed:
        trainer.load_checkpoint()
    trainer.on_log = logger = RunLogger(out, cfg, trainer.step if resumed else None)
    logger.opt = trainer.opt
    print(
        f"training a {cfg.architecture}{'' if cfg.loss == 'local' else f' ({cfg.loss} loss)'} "
        f"({sae.cfg.d_in} -> {sae.cfg.d_sae}"
        f"{f' -> {sae.d_out}' if sae.transcodes else ''}) on {cfg.model_name} "
        f"{cfg.hook_name}: "
        f"{cfg.steps} steps of {cfg.batch_size_tokens} tokens",
        file=sys.stderr,
        flush=True,
    )
    started = time.time()
    try:
        trainer.train(progress=True)
    except KeyboardInterrupt:
        raise SuperpositionError(
            f"interrupted at step {trainer.step}; continue with: superposition train-sae --out {out} --resume"
        ) from None
    finally:
        logger.close()
    elapsed = time.time() - started
    trainer.fold_normalization()
    save_sae(
        sae,
        out / "sae",
        0,
        {"context_size": cfg.context_size, "prepend_bos": cfg.prepend_bos, "dataset_path": cfg.dataset_path},
    )
    training = {
        "train_seconds": round(elapsed, 1),
        "train_steps": cfg.steps,
        "training_tokens": cfg.steps * cfg.batch_size_tokens,
        "model_tokens_run": store.model_tokens,
    }
    evaluate_run(out, lm=lm, hooked=hooked, training=training)
    write_marker(out, RUN_KIND)
    return out


# The numbers a person looks at first: printed by the CLI and highlighted in the report.
HEADLINE_KEYS = (
    "l0", "mse", "explained_variance", "fvu", "ce_loss_clean", "ce_loss_with_sae", "ce_loss_zero_ablation",
    "ce_loss_recovered", "kl_div", "frac_dead", "frac_dense",
)  # fmt: skip


def evaluate_run(
    run_dir: str | Path,
    lm=None,
    hooked: HookedModel | None = None,
    training: dict | None = None,
    eval_sequences: int | None = None,
    out: str | Path | None = None,
    model: str | None = None,
    hook: str | None = None,
) -> dict:
    """`superposition eval-sae`: evaluate an SAE on held-out text; write summary.json, figures and
    report.html into its train-sae run directory, or, for any other SAE (or another model or hook
    than the run's), into `out`."""
    loaded = load_run(run_dir, model, hook)
    if not loaded.is_run or out is not None:
        if out is None:
            raise SuperpositionError(
                f"--out: {loaded.path} is not a train-sae run on its own model and hook; "
                "give --out DIR for the evaluation"
            )
        with staged_directory(resolve_out(out), "evaluation") as tmp:
            return _evaluate(loaded, tmp, lm, hooked, training, eval_sequences)
    return _evaluate(loaded, loaded.path, lm, hooked, training, eval_sequences)


def _evaluate(
    loaded: LMRun, run: Path, lm, hooked, training: dict | None, eval_sequences: int | None
) -> dict:
    cfg, sae = loaded.cfg, loaded.sae
    if lm is None:
        lm, hooked = loaded.load_model()
    seqs = ActivationStore.for_run(cfg, lm, hooked, holdout=True).first_sequences(
        eval_sequences or cfg.eval_sequences
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
    old = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    summary = {
        **old, **(training or {}), **metrics, "model_name": cfg.model_name, "hook_name": cfg.hook_name,
        "architecture": sae.cfg.architecture, "d_sae": sae.cfg.d_sae, "eval_sequences": seqs.shape[0],
        **({} if loaded.is_run else {"sae": str(loaded.path), "sae_format": sae.metadata.get("format")}),
    }  # fmt: skip
    _write_evaluation(run, cfg, summary)
    return summary


def _write_evaluation(run: Path, cfg: LMSAEConfig, summary: dict) -> None:
    """summary.json (replaced atomically), the density and training-curve figures, report.html."""
    log = run / "log.jsonl"
    rows = (
        [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    )
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
    try:
        tmp = run / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1))
        tmp.replace(run / "summary.json")
        save_figures(figures, run)
        highlights = {k: summary[k] for k in HEADLINE_KEYS if k != "mse"}
        title = f"SAE on {cfg.model_name} at {cfg.hook_name}"
        render_report(run, title, _EXPLANATION, figures, highlights, cfg.model_dump())
    finally:
        close_figures(figures)


_EXPLANATION = (
    "A sparse autoencoder trained on a language model's activations at one hook point, evaluated on "
    "held-out sequences (every 20th packed sequence is never trained on). CE loss recovered is "
    "(CE with zero-ablation − CE with the SAE spliced in) / (CE with zero-ablation − clean CE): 1 means the "
    "reconstruction is as good as the real activations for next-token prediction. Special tokens (BOS) are "
    "left as they are."
)
