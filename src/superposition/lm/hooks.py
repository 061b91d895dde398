"""Hook points named and meaning exactly what they mean in TransformerLens (and so in SAELens):

    blocks.L.hook_resid_pre       residual stream entering block L
    blocks.L.ln1.hook_normalized  the attention's input: ln1's output (its gain and bias applied)
    blocks.L.attn.hook_z          per-head attention values before the output projection,
                                  (batch, pos, n_heads, d_head); SAEs see them flattened
    blocks.L.hook_attn_out        output of block L's attention (after the output projection)
    blocks.L.hook_resid_mid       residual stream between attention and MLP: resid_pre + attn_out
    blocks.L.hook_mlp_in          the MLP's input *before* its norm (resid_mid; resid_pre in
                                  parallel-attention models), as TransformerLens defines it
    blocks.L.ln2.hook_normalized  the MLP's input after its norm: what the MLP's first layer reads
    blocks.L.mlp.hook_post        the MLP's hidden activation, after its nonlinearity (and gating):
                                  what its output projection reads, width d_mlp
    blocks.L.hook_mlp_out         output of block L's MLP
    blocks.L.hook_resid_post      residual stream leaving block L

`blocks.L.mlp` names the pair (ln2.hook_normalized, hook_mlp_out) a transcoder reads and predicts.
TransformerLens folds the norms' gains into the next layer by default (fold_ln); the values here are
the model's own, as TransformerLens computes them without folding. `HOOK_MEANINGS` holds these
sentences, and an SAE's cfg.json records the meaning of its hook.

`Family` finds the blocks, norms, attention, MLP and projections of Llama-style (Llama, Mistral,
Qwen, SmolLM, Gemma, ...), GPT-2-style, GPT-NeoX-style and OPT-style models. Captures stop the
forward pass after the last hooked block; replacements (splicing an SAE in) run the whole model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from superposition.errors import SuperpositionError

# where each kind fires within a block, in forward order
KINDS = (
    "hook_resid_pre", "ln1.hook_normalized", "attn.hook_z", "hook_attn_out", "hook_resid_mid", "hook_mlp_in",
    "ln2.hook_normalized", "mlp.hook_post", "hook_mlp_out", "hook_resid_post",
)  # fmt: skip
_ORDER = KINDS
_NAME = re.compile(r"^blocks\.(\d+)\.(" + "|".join(k.replace(".", r"\.") for k in KINDS) + ")$")
MLP_PAIR = re.compile(r"^blocks\.(\d+)\.mlp$")
MLP_READ = "ln2.hook_normalized"  # what a transcoder at blocks.L.mlp reads

HOOK_MEANINGS = {
    "hook_resid_pre": "the residual stream entering block {L}",
    "ln1.hook_normalized": "the attention's input in block {L}: its norm's output (gain and bias applied)",
    "attn.hook_z": "block {L}'s per-head attention values before the output projection, heads flattened",
    "hook_attn_out": "the output of block {L}'s attention, after the output projection",
    "hook_resid_mid": "the residual stream in block {L} between attention and MLP (resid_pre + attn_out)",
    "hook_mlp_in": "the input of block {L}'s MLP before its norm (TransformerLens's hook_mlp_in: resid_mid)",
    "ln2.hook_normalized": "the input of block {L}'s MLP after its norm (gain and bias applied)",
    "mlp.hook_post": "block {L}'s MLP hidden activation after its nonlinearity (its down projection's input)",
    "hook_mlp_out": "the output of block {L}'s MLP",
    "hook_resid_post": "the residual stream leaving block {L}",
}


def hook_meaning(name: str) -> str | None:
    """What a hook point holds, in words (TransformerLens's meaning), or None for an unknown name."""
    if (m := MLP_PAIR.match(name or "")) is not None:
        L = m.group(1)
        return f"from {hook_meaning(f'blocks.{L}.{MLP_READ}')} to {hook_meaning(f'blocks.{L}.hook_mlp_out')}"
    m = _NAME.match(name or "")
    return HOOK_MEANINGS[m.group(2)].format(L=m.group(1)) if m else None


def hook_position(name: str) -> int | None:
    """A hook point's place in the forward pass (larger is later), or None for a name that is not one;
    a transcoder's pair `blocks.L.mlp` is placed at what it reads."""
    if (pair := MLP_PAIR.match(name)) is not None:
        name = f"blocks.{pair.group(1)}.{MLP_READ}"
    m = _NAME.match(name)
    return int(m.group(1)) * len(_ORDER) + _ORDER.index(m.group(2)) if m else None


def pair_name(name: str) -> str:
    """`blocks.L.mlp` for a transcoder's input hook `blocks.L.ln2.hook_normalized` (as its cfg.json
    names it); other names unchanged."""
    m = re.match(r"^blocks\.(\d+)\.ln2\.hook_normalized$", name or "")
    return f"blocks.{m.group(1)}.mlp" if m else name


def read_names(name: str) -> list[str]:
    """The hook points a name reads: [name], or for `blocks.L.mlp` the MLP's normalised input and
    its output."""
    m = MLP_PAIR.match(name)
    return [f"blocks.{m.group(1)}.{MLP_READ}", f"blocks.{m.group(1)}.hook_mlp_out"] if m else [name]


@dataclass
class Family:
    """Where a model family keeps its parts (attribute paths from the causal-LM module)."""

    blocks: str
    attn: str
    mlp: str
    out_proj: str  # inside attn
    final_norm: str  # the norm before the unembedding
    mlp_in: str  # the module whose input is the MLP's normalised input
    ln1: str  # the norm before attention
    ln2: tuple[str, ...]  # the norm before the MLP (the first of these the block has)
    mlp_down: str  # the MLP's output projection, whose input is mlp.hook_post
    flat_mlp: bool = False  # runs its MLP on (batch · seq, d): hooks there are given (batch, seq, d)


FAMILIES = (
    # Llama, Mistral, Qwen2, SmolLM; Gemma 2/3 (their MLP's norm is pre_feedforward_layernorm)
    Family("model.layers", "self_attn", "mlp", "o_proj", "model.norm", "mlp", "input_layernorm",
           ("pre_feedforward_layernorm", "post_attention_layernorm"), "mlp.down_proj"),
    Family("transformer.h", "attn", "mlp", "c_proj", "transformer.ln_f", "mlp", "ln_1", ("ln_2",),
           "mlp.c_proj"),  # GPT-2
    Family("gpt_neox.layers", "attention", "mlp", "dense", "gpt_neox.final_layer_norm", "mlp",
           "input_layernorm",
           ("post_attention_layernorm",), "mlp.dense_4h_to_h"),  # GPT-NeoX, Pythia
    Family("model.decoder.layers", "self_attn", "fc2", "out_proj", "model.decoder.final_layer_norm", "fc1",
           "self_attn_layer_norm", ("final_layer_norm",), "fc2", flat_mlp=True),  # OPT
)  # fmt: skip


def _get(module: nn.Module, path: str):
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


class _Stop(Exception):
    """Raised by the last capture hook: nothing after it is needed."""


def sae_inputs(act: Tensor) -> Tensor:
    """A hook activation as an SAE sees it: per-head z (batch, pos, heads, d_head) flattened to
    (batch, pos, heads · d_head); every other hook point is already (batch, pos, d)."""
    return act.flatten(-2) if act.ndim == 4 else act


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_first(output, new):
    return (new,) + tuple(output[1:]) if isinstance(output, tuple) else new


class HookedModel:
    """A causal LM with named hook points; `run_with_cache` and `run_with_replacement`."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        for fam in FAMILIES:
            blocks = _get(model, fam.blocks)
            if isinstance(blocks, nn.ModuleList) and len(blocks) and _get(blocks[0], fam.attn) is not None:
                self.family, self.blocks = fam, blocks
                break
        else:
            raise SuperpositionError(
                f"hook points: model class {type(model).__name__} is not a supported family "
                f"(Llama-, GPT-2-, GPT-NeoX- or OPT-style)"
            )
        cfg = model.config
        self.n_layers = len(self.blocks)
        self.d_model = int(getattr(cfg, "hidden_size", None) or cfg.n_embd)
        self.n_heads = int(getattr(cfg, "num_attention_heads", None) or cfg.n_head)
        self.d_head = int(getattr(cfg, "head_dim", None) or self.d_model // self.n_heads)

    # ------------------------------------------------------------------ parts
    def attention(self, layer: int) -> nn.Module:
        return _get(self.blocks[layer], self.family.attn)

    def out_proj(self, layer: int) -> nn.Module:
        """The attention output projection W_O of a block (its input is the per-head z)."""
        return _get(self.attention(layer), self.family.out_proj)

    def final_norm(self) -> nn.Module | None:
        return _get(self.model, self.family.final_norm)

    def ln2(self, layer: int) -> nn.Module:
        """The norm before block `layer`'s MLP."""
        for path in self.family.ln2:
            if (module := _get(self.blocks[layer], path)) is not None:
                return module
        raise SuperpositionError(
            f"hook_name: block {layer} of {type(self.model).__name__} has no norm before its MLP"
        )

    def mlp_down(self, layer: int) -> nn.Module:
        """The MLP's output projection (its input is mlp.hook_post)."""
        return _get(self.blocks[layer], self.family.mlp_down)

    # ------------------------------------------------------------------ names
    def module_names(self) -> dict[str, str]:
        """blocks.L.hook_resid_post -> the module path of block L (model.layers.L, transformer.h.L):
        the name tools that hook transformers modules directly (SAELens's HookedProxyLM) use."""
        return {f"blocks.{L}.hook_resid_post": f"{self.family.blocks}.{L}" for L in range(self.n_layers)}

    def parse(self, name: str) -> tuple[int, str]:
        m = _NAME.match(name)
        if not m or int(m.group(1)) >= self.n_layers:
            raise SuperpositionError(
                f"hook_name {name!r}: not a hook point of this model; valid: blocks.L.<kind> with "
                f"L in 0..{self.n_layers - 1} and kind one of {', '.join(KINDS)} (or blocks.L.mlp for "
                "a transcoder)"
            )
        return int(m.group(1)), m.group(2)

    def d_in(self, name: str) -> int:
        """Width of one hook point's activations (SAE view)."""
        layer, kind = self.parse(name)
        if kind == "attn.hook_z":
            return self.n_heads * self.d_head
        if kind == "mlp.hook_post":
            down = self.mlp_down(layer)
            return int(
                down.in_features if isinstance(down, nn.Linear) else down.weight.shape[0]
            )  # GPT-2: Conv1D
        return self.d_model

    def widths(self, name: str) -> list[int]:
        """Widths of the hook points `name` reads (read_names)."""
        return [self.d_in(n) for n in read_names(name)]

    # ------------------------------------------------------------------ hooks
    def _note_shape(self, module, args, kwargs) -> None:
        x = args[0] if args else kwargs.get("hidden_states")
        if isinstance(x, Tensor) and x.ndim == 3:
            self._batch_seq = tuple(x.shape[:2])

    def _three_d(self, fn: Callable[[Tensor], Tensor | None]) -> Callable[[Tensor], Tensor | None]:
        """fn seeing (batch, seq, d) where the family flattens the tokens to (batch · seq, d) (OPT's
        MLP, `Family.flat_mlp`); what it returns goes back in the module's own shape."""

        def wrapped(x: Tensor):
            bs = getattr(self, "_batch_seq", None)
            if x.ndim != 2 or bs is None or x.shape[0] != bs[0] * bs[1]:
                return fn(x)
            new = fn(x.view(*bs, x.shape[-1]))
            return None if new is None else new.reshape(x.shape)

        return wrapped

    def _register(self, name: str, fn: Callable[[Tensor], Tensor | None]):
        """Attach fn(activation) at a hook point; a tensor it returns replaces the activation."""
        L, kind = self.parse(name)
        block = self.blocks[L]
        pre_modules = {
            "hook_resid_pre": lambda: block,
            "hook_resid_mid": lambda: self._resid_mid_norm(L),
            "hook_mlp_in": lambda: self.ln2(L),
            "ln2.hook_normalized": lambda: _get(block, self.family.mlp_in),
            "mlp.hook_post": lambda: self.mlp_down(L),
        }
        if kind in pre_modules:
            module = pre_modules[kind]()

            def pre(module, args, kwargs):
                x = args[0] if args else kwargs["hidden_states"]
                new = fn(x)
                if new is None:
                    return None
                if args:
                    return (new,) + tuple(args[1:]), kwargs
                return args, {**kwargs, "hidden_states": new}

            return module.register_forward_pre_hook(pre, with_kwargs=True)
        if kind == "attn.hook_z":
            proj = self.out_proj(L)

            def pre_z(module, args):
                z = args[0]
                new = fn(z.view(*z.shape[:-1], self.n_heads, self.d_head))
                return None if new is None else (new.reshape(z.shape),) + tuple(args[1:])

            return proj.register_forward_pre_hook(pre_z)
        target = {
            "hook_resid_post": block,
            "hook_mlp_out": _get(block, self.family.mlp),
            "hook_attn_out": self.attention(L),
            "ln1.hook_normalized": _get(block, self.family.ln1),
        }[kind]

        def post(module, args, output):
            new = fn(_first(output))
            return None if new is None else _replace_first(output, new)

        return target.register_forward_hook(post)

    def _resid_mid_norm(self, layer: int) -> nn.Module:
        """The norm whose input is resid_mid; parallel-attention blocks have no resid_mid."""
        if getattr(self.model.config, "use_parallel_residual", False) or getattr(
            self.model.config, "parallel_attn", False
        ):
            raise SuperpositionError(
                "hook_name: hook_resid_mid does not exist in a parallel-attention model (attention and MLP "
                "both "
                "read resid_pre); use hook_resid_pre or hook_mlp_in"
            )
        return self.ln2(layer)

    @contextmanager
    def hooks(self, fns: dict[str, Callable[[Tensor], Tensor | None]]):
        handles = []
        if self.family.flat_mlp:  # each block's input shape, to give hooks (batch, seq, d)
            handles = [b.register_forward_pre_hook(self._note_shape, with_kwargs=True) for b in self.blocks]
            fns = {n: self._three_d(f) for n, f in fns.items()}
        handles += [self._register(n, f) for n, f in fns.items()]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @torch.no_grad()
    def run_with_cache(
        self, input_ids: Tensor, names: list[str], attention_mask: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Activations at `names`, stopping the forward pass after the last block they need."""
        last = max(self.parse(n)[0] for n in names)
        cache: dict[str, Tensor] = {}

        def capture(name: str, stop: bool):
            def fn(x: Tensor):
                cache[name] = x.detach()
                if stop and len(cache) == len(names):
                    raise _Stop

            return fn

        # the resid_post of the last block fires after everything else in it
        fns = {n: capture(n, self.parse(n)[0] == last) for n in names}
        try:
            with self.hooks(fns):
                self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except _Stop:
            pass
        return cache

    def logits(
        self,
        input_ids: Tensor,
        replace: dict[str, Callable[[Tensor], Tensor | None]] | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        """The model's logits, with activations at the given hook points replaced by fn(activation)."""
        with self.hooks(replace or {}):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def hook_list(spec: str | list[str]) -> list[str]:
    """The names of a `hook_name` setting as written: a list, or one string (which may be a
    pattern, see expand_hooks)."""
    return list(spec) if isinstance(spec, list | tuple) else [spec]


def is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[{")


def several_hooks(spec: str | list[str]) -> bool:
    """A `hook_name` setting that names SAEs at several hooks: a list or a pattern (even one that
    matches a single hook point); a plain name is one SAE (or a transcoder's pair)."""
    return isinstance(spec, list | tuple) or is_pattern(spec)


MAX_HOOKS = 4096  # more hook names than any model has: a pattern that expands past it is a mistake


def _braces(name: str) -> list[str]:
    """`blocks.{2,6,10}.hook_mlp_out` -> one name per alternative (nested braces are not needed)."""
    m = re.search(r"\{([^{}]*)\}", name)
    if not m:
        return [name]
    return [
        x for alt in m.group(1).split(",") for x in _braces(name[: m.start()] + alt.strip() + name[m.end() :])
    ]


def expand_hooks(spec: str | list[str], n_layers: int) -> list[str]:
    """Every hook point a `hook_name` setting names, in forward order without repeats: plain
    names, brace alternatives (`blocks.{2,6,10}.hook_mlp_out`) and shell globs
    (`blocks.*.hook_resid_post`, `blocks.1?.hook_mlp_out`) matched against this model's hook
    points. A pattern that matches nothing is a one-line error."""
    import fnmatch

    points = [f"blocks.{L}.{kind}" for L in range(n_layers) for kind in KINDS]
    pairs = [f"blocks.{L}.mlp" for L in range(n_layers)]  # transcoders' pairs: `blocks.*.mlp`
    out: list[str] = []
    for item in hook_list(spec):
        groups = re.findall(r"\{([^{}]*)\}", item)
        if math.prod(len(g.split(",")) for g in groups) > MAX_HOOKS:
            raise SuperpositionError(
                f"hook_name {item[:80]!r}: its braces expand to more than {MAX_HOOKS} names; list fewer"
            )
        for name in _braces(item):
            if any(c in name for c in "*?["):
                found = [
                    p for p in (pairs if name.endswith(".mlp") else points) if fnmatch.fnmatchcase(p, name)
                ]
                if not found:
                    raise SuperpositionError(
                        f"hook_name {item!r}: matches no hook point of this model (blocks.0..{n_layers - 1}, "
                        f"kinds {', '.join(KINDS)})"
                    )
                out += found
            else:
                out.append(name)
    unique = list(dict.fromkeys(out))
    return sorted(unique, key=lambda n: (hook_position(n) is None, hook_position(n) or 0))
