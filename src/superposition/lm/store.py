"""The activation store: runs the model over packed text and serves shuffled activation batches.

Training sequences are grouped into *buffers* of `buffer_sequences` sequences. Buffer i is
always the same sequences (the corpus is cycled when it runs out), its activations at the hook
(special tokens left out) are shuffled with a seed derived from (seed, i), and batches are taken
from it in order and across buffers. So the stream of batches is a pure function of the config,
and its position (buffer, offset) is all a checkpoint needs to resume exactly.

With a cache folder, buffer i is written as `shard_{i:06d}.safetensors` and recorded in
`manifest.json` (model, hook, data, context size, ...); later runs with the same settings read
the shards instead of running the model, and a cache made with other settings is refused.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from superposition.errors import SuperpositionError
from superposition.files import TargetLock, atomic_write_text, pause_for_tests, sha256_file
from superposition.lm.data import packed_sequences, special_mask, split_sequences, texts
from superposition.lm.hooks import HookedModel, read_names, sae_inputs
from superposition.seeding import derive_seed

MANIFEST = "manifest.json"


class ActivationStore:
    def __init__(
        self,
        lm,
        hooked: HookedModel,
        hook_name: str,
        *,
        dataset_path: str,
        context_size: int,
        prepend_bos: bool,
        buffer_sequences: int,
        model_batch_size: int,
        seed: int = 0,
        text_column: str | None = None,
        cache: str | Path | None = None,
        holdout: bool = False,
        device: str = "cpu",
    ) -> None:
        if context_size > lm.n_ctx:
            raise SuperpositionError(
                f"context_size: {context_size} is longer than the model allows ({lm.n_ctx})"
            )
        self.names = read_names(hook_name)  # one hook, or a transcoder's pair (rows [x | y])
        for name in self.names:
            hooked.parse(name)
        self.lm, self.hooked, self.hook_name = lm, hooked, hook_name
        self.dataset_path, self.text_column = dataset_path, text_column
        self.context_size, self.prepend_bos = context_size, prepend_bos
        self.buffer_sequences, self.model_batch_size = buffer_sequences, model_batch_size
        self.seed, self.holdout, self.device = seed, holdout, device
        self.d_in = sum(hooked.widths(hook_name))  # width of a row
        self.cache = Path(cache).expanduser().absolute() if cache else None
        self._cache_lock = TargetLock(self.cache, "activation_cache") if self.cache else None
        if self._cache_lock is not None:  # one run uses a cache at a time, from before it writes anything
            self._cache_lock.acquire()
        self.identity = {
            "model_name": lm.name,
            "hook_name": hook_name,
            "dataset_path": dataset_path,
            "text_column": text_column,
            "context_size": context_size,
            "prepend_bos": prepend_bos,
            "buffer_sequences": buffer_sequences,
            "holdout": holdout,
            "d_in": self.d_in,
        }
        self.manifest = self._open_cache() if self.cache else None
        self.buffer_index, self.offset = 0, 0
        self._buffer: Tensor | None = None
        self._seqs: Iterator[Tensor] | None = None
        self._seq_pos = 0
        self.epochs_started = 1
        self.model_tokens = 0  # tokens run through the model (not counting cache reads)

    @classmethod
    def for_run(cls, cfg, lm, hooked: HookedModel, holdout: bool = False) -> ActivationStore:
        """The store of a `train-sae` run's config (LMSAEConfig); the held-out one never caches."""
        return cls(
            lm,
            hooked,
            cfg.hook_name,
            dataset_path=cfg.dataset_path,
            text_column=cfg.text_column,
            context_size=cfg.context_size,
            prepend_bos=cfg.prepend_bos,
            buffer_sequences=buffer_sequences_for(
                cfg.batch_size_tokens, cfg.n_batches_in_buffer, cfg.context_size
            ),
            model_batch_size=cfg.model_batch_size,
            seed=cfg.seed,
            cache=None if holdout else cfg.activation_cache,
            holdout=holdout,
            device=cfg.device,
        )

    # ------------------------------------------------------------------ sequences
    def _fresh_sequences(self) -> Iterator[Tensor]:
        docs = texts(self.dataset_path, self.text_column)
        return split_sequences(
            packed_sequences(self.lm.tokenizer, docs, self.context_size, self.prepend_bos), self.holdout
        )

    def _cycled(self) -> Iterator[Tensor]:
        for epoch in itertools.count():
            n = 0
            for s in self._fresh_sequences():
                n += 1
                yield s
            if n == 0:
                raise SuperpositionError(
                    f"dataset_path {self.dataset_path}: too little text for one sequence of "
                    f"{self.context_size} tokens"
                )
            if epoch == 0:
                print(
                    f"activation store: the corpus ({n} sequences) ran out; starting it again",
                    file=sys.stderr,
                )
            self.epochs_started += 1

    def first_sequences(self, count: int, quiet: bool = False) -> Tensor:
        """Up to `count` sequences from one pass over the corpus (no repeats): for evaluation
        and dashboards, where a repeated sequence would only duplicate examples."""
        out = list(itertools.islice(self._fresh_sequences(), count))
        if not out:
            raise SuperpositionError(
                f"dataset_path {self.dataset_path}: too little text for one sequence of {self.context_size} "
                "tokens"
            )
        if len(out) < count and not quiet:
            print(
                f"activation store: only {len(out)} {'held-out ' if self.holdout else ''}sequences in the "
                "corpus "
                f"(asked for {count}); using them all",
                file=sys.stderr,
            )
        return torch.stack(out)

    def sequences(self, start: int, count: int) -> Tensor:
        """Training sequences [start, start + count) of the cycled corpus, (count, context_size)."""
        if self._seqs is None or self._seq_pos > start:
            self._seqs, self._seq_pos = self._cycled(), 0
        for _ in itertools.islice(self._seqs, start - self._seq_pos):
            pass
        out = list(itertools.islice(self._seqs, count))
        self._seq_pos = start + count
        return torch.stack(out)

    # ------------------------------------------------------------------ activations
    @torch.no_grad()
    def activations(self, ids: Tensor) -> Tensor:
        """Hook activations of sequences (n, ctx) at non-special positions: (tokens, d_in), float32;
        for a hook pair, the two side by side."""
        parts = []
        for chunk in ids.split(self.model_batch_size):
            chunk = chunk.to(self.device)
            cache = self.hooked.run_with_cache(chunk, self.names)
            act = torch.cat([sae_inputs(cache[n]) for n in self.names], -1)
            keep = ~special_mask(self.lm.tokenizer, chunk.cpu())
            parts.append(act.float().cpu()[keep])
            self.model_tokens += chunk.numel()
        return torch.cat(parts)

    def _compute_buffer(self, i: int) -> Tensor:
        shard = self._read_shard(i)
        if shard is None:
            shard = self.activations(self.sequences(i * self.buffer_sequences, self.buffer_sequences))
            self._write_shard(i, shard)
        gen = torch.Generator().manual_seed(derive_seed(self.seed, f"activation-buffer-{i}"))
        return shard[torch.randperm(shard.shape[0], generator=gen)]

    def sample(self, n: int, generator: torch.Generator | None = None, out: Tensor | None = None) -> Tensor:
        """The next n activations (n, d_in); `generator` is unused: the order is fixed by the seed."""
        parts, need = [], n
        while need:
            if self._buffer is None:
                self._buffer = self._compute_buffer(self.buffer_index)
            take = self._buffer[self.offset : self.offset + need]
            parts.append(take)
            need -= take.shape[0]
            self.offset += take.shape[0]
            if self.offset >= self._buffer.shape[0]:
                self.buffer_index, self.offset, self._buffer = self.buffer_index + 1, 0, None
        x = parts[0] if len(parts) == 1 else torch.cat(parts)
        return x.to(self.device)

    def state_dict(self) -> dict:
        return {"buffer_index": self.buffer_index, "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        self.buffer_index, self.offset, self._buffer = int(state["buffer_index"]), int(state["offset"]), None

    # ------------------------------------------------------------------ disk cache
    def close(self) -> None:
        """Release the cache's lock (held from the store's creation)."""
        if getattr(self, "_cache_lock", None) is not None:
            self._cache_lock.release()

    def __del__(self) -> None:
        self.close()

    def _open_cache(self) -> dict:
        if self.cache.exists() and not self.cache.is_dir():
            raise SuperpositionError(
                f"activation_cache {self.cache}: is a file; give a folder (new or made by a run)"
            )
        for stale in self.cache.glob(
            ".shard_*.tmp-*"
        ):  # a write cut short; we hold the lock, so none is live
            stale.unlink(missing_ok=True)
        path = self.cache / MANIFEST
        if not path.is_file():
            try:
                self.cache.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise SuperpositionError(
                    f"activation_cache {self.cache}: cannot make it ({err.strerror})"
                ) from None
            return {**self.identity, "shards": {}}
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SuperpositionError(f"activation_cache {self.cache}: unreadable manifest ({err})") from None
        for key, want in self.identity.items():
            if manifest.get(key) != want:
                raise SuperpositionError(
                    f"activation_cache {self.cache}: made with {key}={manifest.get(key)!r}, "
                    f"this run has {want!r}; use another folder"
                )
        return manifest

    def _read_shard(self, i: int) -> Tensor | None:
        """Shard i if the manifest lists it and it matches its checksum; a damaged or missing
        shard (a write cut short by a crash) is rebuilt from the model instead, with a notice."""
        if self.manifest is None or str(i) not in self.manifest["shards"]:
            return None
        entry = self.manifest["shards"][str(i)]
        file = self.cache / entry["file"]
        try:
            if entry.get("sha256") not in (None, sha256_file(file)):
                raise ValueError("it does not match its checksum")
            return load_file(str(file))["activations"]
        except (OSError, SafetensorError, KeyError, ValueError) as err:
            print(f"activation store: {file} is damaged ({err}); rebuilding it", file=sys.stderr)
            del self.manifest["shards"][str(i)]
            return None

    def _write_shard(self, i: int, acts: Tensor) -> None:
        """Shard file first (temporary name, then renamed), manifest second: a manifest never
        lists a shard that is not whole. One process writes a cache at a time."""
        if self.manifest is None:
            return
        name = f"shard_{i:06d}.safetensors"
        tmp = self.cache / f".{name}.tmp-{os.getpid()}"
        save_file({"activations": acts.contiguous()}, str(tmp))
        pause_for_tests()
        tmp.replace(self.cache / name)
        pause_for_tests()
        self.manifest["shards"][str(i)] = {
            "file": name,
            "n_tokens": int(acts.shape[0]),
            "sha256": sha256_file(self.cache / name),
        }
        self.manifest["n_tokens"] = sum(s["n_tokens"] for s in self.manifest["shards"].values())
        atomic_write_text(self.cache / MANIFEST, json.dumps(self.manifest, indent=1))


def buffer_sequences_for(batch_size_tokens: int, n_batches_in_buffer: int, context_size: int) -> int:
    """Sequences per buffer so that one buffer holds about n_batches_in_buffer batches."""
    return max(1, math.ceil(n_batches_in_buffer * batch_size_tokens / context_size))
