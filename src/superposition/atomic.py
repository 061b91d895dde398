"""Writing files and directories whole or not at all, and never over a user's data.

- `staged_directory`: a directory (an experiment run, a dashboard) is built in a temporary sibling
  (`.NAME.partial-XXXX`) and renamed into place when complete, so a crash, Ctrl-C or kill -9
  leaves nothing half-written in its place.
- A run's marker, `.superposition-run.json`, written last into every directory this tool makes,
  names the tool, the kind of output and every file it wrote. An existing `--out` is replaced only
  if it is empty, or if its marker says it is an output of the same kind *and* it holds nothing the
  marker does not list; a folder that merely contains a `config.json` is refused.
- `target_lock`: one writer per target. A second process asking for the same `--out` (or cache)
  fails at once with one line naming the first's process id. The lock is an flock on a file beside
  the target, so it is released when its holder dies, even by kill -9.
- `atomic_write_bytes` / `atomic_write_text` (temporary file, fsync, rename) and `sha256_file`.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from superposition.errors import SuperpositionError
from superposition.redact import redact

MARKER = ".superposition-run.json"
TOOL = "superposition"


# ---------------------------------------------------------------------- checking a target
def resolve_out(out: str | Path, flag: str = "out") -> Path:
    """An output path as given on the command line, made absolute; the empty path is refused
    (it would mean the working directory)."""
    if str(out).strip() == "":
        raise SuperpositionError(f"{flag}: an empty path; give the folder to write")
    return Path(out).expanduser().absolute()


def read_marker(folder: Path) -> dict | None:
    """The marker of a directory this tool wrote, or None."""
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("tool") == TOOL else None


def check_replaceable(out: Path, kind: str, flag: str = "out") -> None:
    """Refuse (one line) unless `out` is absent, an empty directory, or an earlier output of this
    `kind` holding only files that output wrote."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise SuperpositionError(f"{flag} {out}: exists and is not a directory")
    present = _files_below(out)
    if not present:
        return
    marker = read_marker(out)
    if marker is None:
        raise SuperpositionError(
            f"{flag} {out}: directory is not empty and is not a previous run of superposition (a {kind}); "
            "choose another"
        )
    if marker.get("kind") != kind:
        raise SuperpositionError(
            f"{flag} {out}: holds a superposition {marker.get('kind')!r}, not a {kind}; choose another folder"
        )
    foreign = sorted(present - set(marker.get("files", [])) - {MARKER})
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise SuperpositionError(
            f"{flag} {out}: holds files superposition did not write ({shown}); "
            "move them or choose another folder"
        )


def _files_below(folder: Path) -> set[str]:
    """Every file and symlink below `folder` (relative paths), and every empty directory."""
    found = set()
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        found.update(str(rel / f) for f in files)
        found.update(str(rel / d) for d in dirs if Path(root, d).is_symlink())
        if not dirs and not files and Path(root) != folder:
            found.add(str(rel) + "/")
    return {f.removeprefix("./") for f in found}


def write_marker(folder: Path, kind: str, **extra: Any) -> None:
    """Record that this tool wrote `folder` as a `kind`, listing every file in it now."""
    files = sorted(_files_below(folder) - {MARKER})
    atomic_write_text(
        folder / MARKER, json.dumps({"tool": TOOL, "kind": kind, **extra, "files": files}, indent=1)
    )


# ---------------------------------------------------------------------- writing a directory whole
@contextmanager
def staged_directory(out: Path, kind: str, flag: str = "out") -> Iterator[Path]:
    """Yield an empty temporary directory beside `out`; on success it is marked and replaces
    `out` (which must be replaceable, see `check_replaceable`); on any error or interrupt it is
    removed. Holds `target_lock(out)` throughout."""
    with target_lock(out, flag):
        check_replaceable(out, kind, flag)
        for stale in (*out.parent.glob(f".{out.name}.partial-*"), *out.parent.glob(f".{out.name}.old-*")):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed writer; we hold the lock
        tmp = _make_sibling(out, flag)
        try:
            yield tmp
            write_marker(tmp, kind)
            _swap_into_place(tmp, out)
        except BaseException as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if write_failure(err):  # a full disk, a file system gone read-only, ...
                raise SuperpositionError(
                    f"{flag} {out}: cannot write there ({describe_write_failure(err)})"
                ) from None
            raise


def _make_sibling(out: Path, flag: str) -> Path:
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    except OSError as err:
        raise SuperpositionError(f"{flag} {out}: cannot write there ({err.strerror or err})") from None
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


_WRITE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG)
# safetensors reports I/O errors as its own type: "... No space left on device (os error 28)" or
# '... Os { code: 28, kind: StorageFull, message: "No space left on device" }', by version
_SAFETENSORS_IO = re.compile(r'([A-Z][\w \-]*?) \(os error (\d+)\)|code: (\d+), [^}]*message: "([^"]*)"')


