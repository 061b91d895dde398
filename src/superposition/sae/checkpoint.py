"""Checkpoints that never tear: a checkpoint is one directory, switched in by one pointer.

    checkpoint/
      LATEST                 the name of the newest complete checkpoint ("step-000000123")
      step-000000123/        state.safetensors + meta.json (which holds the state's SHA-256)
      step-000000100/        the one before, kept until a newer one is complete

Saving writes a `.partial-*` directory, flushes it to disk, renames it to `step-N`, then replaces
LATEST atomically, and only then removes older checkpoints; a kill at any moment leaves LATEST
pointing at a complete checkpoint (or no LATEST yet). Loading verifies the checksum and falls back
to the newest intact checkpoint with a one-line notice when the newest is damaged.

`SUPERPOSITION_TEST_PAUSE` (seconds) pauses between the stages of a save, so tests can kill a
process in the middle of one.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from superposition.atomic import (
    atomic_save_tensors,
    atomic_write_text,
    fsync_dir,
    pause_for_tests,
    sha256_file,
)
from superposition.errors import SuperpositionError

LATEST = "LATEST"
STATE = "state.safetensors"
META = "meta.json"


def _name(step: int) -> str:
    return f"step-{step:09d}"


def latest_step(folder: Path) -> int | None:
    """The step of the checkpoint LATEST points at, without verifying it; None if there is none."""
    try:
        return int((folder / LATEST).read_text().strip().removeprefix("step-"))
    except (OSError, ValueError):
        return None


def exists(folder: Path) -> bool:
    return folder.is_dir() and (latest_step(folder) is not None or any(folder.glob("step-*/" + META)))


def save(folder: Path, step: int, tensors: dict[str, Tensor], meta: dict) -> Path:
    """Write checkpoint `step` whole, point LATEST at it, and keep only it and its predecessor."""
    folder.mkdir(parents=True, exist_ok=True)
    name = _name(step)
    previous = (folder / LATEST).read_text().strip() if (folder / LATEST).is_file() else None
    if previous == name and _verify(folder / name) is None:
        return folder / name  # nothing changed since: the same step is already saved
    tmp = folder / f".partial-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    atomic_save_tensors(tmp / STATE, tensors)
    _fsync(tmp / STATE)
    pause_for_tests()
    atomic_write_text(tmp / META, json.dumps({**meta, "step": step, "sha256": sha256_file(tmp / STATE)}))
    fsync_dir(tmp)
    pause_for_tests()
    if (folder / name).exists():  # an earlier attempt that got this far but not to LATEST
        shutil.rmtree(folder / name)
    tmp.rename(folder / name)
    fsync_dir(folder)
    pause_for_tests()
    atomic_write_text(folder / LATEST, name)
    fsync_dir(folder)
    pause_for_tests()
    for old in folder.iterdir():  # older checkpoints and abandoned partial writes
        if old.name not in (name, previous, LATEST) and (
            old.name.startswith("step-") or old.name.startswith(".partial-")
        ):
            shutil.rmtree(old, ignore_errors=True)
    return folder / name


def load(folder: Path) -> tuple[dict[str, Tensor], dict]:
    """The newest intact checkpoint's tensors and metadata. If LATEST's checkpoint is damaged (or
    LATEST is missing), the newest intact one is used and a one-line notice says so."""
    pointed = (folder / LATEST).read_text().strip() if (folder / LATEST).is_file() else None
    candidates = sorted((p.name for p in folder.glob("step-*") if p.is_dir()), reverse=True)
    if pointed in candidates:
        candidates.remove(pointed)
        candidates.insert(0, pointed)
    problems = []
    for name in candidates:
        problem = _verify(folder / name)
        if problem is None:
            if problems:
                print(
                    f"superposition: checkpoint {problems[0]}; resuming from {name} instead", file=sys.stderr
                )
            return load_file(str(folder / name / STATE)), json.loads((folder / name / META).read_text())
        problems.append(f"{name} is damaged ({problem})")
    if (folder / "checkpoint.safetensors").is_file() and (folder / "checkpoint.json").is_file():
        return _load_legacy(folder)
    detail = f": {problems[0]}" if problems else ""
    raise SuperpositionError(f"resume: no intact checkpoint in {folder}{detail}")


def _verify(path: Path) -> str | None:
    """None if the checkpoint directory is complete and its state matches its checksum."""
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError) as err:
        return f"unreadable {META}: {err}"
    if not (path / STATE).is_file():
        return f"no {STATE}"
    if sha256_file(path / STATE) != meta.get("sha256"):
        return f"{STATE} does not match its checksum"
    return None


def _load_legacy(folder: Path) -> tuple[dict[str, Tensor], dict]:
    """The two-file layout of earlier versions (checkpoint.safetensors + checkpoint.json)."""
    try:
        return load_file(str(folder / "checkpoint.safetensors")), json.loads(
            (folder / "checkpoint.json").read_text()
        )
    except (OSError, ValueError, SafetensorError) as err:
        raise SuperpositionError(f"resume: cannot read the checkpoint in {folder} ({err})") from None


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
