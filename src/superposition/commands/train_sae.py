"""`superposition train-sae`: an SAE on a language model's activations, through the one SAE
trainer, into a run directory (written in place, so that an interrupted run resumes):

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
import os
import shutil
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from superposition.atomic import (
    atomic_write_text,
    describe_write_failure,
    refuse_links,
    resolve_out,
    target_lock,
    write_failure,
    write_marker,
)
from superposition.commands.base import command, flag
from superposition.commands.eval_sae import evaluate, evaluate_multi, headline, read_log
from superposition.commands.targets import TRAIN_RUN, LMRun
from superposition.config import Config, describe_fields
from superposition.dist import Comm
from superposition.errors import Reported, SuperpositionError
from superposition.lm.config import LMSAEConfig, make_lm_config
from superposition.lm.e2e import EndToEndObjective, SequenceSource
from superposition.lm.hooks import HookedModel, hook_meaning, read_names
from superposition.lm.model import load_model
from superposition.lm.store import ActivationStore, RankView, store_units
from superposition.memory import require_memory
from superposition.report.output import Result, write_result
from superposition.sae import SAE, checkpoint, make_sae
from superposition.sae.base import training_bytes
from superposition.sae.formats import load as load_sae
from superposition.sae.io import save_sae
from superposition.sae.metrics import explained_variance
from superposition.sae.train import SAETrainer
from superposition.seeding import derive_seed

RUN_KIND = TRAIN_RUN
LOG_KEYS = [
    "step", "hook_name", "tokens", "lr", "mse", "l0", "explained_variance", "auxk", "l1", "kl",
    "downstream_mse", "tokens_per_s",
]  # fmt: skip


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
        # the rate counts from here (the step the run starts or resumes at), so the first row has one
        self.t0, self.tokens0 = time.time(), (resume_step or 0) * cfg.batch_size_tokens
        self.trainer = None  # the SAE trainer: its learning rate, and the normalisation the mse is undone by

    def __call__(self, step: int, x, out) -> dict:
        cfg = self.cfg
        tokens = (step + 1) * cfg.batch_size_tokens
        rate = (tokens - self.tokens0) / max(time.time() - self.t0, 1e-9)
        evs = explained_variance(x.float(), out.x_hat.float())
        tr = self.trainer
        lr = tr.opt.param_groups[0]["lr"] if tr is not None else float("nan")
        # the trainer's mse is of normalised activations: in the model's units, as summary.json's
        unscale = (1 / tr.out_scale.squeeze(-1).square()) if tr is not None else torch.ones(len(evs))
        for i, hook in enumerate(self.hooks or [None]):
            l0 = out.l0[i].item() if out.l0 is not None else (out.z[:, i] != 0).sum(-1).float().mean().item()
            row = {
                "step": step,
                **({"hook_name": hook} if hook else {}),
                "tokens": tokens,
                "lr": lr,
                "mse": (out.terms["mse"][i] * unscale[i]).item(),
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


class TrainOptions(Config):
    """Options of `train-sae`: the run's settings come from --config and --set (every key:
    --help-config); --model, --hook, --device and --dtype are short for model_name, hook_name,
    device and dtype."""

    config: str | None = flag(None, "YAML or JSON file of config keys")
    overrides: list[str] = flag(
        [],
        "override a config key; repeatable (every key: superposition train-sae --help-config)",
        name="--set",
    )
    model: str | None = flag(None, "the language model (sets model_name)")
    hook: str | None = flag(None, "the hook point(s) (sets hook_name)")
    device: str | None = flag(None, "cpu, cuda, cuda:1, ... (sets device)")
    dtype: Literal["float32", "bfloat16", "float16"] | None = flag(None, "of the language model (sets dtype)")
    nproc: int | None = flag(
        None, "train on N local processes (launches torchrun for you; see parallel=data|hooks)", gt=0
    )
    resume: bool = flag(False, "continue the interrupted run in --out exactly where it stopped")

    def shorthands(self) -> dict[str, str]:
        names = {"model": "model_name", "hook": "hook_name", "device": "device", "dtype": "dtype"}
        return {names[k]: getattr(self, k) for k in names if getattr(self, k) is not None}

    def settings(self) -> LMSAEConfig:
        """The run's config: defaults, then the config file, then --set, then the shorthands."""
        cfg = make_lm_config(self.config, self.overrides)
        return (
            LMSAEConfig.build({**cfg.model_dump(), **self.shorthands()}, "config")
            if self.shorthands()
            else cfg
        )

    def argv(self, out: Path) -> list[str]:
        """This command line again, for the worker processes of --nproc."""
        args = ["train-sae", "--out", str(out), *(["--resume"] if self.resume else [])]
        args += ["--config", self.config] if self.config else []
        args += [a for s in self.overrides for a in ("--set", s)]
        return args + [a for k, v in self.shorthands().items() for a in (f"--{k.split('_')[0]}", v)]


