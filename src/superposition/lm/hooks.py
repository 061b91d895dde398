"""Hook points with one naming scheme across model families (the TransformerLens/SAELens names):

    blocks.L.hook_resid_pre    residual stream entering block L
    blocks.L.hook_resid_post   residual stream leaving block L
    blocks.L.hook_mlp_in       input of block L's MLP (after the pre-MLP norm)
    blocks.L.hook_mlp_out      output of block L's MLP
    blocks.L.hook_attn_out     output of block L's attention (after the output projection)
    blocks.L.attn.hook_z       per-head attention values before the output projection,
                               (batch, pos, n_heads, d_head); SAEs see them flattened

`blocks.L.mlp` names the pair (hook_mlp_in, hook_mlp_out) a transcoder reads and predicts.

`Family` finds the blocks, attention, MLP and output projection of Llama-style (Llama, Mistral,
Qwen, SmolLM, ...), GPT-2-style and GPT-NeoX-style models. Captures stop the forward pass after
the last hooked block; replacements (splicing an SAE in) run the whole model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from superposition.errors import SuperpositionError

KINDS = ("hook_resid_pre", "hook_resid_post", "hook_mlp_in", "hook_mlp_out", "hook_attn_out", "attn.hook_z")
_NAME = re.compile(r"^blocks\.(\d+)\.(" + "|".join(k.replace(".", r"\.") for k in KINDS) + ")$")
MLP_PAIR = re.compile(r"^blocks\.(\d+)\.mlp$")


# where each kind fires within a block, in forward order
_ORDER = ("hook_resid_pre", "attn.hook_z", "hook_attn_out", "hook_mlp_in", "hook_mlp_out", "hook_resid_post")


def hook_position(name: str) -> int | None:
    """A hook point's place in the forward pass (larger is later), or None for a name that is not one."""
    m = _NAME.match(name)
    return int(m.group(1)) * len(_ORDER) + _ORDER.index(m.group(2)) if m else None


def pair_name(name: str) -> str:
    """`blocks.L.mlp` for a transcoder's input hook `blocks.L.hook_mlp_in` (as its cfg.json names
    it); other names unchanged."""
    m = re.match(r"^blocks\.(\d+)\.hook_mlp_in$", name or "")
    return f"blocks.{m.group(1)}.mlp" if m else name


def read_names(name: str) -> list[str]:
    """The hook points a name reads: [name], or for `blocks.L.mlp` the MLP's input and output."""
    m = MLP_PAIR.match(name)
    return [f"blocks.{m.group(1)}.hook_mlp_in", f"blocks.{m.group(1)}.hook_mlp_out"] if m else [name]


@dataclass
class Family:
    """Where a model family keeps its parts (attribute paths from the causal-LM module)."""

    blocks: str
    attn: str
    mlp: str
    out_proj: str  # inside attn
    final_norm: str  # the norm before the unembedding
    mlp_in: str = ""  # the module whose input is the MLP's input (default: mlp)


FAMILIES = (
    Family(
        "model.layers", "self_attn", "mlp", "o_proj", "model.norm"
    ),  # Llama, Mistral, Qwen2, Gemma, SmolLM
    Family("transformer.h", "attn", "mlp", "c_proj", "transformer.ln_f"),  # GPT-2, GPT-J-like
    Family("gpt_neox.layers", "attention", "mlp", "dense", "gpt_neox.final_layer_norm"),  # GPT-NeoX, Pythia
    Family(
        "model.decoder.layers", "self_attn", "fc2", "out_proj", "model.decoder.final_layer_norm", "fc1"
    ),  # OPT
)


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
        _, kind = self.parse(name)
        return self.n_heads * self.d_head if kind == "attn.hook_z" else self.d_model

    def widths(self, name: str) -> list[int]:
        """Widths of the hook points `name` reads (read_names)."""
        return [self.d_in(n) for n in read_names(name)]

    # ------------------------------------------------------------------ hooks
    def _register(self, name: str, fn: Callable[[Tensor], Tensor | None]):
        """Attach fn(activation) at a hook point; a tensor it returns replaces the activation."""
        L, kind = self.parse(name)
        block = self.blocks[L]
        if kind in ("hook_resid_pre", "hook_mlp_in"):
            module = block if kind == "hook_resid_pre" else _get(block, self.family.mlp_in or self.family.mlp)

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
        }[kind]

        def post(module, args, output):
            new = fn(_first(output))
            return None if new is None else _replace_first(output, new)

        return target.register_forward_hook(post)

    @contextmanager
    def hooks(self, fns: dict[str, Callable[[Tensor], Tensor | None]]):
        handles = [self._register(n, f) for n, f in fns.items()]
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
    out: list[str] = []
    for item in hook_list(spec):
        for name in _braces(item):
            if any(c in name for c in "*?["):
                found = [p for p in points if fnmatch.fnmatchcase(p, name)]
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
