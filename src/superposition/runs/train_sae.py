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
import json
import sys
import time
from pathlib import Path

import torch

from superposition.errors import SuperpositionError
from superposition.lm.config import LMSAEConfig
from superposition.lm.evals import evaluate_sae
from superposition.lm.hooks import HookedModel
from superposition.lm.model import load_model
from superposition.lm.store import ActivationStore, buffer_sequences_for
from superposition.sae import SAEConfig, make_sae
from superposition.sae.io import load_sae, save_sae
from superposition.sae.metrics import explained_variance
from superposition.sae.train import SAETrainConfig, SAETrainer
from superposition.seeding import derive_seed

LOG_KEYS = ["step", "tokens", "lr", "mse", "l0", "explained_variance", "auxk", "l1", "tokens_per_s"]


def sae_config(cfg: LMSAEConfig, d_in: int) -> SAEConfig:
    return SAEConfig.build(
        {
            "architecture": cfg.architecture,
            "d_in": d_in,
            "d_sae": cfg.sae_width(d_in),
            "k": cfg.k if cfg.architecture in ("topk", "batchtopk", "matryoshka") else None,
            "l1_coefficient": cfg.l1_coefficient,
            "l0_coefficient": cfg.l0_coefficient,
            "aux_k": cfg.aux_k,
            "aux_coefficient": cfg.aux_coefficient,
            "bandwidth": cfg.bandwidth,
            "init_threshold": cfg.init_threshold,
            "prefixes": cfg.prefixes,
            "model_name": cfg.model_name,
            "hook_name": cfg.hook_name,
        },
        "config",
    )


def train_config(cfg: LMSAEConfig) -> SAETrainConfig:
    return SAETrainConfig.build(
        {
            "steps": cfg.steps,
            "batch_size": cfg.batch_size_tokens,
            "lr": cfg.lr,
            "lr_warm_up_steps": cfg.lr_warm_up_steps,
            "lr_decay_steps": cfg.lr_decay_steps,
            "sparsity_warm_up_steps": cfg.sparsity_warm_up_steps,
            "b_dec_init": cfg.b_dec_init,
            "normalize_activations": cfg.normalize_activations,
            "dead_window": cfg.dead_feature_window * cfg.batch_size_tokens,
            "resample": cfg.resample,
            "resample_every": cfg.feature_sampling_window,
            "checkpoint_every": cfg.checkpoint_every,
            "seed": cfg.seed,
        },
        "config",
    )


def make_store(cfg: LMSAEConfig, lm, hooked: HookedModel, holdout: bool = False) -> ActivationStore:
    return ActivationStore(
        lm,
        hooked,
        cfg.hook_name,
        dataset_path=cfg.dataset_path,
        text_column=cfg.text_column,
        context_size=cfg.context_size,
        prepend_bos=cfg.prepend_bos,
        buffer_sequences=buffer_sequences_for(
            cfg.batch_size_tokens, cfg.n_batches_in_buffer, cfg.context_size
        ),
        model_batch_size=cfg.model_batch_size,
        seed=cfg.seed,
        cache=None if holdout else cfg.activation_cache,
        holdout=holdout,
        device=cfg.device,
    )


class RunLogger:
    """Training metrics to log.jsonl and log.csv, and to TensorBoard / W&B when available."""

    def __init__(self, out: Path, cfg: LMSAEConfig, resume: bool) -> None:
        self.out, self.cfg = out, cfg
        mode = "a" if resume else "w"
        self.jsonl = open(out / "log.jsonl", mode)
        new_csv = not resume or not (out / "log.csv").exists()
        self.csv_file = open(out / "log.csv", mode, newline="")
        self.csv = csv.DictWriter(self.csv_file, LOG_KEYS, extrasaction="ignore")
        if new_csv:
            self.csv.writeheader()
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
        l0 = (out.z[:, 0] != 0).sum(-1).float().mean().item() if out.z is not None else float(cfg.k)
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
        for key in ("auxk", "l1"):
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
    if out.exists() and not out.is_dir():
        raise SuperpositionError(f"--out {out}: exists and is not a directory")
    if resume:
        if not (out / "config.json").is_file() or not (out / "checkpoint" / "checkpoint.json").is_file():
            raise SuperpositionError(f"--resume: {out} holds no checkpointed run")
    elif out.is_dir() and any(out.iterdir()):
        raise SuperpositionError(
            f"--out {out}: not empty; continue it with --resume or choose another folder"
        )