def _train_help(opts: TrainOptions) -> str:
    return describe_fields(
        LMSAEConfig, "train-sae: every key (--set key=value, or in a --config YAML/JSON file)"
    )


@command(
    "train-sae",
    "train an SAE on a language model's activations (default: SmolLM2-135M, offline)",
    TrainOptions,
    kind=RUN_KIND,
    in_place=True,
    help_config=_train_help,
)
def run(opts: TrainOptions, out: Path | None) -> Result:
    if out is None:
        raise SuperpositionError("out: required; give the run directory")
    if opts.resume and (opts.config or opts.overrides or opts.shorthands()):
        raise SuperpositionError(
            "resume: continues with the run's saved config.json; drop `config` and `overrides` (and model, "
            "hook, device, dtype)"
        )
    cfg = None if opts.resume else opts.settings()
    if opts.nproc is not None and opts.nproc != 1:
        from superposition.dist import launch

        where = resolve_out(out)  # checked here, before starting N processes that would each say so
        settings = cfg or _saved_config(where)
        _check_processes(opts.nproc, settings.device)
        if opts.resume:
            _check_layout(where, settings, opts.nproc)
        _prepare_out(where, opts.resume)
        code = launch(opts.nproc, opts.argv(where))
        if code != 0:
            raise Reported(code)
        folder = resolve_out(out)
    else:
        folder = train_lm_sae(cfg, out, resume=opts.resume)
        if folder is None:  # a torchrun rank other than 0: rank 0 reports
            return Result(report=False)
    summary = json.loads((folder / "summary.json").read_text())
    return Result(
        title=f"train-sae: {folder.name}", summary=summary, folder=folder, message=headline(summary)
    )


def _check_processes(nproc: int, device: str) -> None:
    """No more processes than the machine has cores (CPU) or GPUs (CUDA)."""
    if device.startswith("cuda"):
        have, what = torch.cuda.device_count(), "GPUs"
    else:
        have, what = os.cpu_count() or 1, "CPU cores"
    if nproc > have:
        raise SuperpositionError(
            f"nproc: {nproc} processes, but this machine has {have} {what}; give at most {have}"
        )


