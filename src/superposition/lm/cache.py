"""Activation caches on disk, in the layout SAELens's `CacheActivationsRunner` writes: a Hugging
Face `datasets` Arrow dataset (`state.json`, `dataset_info.json`, `*.arrow`) with one row per
sequence, a column per hook point of shape context_size × d_in (float32), and `token_ids`
(context_size int32). So `datasets.load_from_disk` and SAELens read a cache made here, and a
cache made by SAELens trains here.

Rows are the training sequences in order. Buffer i of the store is rows [i·S, (i+1)·S) (S =
sequences per buffer); in a distributed run every rank writes its own share of each buffer as its
own Arrow file, in parallel, and rank 0 then appends the buffer's files to `state.json`, which is
replaced atomically: a cache lists only whole files. `superposition_cache.json` records what made
the cache (model, hooks, data, context size, BOS) and each file's SHA-256, so a cache made with
other settings is refused and a damaged file (wrong checksum, torn or missing) is recomputed,
never read.

A SAELens cache has no such record: its hook column's shape and its token_ids (BOS or not) are
checked here, and the store compares the model's activations on its first row with the cached
ones (another model or hook is refused); which dataset it came from cannot be checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from superposition.atomic import atomic_write_text, pause_for_tests, refuse_links, sha256_file
from superposition.dist import Comm
from superposition.errors import SuperpositionError

RECORD = "superposition_cache.json"
STATE = "state.json"
INFO = "dataset_info.json"
# what must match for a cache of ours to be read (hooks: the run's must all be cached)
IDENTITY_KEYS = ("model_name", "dataset_path", "text_column", "context_size", "prepend_bos", "holdout")


def _datasets():
    try:
        import datasets
    except ImportError:  # part of the lm extras
        raise SuperpositionError(
            "activation_cache: needs the `datasets` package: pip install 'superposition-toolkit[lm]'"
        ) from None
    datasets.disable_progress_bars()
    return datasets


class ActivationCache:
    """One cache folder, seen by one rank. `read(a, b)` gives rows [a, b); `write` stores this
    rank's rows of a buffer; `commit` (rank 0, after every rank has written) lists them."""

    def __init__(
        self,
        folder: Path,
        identity: dict,
        hooks: list[str],
        widths: list[int],
        context_size: int,
        comm: Comm,
        aliases: dict[str, str] | None = None,
    ) -> None:
        """aliases: another name a foreign cache may give a hook's column (SAELens on a transformers
        model names the residual stream after block L by the module, e.g. model.layers.L)."""
        self.aliases = aliases or {}
        self.folder, self.identity, self.hooks, self.widths = folder, identity, hooks, widths
        self.context_size, self.comm = context_size, comm
        self.files: list[tuple[str, int]] = []  # (file name, rows), in row order
        self.sha: dict[str, str] = {}
        self.file_rows: dict[str, int] = {}  # from the record: each file's rows, to rebuild a torn one
        self.verified: set[str] = set()
        self.foreign = False  # made by SAELens (or anything else that writes the same layout)
        self.columns = {h: h for h in hooks}  # hook -> its column (a SAELens cache may name it otherwise)
        self.writable = True
        self._open()

    # ------------------------------------------------------------------ opening
    def _open(self) -> None:
        f = self.folder
        if f.exists() and not f.is_dir():
            raise SuperpositionError(f"activation_cache {f}: is a file; give a folder (new or made by a run)")
        if f.is_dir() or f.is_symlink():
            refuse_links(f, "activation_cache")
        if self.comm.main and f.is_dir():
            for stale in f.glob(".tmp-*"):  # writes cut short; the run holds the cache's lock
                shutil.rmtree(stale, ignore_errors=True)
        if not (f / STATE).is_file():
            if f.is_dir() and any(p for p in f.iterdir() if not p.name.startswith(".")):
                raise SuperpositionError(
                    f"activation_cache {f}: holds files but no {STATE}; not an activation cache (give a "
                    "new folder, one made by a run, or one SAELens's CacheActivationsRunner wrote)"
                )
            try:
                f.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise SuperpositionError(f"activation_cache {f}: cannot make it ({err.strerror})") from None
            return
        try:
            state = json.loads((f / STATE).read_text())
            names = [d["filename"] for d in state["_data_files"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise SuperpositionError(f"activation_cache {f}: unreadable {STATE} ({err})") from None
        if (f / RECORD).is_file():
            try:
                record = json.loads((f / RECORD).read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:  # UnicodeDecodeError is a ValueError
                raise SuperpositionError(
                    f"activation_cache {f}: unreadable {RECORD} ({type(err).__name__}); remove the folder to "
                    "make the cache again"
                ) from None
            if not isinstance(record, dict):
                raise SuperpositionError(
                    f"activation_cache {f}: {RECORD} is not a JSON object; remove the folder"
                )
            self._check_record(record)
        else:
            self.foreign, self.writable = True, False
        ds = _datasets()
        readable = None
        for name in names:
            try:
                rows = ds.Dataset.from_file(str(f / name)).num_rows
                readable = readable or name
            except Exception as err:  # pyarrow raises several types for a missing or torn file
                if self.foreign:
                    raise SuperpositionError(f"activation_cache {f}: cannot read {name} ({err})") from None
                rows = self.file_rows.get(name)
                print(
                    f"activation store: {f / name} is damaged (unreadable); computing its activations again",
                    file=sys.stderr,
                )
                if rows is None:  # a record without each file's rows: keep the whole files before it
                    break
                self.sha[name] = "damaged"  # never read: rewritten when its rows are needed
            self.files.append((name, rows))
        self._check_columns(readable)

    def _check_record(self, record: dict) -> None:
        for key in IDENTITY_KEYS:
            if record.get(key) != self.identity[key]:
                raise SuperpositionError(
                    f"activation_cache {self.folder}: made with {key}={record.get(key)!r}, this run has "
                    f"{self.identity[key]!r}; use another folder"
                )
        cached = dict(zip(record.get("hooks", []), record.get("widths", []), strict=False))
        missing = [h for h in self.hooks if h not in cached]
        if missing:
            raise SuperpositionError(
                f"activation_cache {self.folder}: made with hook_name={list(cached)!r}, this run has "
                f"{self.hooks!r} ({missing[0]} is not cached); use another folder"
            )
        self.writable = list(cached) == self.hooks  # rows appended must have every column
        self.sha = dict(record.get("sha256", {}))
        rows = record.get("file_rows", {})
        if isinstance(rows, dict):
            self.file_rows = {k: v for k, v in rows.items() if isinstance(v, int) and v > 0}

    def _check_columns(self, first: str | None) -> None:
        if first is None:
            return
        features = _datasets().Dataset.from_file(str(self.folder / first)).features
        for hook, width in zip(self.hooks, self.widths, strict=True):
            if hook not in features and self.foreign and self.aliases.get(hook) in features:
                self.columns[hook] = self.aliases[hook]
            col = self.columns[hook]
            if col not in features:
                raise SuperpositionError(
                    f"activation_cache {self.folder}: has no column {hook!r} (columns: "
                    f"{', '.join(features)}); made for another hook"
                )
            shape = tuple(getattr(features[col], "shape", ()))
            if shape != (self.context_size, width):
                raise SuperpositionError(
                    f"activation_cache {self.folder}: column {col} is {shape}, this run needs "
                    f"(context_size {self.context_size}, d_in {width})"
                )
        if "token_ids" not in features:
            raise SuperpositionError(
                f"activation_cache {self.folder}: has no token_ids column (needed to leave special tokens "
                "out); write the cache with token ids"
            )

    @property
    def rows(self) -> int:
        return sum(n for _, n in self.files)

    # ------------------------------------------------------------------ reading
    def read(self, a: int, b: int) -> tuple[Tensor, Tensor] | None:
        """Rows [a, b) (a foreign cache: cycled) as (activations (n, ctx, Σ d_in), token_ids
        (n, ctx)); None if a file they need is damaged (after a notice)."""
        n = self.rows
        if self.foreign and n:
            idx = np.arange(a, b) % n
        elif b > n:
            return None
        else:
            idx = np.arange(a, b)
        ds = _datasets()
        acts, ids, start = [], [], 0
        for name, rows in self.files:
            lo, hi = start, start + rows
            start = hi
            take = idx[(idx >= lo) & (idx < hi)] - lo
            if not take.size:
                continue
            if not self._verify(name):
                return None
            part = ds.Dataset.from_file(str(self.folder / name)).with_format("numpy")
            got = part[take] if take.size < rows else part[:]
            acts.append(np.concatenate([got[self.columns[h]] for h in self.hooks], axis=-1))
            ids.append(got["token_ids"])
        # the rows of each file came back in order; put them back in the order asked for
        order = np.argsort(np.argsort(idx, kind="stable"), kind="stable")
        x = torch.from_numpy(np.concatenate(acts)[order].astype(np.float32, copy=False))
        t = torch.from_numpy(np.concatenate(ids)[order].astype(np.int64))
        return x, t

    def _verify(self, name: str) -> bool:
        if name in self.verified or name not in self.sha:
            return True
        if self.sha[name] == "damaged":  # torn or missing when the cache was opened (said then)
            return False
        try:
            ok = sha256_file(self.folder / name) == self.sha[name]
        except OSError:
            ok = False
        if not ok:
            print(
                f"activation store: {self.folder / name} is damaged (it does not match its checksum); "
                "computing its activations again",
                file=sys.stderr,
            )
            return False
        self.verified.add(name)
        return True

    # ------------------------------------------------------------------ writing
    def features(self):
        ds = _datasets()
        cols = {
            h: ds.Array2D(shape=(self.context_size, w), dtype="float32")
            for h, w in zip(self.hooks, self.widths, strict=True)
        }
        cols["token_ids"] = ds.Sequence(ds.Value("int32"), length=self.context_size)
        return ds.Features(cols)

    def file_name(self, buffer: int, rank: int | None = None) -> str:
        """The file rank `rank` (default: this one) writes its share of a buffer to."""
        return f"data-{buffer:06d}-rank{self.comm.rank if rank is None else rank:03d}.arrow"

    def file_of(self, a: int, b: int) -> str | None:
        """The file that holds exactly rows [a, b), if one does (for rewriting a damaged one)."""
        start = 0
        for name, rows in self.files:
            if (start, start + rows) == (a, b):
                return name
            start += rows
        return None

    def write(self, buffer: int, acts: Tensor, ids: Tensor, name: str | None = None) -> str:
        """This rank's rows of a buffer as its own Arrow file (written under a temporary name and
        renamed). Returns the file name; it is listed by `commit`."""
        ds = _datasets()
        name = name or self.file_name(buffer)
        widths = np.cumsum([0, *self.widths])
        a = acts.detach().float().cpu().numpy()
        data = {h: a[..., widths[j] : widths[j + 1]] for j, h in enumerate(self.hooks)}
        data["token_ids"] = ids.cpu().numpy().astype(np.int32)
        tmp = self.folder / f".tmp-{buffer}-{self.comm.rank}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        ds.Dataset.from_dict(data, features=self.features()).save_to_disk(str(tmp), num_shards=1)
        pause_for_tests()
        arrow = next(tmp.glob("*.arrow"))
        arrow.replace(self.folder / name)
        shutil.rmtree(tmp, ignore_errors=True)
        pause_for_tests()
        return name

    def commit(self, names: list[str], rows: list[int], replace: bool = False) -> None:
        """List newly written files (rank 0; every rank's file is whole): their checksums into
        the record, then state.json, both replaced atomically."""
        if not replace:
            self.files += list(zip(names, rows, strict=True))
        if not self.comm.main:
            return
        for name in names:
            self.sha[name] = sha256_file(self.folder / name)
            self.verified.add(name)
        files = [n for n, _ in self.files]
        record = {**self.identity, "hooks": self.hooks, "widths": self.widths, "rows": self.rows,
                  "files": files, "file_rows": dict(self.files), "sha256": self.sha}  # fmt: skip
        atomic_write_text(self.folder / RECORD, json.dumps(record, indent=1))
        if not (self.folder / INFO).is_file():
            info = _datasets().DatasetInfo(features=self.features())
            info.write_to_directory(str(self.folder))
        state = {
            "_data_files": [{"filename": n} for n in files],
            "_fingerprint": hashlib.sha256("\n".join(files).encode()).hexdigest()[:16],
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }
        atomic_write_text(self.folder / STATE, json.dumps(state, indent=2))
