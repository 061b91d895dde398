"""A language model with SAEs spliced in, for notebooks: SAELens's `HookedSAETransformer` calls on
any model `load_model` reads (an alias, a hub id, a local folder, a .gguf file).

    model = superposition.load_model("smollm2-135m-instruct")
    sae = superposition.load_sae("runs/l6")
    logits = model.run_with_saes("The cat sat", saes=[sae])                  # (batch, pos, vocab)
    logits, cache = model.run_with_cache_with_saes(tokens, saes=[sae])
    cache["blocks.6.hook_resid_post.hook_sae_acts_post"]                       # (batch, pos, d_sae)
    model.generate("The cat", max_new_tokens=20,
                   interventions=[Intervention(sae, latents=[12, 40], mode="add", value=8.0)])

Hook names are TransformerLens's (lm/hooks.py). An SAE is spliced in at `sae.cfg.hook_name`; a
transcoder reads its input hook (blocks.L.ln2.hook_normalized) and replaces its output hook
(blocks.L.hook_mlp_out), and its cache keys are under the output hook, as in SAELens. With
`use_error_term` the SAE hands on its reconstruction plus the error of the unedited input, so the
model computes what it computes without the SAE until something (a hook on the latents) edits it.

An `Intervention` steers the model without splicing: it adds value·W_dec[j] at the SAE's output
hook (`add`), sets latent j to a value (`clamp`: adds (value − z_j)·W_dec[j], z read from the
input), or removes it (`ablate`: value 0), at all positions or the chosen ones. That is what editing
`hook_sae_acts_post` with the error term kept does, without the reconstruction's cost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from superposition.errors import SuperpositionError
from superposition.lm.hooks import KINDS, HookedModel, read_names
from superposition.lm.model import DEFAULT_MODEL, LoadedModel, load_model
from superposition.sae.base import BatchedSAE
from superposition.sae.single import HOOK_POINTS, SAE, HookInfo

HookFn = Callable[[Tensor, Any], Tensor | None]  # TransformerLens's fn(activation, hook)
# the order in which the functions at one hook point run
_READ, _SPLICE, _EDIT, _CACHE = range(4)
MODES = ("add", "clamp", "ablate")


@dataclass(frozen=True)
class ModelCfg:
    """What a TransformerLens user reads off `model.cfg`."""

    model_name: str
    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_vocab: int
    n_ctx: int
    device: str
    dtype: str


@dataclass
class Intervention:
    """Steer latents of `sae` at its hook: `add` value·W_dec[j]; `clamp` latent j to value; `ablate`
    latent j (clamp to 0). `latents` one or several, `value` one for all or one per latent.
    `positions`: None (every position), "prompt", "generated", or absolute token positions
    (0 is the first token, BOS included)."""

    sae: SAE | BatchedSAE
    latents: int | Sequence[int]
    mode: Literal["add", "clamp", "ablate"] = "add"
    value: float | Sequence[float] = 0.0
    positions: None | str | int | Sequence[int] = None
    _ids: list[int] = field(init=False, repr=False)
    _values: list[float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SuperpositionError(f"mode {self.mode!r}: one of {', '.join(MODES)}")
        ids = [self.latents] if isinstance(self.latents, int) else list(self.latents)
        d_sae = self.sae.cfg.d_sae
        bad = [j for j in ids if not isinstance(j, int) or not 0 <= j < d_sae]
        if not ids or bad:
            raise SuperpositionError(f"latents {bad or ids}: give latents in 0..{d_sae - 1}")
        values = [self.value] * len(ids) if isinstance(self.value, int | float) else list(self.value)
        if len(values) != len(ids):
            raise SuperpositionError(f"value: one value, or one per latent ({len(ids)}); got {len(values)}")
        if self.mode == "ablate":
            values = [0.0] * len(ids)
        for v in values:
            if not isinstance(v, int | float) or v != v or abs(v) > 1e6:
                raise SuperpositionError(f"value {v!r}: a finite number of at most 1e6 in size")
        if isinstance(self.positions, str) and self.positions not in ("prompt", "generated"):
            raise SuperpositionError(
                f"positions {self.positions!r}: None, 'prompt', 'generated' or token positions"
            )
        self._ids, self._values = ids, [float(v) for v in values]

    @property
    def hook(self) -> str:
        return _write_hook(self.sae)

    def mask(self, start: int, n: int, prompt_len: int, device) -> Tensor:
        """Which of the positions start..start+n-1 this intervention edits, (n,) bool."""
        pos = torch.arange(start, start + n, device=device)
        if self.positions is None:
            return torch.ones(n, dtype=torch.bool, device=device)
        if self.positions == "prompt":
            return pos < prompt_len
        if self.positions == "generated":
            return pos >= prompt_len
        chosen = [self.positions] if isinstance(self.positions, int) else list(self.positions)
        return torch.isin(pos, torch.tensor(chosen, device=device))

    def shift(self, x_in: Tensor) -> Tensor:
        """What to add at the output hook for activations x_in (..., d_in) read at the input hook."""
        b = self.sae.batched if isinstance(self.sae, SAE) else self.sae
        W = b.W_dec[0][self._ids].detach()  # (n, d_out)
        v = torch.tensor(self._values, device=W.device, dtype=W.dtype)
        if self.mode == "add":
            coef = v.expand(*x_in.shape[:-1], -1)
        else:
            rows = x_in.reshape(-1, 1, x_in.shape[-1]).to(W.dtype)
            z = b.encode(rows)[:, 0, self._ids].reshape(*x_in.shape[:-1], -1)
            coef = v - z
        return coef @ W


def _read_hook(sae) -> str:
    return read_names(_pair(sae))[0]


def _write_hook(sae) -> str:
    return read_names(_pair(sae))[-1]


def _pair(sae) -> str:
    """The hook name an SAE is placed at: its hook, or a transcoder's blocks.L.mlp."""
    from superposition.lm.hooks import pair_name

    name = sae.cfg.hook_name
    if not name:
        raise SuperpositionError(
            "sae: names no hook point; set sae.cfg.hook_name (e.g. 'blocks.6.hook_resid_post')"
        )
    return pair_name(name) if sae.transcodes else name