def write_failure(err: BaseException) -> bool:
    """An error that means the disk refused a write (no space, read-only, no permission, ...)."""
    if isinstance(err, OSError):
        return err.errno in _WRITE_ERRNOS
    m = _SAFETENSORS_IO.search(str(err)) if type(err).__name__ == "SafetensorError" else None
    return bool(m) and int(m.group(2) or m.group(3)) in _WRITE_ERRNOS


def describe_write_failure(err: BaseException) -> str:
    """What stopped a write, and the file it was writing when the error names one
    ("No space left on device: crosscoder/crosscoder.safetensors")."""
    if isinstance(err, OSError):
        what = err.strerror or str(err)
        if err.filename:
            name = Path(str(err.filename))
            # a temporary file beside the target (atomic writes) names the target
            name = name.with_name(re.sub(r"^\.(.+)\.tmp-\d+$", r"\1", name.name))
            return f"{what}: {name}"
        return what
    m = _SAFETENSORS_IO.search(str(err))
    return (m.group(1) or m.group(4)) if m else str(err).splitlines()[0]


# ---------------------------------------------------------------------- one writer per target
@contextmanager
def target_lock(target: Path, flag: str = "out") -> Iterator[None]:
    """Hold an exclusive lock on `target` (a file `.NAME.lock` beside it) or fail at once with one
    line naming the process that holds it."""
    lock = TargetLock(target, flag)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


class TargetLock:
    """The lock of `target_lock`, for holders whose lifetime is not one `with` block."""

    def __init__(self, target: Path, flag: str) -> None:
        self.target, self.flag, self.fd = target, flag, None
        self.path = target.parent / f".{target.name}.lock"

    def acquire(self) -> None:
        if self.fd is None:
            self.fd = _lock(self.target, self.path, self.flag)

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None


def _lock(target: Path, lock_path: Path, flag: str) -> int:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SuperpositionError(f"{flag} {target}: cannot write there ({err.strerror or err})") from None
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise SuperpositionError(
                    f"{flag} {target}: {lock_path.name} beside it is a symbolic link; superposition never "
                    "writes through one (remove it)"
                ) from None
            raise SuperpositionError(f"{flag} {target}: cannot write there ({err.strerror or err})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise SuperpositionError(
                    f"{flag} {target}: another superposition process (pid {holder}) is writing it; "
                    "wait for it to finish or choose another folder"
                ) from None
            raise
        try:  # the file we locked must still be the one at lock_path (its last holder may have removed it)
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            return fd
        os.close(fd)


# ---------------------------------------------------------------------- files
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `path` whole: a new temporary file beside it (never a link: O_EXCL | O_NOFOLLOW), flushed
    to disk, then renamed over it. A symbolic link planted at `path` is replaced, never written
    through."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)  # a leftover of a killed writer (or a planted link: unlink removes the link)
    try:
        # 0o666 less the user's umask, as any file the user's programs write (0o644 under umask 022)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_save_tensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """A safetensors file written whole (atomic_write_bytes), with the permissions the user's umask
    gives (safetensors' own save_file makes every file 0600), and `format: pt` in its metadata."""
    from safetensors.torch import save

    atomic_write_bytes(Path(path), save(tensors, metadata={"format": "pt", **(metadata or {})}))


def atomic_write_text(path: Path, text: str) -> None:
    """atomic_write_bytes of UTF-8 text, with secrets redacted (redact.py)."""
    atomic_write_bytes(path, redact(text).encode("utf-8"))


def refuse_links(folder: Path, what: str = "out") -> None:
    """Refuse (one line) to write into a folder that is, or holds, a symbolic link: a run folder
    received from someone else (`report.html -> ../somefile`) must never make this tool write
    outside it. For outputs written in place (eval-sae into a run, train-sae --resume, caches)."""
    if folder.is_symlink():
        raise SuperpositionError(f"{what} {folder}: is a symbolic link; give the folder itself")
    for root, dirs, files in os.walk(folder):  # never descends into linked folders
        for name in (*dirs, *files):
            p = Path(root, name)
            if p.is_symlink():
                raise SuperpositionError(
                    f"{what} {folder}: {p.relative_to(folder)} is a symbolic link; superposition never "
                    "writes through one (remove it, or copy the folder without links)"
                )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pause_for_tests() -> None:
    """Sleep SUPERPOSITION_TEST_PAUSE seconds (unset: not at all). Called between the stages of
    multi-step writes (checkpoints, cache shards) so that tests can kill a process inside one."""
    seconds = float(os.environ.get("SUPERPOSITION_TEST_PAUSE", "0") or 0)
    if seconds > 0:
        time.sleep(seconds)


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (where the platform allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- JSON
def write_json(path: Path, data: Any) -> None:
    """Strict, finite JSON (NaN and infinities become null), written whole and redacted."""
    atomic_write_text(path, json.dumps(jsonable(data), indent=1, allow_nan=False))


def write_jsonl(path: Path, rows: list) -> None:
    """One strict, finite JSON object per line (write_json's rules), written whole and redacted."""
    atomic_write_text(path, "".join(json.dumps(jsonable(r), allow_nan=False) + "\n" for r in rows))


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