def _saved_config(out: Path) -> LMSAEConfig:
    """The config.json of the run at `out`, for --resume: a damaged one is one line."""
    path = out / "config.json"
    if not path.is_file():
        raise SuperpositionError(f"resume: {out} holds no train-sae run")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # truncated, not UTF-8, not JSON
        raise SuperpositionError(f"resume: {path} is not readable JSON ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise SuperpositionError(f"resume: {path} is not a JSON object")
    return LMSAEConfig.build(data, str(path))


def _check_layout(out: Path, cfg: LMSAEConfig, world: int) -> None:
    """A hook-parallel run resumes with the processes that checkpointed it: each rank's SAEs and
    Adam state are in checkpoint/rankR-of-N. Resumed otherwise it would start again from step 0 and
    overwrite its log."""
    folder = out / "checkpoint"
    layouts = sorted({p.name.split("-of-")[-1] for p in folder.glob("rank*-of-*")}) if folder.is_dir() else []
    hook_parallel = cfg.parallel == "hooks" and world > 1 and cfg.multi_hook
    if layouts and (not hook_parallel or layouts != [str(world)]):
        n = layouts[-1]
        raise SuperpositionError(
            f"resume: {out} was checkpointed by {n} hook-parallel processes; resume it with `nproc` {n} "
            f"(it was given {world})"
        )


def _prepare_out(out: Path, resume: bool) -> None:
    """A new run needs an absent or empty folder (a run is written in place, so it never replaces
    anything); --resume needs a train-sae run (one stopped before its first checkpoint restarts)."""
    if out.exists() and not out.is_dir():
        raise SuperpositionError(f"out {out}: exists and is not a directory")
    if resume:
        if not (out / "config.json").is_file():
            raise SuperpositionError(f"resume: {out} holds no train-sae run")
        if not checkpoint.exists(out / "checkpoint") and not any(
            (out / "checkpoint").glob("rank*-of-*/LATEST")
        ):
            print(f"resume: {out} has no checkpoint yet; starting it again from step 0", file=sys.stderr)
    elif out.is_dir() and any(out.iterdir()):
        raise SuperpositionError(f"out {out}: not empty; continue it with `resume` or choose another folder")


def train_lm_sae(cfg: LMSAEConfig | None, out: str | Path, resume: bool = False) -> Path | None:
    """Train (or with resume=True, continue, cfg None: the run's own) SAEs; then evaluate them.
    Returns the run directory (None on torchrun ranks other than 0). One process at a time may
    write a run (`target_lock`); under torchrun every rank calls this, and rank 0 holds the lock
    and writes the run directory."""
    out = resolve_out(out)
    if resume:
        if out.is_dir() or out.is_symlink():
            refuse_links(out)  # written in place: never through a link planted in the run
        cfg = _saved_config(out)
    if cfg.architecture == "clt":
        from superposition.commands.train_clt import train_clt

        with target_lock(out):
            _prepare_out(out, False) if not resume else None
            return train_clt(cfg, out, resume, RUN_KIND)
    if cfg.architecture == "crosscoder":
        from superposition.commands.train_crosscoder import train_crosscoder_run

        with target_lock(out):
            _prepare_out(out, False) if not resume else None
            return train_crosscoder_run(cfg, out, resume, RUN_KIND)
    comm = Comm.from_env(cfg.device, cfg.dist_timeout)
    try:
        with ExitStack() as stack:
            if comm.main:
                stack.enter_context(target_lock(out))
            if resume:
                comm.first(lambda: _check_layout(out, cfg, comm.world))
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
    hooks = store_units(cfg.hook_name, hooked)
    multi = cfg.multi_hook
    if multi:
        widths = {h: tuple(hooked.widths(h)) for h in hooks}
        if len(set(widths.values())) > 1:
            shown = ", ".join(f"{h} {'->'.join(map(str, w))}" for h, w in widths.items())
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
    widths = hooked.widths(plan.hooks[0])  # [d_in], or a transcoder's [d_in, d_out]
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
            then = f"; continue with `resume` once there is room (from step {step})"
            raise SuperpositionError(
                f"out {out}: cannot write there ({describe_write_failure(err)})" + (then if resumable else "")
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
            f"resume: {out} was checkpointed by another layout of ranks; resume parallel=hooks runs with "
            "the same number of ranks"
        )
    resumed = resume and checkpoint.exists(plan.checkpoint_dir)
    if resumed:
        trainer.load_checkpoint()
    logger = None
    if comm.main or plan.hook_parallel:
        names = [plan.hooks[i] for i in plan.mine] if plan.multi else None
        trainer.on_log = logger = RunLogger(out, cfg, trainer.step if resumed else None, names, comm.rank)
        logger.trainer = trainer
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
        **lm.identity,
        "hook_meaning": hook_meaning(cfg.hook_name) if not plan.multi else None,
    }
    if not plan.multi:
        if comm.main:
            save_sae(sae, out / "sae", 0, meta)
    elif comm.main or plan.hook_parallel:
        for j, i in enumerate(plan.mine):
            hook = plan.hooks[i]
            names = read_names(hook)
            own = {"hook_name": names[0], "hook_meaning": hook_meaning(hook)}
            if sae.transcodes:
                own["hook_name_out"] = names[-1]
            save_sae(sae, out / "saes" / hook, j, {**meta, **own})
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
        result = evaluate_multi(out, cfg, plan.hooks, lm, hooked, training)
    else:
        result = evaluate(
            LMRun(out, cfg, SAE.frozen(load_sae(out / "sae"), cfg.device)), out, lm, hooked, training
        )
    write_result(out, result, None)  # config.json was written when the run started
    write_marker(out, RUN_KIND)
    return out