def _flat(x: Tensor) -> Tensor:
    """hook_z's (b, p, heads, d_head) as the SAE reads it, (b, p, heads·d_head)."""
    return x.flatten(-2) if x.ndim == 4 else x


class HookedSAEModel:
    """A causal language model with TransformerLens hook names, SAEs spliced in on demand, and
    generation with steering. `load_model(name)` makes one; `model.model` is the transformers
    module, `model.tokenizer` its tokenizer, `model.hooked` the hook points (lm/hooks.py)."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.name = loaded.name
        self.hooked = HookedModel(loaded.model)
        self._attached: dict[str, tuple[SAE, bool | None]] = {}  # hook -> (SAE, use_error_term)
        h = self.hooked
        vocab = int(
            getattr(self.model.config, "vocab_size", 0) or self.model.get_output_embeddings().weight.shape[0]
        )
        p = next(self.model.parameters())
        self.cfg = ModelCfg(loaded.name, h.n_layers, h.d_model, h.n_heads, h.d_head, vocab, loaded.n_ctx,
                            str(p.device), str(p.dtype).removeprefix("torch."))  # fmt: skip

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"HookedSAEModel({c.model_name!r}, n_layers={c.n_layers}, d_model={c.d_model}, "
            f"device={c.device!r}, dtype={c.dtype!r}, saes={list(self._attached)})"
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def hook_names(self) -> list[str]:
        """Every hook point, in forward order (a parallel-attention model has no hook_resid_mid)."""
        c = self.model.config
        parallel = getattr(c, "use_parallel_residual", False) or getattr(c, "parallel_attn", False)
        kinds = [k for k in KINDS if not (parallel and k == "hook_resid_mid")]
        return [f"blocks.{L}.{k}" for L in range(self.cfg.n_layers) for k in kinds]

    # ------------------------------------------------------------------ tokens
    def to_tokens(self, text: str | Sequence[str], prepend_bos: bool = True) -> Tensor:
        """Token ids (batch, pos) on the model's device; BOS first when the tokenizer has one.
        Several texts are padded on the right (the forward passes mask the padding)."""
        return self._encode(text, prepend_bos)[0]

    def _encode(self, text: str | Sequence[str], prepend_bos: bool = True) -> tuple[Tensor, Tensor | None]:
        tok = self.tokenizer
        texts = [text] if isinstance(text, str) else list(text)
        rows = [tok(t, add_special_tokens=False).input_ids for t in texts]
        bos = tok.bos_token_id
        if prepend_bos and bos is not None:
            rows = [[bos, *r] for r in rows]
        if any(len(r) == 0 for r in rows):
            raise SuperpositionError("text: empty; give some text")
        longest = max(len(r) for r in rows)
        if longest > self.cfg.n_ctx:
            raise SuperpositionError(f"text: {longest} tokens; {self.name} reads at most {self.cfg.n_ctx}")
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        ids = torch.full((len(rows), longest), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        return ids, (None if bool(mask.all()) else mask)

    def to_string(self, tokens: Tensor | Sequence[int]) -> str | list[str]:
        t = torch.as_tensor(tokens)
        if t.ndim == 2:
            return [self.tokenizer.decode(r) for r in t.tolist()]
        return self.tokenizer.decode(t.tolist())

    def to_str_tokens(self, text: str | Tensor, prepend_bos: bool = True) -> list[str]:
        ids = (
            self.to_tokens(text, prepend_bos)[0]
            if isinstance(text, str)
            else torch.as_tensor(text).reshape(-1)
        )
        return [self.tokenizer.decode([i]) for i in ids.tolist()]

    def _inputs(self, input, prepend_bos: bool = True) -> tuple[Tensor, Tensor | None]:
        if isinstance(input, str) or (
            isinstance(input, list | tuple) and input and isinstance(input[0], str)
        ):
            return self._encode(input, prepend_bos)
        ids = torch.as_tensor(input)
        if ids.ndim == 1:
            ids = ids.unsqueeze(0)
        if ids.ndim != 2 or ids.dtype not in (torch.long, torch.int, torch.int32, torch.int64):
            raise SuperpositionError(
                f"tokens: expected (batch, pos) token ids, got {tuple(ids.shape)} {ids.dtype}"
            )
        return ids.long().to(self.device), None

    # ------------------------------------------------------------------ SAEs kept in place
    def add_sae(self, sae: SAE | BatchedSAE, use_error_term: bool | None = None) -> None:
        """Keep `sae` spliced in for every later call, until `reset_saes` (SAELens's add_sae)."""
        sae = _as_sae(sae)
        self._check(sae)
        self._attached[_write_hook(sae)] = (sae, use_error_term)

    def reset_saes(self, hooks: Iterable[str] | None = None) -> None:
        """Remove SAEs added with add_sae (all, or those at `hooks`)."""
        for h in list(self._attached) if hooks is None else list(hooks):
            self._attached.pop(h, None)

    @property
    def saes(self) -> dict[str, SAE]:
        return {h: s for h, (s, _) in self._attached.items()}

    def _check(self, sae: SAE) -> None:
        pair = _pair(sae)
        widths = self.hooked.widths(pair)
        if len(widths) != (2 if sae.transcodes else 1):
            raise SuperpositionError(f"sae: a {sae.cfg.architecture} cannot read {pair}")
        if [sae.cfg.d_in, sae.d_out][: len(widths)] != widths:
            raise SuperpositionError(
                f"sae: reads {sae.cfg.d_in} and writes {sae.d_out}, but {pair} of {self.name} is "
                f"{' -> '.join(map(str, widths))}"
            )

    # ------------------------------------------------------------------ forward passes
    def __call__(self, input, prepend_bos: bool = True) -> Tensor:
        return self.run_with_hooks(input, prepend_bos=prepend_bos)

    forward = __call__

    def run_with_hooks(
        self,
        input,
        fwd_hooks: Iterable[tuple[str, HookFn]] = (),
        saes: SAE | Sequence[SAE] = (),
        use_error_term: bool | None = None,
        prepend_bos: bool = True,
        interventions: Sequence[Intervention] = (),
    ) -> Tensor:
        """Logits (batch, pos, vocab) with TransformerLens-style hook functions fn(act, hook) at
        model hook points (and at SAE points, `<hook>.hook_sae_acts_post`, ...), with `saes`
        spliced in and `interventions` made (their positions counted from 0 in `input`)."""
        ids, mask = self._inputs(input, prepend_bos)
        for iv in interventions:
            self._check(_as_sae(iv.sae))
        offsets = {"prompt": ids.shape[1]} if interventions else None
        with self._hooks(saes, use_error_term, fwd_hooks, None, None, interventions, offsets):
            return self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits

    def run_with_cache(
        self,
        input,
        names_filter: str | Iterable[str] | Callable[[str], bool] | None = None,
        prepend_bos: bool = True,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(logits, cache): the activations at the hook points `names_filter` names (a name, a
        list, or a predicate; default every one), as TransformerLens's run_with_cache."""
        return self.run_with_cache_with_saes(
            input, saes=(), names_filter=names_filter, prepend_bos=prepend_bos
        )

    def run_with_saes(
        self,
        input,
        saes: SAE | Sequence[SAE] = (),
        use_error_term: bool | None = None,
        prepend_bos: bool = True,
    ) -> Tensor:
        """Logits with `saes` spliced in (and any added with add_sae). `use_error_term` overrides
        each SAE's own setting for this call."""
        return self.run_with_hooks(input, saes=saes, use_error_term=use_error_term, prepend_bos=prepend_bos)

    def run_with_cache_with_saes(
        self,
        input,
        saes: SAE | Sequence[SAE] = (),
        names_filter: str | Iterable[str] | Callable[[str], bool] | None = None,
        use_error_term: bool | None = None,
        prepend_bos: bool = True,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(logits, cache) with `saes` spliced in; the cache holds the model's hook points and each
        SAE's `<hook>.hook_sae_input`, `.hook_sae_acts_pre`, `.hook_sae_acts_post`,
        `.hook_sae_recons`, `.hook_sae_error` (with the error term) and `.hook_sae_output`."""
        ids, mask = self._inputs(input, prepend_bos)
        cache: dict[str, Tensor] = {}
        with torch.no_grad(), self._hooks(saes, use_error_term, (), cache, _filter(names_filter)):
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return logits, cache

    @contextlib.contextmanager
    def _hooks(self, saes, use_error_term, fwd_hooks, cache, wanted, interventions=(), offsets=None):
        """Register everything one forward pass needs, ordered per hook point: reads, splices,
        edits, then the cache of what flows on."""
        plan: dict[str, list[tuple[int, Callable]]] = {}

        def at(name: str, order: int, fn: Callable) -> None:
            plan.setdefault(name, []).append((order, fn))

        spliced = dict(self._attached)
        for sae in [saes] if isinstance(saes, SAE | BatchedSAE) else list(saes):
            sae = _as_sae(sae)
            self._check(sae)
            hook = _write_hook(sae)
            if hook in spliced and spliced[hook][0] is not sae:
                raise SuperpositionError(f"saes: two SAEs at {hook}; splice one per hook point")
            spliced[hook] = (sae, use_error_term)
        sae_fns: dict[str, list[tuple[str, HookFn]]] = {}
        for name, fn in fwd_hooks:
            base, _, point = name.rpartition(".")
            if point in HOOK_POINTS:
                if base not in spliced:
                    raise SuperpositionError(f"fwd_hooks {name!r}: no SAE is spliced in at {base}")
                sae_fns.setdefault(base, []).append((point, fn))
            else:
                self.hooked.parse(name)
                at(name, _EDIT, _tl(name, fn))
        for hook, (sae, err) in spliced.items():
            self._splice(sae, hook, err if use_error_term is None else use_error_term, sae_fns.get(hook, []),
                         cache, wanted, at)  # fmt: skip
        for iv in interventions:
            self._intervene(iv, offsets, at)
        if cache is not None:
            for name in self.hook_names:
                if name not in spliced and (wanted is None or wanted(name)):
                    at(name, _CACHE, _store(cache, name))
        fns = {
            name: _chain([f for _, f in sorted(items, key=lambda t: t[0])]) for name, items in plan.items()
        }
        with self.hooked.hooks(fns):
            yield

    def _splice(self, sae: SAE, hook: str, use_error_term, sae_fns, cache, wanted, at) -> None:
        read = _read_hook(sae)
        seen: dict[str, Tensor] = {}
        names = None
        if cache is not None:
            names = [p for p in HOOK_POINTS if wanted is None or wanted(f"{hook}.{p}")]

        def splice(x: Tensor) -> Tensor:
            x_in = _flat(seen.pop("x")) if read != hook else _flat(x)
            local: dict[str, Tensor] | None = {} if cache is not None else None
            saved = sae.use_error_term
            sae.use_error_term = bool(sae.use_error_term if use_error_term is None else use_error_term)
            try:
                out = sae.run_with_hooks(
                    x_in, sae_fns, local, names, target=_flat(x) if read != hook else None
                )
            finally:
                sae.use_error_term = saved
            if local:
                cache.update({f"{hook}.{k}": v for k, v in local.items()})
            return out.to(x.dtype).reshape(x.shape)

        if read != hook:
            at(read, _READ, lambda x: seen.__setitem__("x", x))
        at(hook, _SPLICE, splice)

    def _intervene(self, iv: Intervention, offsets: dict | None, at) -> None:
        read, write = _read_hook(iv.sae), iv.hook
        seen: dict[str, Tensor] = {}
        key = id(iv)

        def capture(x: Tensor) -> None:
            seen["x"] = _flat(x)

        def edit(x: Tensor) -> Tensor:
            x_in = seen.pop("x") if read != write else _flat(x)
            start = offsets.get(key, 0) if offsets is not None else 0
            n = x.shape[1]
            if offsets is not None:
                offsets[key] = start + n
            prompt_len = offsets.get("prompt", n) if offsets is not None else n
            m = iv.mask(start, n, prompt_len, x.device)
            if not bool(m.any()):
                return x
            s = iv.shift(x_in.float()) * m.view(1, n, 1)
            return x + s.to(x.dtype).reshape(x.shape)

        if read != write:
            at(read, _READ, capture)
        else:
            at(write, _READ, capture)
        at(write, _EDIT, edit)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(
        self,
        input: str | Tensor,
        max_new_tokens: int = 32,
        interventions: Sequence[Intervention] = (),
        saes: SAE | Sequence[SAE] = (),
        use_error_term: bool | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        prepend_bos: bool = True,
        stop_at_eos: bool = True,
        return_type: Literal["str", "tokens", "continuation"] = "str",
    ) -> str | Tensor:
        """Continue one prompt, greedily (temperature 0) or by sampling (temperature, top_p,
        seeded by `seed`), with `interventions` steering and `saes` spliced in at every step.
        Returns the text with the prompt (TransformerLens's generate), the token ids
        (return_type="tokens"), or only the new text ("continuation")."""
        if not 0 < max_new_tokens <= 4096:
            raise SuperpositionError("max_new_tokens: between 1 and 4096")
        if not (0.0 <= temperature <= 100.0) or temperature != temperature:
            raise SuperpositionError("temperature: between 0 (greedy) and 100")
        if not 0.0 < top_p <= 1.0:
            raise SuperpositionError("top_p: in (0, 1]")
        ids, mask = self._inputs(input, prepend_bos)
        if ids.shape[0] != 1 or mask is not None:
            raise SuperpositionError("input: generate continues one prompt at a time")
        if ids.shape[1] + max_new_tokens > self.cfg.n_ctx:
            raise SuperpositionError(
                f"max_new_tokens: the prompt's {ids.shape[1]} tokens plus {max_new_tokens} exceed "
                f"{self.name}'s {self.cfg.n_ctx}"
            )
        for iv in interventions:
            self._check(_as_sae(iv.sae))
        tok = self.tokenizer
        offsets: dict = {"prompt": ids.shape[1]}
        sampling = temperature > 0
        kw: dict[str, Any] = {"do_sample": sampling}
        if sampling:
            kw.update(temperature=temperature, top_p=top_p, top_k=0)
        else:
            kw.update(temperature=None, top_p=None, top_k=None)
        rng = torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])
        with rng, self._hooks(saes, use_error_term, (), None, None, interventions, offsets):
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                eos_token_id=tok.eos_token_id if stop_at_eos else None, **kw,
            )  # fmt: skip
        if return_type == "tokens":
            return out
        if return_type == "continuation":
            return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        return tok.decode(out[0], skip_special_tokens=True)


def _as_sae(sae) -> SAE:
    if isinstance(sae, SAE):
        return sae
    if isinstance(sae, BatchedSAE):
        return SAE.wrap(sae)
    raise SuperpositionError(f"saes: expected SAEs, got {type(sae).__name__}")


def _tl(name: str, fn: HookFn) -> Callable[[Tensor], Tensor | None]:
    info = HookInfo(name)
    return lambda x: fn(x, info)


def _store(cache: dict, name: str) -> Callable[[Tensor], None]:
    def fn(x: Tensor) -> None:
        cache[name] = x.detach()

    return fn


def _chain(fns: list[Callable[[Tensor], Tensor | None]]) -> Callable[[Tensor], Tensor | None]:
    """One hook function running `fns` in order, each seeing what the last one handed on."""
    if len(fns) == 1:
        return fns[0]

    def run(x: Tensor) -> Tensor | None:
        changed = False
        for f in fns:
            new = f(x)
            if new is not None:
                x, changed = new, True
        return x if changed else None

    return run


def _filter(names_filter) -> Callable[[str], bool] | None:
    if names_filter is None:
        return None
    if callable(names_filter):
        return names_filter
    names = {names_filter} if isinstance(names_filter, str) else set(names_filter)
    return names.__contains__


def load_hooked_model(
    name: str = DEFAULT_MODEL, device: str = "cpu", dtype: str = "float32"
) -> HookedSAEModel:
    """A model by alias, hub id, local folder or .gguf file, ready for SAEs to be spliced in."""
    return HookedSAEModel(load_model(name, device, dtype))


__all__ = ["HookedSAEModel", "Intervention", "ModelCfg", "load_hooked_model"]
