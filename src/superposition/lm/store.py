"""The activation store: runs the model over packed text and serves shuffled activation batches.

Training sequences are grouped into *buffers* of `buffer_sequences` sequences. Buffer i is
always the same sequences (the corpus is cycled when it runs out), its activations at the hooks
(special tokens left out; several hooks side by side in one row) are shuffled with a seed derived
from (seed, i), and batches are taken from it in order and across buffers. So the stream of
batches is a pure function of the config, and its position (buffer, offset) is all a checkpoint
needs to resume exactly, with any number of processes.

Distributed (a `Comm` of several ranks): each rank runs the model on its own contiguous share of
a buffer's sequences, and the shares are gathered in rank order, so every rank holds the very
buffer one process would have computed; `RankView` then hands each rank its share of each batch.

With a cache folder (lm/cache.py: the Arrow layout SAELens writes), every rank writes its share
of each new buffer there and later runs read it instead of running the model.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from superposition.atomic import TargetLock
from superposition.dist import Comm, shard
from superposition.errors import SuperpositionError
from superposition.lm.cache import ActivationCache
from superposition.lm.data import packed_sequences, special_mask, split_sequences, texts
from superposition.lm.hooks import HookedModel, expand_hooks, hook_list, read_names, sae_inputs, several_hooks
from superposition.seeding import derive_seed


def store_units(hook_name: str | list[str], hooked: HookedModel) -> list[str]:
    """What a `hook_name` setting trains one SAE (or transcoder) at each, in forward order: a list or
    pattern expanded against the model, or the one name."""
    units = expand_hooks(hook_list(hook_name), hooked.n_layers) if several_hooks(hook_name) else [hook_name]
    for unit in units:
        for name in read_names(unit):
            hooked.parse(name)
    return units


class ActivationStore:
    def __init__(
        self,
        lm,
        hooked: HookedModel,
        hook_name: str | list[str],
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
        comm: Comm | None = None,
    ) -> None:
        if context_size > lm.n_ctx:
            raise SuperpositionError(
                f"context_size: {context_size} is longer than the model allows ({lm.n_ctx})"
            )
        self.comm = comm or Comm.single()
        # one hook, a transcoder's pair, or several hooks: rows [h1 | h2 | ...]
        self.units = store_units(hook_name, hooked)
        self.names = [n for unit in self.units for n in read_names(unit)]
        self.widths = [hooked.d_in(n) for n in self.names]
        check_buffer_ranks(self.comm.world, buffer_sequences)
        self.lm, self.hooked, self.hook_name = lm, hooked, hook_name
        self.dataset_path, self.text_column = dataset_path, text_column
        self.context_size, self.prepend_bos = context_size, prepend_bos
        self.buffer_sequences, self.model_batch_size = buffer_sequences, model_batch_size
        self.seed, self.holdout, self.device = seed, holdout, device
        self.d_in = sum(self.widths)  # width of a row
        folder = Path(cache).expanduser().absolute() if cache else None
        # one run uses a cache at a time, from before it writes anything (its rank 0 holds the lock)
        self._cache_lock = TargetLock(folder, "activation_cache") if folder and self.comm.main else None
        if self._cache_lock is not None:
            self._cache_lock.acquire()
        self.identity = {
            "model_name": lm.name,
            "dataset_path": dataset_path,
            "text_column": text_column,
            "context_size": context_size,
            "prepend_bos": prepend_bos,
            "holdout": holdout,
        }
        self.cache = (
            ActivationCache(
                folder, self.identity, self.names, self.widths, context_size, self.comm, hooked.module_names()
            )
            if folder
            else None
        )
        if self.cache is not None and self.cache.foreign:
            self.model_tokens = 0
            self._check_foreign_cache()
        self.buffer_index, self.offset = 0, 0
        self._buffer: Tensor | None = None
        self._seqs: Iterator[Tensor] | None = None
        self._seq_pos = 0
        self.epochs_started = 1
        self.model_tokens = 0  # tokens this rank ran through the model (not counting cache reads)

    @classmethod
    def for_run(cls, cfg, lm, hooked: HookedModel, holdout: bool = False, comm: Comm | None = None):
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
            comm=None if holdout else comm,
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
    def forward(self, ids: Tensor) -> Tensor:
        """Hook activations of sequences (n, ctx) at every position: (n, ctx, d_in), float32;
        several hooks side by side."""
        from superposition.cpu import large_work
        from superposition.progress import tqdm

        parts = []
        chunks = ids.split(self.model_batch_size)
        # a buffer's forward passes can take minutes on a CPU: a bar once they take more than 3 s
        what = f"activations of {ids.shape[0]} sequences"
        bar = tqdm(
            chunks, desc=what, unit="batch", delay=3, leave=False, disable=None if len(chunks) > 1 else True
        )
        with large_work():  # inside an SAE step that runs on one thread, the model still gets every thread
            for chunk in bar:
                chunk = chunk.to(self.device)
                cache = self.hooked.run_with_cache(chunk, self.names)
                parts.append(torch.cat([sae_inputs(cache[n]) for n in self.names], -1).float().cpu())
                self.model_tokens += chunk.numel()
        return torch.cat(parts)

    def activations(self, ids: Tensor) -> Tensor:
        """Hook activations of sequences (n, ctx) at non-special positions: (tokens, d_in)."""
        return self.forward(ids)[self._keep(ids)]

    def _keep(self, ids: Tensor) -> Tensor:
        return ~special_mask(self.lm.tokenizer, ids.cpu())

    def _compute_buffer(self, i: int) -> Tensor:
        """Buffer i, shuffled: this rank's share of its sequences from the cache or the model,
        then every rank's share gathered (in rank order, so the same rows as one process)."""
        if os.environ.get("SUPERPOSITION_TEST_FAIL_RANK") == str(self.comm.rank) and self.comm.distributed:
            raise SuperpositionError(
                f"rank {self.comm.rank}: failing on purpose (SUPERPOSITION_TEST_FAIL_RANK)"
            )
        n = self.buffer_sequences
        mine = shard(n, self.comm)
        a, b = i * n + mine.start, i * n + mine.stop
        cache = self.cache
        got = cache.read(a, b) if cache is not None else None
        append = cache is not None and cache.writable and cache.rows == i * n  # a new buffer for the cache
        if got is None:
            ids = self.sequences(a, b - a)
            acts = self.forward(ids)
            if append:
                cache.write(i, acts, ids)
            elif cache is not None and cache.writable and self.comm.world == 1 and b <= cache.rows:
                damaged = cache.file_of(a, b)  # a damaged file of one process's buffer: write it again
                if damaged is not None:
                    cache.write(i, acts, ids, name=damaged)
                    cache.commit([damaged], [b - a], replace=True)
        else:
            acts, ids = got
        local = acts[self._keep(ids)]
        full = self.comm.gather_rows(local)  # also: every rank's cache file is whole from here on
        if append:
            ranks = [Comm(r, self.comm.world) for r in range(self.comm.world)]
            cache.commit(
                [cache.file_name(i, r.rank) for r in ranks], [len(range(n)[shard(n, r)]) for r in ranks]
            )
        gen = torch.Generator().manual_seed(derive_seed(self.seed, f"activation-buffer-{i}"))
        return full[torch.randperm(full.shape[0], generator=gen)]

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

    def random_rows(self, n: int, generator: torch.Generator) -> Tensor:
        """n rows drawn (with replacement) from the current buffer, without moving the stream: the
        candidates dead-latent resampling looks at. Every rank draws the same rows."""
        if self._buffer is None:
            self._buffer = self._compute_buffer(self.buffer_index)
        idx = torch.randint(self._buffer.shape[0], (n,), generator=generator)
        return self._buffer[idx].to(self.device)

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

    def _check_foreign_cache(self) -> None:
        """A cache another tool wrote (SAELens): its BOS setting from its token ids, and the model
        and hooks by recomputing its first row (within 5%: it may have been written in bfloat16)."""
        cache = self.cache
        if cache.rows == 0:
            raise SuperpositionError(f"activation_cache {cache.folder}: holds no rows")
        acts, ids = cache.read(0, 1)
        bos = self.lm.tokenizer.bos_token_id
        starts = bool(ids[0, 0] == bos) if bos is not None else False
        if starts != self.prepend_bos:
            raise SuperpositionError(
                f"activation_cache {cache.folder}: made with prepend_bos={starts}, this run has "
                f"{self.prepend_bos}; use another folder"
            )
        keep = self._keep(ids)
        want, have = self.forward(ids)[keep], acts[keep]
        start = 0
        for name, width in zip(self.names, self.widths, strict=True):
            a, b = have[:, start : start + width], want[:, start : start + width]
            start += width
            rel = float((a - b).norm() / b.norm().clamp(min=1e-12))
            if not rel < 0.05:
                raise SuperpositionError(
                    f"activation_cache {cache.folder}: its {name} activations differ from "
                    f"{self.lm.name}'s by {rel:.0%} on its first sequence; made with another model or hook, "
                    "use another folder"
                )


