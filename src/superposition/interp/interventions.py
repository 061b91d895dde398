"""Interventions on transcoder latents, to check what an attribution graph claims, and steering.

`intervened_logits` runs the replacement model (each transcoder layer's MLP output = the
transcoder's output + that position's error, fixed at its value on the prompt) with some latents
ablated, clamped or shifted:

    frozen     attention patterns and norm denominators as on the prompt, and MLPs without a
               transcoder fixed at their output on the prompt: the model the graph describes.
               With `recompute=False` every other latent is held at its activation too, and the
               change in a logit (demeaned) or a pre-activation is exactly the graph's edge times
               the change of the source (the direct effect).
    unfrozen   the real model: attention and norms live, MLPs without a transcoder computed.

With no edit, either mode gives the model's own logits (the errors make the replacement exact).
`steer_hook` adds a latent's decoder direction at an SAE's hook (or clamps the latent there), for
generating text with a latent steered.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from superposition.errors import SuperpositionError
from superposition.interp.replacement import ReplacementModel, Trace
from superposition.lm.hooks import read_names, sae_inputs
from superposition.sae.single import as_batched

MODES = ("ablate", "clamp", "add")


@dataclass(frozen=True)
class Edit:
    """Latent `latent` of layer `layer`'s transcoder at position `pos` (None: every position):
    set to 0 (ablate), to `value` (clamp), or shifted by `value` (add)."""

    layer: int
    latent: int
    pos: int | None
    mode: str = "ablate"
    value: float = 0.0

    def apply(self, acts: Tensor) -> Tensor:
        where = slice(None) if self.pos is None else self.pos
        if self.mode == "ablate":
            acts[where, self.latent] = 0
        elif self.mode == "clamp":
            acts[where, self.latent] = self.value
        else:
            acts[where, self.latent] += self.value
        return acts


_NODE = re.compile(r"^(\d+)_(\d+)_(\d+|\*)$")


def parse_nodes(
    text: str, rm: ReplacementModel, n_pos: int, mode: str, value: float, first: int = 0
) -> list[Edit]:
    """`L_f_p,...` (circuit-tracer's latent node ids, as in graph.json; `*` for every position from
    `first`: the positions before it, BOS under circuit-tracer's rule, are not in the graph and are
    refused by name)."""
    if mode not in MODES:
        raise SuperpositionError(f"mode {mode!r}: one of {', '.join(MODES)}")
    edits = []
    for item in (t.strip() for t in text.split(",")):
        m = _NODE.match(item)
        if not m:
            raise SuperpositionError(
                f"nodes {item[:40]!r}: a latent node id layer_latent_position as in graph.json "
                "(e.g. 3_120_5), "
                "or layer_latent_* for every position"
            )
        L, f = int(m.group(1)), int(m.group(2))
        if L not in rm.layers:
            raise SuperpositionError(f"nodes {item!r}: no transcoder at layer {L} (layers {rm.layers})")
        d_sae = rm.d_sae(L)
        if f >= d_sae:
            raise SuperpositionError(f"nodes {item!r}: layer {L}'s transcoder has latents 0..{d_sae - 1}")
        pos = None if m.group(3) == "*" else int(m.group(3))
        if pos is not None and pos >= n_pos:
            raise SuperpositionError(f"nodes {item!r}: the prompt has positions 0..{n_pos - 1}")
        if pos is not None and pos < first:
            raise SuperpositionError(
                f"nodes {item!r}: position {pos} is BOS, left out of attribution graphs (circuit-tracer's "
                f"rule); positions {first}..{n_pos - 1}, or --keep-bos"
            )
        for p in [pos] if pos is not None or first == 0 else range(first, n_pos):
            edit = Edit(L, f, p, mode, value)
            if (
                edit in edits
                or Edit(L, f, None, mode, value) in edits
                or (p is None and any((e.layer, e.latent) == (L, f) for e in edits))
            ):  # two edits of one latent at one position would add up: refused, not summed
                raise SuperpositionError(f"nodes {item!r}: named twice; name each node once")
            edits.append(edit)
    if not edits:
        raise SuperpositionError("nodes: give at least one latent node id")
    return edits


@torch.no_grad()
def intervened_logits(
    rm: ReplacementModel, trace: Trace, edits: list[Edit], frozen: bool, recompute: bool = True
) -> tuple[Tensor, dict[int, Tensor]]:
    """(logits (P, V), each transcoder layer's pre-activations (P, d_sae)) with the edits made.
    With a cross-layer transcoder, layer L's edited latents change what it writes to every layer
    from L on; each MLP output is its latents' writes plus its (fixed) error."""
    reads: dict[int, Tensor] = {}
    pre: dict[int, Tensor] = {}
    acts_of: dict[int, Tensor] = {}
    by_layer: dict[int, list[Edit]] = {}
    for e in edits:
        by_layer.setdefault(e.layer, []).append(e)

    def capture(L):
        def fn(x):
            reads[L] = x

        return fn

    def latents(L) -> Tensor:
        """Layer L's activations, recomputed from what reaches them (or the traced ones), edited."""
        x = reads[L][0].float()
        w = rm.weights[L]
        pre[L] = x @ w["W_enc"].float() + w["b_enc"].float()
        if not recompute:
            acts = trace.acts[L].clone()
        elif rm.clt is not None:
            acts = rm.clt.encode(x, layer=L)
        else:
            acts = rm.transcoders[L].encode(x)
        for e in by_layer.get(L, []):
            acts = e.apply(acts)
        return acts

    def mlp(L):
        def fn(out):
            if rm.clt is not None:
                acts_of[L] = latents(L)
                y = rm.clt.decode_layer([acts_of[i] for i in range(L + 1)], L) + trace.error(L)
                return y[None].to(out.dtype)
            if L not in rm.transcoders:
                return trace.mlp_out[L][None].to(out.dtype) if frozen else None
            x = reads[L][0].float()
            y = rm.transcoders[L].decode(latents(L)) + rm._skip(L, x) + trace.error(L)
            return y[None].to(out.dtype)

        return fn

    fns = {}
    for L in range(rm.n_layers):
        fns[f"blocks.{L}.{rm.read_hook}"] = capture(L)
        fns[f"blocks.{L}.hook_mlp_out"] = mlp(L)
    ids = trace.ids.reshape(1, -1)
    if frozen:
        with rm.frozen(trace.frozen), rm.hooked.hooks(fns):
            logits = rm.model(input_ids=ids, use_cache=False).logits[0]
    else:
        with rm.hooked.hooks(fns):
            logits = rm.model(input_ids=ids, use_cache=False).logits[0]
    return logits.float(), pre


def kl(clean: Tensor, other: Tensor) -> float:
    """KL(clean ‖ other) of two logit vectors, in nats."""
    p = clean.float().log_softmax(-1)
    q = other.float().log_softmax(-1)
    return float((p.exp() * (p - q)).sum())


def steer_hook(sae, hook: str, latent: int, value: float, mode: str) -> dict[str, Callable]:
    """Hooks (for HookedModel.hooks) that steer latent `latent`: `add` adds value · its decoder
    direction to what the SAE writes; `clamp` moves it so the latent reads `value`. For a transcoder
    (blocks.L.mlp) the direction is added to the MLP's output and the latent read from its input."""
    sae = as_batched(sae)
    if mode not in ("add", "clamp"):
        raise SuperpositionError(f"mode {mode!r}: add or clamp")
    t = sae.saved_tensors(0)
    d = t["W_dec"][latent].detach()
    read, write = read_names(hook)[0], read_names(hook)[-1]
    seen: dict[str, Tensor] = {}

    def shift(x: Tensor) -> Tensor:
        if mode == "add":
            return value * d
        z = sae.encode(sae_inputs(seen["x"]).reshape(-1, sae.cfg.d_in).float())[:, latent]
        return (value - z).reshape(*seen["x"].shape[:2], 1) * d

    def capture(x):
        seen["x"] = x

    def steer(x):
        if read == write:
            seen["x"] = x
        s = shift(x).to(x.dtype)
        if x.ndim == 4:  # per-head z: the direction is over heads · d_head
            return x + s.reshape(*s.shape[:-1], *x.shape[-2:]) if s.ndim > 1 else x + s.reshape(x.shape[-2:])
        return x + s

    if read == write:
        return {write: steer}
    return {read: capture, write: steer}
