"""The experiment registry and the run directory every experiment writes.

A run directory holds `config.json` (every setting), `summary.json` (results), figures as
`*.png` / `*.html`, and `report.html`. It is built in a temporary sibling directory and renamed
into place at the end, so a failed or interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from superposition import __version__
from superposition.config import Config
from superposition.errors import SuperpositionError
from superposition.files import resolve_out, staged_directory, write_json
from superposition.report.html import FigureSpec, close_figures, render_report, save_figures
from superposition.resources import require_memory


@dataclass
class Result:
    """What an experiment hands back to be written."""

    title: str
    explanation: str  # HTML paragraphs, written by the experiment
    summary: dict[str, Any]
    figures: list[FigureSpec] = field(default_factory=list)
    highlights: dict[str, Any] = field(default_factory=dict)  # key numbers for the report


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
    """Validate everything, run, and write the run directory `out`. Returns its path."""
    exp = get_experiment(name)
    cfg = make_config(name, quick, seed, list(overrides))
    out = resolve_out(out)
    if hasattr(cfg, "memory_needed"):
        require_memory(cfg.memory_needed(), name, "choose smaller sizes with --set")
    result = None
    try:
        with staged_directory(out, "experiment run") as tmp:
            started = time.time()
            result = exp.run(cfg, tmp)
            config = {"experiment": name, "quick": quick, **cfg.model_dump(), "version": __version__}
            result.summary.setdefault("experiment", name)
            result.summary["elapsed_seconds"] = round(time.time() - started, 2)
            write_json(tmp / "config.json", config)
            write_json(tmp / "summary.json", result.summary)
            save_figures(result.figures, tmp)
            render_report(tmp, result.title, result.explanation, result.figures, result.highlights, config)
    finally:
        if result is not None:
            close_figures(result.figures)
    return out
