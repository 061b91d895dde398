"""Writing files and directories whole or not at all.

A directory (a run, a dashboard) is built in a temporary sibling (`.NAME.partial-XXXX`) and renamed into
place when it
is complete, so a crash or Ctrl-C leaves nothing half-written; an earlier run in the same place is
replaced only at that moment.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from superposition.errors import SuperpositionError


@contextmanager
def staged_directory(out: Path, previous_marker: str = "config.json") -> Iterator[Path]:
    """Yield an empty temporary directory beside `out`; on success it replaces `out`, on any
    error or interrupt it is removed. An existing `out` may be replaced only if it is empty or
    holds `previous_marker` (an earlier output of the same kind)."""
    tmp = _claim(out, previous_marker)
    try:
        yield tmp
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _claim(out: Path, previous_marker: str) -> Path:
    """Check that `out` can be (re)written and make the temporary directory beside it."""
    if out.exists() and not out.is_dir():
        raise SuperpositionError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / previous_marker).is_file():
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


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(jsonable(data), indent=1), encoding="utf-8")


def jsonable(x: Any) -> Any:
    """Tensors and arrays to nested lists; non-finite floats to None (JSON has no NaN)."""
    if hasattr(x, "tolist"):
        x = x.tolist()
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, float):
        return round(x, 7) if math.isfinite(x) else None
    return x
