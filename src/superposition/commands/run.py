"""The experiments from the command line: `list`, `run EXPERIMENT` and `demo`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from superposition.commands.base import command, flag, positional
from superposition.config import Config, describe_fields
from superposition.errors import SuperpositionError
from superposition.experiments import REGISTRY, get_experiment, run_experiment
from superposition.report.output import Result


class ListOptions(Config):
    """`list` takes no options."""


@command("list", "list the experiments", ListOptions, kind=None)
def list_experiments(opts: ListOptions, out: Path | None = None) -> Result:
    width = max(len(n) for n in REGISTRY)
    lines = [f"{name:<{width}}  {REGISTRY[name].description}" for name in sorted(REGISTRY)]
    return Result(report=False, message="\n".join(lines))


class RunOptions(Config):
    """Options of `run`; the experiment's own keys are set with --set (every key: --help-config)."""

    experiment: str = positional("experiment name (see `superposition list`)", "EXPERIMENT")
    quick: bool = Field(False, description="a smaller version that still shows the effect")
    seed: int | None = Field(None, description="random seed (default: the config's, 0)")
    overrides: list[str] = flag(
        [], "override a config key; repeatable. Values are JSON (numbers, lists, true) or plain strings",
        name="--set",
    )  # fmt: skip


def _experiment_help(opts: RunOptions) -> str:
    exp = get_experiment(opts.experiment)
    return describe_fields(
        exp.config, f"{opts.experiment}: every key (--set key=value); --quick sets {exp.quick}"
    )


@command("run", "run one experiment and write its run directory", RunOptions, kind="experiment run",
         in_place=True, help_config=_experiment_help)  # fmt: skip
def run(opts: RunOptions, out: Path | None) -> Result:
    """Writes the run directory through run_experiment (report.output.write_output)."""
    if out is None:
        raise SuperpositionError("out: required; give the run directory")
    folder = run_experiment(opts.experiment, out, opts.quick, opts.seed, opts.overrides)
    return Result(folder=folder)


class DemoOptions(Config):
    """Options of `demo`."""

    quick: bool = Field(False, description="quick versions (for a smoke test)")


@command("demo", "run `intro` and `geometry` and print where their reports are", DemoOptions,
         kind="experiment run", in_place=True, out_default="runs/demo")  # fmt: skip
def demo(opts: DemoOptions, out: Path | None) -> Result:
    """`out` is the parent of the two runs."""
    reports = []
    for name in ("intro", "geometry"):
        print(f"running {name}{' (quick)' if opts.quick else ''} ...", flush=True)
        reports.append(
            run_experiment(name, Path(out or "runs/demo") / name, quick=opts.quick) / "report.html"
        )
    return Result(report=False, message="done. Open the reports:\n" + "\n".join(f"  {r}" for r in reports))
