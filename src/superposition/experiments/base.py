"""The experiment registry and the run directory every experiment writes.

A run directory holds `config.json` (every setting), `summary.json` (results), figures as
`*.png` / `*.html`, and `report.html`. It is built in a temporary sibling directory and renamed
into place at the end, so a failed or interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from superposition import __version__
from superposition.config import Config
from superposition.errors import SuperpositionError
from superposition.report.html import FigureSpec, close_figures, render_report, save_figures


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
    out = Path(out).expanduser().absolute()
    tmp = _claim_output(out)
    result = None
    try:
        started = time.time()
        result = exp.run(cfg, tmp)
        elapsed = time.time() - started
        config = {"experiment": name, "quick": quick, **cfg.model_dump(), "version": __version__}
        result.summary.setdefault("experiment", name)
        result.summary["elapsed_seconds"] = round(elapsed, 2)
        _write_json(tmp / "config.json", config)
        _write_json(tmp / "summary.json", result.summary)
        save_figures(result.figures, tmp)
        render_report(tmp, result.title, result.explanation, result.figures, result.highlights, config)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if result is not None:
            close_figures(result.figures)
    return out


def _claim_output(out: Path) -> Path:
    """Check that `out` can be (re)written and make the temporary directory beside it."""
    if out.exists() and not out.is_dir():
        raise SuperpositionError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise SuperpositionError(
            f"--out {out}: directory is not empty and is not a previous run; choose another"
        )
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    except OSError as err:
        raise SuperpositionError(f"--out {out}: cannot write there ({err.strerror or err})") from None
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a run directory is an ordinary one
    return tmp


def _swap_into_place(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(_jsonable(data), indent=1), encoding="utf-8")


def _jsonable(x: Any) -> Any:
    """Tensors and arrays to nested lists; non-finite floats to None (JSON has no NaN)."""
    if hasattr(x, "tolist"):
        x = x.tolist()
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float):
        return round(x, 7) if math.isfinite(x) else None
    return x
