"""Activation sources that read several places at once, beside the single-hook store (store.py):
what a cross-layer transcoder or a crosscoder trains on. Each gives the trainer this rank's share of
every batch (`sample(n)`) and its position (`state_dict`), so runs resume exactly and train under
torchrun as SAE runs do.

    layer_rows      every layer's (resid_mid, mlp_out) for a CLT: rows (n, 2·n_layers, d_model)
    Paired          several sources on the same tokens for a crosscoder: rows (n, n_sources, d):
                    two models at one hook (one store per model, the same rows of the same sequences),
                    or several hooks of one model (one store, viewed per hook)

Pairing two models: each has its own store built from the same config, so both run on the same
sequences, keep the same (non-special) positions and shuffle them with the same seeded permutation:
row i of one store is row i of the other (a test holds this bit for bit with a model paired with
itself). The models must share the tokenizer and the hook's width (`open_sources` checks both).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from superposition.dist import Comm, shard
from superposition.errors import SuperpositionError
from superposition.lm.evals import capture_into
from superposition.lm.hooks import HookedModel, sae_inputs
from superposition.lm.model import load_model
from superposition.lm.store import ActivationStore, RankView, store_units
from superposition.lm.transfer import same_tokenizer

CLT_INPUT, CLT_OUTPUT = "hook_resid_mid", "hook_mlp_out"


def clt_hooks(n_layers: int) -> list[str]:
    """What a CLT reads, in the order of its rows: mid_0, out_0, mid_1, out_1, ..."""
    return [f"blocks.{L}.{k}" for L in range(n_layers) for k in (CLT_INPUT, CLT_OUTPUT)]


def layer_rows(cfg, lm, hooked: HookedModel, comm: Comm | None = None) -> tuple[ActivationStore, RankView]:
    """A CLT run's store (every layer's resid_mid and mlp_out from one forward pass per batch of
    sequences) and the view the trainer reads: this rank's share, (n, 2·n_layers, d_model)."""
    reads = cfg.model_copy(update={"hook_name": clt_hooks(hooked.n_layers)})
    store = ActivationStore.for_run(reads, lm, hooked, comm=comm)
    return store, RankView(store, comm)


@dataclass
class Source:
    label: str  # model_a / model_b, or the hook name
    model_name: str
    hook: str
    lm: Any
    hooked: HookedModel


def open_sources(cfg) -> list[Source]:
    """A crosscoder run's sources, checked: the same tokenizer, the hook in every model, one width."""
    lm_a = load_model(cfg.model_name, cfg.device, cfg.dtype)
    hooked_a = HookedModel(lm_a.model)
    if cfg.model_name_b is not None:
        lm_b = load_model(cfg.model_name_b, cfg.device, cfg.dtype)
        same_tokenizer(
            lm_a.tokenizer, lm_b.tokenizer, cfg.model_name, cfg.model_name_b, "model_name_b",
            "a crosscoder reads both models on the same tokens",
        )  # fmt: skip
        sources = [
            Source("model_a", cfg.model_name, cfg.hook_name, lm_a, hooked_a),
            Source("model_b", cfg.model_name_b, cfg.hook_name, lm_b, HookedModel(lm_b.model)),
        ]
    else:
        units = store_units(cfg.hook_name, hooked_a)
        sources = [Source(h, cfg.model_name, h, lm_a, hooked_a) for h in units]
    widths = {}
    for s in sources:
        try:
            widths[s.label] = s.hooked.d_in(s.hook)
        except SuperpositionError:
            raise SuperpositionError(
                f"hook_name: {s.hook} is not a hook point of {s.model_name} (blocks.L.<kind>, L in "
                f"0..{s.hooked.n_layers - 1})"
            ) from None
    if len(set(widths.values())) > 1:
        got = ", ".join(f"{k} {v}" for k, v in widths.items())
        raise SuperpositionError(f"hook_name: a crosscoder's sources share one width; these differ ({got})")
    return sources


def source_store(cfg, source: Source, sub: str | None, holdout: bool = False, comm: Comm | None = None):
    """The store of one source of a crosscoder run; with a cache, one cache folder per model."""
    update = {"model_name": source.model_name}
    if cfg.activation_cache and sub:  # a cache holds one model's rows
        update["activation_cache"] = str(Path(cfg.activation_cache) / sub)
    return ActivationStore.for_run(cfg.model_copy(update=update), source.lm, source.hooked, holdout=holdout,
                                   comm=None if holdout else comm)  # fmt: skip


class Paired:
    """Batches (n, n_sources, d) from the sources' stores, this rank's share: one store per model (the
    same rows of the same sequences), or one store over several hooks (viewed per hook)."""

    def __init__(self, cfg, sources: list[Source], comm: Comm | None = None) -> None:
        self.comm = comm or Comm.single()
        if cfg.model_name_b is not None:
            self.stores = [source_store(cfg, s, s.label, comm=self.comm) for s in sources]
            self.view = None
        else:
            self.stores = [source_store(cfg, sources[0], None, comm=self.comm)]
            self.view = RankView(self.stores[0], self.comm)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        if self.view is not None:
            return self.view.sample(n)
        return torch.stack([s.sample(n) for s in self.stores], 1)[shard(n, self.comm)]

    def state_dict(self) -> dict:
        return {"stores": [s.state_dict() for s in self.stores]}

    def load_state_dict(self, state: dict) -> None:
        for s, st in zip(self.stores, state["stores"], strict=True):
            s.load_state_dict(st)

    @property
    def model_tokens(self) -> int:
        return sum(s.model_tokens for s in self.stores)

    def close(self) -> None:
        for s in self.stores:
            s.close()


def source_activations(
    sources: list[Source], ids: Tensor, device: str, logits: bool = True
) -> tuple[Tensor, dict[str, Tensor]]:
    """Every source's activations on sequences ids (b, ctx): (b, ctx, n_sources, d), one forward pass
    per model; and (with `logits`) the clean logits per model name."""
    per_model: dict[int, list[Source]] = {}
    for s in sources:
        per_model.setdefault(id(s.hooked), []).append(s)
    acts, out = {}, {}
    for group in per_model.values():
        seen: dict[str, Tensor] = {}
        if logits:
            hooks = {s.hook: capture_into(seen, s.hook) for s in group}
            out[group[0].model_name] = group[0].hooked.logits(ids.to(device), hooks)
        else:
            seen = group[0].hooked.run_with_cache(ids.to(device), [s.hook for s in group])
        for s in group:
            acts[s.label] = sae_inputs(seen[s.hook]).float()
    return torch.stack([acts[s.label] for s in sources], 2), out
