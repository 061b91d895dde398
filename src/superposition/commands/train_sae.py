"""`superposition train-sae`: a run of SAEs, transcoders, a cross-layer transcoder or a crosscoder on
a language model's activations (runs/train.py trains it: the one trainer, written in place so that an
interrupted run resumes), on one process or several (--nproc, or torchrun).

    RUN_DIR/config.json          every setting (LMSAEConfig); --resume reads it back
    RUN_DIR/checkpoint/          weights, Adam state, store position: resumes exactly
    RUN_DIR/log.jsonl, log.csv   training metrics (+ tensorboard/ if installed)
    RUN_DIR/sae/ or saes/<hook>/ the SAEs (DESIGN.md layout); clt/ or crosscoder/ for those
    RUN_DIR/summary.json         evaluation (l0, mse, explained_variance, ce_loss_*, kl_div, ...)
    RUN_DIR/*.png, report.html   figures, the report
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import torch

from superposition.atomic import resolve_out
from superposition.commands.base import command, flag
from superposition.config import Config, describe_fields
from superposition.errors import Reported, SuperpositionError
from superposition.lm.config import LMSAEConfig, make_lm_config
from superposition.report.output import Result
from superposition.runs.evaluate import headline
from superposition.runs.train import (
    RUN_KIND,
    check_layout,
    check_ranks,
    prepare_out,
    saved_config,
    train_lm_sae,
)


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
        settings = cfg or saved_config(where)
        _check_processes(opts.nproc, settings.device)
        check_ranks(settings, opts.nproc)
        if opts.resume:
            check_layout(where, settings, opts.nproc)
        prepare_out(where, opts.resume)
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