class RankView:
    """What one rank's SAE trainer reads from a store: its share of each batch of n rows (data-
    parallel: the rows `shard` gives it), optionally only some hooks' columns, as (n, hooks, d)
    when there are several hooks (one SAE instance per hook)."""

    def __init__(self, store: ActivationStore, comm: Comm | None = None, hooks: list[int] | None = None):
        self.store, self.comm = store, comm or Comm.single()
        units = store.units
        self.hooks = list(range(len(units))) if hooks is None else hooks
        self.stacked = len(units) > 1
        if self.stacked:  # every unit has the same width: a hook's, or a transcoder's input + output
            d = sum(store.widths) // len(units)
            self.cols = torch.cat([torch.arange(h * d, (h + 1) * d) for h in self.hooks])
            self.shape = (len(self.hooks), d)

    def _view(self, x: Tensor) -> Tensor:
        if not self.stacked:
            return x
        if len(self.hooks) != len(self.store.units):
            x = x[:, self.cols.to(x.device)]
        return x.view(x.shape[0], *self.shape)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self._view(self.store.sample(n)[shard(n, self.comm)])

    def random_rows(self, n: int, generator: torch.Generator) -> Tensor:
        return self._view(self.store.random_rows(n, generator))

    def state_dict(self) -> dict:
        return self.store.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.store.load_state_dict(state)


def check_buffer_ranks(world: int, buffer_sequences: int) -> None:
    """Every rank reads its own share of each buffer's sequences, so it needs one."""
    if world > buffer_sequences:
        raise SuperpositionError(
            f"nproc: {world} ranks but a buffer holds {buffer_sequences} sequences; every rank "
            "needs one (fewer ranks, or more n_batches_in_buffer / batch_size_tokens)"
        )


def buffer_sequences_for(batch_size_tokens: int, n_batches_in_buffer: int, context_size: int) -> int:
    """Sequences per buffer so that one buffer holds about n_batches_in_buffer batches."""
    return max(1, math.ceil(n_batches_in_buffer * batch_size_tokens / context_size))
