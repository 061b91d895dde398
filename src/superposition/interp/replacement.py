"""The local replacement model of a prompt (Ameisen et al. 2025, "Circuit Tracing"): the language
model with every MLP replaced by its transcoder plus an error term that makes the output exact, and
with the attention patterns and the norms' denominators frozen at their values on the prompt.
Frozen, the map from the token embeddings, the latents' activations and the errors to every later
pre-activation and logit is linear, so a backward pass gives exact direct effects.

`trace(ids)` runs the real model once and records what freezing needs (patterns per layer, each
norm's denominator) and what the graph's nodes are (latent activations, errors, embeddings).
`frozen(trace)` is a context in which the model's attention and norms replay the recorded values:
run inside it the model computes the same numbers for the same input, and a changed input moves
only through values and linear maps. Norms of two shapes are frozen: LayerNorm (x − mean)/σ·w + b
and RMSNorm x/rms·w (Gemma's (1 + w)); the recomputed output is checked against the module's own on
the traced pass, so a norm of another form is refused in one line, never frozen wrongly.

A layer without a transcoder keeps its MLP, whose whole output is that layer's error node.

Per-layer transcoders (a dict layer -> transcoder) read the MLP's input (`ln2.hook_normalized`)
and write its output. A cross-layer transcoder (sae/clt.py) replaces every MLP at once: layer L's
latents read `hook_resid_mid` and write to the outputs of layers L, L+1, ...; layer L's error is
its MLP output minus what the latents of layers ≤ L write there (circuit-tracer's definitions).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from superposition.errors import SuperpositionError
from superposition.lm.hooks import HookedModel

ATTENTION = "superposition_frozen"


@dataclass
class Frozen:
    """What freezing replays: each attention's pattern (1, heads, P, P) and each norm's
    denominator (1, P, 1), recorded on the traced pass."""

    patterns: dict[int, Tensor] = field(default_factory=dict)
    denominators: dict[int, Tensor] = field(default_factory=dict)
    recording: bool = True


@dataclass
class Trace:
    """One prompt through the real model: the graph's nodes and what freezing needs."""

    ids: Tensor  # (P,)
    emb: Tensor  # (P, d): the residual stream entering block 0
    mlp_in: dict[int, Tensor]  # layer -> (P, d_in): what its transcoder reads
    mlp_out: dict[int, Tensor]  # layer -> (P, d): the MLP's real output
    acts: dict[int, Tensor]  # transcoder layers -> (P, d_sae) activations
    recon: dict[int, Tensor]  # transcoder layers -> (P, d) their output
    logits: Tensor  # (V,) at the last position
    frozen: Frozen
    reads: dict[int, Tensor] = field(default_factory=dict)  # layer -> (P, d) what its latents read

    @property
    def n_pos(self) -> int:
        return int(self.ids.shape[0])

    def error(self, layer: int) -> Tensor:
        """The MLP's output the transcoder misses (all of it where there is none)."""
        return self.mlp_out[layer] - self.recon[layer] if layer in self.recon else self.mlp_out[layer]


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
    """Attention whose pattern is a constant: computed and recorded on the traced pass, replayed
    after. Registered with transformers' AttentionInterface, so every family that dispatches through
    it (Llama, GPT-2, NeoX, ...) is frozen the same way."""
    state: Frozen = module._superposition_frozen
    key_ = id(module)
    if state.recording or key_ not in state.patterns:
        rep = query.shape[1] // key.shape[1]
        k = key.repeat_interleave(rep, 1)
        s = query @ k.transpose(2, 3) * (scaling if scaling is not None else query.shape[-1] ** -0.5)
        if kw.get("softcap"):  # Gemma 2: logits soft-capped before the softmax
            s = kw["softcap"] * torch.tanh(s / kw["softcap"])
        q_len, k_len = s.shape[-2:]
        window = kw.get("sliding_window")
        if window and k_len > window:
            raise SuperpositionError(
                f"prompt: {k_len} tokens is longer than this model's sliding attention window ({window}); "
                "give a shorter prompt"
            )
        causal = torch.ones(q_len, k_len, dtype=torch.bool, device=s.device).tril(k_len - q_len)
        s = s.float().masked_fill(~causal, float("-inf"))
        if attention_mask is not None:
            am = attention_mask[..., :k_len]
            s = s.masked_fill(~am, float("-inf")) if am.dtype == torch.bool else s + am.float()
        pattern = s.softmax(-1).to(query.dtype).detach()
        if not state.recording:
            raise SuperpositionError("attribute: attention ran frozen before it was traced")
        state.patterns[key_] = pattern[:1]
    pattern = state.patterns[key_]
    rep = query.shape[1] // value.shape[1]
    v = value.repeat_interleave(rep, 1)
    out = pattern.to(v.dtype) @ v
    return out.transpose(1, 2).contiguous(), pattern


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, _attention)


