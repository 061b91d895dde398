"""A whole train-sae run, for every dictionary: SAEs and transcoders (one hook, several hooks, an
end-to-end loss), cross-layer transcoders and crosscoders. `train_lm_sae(cfg, out)` is what
`superposition train-sae` and `sp.train_sae` call; written in place, so that an interrupted run
resumes exactly:

    RUN_DIR/config.json          every setting (LMSAEConfig); resuming reads it back
    RUN_DIR/checkpoint/          weights, Adam state, source position: resumes exactly
    RUN_DIR/log.jsonl, log.csv   training metrics (runs/log.py; + tensorboard/ if installed)
    RUN_DIR/sae/ or saes/<hook>/ the SAEs (DESIGN.md layout); clt/ for a CLT; crosscoder/, saes/<source>/
                                 and latents.csv for a crosscoder
    RUN_DIR/summary.json         the evaluation; figures and report.html beside it

Every kind runs the same flow: its `Job` (jobs below, runs/clt.py, runs/crosscoder.py) opens the
models and the activation source and makes the dictionary; the one trainer (sae/train.py) trains it,
checkpointing, resuming and, under torchrun, sharing each batch over the ranks; the job saves and
evaluates what it trained. A run that fails before its first checkpoint leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

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
from superposition.dist import Comm
from superposition.errors import SuperpositionError
from superposition.lm.config import LMSAEConfig
from superposition.lm.store import buffer_sequences_for, check_buffer_ranks
from superposition.report.output import Result, write_result
from superposition.runs.log import RunLogger
from superposition.runs.targets import TRAIN_RUN
from superposition.sae import checkpoint
from superposition.sae.train import SAETrainConfig, SAETrainer
from superposition.seeding import derive_seed

RUN_KIND = TRAIN_RUN


@dataclass
class Job:
    """What one kind of dictionary brings to the common flow."""

    dictionary: torch.nn.Module  # a BatchedSAE, or a SourceDictionary (sae/dictionary.py)
    source: object  # sample(n) -> this rank's share of a batch; state_dict/load_state_dict
    train_cfg: SAETrainConfig
    checkpoint_dir: Path
    describe: str  # the line printed when training starts
    # saves what was trained and evaluates it: (trainer, training record) -> Result (None on ranks > 0)
    finish: Callable[[SAETrainer, dict], Result | None]
    model_tokens: Callable[[], int]
    close: Callable[[], None] = lambda: None
    objective: object = None  # an end-to-end loss (lm/e2e.py)
    trainer_comm: Comm | None = None  # None: the trainer runs alone (hook-parallel ranks)
    log_hooks: list[str] | None = None  # a row per hook in the log (multi-hook runs)
    logs_here: bool = True  # this rank writes a log (rank 0, or every hook-parallel rank)
    rank: int = 0
    extra: dict = field(default_factory=dict)  # the training record's own keys (processes, parallel)


def saved_config(out: Path) -> LMSAEConfig:
    """The config.json of the run at `out`, for resuming: a damaged one is one line."""
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


def check_layout(out: Path, cfg: LMSAEConfig, world: int) -> None:
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


def check_ranks(cfg: LMSAEConfig, world: int) -> None:
    """What a run on `world` processes needs of its config alone: `train-sae --nproc` checks it
    before it starts any process, and every rank of a torchrun launch before it opens a model. (That
    a glob names at least one hook per hook-parallel rank needs the model: the ranks check it.)"""
    if world <= 1:
        return
    if cfg.loss != "local":
        raise SuperpositionError(f"loss: {cfg.loss} runs in one process; train it without torchrun/--nproc")
    if cfg.parallel == "hooks":
        if cfg.architecture == "clt":
            raise SuperpositionError("parallel: a clt is one dictionary over every layer; use parallel=data")
        if cfg.architecture == "crosscoder":
            raise SuperpositionError(
                "parallel: a crosscoder is one dictionary over its sources; use parallel=data"
            )
        if not cfg.multi_hook:
            raise SuperpositionError(
                "parallel: hooks shares the hooks of a run over the ranks; give several hooks "
                "(hook_name as a list or glob) or use parallel=data"
            )
    check_buffer_ranks(
        world, buffer_sequences_for(cfg.batch_size_tokens, cfg.n_batches_in_buffer, cfg.context_size)
    )


def prepare_out(out: Path, resume: bool) -> None:
    """A new run needs an absent or empty folder (a run is written in place, so it never replaces
    anything); resuming needs a train-sae run (one stopped before its first checkpoint restarts)."""
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
    """Train (or with resume=True, continue, cfg None: the run's own) a run's dictionaries; then
    evaluate them. Returns the run directory (None on torchrun ranks other than 0). One process at
    a time may write a run (`target_lock`); under torchrun every rank calls this, and rank 0 holds
    the lock and writes the run directory."""
    out = resolve_out(out)
    if resume:
        if out.is_dir() or out.is_symlink():
            refuse_links(out)  # written in place: never through a link planted in the run
        cfg = saved_config(out)
    comm = Comm.from_env(cfg.device, cfg.dist_timeout)
    try:
        check_ranks(cfg, comm.world)
        with ExitStack() as stack:
            if comm.main:
                stack.enter_context(target_lock(out))
            if resume:
                comm.first(lambda: check_layout(out, cfg, comm.world))
            comm.first(lambda: prepare_out(out, resume))
            return _run(cfg, out, resume, comm)
    finally:
        comm.close()


def _job(cfg: LMSAEConfig, out: Path, comm: Comm) -> Job:
    if cfg.architecture == "clt":
        from superposition.runs.clt import clt_job

        return clt_job(cfg, out, comm)
    if cfg.architecture == "crosscoder":
        from superposition.runs.crosscoder import crosscoder_job

        return crosscoder_job(cfg, out, comm)
    from superposition.runs.saes import sae_job

    return sae_job(cfg, out, comm)


def _run(cfg: LMSAEConfig, out: Path, resume: bool, comm: Comm) -> Path | None:
    torch.manual_seed(derive_seed(cfg.seed, "lm-run"))
    job = _job(cfg, out, comm)  # models and sources opened, inputs checked: nothing written yet
    existed = out.exists()
    try:
        return _train_and_finish(cfg, out, resume, job, comm)
    except BaseException as err:
        resumable = checkpoint.exists(job.checkpoint_dir)
        if comm.main and not resume and not resumable:  # nothing to resume: leave nothing
            shutil.rmtree(out, ignore_errors=True)
            if existed:
                out.mkdir()
        if write_failure(err):
            step = checkpoint.latest_step(job.checkpoint_dir)
            then = f"; continue with `resume` once there is room (from step {step})"
            raise SuperpositionError(
                f"out {out}: cannot write there ({describe_write_failure(err)})" + (then if resumable else "")
            ) from None
        raise
    finally:
        job.close()


def _train_and_finish(cfg: LMSAEConfig, out: Path, resume: bool, job: Job, comm: Comm) -> Path | None:
    if comm.main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            atomic_write_text(out / "config.json", json.dumps(cfg.model_dump(), indent=1))
            write_marker(out, RUN_KIND)
    comm.barrier("waiting for rank 0 to make the run directory")
    trainer = SAETrainer(job.dictionary, job.source, job.train_cfg, checkpoint_dir=job.checkpoint_dir,
                         objective=job.objective, comm=job.trainer_comm)  # fmt: skip
    if resume and not checkpoint.exists(job.checkpoint_dir) and checkpoint.exists(out / "checkpoint"):
        raise SuperpositionError(
            f"resume: {out} was checkpointed by another layout of ranks; resume parallel=hooks runs with "
            "the same number of ranks"
        )
    resumed = resume and checkpoint.exists(job.checkpoint_dir)
    if resumed:
        trainer.load_checkpoint()
    logger = None
    if job.logs_here:
        trainer.on_log = logger = RunLogger(
            out, cfg, trainer.step if resumed else None, job.log_hooks, job.rank
        )
        logger.trainer = trainer
    if comm.main:
        where = f" on {comm.world} processes ({cfg.parallel}-parallel)" if comm.distributed else ""
        print(job.describe + where, file=sys.stderr, flush=True)
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
    model_tokens = torch.tensor([float(job.model_tokens())])
    comm.sum_(model_tokens)  # also: every rank has finished training from here on
    training = {
        "train_seconds": round(elapsed, 1),
        "train_steps": job.train_cfg.steps,
        "training_tokens": job.train_cfg.steps * cfg.batch_size_tokens,
        "model_tokens_run": int(model_tokens.item()),
        **({"processes": comm.world, "parallel": cfg.parallel} if comm.distributed else {}),
        **job.extra,
    }
    result = job.finish(trainer, training)
    if not comm.main or result is None:
        return None  # rank 0 writes the summary
    write_result(out, result, None)  # config.json was written when the run started
    write_marker(out, RUN_KIND)
    return out
