"""The experiment registry and the run directory every experiment writes.

A run directory holds `config.json` (every setting), `summary.json` (results), figures as
`*.png` / `*.html`, and `report.html`. It is built in a temporary sibling directory and renamed
into place at the end, so a failed or interrupted run leaves nothing half-written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from superposition.atomic import resolve_out
from superposition.config import Config
from superposition.errors import SuperpositionError
from superposition.memory import require_memory
from superposition.report.output import Result, write_output


@dataclass
class Experiment:
    name: str
    description: str
    config: type[Config]
    run: Callable[[Any, Path], Result]  # (config, run directory being written) -> Result
    quick: dict[str, Any]


REGISTRY: dict[str, Experiment] = {}


def register(name: str, description: str, config: type[Config], quick: dict[str, Any]):
    """Decorator: register `run(cfg, out) -> Result` as experiment `name`. `quick` holds the
    overrides of `--quick`: a smaller version that still shows the effect."""

    def wrap(fn: Callable[[Any, Path], Result]):
        REGISTRY[name] = Experiment(name, description, config, fn, quick)
        return fn

    return wrap


def get_experiment(name: str) -> Experiment:
    if name not in REGISTRY:
        raise SuperpositionError(f"unknown experiment {name!r}; available: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def make_config(name: str, quick: bool = False, seed: int | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then the quick overrides, then `--seed`, then `--set key=value` pairs."""
    exp = get_experiment(name)
    cfg = exp.config()
    if quick:
        cfg = exp.config.build({**cfg.model_dump(), **exp.quick}, source=f"{name} --quick")
    if seed is not None:
        cfg = cfg.with_overrides([f"seed={seed}"], source="--seed")
    return cfg.with_overrides(overrides)


def run_experiment(
    name: str, out: str | Path, quick: bool = False, seed: int | None = None, overrides: list[str] = ()
) -> Path:
    """Validate everything, run, and write the run directory `out` (report.output). Returns its path."""
    exp = get_experiment(name)
    cfg = make_config(name, quick, seed, list(overrides))
    out = resolve_out(out)
    if hasattr(cfg, "memory_needed"):
        require_memory(cfg.memory_needed(), name, "choose smaller sizes with --set")

    def produce(tmp: Path) -> Result:
        result = exp.run(cfg, tmp)
        result.summary.setdefault("experiment", name)
        return result

    return write_output(
        out, "experiment run", produce, {"experiment": name, "quick": quick, **cfg.model_dump()}
    )[0]


__all__ = ["REGISTRY", "Experiment", "Result", "get_experiment", "make_config", "register", "run_experiment"]