def _norm_parts(module: nn.Module) -> tuple[bool, float, Tensor | None, Tensor | None, bool]:
    """(centres, eps, weight, bias, plus_one) of a LayerNorm or an RMSNorm, or an error."""
    if isinstance(module, nn.LayerNorm):
        return True, module.eps, module.weight, module.bias, False
    eps = getattr(module, "variance_epsilon", None) or getattr(module, "eps", None)
    weight = getattr(module, "weight", None)
    if eps is None or weight is None:
        raise SuperpositionError(
            f"attribute: the norm {type(module).__name__} is neither a LayerNorm nor an RMSNorm; it cannot "
            "be frozen"
        )
    return False, float(eps), weight, getattr(module, "bias", None), "Gemma" in type(module).__name__


def _norm_hook(state: Frozen):
    def hook(module, args, output):
        x = args[0]
        centres, eps, w, b, plus_one = _norm_parts(module)
        xf = x.float()
        if centres:
            xf = xf - xf.mean(-1, keepdim=True)
        key_ = id(module)
        if state.recording:
            var = xf.pow(2).mean(-1, keepdim=True)
            state.denominators[key_] = torch.sqrt(var + eps)[:1].detach()
        y = xf / state.denominators[key_]
        y = y.to(x.dtype) * ((1 + w) if plus_one else w)
        if b is not None:
            y = y + b
        if state.recording and not torch.allclose(y, output, rtol=1e-4, atol=1e-5):
            raise SuperpositionError(
                f"attribute: the norm {type(module).__name__} computes something other than a LayerNorm or "
                "RMSNorm; it cannot be frozen"
            )
        return y

    return hook