def train_lm_sae(cfg: LMSAEConfig, out: str | Path, resume: bool = False) -> Path:
    """Train (or with resume=True, continue) an SAE; then evaluate it. Returns the run directory."""
    out = Path(out).expanduser().absolute()
    _prepare_out(out, resume)
    if resume:
        cfg = LMSAEConfig.build(json.loads((out / "config.json").read_text()), f"{out / 'config.json'}")
    torch.manual_seed(derive_seed(cfg.seed, "lm-run"))
    lm = load_model(cfg.model_name, cfg.device, cfg.dtype)
    hooked = HookedModel(lm.model)
    d_in = hooked.d_in(cfg.hook_name)
    store = make_store(cfg, lm, hooked)
    sae_cfg, train_cfg = sae_config(cfg, d_in), train_config(cfg)
    sae = make_sae(sae_cfg, torch.Generator().manual_seed(derive_seed(cfg.seed, "sae-init"))).to(cfg.device)
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        (out / "config.json").write_text(json.dumps(cfg.model_dump(), indent=1))
    logger = RunLogger(out, cfg, resume)
    trainer = SAETrainer(sae, store, train_cfg, checkpoint_dir=out / "checkpoint", on_log=logger)
    logger.opt = trainer.opt
    if resume:
        trainer.load_checkpoint()
    print(
        f"training a {cfg.architecture} SAE ({d_in} -> {sae_cfg.d_sae}) on {cfg.model_name} {cfg.hook_name}: "
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
    return out


def evaluate_run(
    run_dir: str | Path,
    lm=None,
    hooked: HookedModel | None = None,
    training: dict | None = None,
    eval_sequences: int | None = None,
) -> dict:
    """`superposition eval-sae`: evaluate RUN_DIR/sae on held-out text; write summary.json,
    figures and report.html."""
    from superposition.report.html import FigureSpec, close_figures, render_report, save_figures
    from superposition.viz.sae import density_histogram, training_curves

    run = Path(run_dir).expanduser().absolute()
    if not (run / "config.json").is_file():
        raise SuperpositionError(f"{run}: not a train-sae run directory (no config.json)")
    cfg = LMSAEConfig.build(json.loads((run / "config.json").read_text()), str(run / "config.json"))
    sae = load_sae(run / "sae").to(cfg.device)
    if lm is None:
        lm = load_model(cfg.model_name, cfg.device, cfg.dtype)
        hooked = HookedModel(lm.model)
    n = eval_sequences or cfg.eval_sequences
    seqs = make_store(cfg, lm, hooked, holdout=True).first_sequences(n)
    n = seqs.shape[0]
    print(f"evaluating on {n} held-out sequences ({seqs.numel()} tokens)", file=sys.stderr, flush=True)
    metrics = evaluate_sae(
        hooked,
        lm.tokenizer,
        sae,
        cfg.hook_name,
        seqs,
        batch_size=cfg.model_batch_size,
        dead_threshold=cfg.dead_feature_threshold,
        device=cfg.device,
    )
    old = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    summary = {
        **old,
        **(training or {}),
        **metrics,
        "model_name": cfg.model_name,
        "hook_name": cfg.hook_name,
        "architecture": cfg.architecture,
        "d_sae": sae.cfg.d_sae,
        "eval_sequences": n,
    }
    rows = (
        [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
        if (run / "log.jsonl").is_file()
        else []
    )
    figures = [
        FigureSpec(
            "latent_density",
            "Latent density on held-out text (log10 of the fraction of tokens a latent fires on).",
            density_histogram({cfg.architecture: metrics["density"]}, cfg.dead_feature_threshold),
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
        highlights = {
            k: summary[k]
            for k in (
                "l0",
                "explained_variance",
                "ce_loss_recovered",
                "ce_loss_clean",
                "ce_loss_with_sae",
                "ce_loss_zero_ablation",
                "kl_div",
                "frac_dead",
                "frac_dense",
            )
        }
        render_report(
            run,
            f"SAE on {cfg.model_name} at {cfg.hook_name}",
            _EXPLANATION,
            figures,
            highlights,
            cfg.model_dump(),
        )
    finally:
        close_figures(figures)
    return summary


_EXPLANATION = (
    "A sparse autoencoder trained on a language model's activations at one hook point, evaluated on "
    "held-out sequences (every 20th packed sequence is never trained on). CE loss recovered is "
    "(CE with zero-ablation − CE with the SAE spliced in) / (CE with zero-ablation − clean CE): 1 means the "
    "reconstruction is as good as the real activations for next-token prediction. Special tokens (BOS) are "
    "left as they are."
)
