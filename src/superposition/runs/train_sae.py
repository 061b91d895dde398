"""`superposition train-sae` and `eval-sae`: an SAE on a language model's activations, through
the one SAE trainer, into a run directory:

    RUN_DIR/config.json          every setting (LMSAEConfig); --resume reads it back
    RUN_DIR/checkpoint/          model, Adam state, store position: resumes exactly
    RUN_DIR/log.jsonl, log.csv   training metrics every `log_every` steps (+ tensorboard/ if installed)
    RUN_DIR/sae/                 the SAE: cfg.json + sae_weights.safetensors (DESIGN.md layout)
    RUN_DIR/saes/<hook>/         instead, with several hooks: one such folder per hook
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
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from superposition.dist import Comm
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
from superposition.lm.analysis import depth_characteristics
from superposition.lm.config import LMSAEConfig
from superposition.lm.e2e import EndToEndObjective, SequenceSource
from superposition.lm.evals import evaluate_sae
from superposition.lm.hooks import HookedModel, pair_name
from superposition.lm.model import LoadedModel, load_model
from superposition.lm.store import ActivationStore, RankView, store_hooks
from superposition.report.html import FigureSpec, close_figures, render_report, save_figures
from superposition.resources import require_memory
from superposition.sae import BatchedSAE, checkpoint, make_sae
from superposition.sae.base import training_bytes
from superposition.sae.io import load_sae, save_sae
from superposition.sae.metrics import explained_variance
from superposition.sae.train import SAETrainer
from superposition.seeding import derive_seed
from superposition.viz.sae import density_histogram, depth_profile, training_curves

RUN_KIND = "train-sae run"
LOG_KEYS = [
    "step", "hook_name", "tokens", "lr", "mse", "l0", "explained_variance", "auxk", "l1", "kl",
    "downstream_mse", "tokens_per_s",
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
    if (where / "config.json").is_file() and (where / "saes").is_dir():
        hooks = sorted(p.name for p in (where / "saes").iterdir())
        raise SuperpositionError(
            f"{where}: a run of SAEs at {len(hooks)} hooks; give one of them, {where / 'saes'}/<hook> "
            f"({', '.join(hooks[:3])}{', ...' if len(hooks) > 3 else ''})"
        )
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


def read_log(path: Path) -> list[dict]:
    """The rows of a log.jsonl (none if there is no such file)."""
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


class RunLogger:
    """Training metrics to log.jsonl and log.csv, and to TensorBoard / W&B when available."""

    def __init__(
        self,
        out: Path,
        cfg: LMSAEConfig,
        resume_step: int | None,
        hooks: list[str] | None = None,
        rank: int = 0,
    ) -> None:
        """resume_step: the step a resumed run continues from; rows logged at or after it (by the
        interrupted process, after its last checkpoint) are dropped, since those steps run again.
        hooks: a multi-hook run's hooks, one per SAE instance (a row per hook and step). A
        hook-parallel rank r > 0 logs its own hooks to log.rank<r>.jsonl / .csv."""
        self.out, self.cfg, self.hooks = out, cfg, hooks
        stem = "log" if rank == 0 else f"log.rank{rank}"
        jsonl, table_path = out / f"{stem}.jsonl", out / f"{stem}.csv"
        rows = (
            [r for r in read_log(jsonl) if r.get("step", 0) < resume_step] if resume_step is not None else []
        )
        # the kept rows replace both logs atomically (a kill here must not lose them); then append
        atomic_write_text(jsonl, "".join(json.dumps(r) + "\n" for r in rows))
        table = io.StringIO()
        writer = csv.DictWriter(table, LOG_KEYS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(table_path, table.getvalue())
        # line-buffered: every row reaches the file at once, so a killed run keeps its log
        self.jsonl = open(jsonl, "a", buffering=1)
        self.csv_file = open(table_path, "a", newline="", buffering=1)
        self.csv = csv.DictWriter(self.csv_file, LOG_KEYS, extrasaction="ignore")
        self.tb = None
        if cfg.tensorboard and rank == 0:
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
        evs = explained_variance(x.float(), out.x_hat.float())
        lr = self.opt.param_groups[0]["lr"] if self.opt is not None else float("nan")
        for i, hook in enumerate(self.hooks or [None]):
            l0 = out.l0[i].item() if out.l0 is not None else (out.z[:, i] != 0).sum(-1).float().mean().item()
            row = {
                "step": step,
                **({"hook_name": hook} if hook else {}),
                "tokens": tokens,
                "lr": lr,
                "mse": out.terms["mse"][i].item(),
                "l0": l0,
                "explained_variance": evs[i].item(),
                "tokens_per_s": rate,
            }
            for key in ("auxk", "l1", "kl", "downstream_mse"):
                if key in out.terms:
                    row[key] = out.terms[key][i].item()
            self.jsonl.write(json.dumps(row) + "\n")
            self.csv.writerow(row)
            tag = f"{hook}/" if hook else ""
            if self.tb is not None:
                for k, v in row.items():
                    if k not in ("step", "tokens", "hook_name"):
                        self.tb.add_scalar(f"train/{tag}{k}", v, tokens)
            if self.wandb is not None:
                self.wandb.log({f"{tag}{k}": v for k, v in row.items() if k != "hook_name"}, step=step)
        first = out.l0[0].item() if out.l0 is not None else (out.z[:, 0] != 0).sum(-1).float().mean().item()
        return {"tok/s": f"{rate:,.0f}", "L0": f"{first:.1f}", "EV": f"{evs[0].item():.3f}"}

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


def train_lm_sae(cfg: LMSAEConfig | None, out: str | Path, resume: bool = False) -> Path | None:
    """Train (or with resume=True, continue, cfg None: the run's own) SAEs; then evaluate them.
    Returns the run directory (None on torchrun ranks other than 0). One process at a time may
    write a run (`target_lock`); under torchrun every rank calls this, and rank 0 holds the lock
    and writes the run directory."""
    out = resolve_out(out)
    if resume:
        if not (out / "config.json").is_file():
            raise SuperpositionError(f"--resume: {out} holds no train-sae run")
        cfg = LMSAEConfig.build(json.loads((out / "config.json").read_text()), f"{out / 'config.json'}")
    comm = Comm.from_env(cfg.device, cfg.dist_timeout)
    try:
        with ExitStack() as stack:
            if comm.main:
                stack.enter_context(target_lock(out))
            comm.first(lambda: _prepare_out(out, resume))
            return _train(cfg, out, resume, comm)
    finally:
        comm.close()


@dataclass
class Plan:
    """Which SAEs this process trains: the run's hooks, this rank's share of them (hook-parallel:
    every world-th hook; otherwise all), and where its checkpoint lives."""

    hooks: list[str]  # every hook of the run, in forward order
    mine: list[int]  # indices into hooks trained here (one SAE instance each)
    multi: bool  # saes/<hook>/ layout
    hook_parallel: bool
    checkpoint_dir: Path


def _plan(cfg: LMSAEConfig, hooked: HookedModel, comm: Comm, out: Path) -> Plan:
    hooks = store_hooks(cfg.hook_name, hooked)
    multi = cfg.multi_hook
    if multi:
        widths = {h: hooked.d_in(h) for h in hooks}
        if len(set(widths.values())) > 1:
            shown = ", ".join(f"{h} {w}" for h, w in widths.items())
            raise SuperpositionError(
                f"hook_name: the hooks of one run train side by side and must share a width ({shown}); "
                "train hooks of other widths in another run"
            )
    hook_parallel = cfg.parallel == "hooks" and comm.distributed
    if hook_parallel:
        if not multi:
            raise SuperpositionError(
                "parallel: hooks shares the hooks of a run over the ranks; give several hooks "
                "(hook_name as a list or glob) or use parallel=data"
            )
        if len(hooks) < comm.world:
            raise SuperpositionError(
                f"parallel: hooks gives every rank at least one hook: {len(hooks)} hooks for {comm.world} "
                "ranks (fewer ranks, more hooks, or parallel=data)"
            )
    if cfg.loss != "local" and comm.distributed:
        raise SuperpositionError(f"loss: {cfg.loss} runs in one process; train it without torchrun/--nproc")
    mine = [i for i in range(len(hooks)) if not hook_parallel or i % comm.world == comm.rank]
    ckpt = out / "checkpoint"
    if hook_parallel:
        ckpt = ckpt / f"rank{comm.rank}-of-{comm.world}"
    return Plan(hooks, mine, multi, hook_parallel, ckpt)


def _make_saes(cfg: LMSAEConfig, plan: Plan, sae_cfg):
    """The SAE (one instance per hook trained here). Each hook's SAE starts from its own seed, so
    hook-parallel ranks start exactly where one process does; a single-hook run keeps its seed."""
    if not plan.multi:
        return make_sae(sae_cfg, torch.Generator().manual_seed(derive_seed(cfg.seed, "sae-init")))
    parts = [
        make_sae(sae_cfg, torch.Generator().manual_seed(derive_seed(cfg.seed, f"sae-init-{plan.hooks[i]}")))
        for i in plan.mine
    ]
    sae = make_sae(sae_cfg.model_copy(update={"n_instances": len(parts)}))
    with torch.no_grad():
        for key, value in sae.state_dict().items():
            value.copy_(torch.cat([p.state_dict()[key] for p in parts]))
    return sae


def _train(cfg: LMSAEConfig, out: Path, resume: bool, comm: Comm) -> Path:
    torch.manual_seed(derive_seed(cfg.seed, "lm-run"))
    lm = load_model(cfg.model_name, comm.device if comm.distributed else cfg.device, cfg.dtype)
    if comm.distributed:
        cfg = cfg.model_copy(update={"device": comm.device})
    hooked = HookedModel(lm.model)
    plan = _plan(cfg, hooked, comm, out)
    widths = [hooked.d_in(plan.hooks[0])] if plan.multi else hooked.widths(cfg.hook_name)
    d_in = widths[0]
    store = ActivationStore.for_run(cfg, lm, hooked, comm=comm)
    store.first_sequences(1, quiet=True)  # unreadable or too little text: say so before writing anything
    sae_cfg, train_cfg = cfg.sae_config(*widths), cfg.train_config()
    buffer = 2 * store.buffer_sequences * cfg.context_size * store.d_in * 4  # a buffer and its shuffled copy
    need = training_bytes(len(plan.mine), d_in, sae_cfg.d_sae, cfg.batch_size_tokens) + buffer
    require_memory(need, f"train-sae (d_in {d_in}, d_sae {sae_cfg.d_sae}, batch {cfg.batch_size_tokens})",
                   "lower d_sae, expansion_factor, batch_size_tokens or n_batches_in_buffer")  # fmt: skip
    sae = _make_saes(cfg, plan, sae_cfg).to(cfg.device)
    existed = out.exists()
    try:
        return _train_and_evaluate(cfg, out, resume, lm, hooked, store, sae, train_cfg, plan, comm)
    except BaseException as err:
        resumable = checkpoint.exists(plan.checkpoint_dir)
        if comm.main and not resume and not resumable:  # nothing to resume: leave nothing
            shutil.rmtree(out, ignore_errors=True)
            if existed:
                out.mkdir()
        if write_failure(err):
            step = checkpoint.latest_step(plan.checkpoint_dir)
            then = f"; continue with --resume once there is room (from step {step})"
            raise SuperpositionError(
                f"--out {out}: cannot write there ({describe_write_failure(err)})"
                + (then if resumable else "")
            ) from None
        raise
    finally:
        store.close()


def _train_and_evaluate(
    cfg: LMSAEConfig, out: Path, resume: bool, lm, hooked, store, sae, train_cfg, plan: Plan, comm: Comm
) -> Path | None:
    if comm.main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            atomic_write_text(out / "config.json", json.dumps(cfg.model_dump(), indent=1))
            write_marker(out, RUN_KIND)
    comm.barrier("waiting for rank 0 to make the run directory")
    source, objective = RankView(store, None if plan.hook_parallel else comm, plan.mine), None
    if cfg.loss != "local":  # end-to-end: whole sequences, and the KL through the rest of the model
        source = SequenceSource(store, hooked, lm.tokenizer, cfg.hook_name, cfg.downstream_hooks)
        objective = EndToEndObjective(source, cfg.kl_coefficient, cfg.downstream_coefficient)
    trainer = SAETrainer(sae, source, train_cfg, checkpoint_dir=plan.checkpoint_dir, objective=objective,
                         comm=None if plan.hook_parallel else comm)  # fmt: skip
    if resume and not checkpoint.exists(plan.checkpoint_dir) and checkpoint.exists(out / "checkpoint"):
        raise SuperpositionError(
            f"--resume: {out} was checkpointed by another layout of ranks; resume parallel=hooks runs with "
            "the same number of ranks"
        )
    resumed = resume and checkpoint.exists(plan.checkpoint_dir)
    if resumed:
        trainer.load_checkpoint()
    logger = None
    if comm.main or plan.hook_parallel:
        names = [plan.hooks[i] for i in plan.mine] if plan.multi else None
        trainer.on_log = logger = RunLogger(out, cfg, trainer.step if resumed else None, names, comm.rank)
        logger.opt = trainer.opt
    if comm.main:
        print(
            f"training {len(plan.hooks) if plan.multi else 'a'} {cfg.architecture}"
            f"{'' if cfg.loss == 'local' else f' ({cfg.loss} loss)'} "
            f"({sae.cfg.d_in} -> {sae.cfg.d_sae}"
            f"{f' -> {sae.d_out}' if sae.transcodes else ''}) on {cfg.model_name} "
            f"{', '.join(plan.hooks) if plan.multi else cfg.hook_name}: "
            f"{cfg.steps} steps of {cfg.batch_size_tokens} tokens"
            + (f" on {comm.world} processes ({cfg.parallel}-parallel)" if comm.distributed else ""),
            file=sys.stderr,
            flush=True,
        )
    started = time.time()
    try:
        trainer.train(progress=comm.main)
    except KeyboardInterrupt:
        raise SuperpositionError(
            f"interrupted at step {trainer.step}; continue with: superposition train-sae --out {out} --resume"
        ) from None
    finally:
        if logger is not None:
            logger.close()
    elapsed = time.time() - started
    trainer.fold_normalization()
    meta = {
        "context_size": cfg.context_size,
        "prepend_bos": cfg.prepend_bos,
        "dataset_path": cfg.dataset_path,
    }
    if not plan.multi:
        if comm.main:
            save_sae(sae, out / "sae", 0, meta)
    elif comm.main or plan.hook_parallel:
        for j, i in enumerate(plan.mine):
            save_sae(sae, out / "saes" / plan.hooks[i], j, {**meta, "hook_name": plan.hooks[i]})
    model_tokens = torch.tensor([float(store.model_tokens)])
    comm.sum_(model_tokens)  # also: every rank's SAEs are saved from here on
    if not comm.main:
        return None  # rank 0 evaluates and writes the summary
    training = {
        "train_seconds": round(elapsed, 1),
        "train_steps": cfg.steps,
        "training_tokens": cfg.steps * cfg.batch_size_tokens,
        "model_tokens_run": int(model_tokens.item()),
        **({"processes": comm.world, "parallel": cfg.parallel} if comm.distributed else {}),
    }
    if plan.multi:
        evaluate_multi(out, cfg, plan.hooks, lm, hooked, training)
    else:
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
    rows = read_log(run / "log.jsonl")
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


# per-hook numbers drawn against depth in a multi-hook run's report
DEPTH_KEYS = ("l0", "explained_variance", "ce_loss_recovered", "frac_dead", "token_likeness", "mean_abs_dla")


def evaluate_multi(out: Path, cfg: LMSAEConfig, hooks: list[str], lm, hooked, training: dict) -> dict:
    """A multi-hook run's evaluation: each hook's SAE (saes/<hook>/) on the same held-out
    sequences, the usual metrics plus token-likeness and direct logit attribution
    (lm/analysis.depth_characteristics); summary.json keeps one record per hook under "hooks"."""
    seqs = ActivationStore.for_run(cfg, lm, hooked, holdout=True).first_sequences(cfg.eval_sequences)
    print(
        f"evaluating {len(hooks)} SAEs on {seqs.shape[0]} held-out sequences ({seqs.numel()} tokens)",
        file=sys.stderr,
        flush=True,
    )
    records = {}
    for hook in tqdm(hooks, desc="evaluating", leave=False):
        sae = load_sae(out / "saes" / hook).to(cfg.device)
        metrics = evaluate_sae(
            hooked, lm.tokenizer, sae, hook, seqs, batch_size=cfg.model_batch_size,
            dead_threshold=cfg.dead_feature_threshold, device=cfg.device,
        )  # fmt: skip
        metrics.update(
            depth_characteristics(hooked, lm.tokenizer, sae, hook, seqs, cfg.model_batch_size, cfg.device)
        )
        records[hook] = {"hook_name": hook, "layer": hooked.parse(hook)[0], **metrics}
    summary = {
        **training, "model_name": cfg.model_name, "architecture": cfg.architecture,
        "d_sae": cfg.sae_width(hooked.d_in(hooks[0])), "eval_sequences": seqs.shape[0], "hooks": records,
    }  # fmt: skip
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
    try:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
        save_figures(figures, out)
        table = {f"{h}: {k}": r[k] for h, r in records.items() for k in ("l0", "explained_variance",
                 "ce_loss_recovered")}  # fmt: skip
        title = f"SAEs on {cfg.model_name} at {len(hooks)} hooks"
        render_report(out, title, _EXPLANATION_MULTI, figures, table, cfg.model_dump())
    finally:
        close_figures(figures)
    return summary


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