class ReplacementModel:
    """A language model with transcoders at some of its MLPs (layer -> SAE whose `transcodes`), or
    with a cross-layer transcoder replacing all of them."""

    def __init__(self, hooked: HookedModel, transcoders) -> None:
        from superposition.sae.clt import CrossLayerTranscoder

        self.clt = transcoders if isinstance(transcoders, CrossLayerTranscoder) else None
        self.hooked, self.model = hooked, hooked.model
        self.n_layers = hooked.n_layers
        if self.clt is not None:
            clt = self.clt
            width = hooked.widths("blocks.0.hook_resid_mid")[0]
            if clt.n_layers != hooked.n_layers or clt.d_model != width:
                raise SuperpositionError(
                    f"attribute: the CLT spans {clt.n_layers} layers of width {clt.d_model}, but the model "
                    f"has {hooked.n_layers} of width {width}"
                )
            self.transcoders = {}
            self.layers = list(range(clt.n_layers))
            self.read_hook = "hook_resid_mid"
            self.weights = {
                L: {"W_enc": clt.W_enc[L].detach(), "b_enc": clt.b_enc[L].detach()} for L in self.layers
            }
            self.decoders = {
                L: {L2: clt.W_dec[L][:, L2 - L].detach() for L2 in range(L, clt.n_layers)}
                for L in self.layers
            }
        else:
            if not transcoders:
                raise SuperpositionError("attribute: needs transcoders (a run of blocks.L.mlp transcoders)")
            for layer, sae in transcoders.items():
                if not getattr(sae, "transcodes", False):
                    raise SuperpositionError(
                        f"attribute: the SAE at layer {layer} is a {sae.cfg.architecture}, not a transcoder"
                    )
                if not 0 <= layer < hooked.n_layers:
                    raise SuperpositionError(
                        f"attribute: a transcoder for layer {layer}, but the model has layers "
                        f"0..{hooked.n_layers - 1}"
                    )
            self.transcoders = dict(sorted(transcoders.items()))
            self.layers = list(self.transcoders)
            self.read_hook = "ln2.hook_normalized"
            self.weights = {
                L: {k: v.detach() for k, v in s.saved_tensors(0).items()} for L, s in transcoders.items()
            }
            self.decoders = {L: {L: self.weights[L]["W_dec"]} for L in self.layers}
        self.unembed = self.model.get_output_embeddings().weight.detach()  # (V, d)
        # every norm (ln1, ln2, the final norm; Gemma's post-norms; q/k norms, which the frozen pattern
        # makes moot): frozen, or the map would not be linear
        self.norms = [
            m for m in self.model.modules() if isinstance(m, nn.LayerNorm) or "RMSNorm" in type(m).__name__
        ]
        _register_attention()

    def d_sae(self, layer: int) -> int:
        return int(self.weights[layer]["W_enc"].shape[1])

    def latent_output(self, layer: int, latent: int) -> Tensor:
        """Everything latent `latent` of `layer` writes, summed over the layers it writes to (d,):
        what a logit-lens label reads."""
        return sum(dec[latent] for dec in self.decoders[layer].values())

    # ------------------------------------------------------------------ freezing
    @contextmanager
    def frozen(self, state: Frozen):
        """Attention and norms replay `state` (or record into it while `state.recording`)."""
        attns = [self.hooked.attention(L) for L in range(self.n_layers)]
        cfgs = {id(c): c for c in (self.model.config, *(getattr(a, "config", None) for a in attns)) if c}
        before = {k: c._attn_implementation for k, c in cfgs.items()}
        handles = [n.register_forward_hook(_norm_hook(state)) for n in self.norms]
        for a in attns:
            a._superposition_frozen = state
        try:
            for c in cfgs.values():
                c._attn_implementation = ATTENTION
            yield
        finally:
            for h in handles:
                h.remove()
            for k, c in cfgs.items():
                c._attn_implementation = before[k]
            for a in attns:
                del a._superposition_frozen
        if state.recording and len(state.patterns) != self.n_layers:
            raise SuperpositionError(
                f"attribute: {type(self.model).__name__} does not run its attention through transformers' "
                "attention interface; its patterns cannot be frozen"
            )

    # ------------------------------------------------------------------ the traced pass
    @torch.no_grad()
    def trace(self, ids: Tensor) -> Trace:
        """The real model on one prompt (P,), recording what the graph and the freezing need."""
        ids = ids.reshape(1, -1).to(self.unembed.device)
        names = ["blocks.0.hook_resid_pre"]
        for L in range(self.n_layers):
            names += [f"blocks.{L}.ln2.hook_normalized", f"blocks.{L}.hook_mlp_out"]
            if self.read_hook != "ln2.hook_normalized":
                names.append(f"blocks.{L}.{self.read_hook}")
        cache: dict[str, Tensor] = {}

        def keep(name):
            def fn(x):
                cache[name] = x[0].detach()

            return fn

        state = Frozen()
        with self.frozen(state), self.hooked.hooks({n: keep(n) for n in names}):
            logits = self.model(input_ids=ids, use_cache=False).logits[0, -1]
        state.recording = False
        mlp_in = {L: cache[f"blocks.{L}.ln2.hook_normalized"] for L in range(self.n_layers)}
        reads = {L: cache[f"blocks.{L}.{self.read_hook}"] for L in self.layers}
        acts, recon = {}, {}
        if self.clt is not None:
            for L in self.layers:
                acts[L] = self.clt.encode(reads[L].to(self.clt.W_enc.dtype), layer=L)
            for L2 in range(self.n_layers):
                recon[L2] = self.clt.decode_layer([acts[L] for L in range(L2 + 1)], L2).to(mlp_in[L2].dtype)
        else:
            for L, sae in self.transcoders.items():
                a = sae.encode(mlp_in[L])
                acts[L] = a
                recon[L] = sae.decode(a) + self._skip(L, mlp_in[L])
        return Trace(
            ids=ids[0],
            emb=cache["blocks.0.hook_resid_pre"],
            mlp_in=mlp_in,
            mlp_out={L: cache[f"blocks.{L}.hook_mlp_out"] for L in range(self.n_layers)},
            acts=acts,
            recon=recon,
            logits=logits.float(),
            frozen=state,
            reads=reads,
        )

    def _skip(self, layer: int, x: Tensor) -> Tensor:
        w = self.weights.get(layer, {}).get("W_skip")
        return x @ w.T if w is not None else torch.zeros((), dtype=x.dtype, device=x.device)

    # ------------------------------------------------------------------ the frozen pass
    def writes(self, trace: Trace, layer: int) -> Tensor:
        """What layer L's MLP writes apart from a skip transcoder's skip path (P, d): the latents'
        decoded sum, b_dec and the error; the frozen pass adds the skip path as a live function."""
        return trace.mlp_out[layer] - self._skip(layer, trace.mlp_in[layer])

    def frozen_forward(
        self,
        trace: Trace,
        emb: Tensor,
        writes: dict[int, Tensor],
    ) -> tuple[dict[int, Tensor], Tensor]:
        """The frozen model on (B, P, d) inputs: `emb` enters block 0, `writes[L]` (see `writes`) is
        layer L's MLP output, plus the skip path of a skip transcoder. Returns what each layer's
        latents read (B, P, d_in: the transcoder's input, or resid_mid for a CLT) and the final
        norm's output (B, P, d)."""
        ln2: dict[int, Tensor] = {}
        reads: dict[int, Tensor] = {}

        def capture(into, L):
            def fn(x):
                into[L] = x

            return fn

        def replace(L):
            def fn(_):
                if "W_skip" in self.weights.get(L, {}):
                    return writes[L] + self._skip(L, ln2[L])
                return writes[L]

            return fn

        fns = {"blocks.0.hook_resid_pre": lambda _: emb}
        for L in range(self.n_layers):
            fns[f"blocks.{L}.ln2.hook_normalized"] = capture(ln2, L)
            if self.read_hook != "ln2.hook_normalized":
                fns[f"blocks.{L}.{self.read_hook}"] = capture(reads, L)
            fns[f"blocks.{L}.hook_mlp_out"] = replace(L)
        ids = trace.ids.reshape(1, -1).expand(emb.shape[0], -1)
        with self.frozen(trace.frozen), self.hooked.hooks(fns):
            final = self.model.base_model(input_ids=ids, use_cache=False).last_hidden_state
        return (reads if self.read_hook != "ln2.hook_normalized" else ln2), final

    def logits_of(self, final: Tensor) -> Tensor:
        """Logits from the final norm's output (the unembedding and its bias, if any)."""
        head = self.model.get_output_embeddings()
        return head(final)
