"""`SAE`: one sparse autoencoder with SAELens's tensor interface, the object a researcher holds.

    sae = SAE.load_from_disk("runs/l6/sae")      # or superposition.load_sae(path_or_release, sae_id)
    sae.W_enc  (d_in, d_sae)     sae.W_dec  (d_sae, d_in)     sae.b_enc (d_sae)    sae.b_dec (d_in)
    sae.threshold (d_sae), sae.W_skip (d_in, d_out), ...: each architecture's extra tensors under
    SAELens's names
    sae.encode(x)   (..., d_in) -> (..., d_sae), over any leading dimensions ([batch, seq, d] from a hook)
    sae.decode(z)   (..., d_sae) -> (..., d_out);  sae(x) = decode(encode(x)) (+ the error term)
    sae.cfg.d_in, .d_sae, .hook_name, .model_name, .metadata.hook_name (SAELens 6), .architecture()

The weights live in a one-instance `BatchedSAE` (`sae.batched`), the form the trainer, the toy
sweeps and the evaluations share; the tensors above are views of its parameters without the
instance axis, so changing one changes the SAE. A loaded SAE is in eval mode and needs no gradients.

As in SAELens, the forward pass has named hook points, which `run_with_cache` and `run_with_hooks`
read and edit, and which a model with the SAE spliced in caches as `<hook_name>.<point>`:

    hook_sae_input      what the SAE reads
    hook_sae_acts_pre   the encoder's affine output (x − b_dec) W_enc + b_enc
    hook_sae_acts_post  the latents
    hook_sae_recons     the reconstruction decode(latents)
    hook_sae_error      input − reconstruction of the unedited input (with use_error_term)
    hook_sae_output     what the SAE hands on: recons, plus the error with use_error_term
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from superposition.errors import SuperpositionError
from superposition.sae.base import BatchedSAE

HOOK_POINTS = (
    "hook_sae_input",
    "hook_sae_acts_pre",
    "hook_sae_acts_post",
    "hook_sae_recons",
    "hook_sae_error",
    "hook_sae_output",
)
# hook fn(tensor, hook) -> tensor | None, as in TransformerLens
HookFn = Callable[[Tensor, Any], Tensor | None]


@dataclass(frozen=True)
class HookInfo:
    """What a hook function is told about where it runs (TransformerLens passes a HookPoint)."""

    name: str


class Architecture(str):
    """The architecture's name, also callable as SAELens 6's `cfg.architecture()`."""

    def __call__(self) -> str:
        return str(self)


class Metadata(dict):
    """SAELens 6's `cfg.metadata`: model, hook and data settings by attribute or key; a missing
    one is None."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self.get(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def to_dict(self) -> dict:
        return dict(self)


class SAECfg:
    """An SAE's settings as SAELens code reads them: d_in, d_sae, dtype, device,
    apply_b_dec_to_input, normalize_activations, reshape_activations, metadata; hook_name and
    model_name directly too (SAELens 5 kept them there); and every key of our SAEConfig (k,
    prefixes, sparsity, ...). `to_dict()` gives them all."""

    def __init__(self, sae: SAE) -> None:
        b = sae.batched
        c = b.cfg
        self.__dict__["_cfg"] = c
        meta = Metadata(
            model_name=c.model_name, hook_name=c.hook_name, hook_head_index=None, **(b.metadata or {})
        )
        self.__dict__.update(
            architecture=Architecture(c.architecture),
            d_in=c.d_in,
            d_sae=c.d_sae,
            d_out=b.d_out,
            dtype=str(b.W_dec.dtype).removeprefix("torch."),
            device=str(b.W_dec.device),
            apply_b_dec_to_input=bool(c.apply_b_dec_to_input),
            normalize_activations=c.input_normalization,
            reshape_activations="hook_z" if str(c.hook_name or "").endswith("hook_z") else "none",
            metadata=meta,
        )

    @property
    def hook_name(self) -> str | None:
        return self.metadata.hook_name

    @hook_name.setter
    def hook_name(self, value: str | None) -> None:
        self.metadata.hook_name = value

    @property
    def model_name(self) -> str | None:
        return self.metadata.model_name

    @model_name.setter
    def model_name(self, value: str | None) -> None:
        self.metadata.model_name = value

    def __getattr__(self, name: str) -> Any:
        cfg = self.__dict__["_cfg"]
        if name in type(cfg).model_fields:
            return getattr(cfg, name)
        if name in self.__dict__["metadata"]:
            return self.__dict__["metadata"][name]
        raise AttributeError(f"SAE config has no {name!r}")

    def to_dict(self) -> dict:
        out = self.__dict__["_cfg"].model_dump()
        out.update({k: v for k, v in self.__dict__.items() if not k.startswith("_")})
        out["architecture"] = str(self.architecture)
        out["metadata"] = dict(self.metadata)
        return out

    def __repr__(self) -> str:
        keys = ("architecture", "d_in", "d_sae", "dtype", "device", "hook_name", "model_name")
        return "SAECfg(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in keys) + ")"


def as_batched(sae: SAE | BatchedSAE) -> BatchedSAE:
    """The batched form of an SAE the library was handed (an `SAE`, or a `BatchedSAE` as it is)."""
    if isinstance(sae, SAE):
        return sae.batched
    if isinstance(sae, BatchedSAE):
        return sae
    raise SuperpositionError(f"sae: expected an SAE, got {type(sae).__name__}")


class SAE(nn.Module):
    """One SAE (or transcoder) with SAELens's tensor interface; see the module docstring.

    `SAE(cfg)` makes a new one from an `SAEConfig` (n_instances 1), `SAE.wrap(batched)` views a
    one-instance `BatchedSAE`, and `SAE.load_from_disk(path)` / `SAE.from_pretrained(release,
    sae_id)` load one."""

    def __init__(
        self,
        cfg,
        generator: torch.Generator | None = None,
        use_error_term: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(cfg, BatchedSAE):
            batched = cfg
        else:
            from superposition.sae import SAEConfig, make_sae

            if isinstance(cfg, dict):
                cfg = SAEConfig.build(cfg, "cfg")
            batched = make_sae(cfg, generator)
        if batched.n_instances != 1:
            raise SuperpositionError(
                f"SAE: holds one SAE; this has {batched.n_instances} instances "
                "(use the BatchedSAE for instances side by side)"
            )
        self.batched = batched
        self.use_error_term = use_error_term
        self._last_input: Tensor | None = None  # for decode(z) of an SAE that normalises each input
        self.cfg = SAECfg(self)

    @classmethod
    def wrap(cls, batched: BatchedSAE, use_error_term: bool = False) -> SAE:
        """A one-instance BatchedSAE seen as an SAE (the same parameters)."""
        return cls(batched, use_error_term=use_error_term)

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def load_from_disk(
        cls, path: str | Path, device: str = "cpu", dtype: str | torch.dtype | None = None
    ) -> SAE:
        """An SAE folder or file of any format `formats.load` reads (ours, SAELens, sparsify,
        Gemma Scope, dictionary_learning), or an hf:// address; in eval mode, without gradients."""
        from superposition.sae.formats import load

        return cls.frozen(load(path), device, dtype)

    @classmethod
    def from_pretrained(
        cls,
        release: str,
        sae_id: str | None = None,
        device: str = "cpu",
        dtype: str | torch.dtype | None = None,
    ) -> SAE:
        """A released SAE by SAELens's (release, sae_id), from the release table
        (sae/releases.json), or any path or hf:// address when `sae_id` is None."""
        from superposition.sae.releases import resolve_sae

        return cls.load_from_disk(resolve_sae(release, sae_id), device, dtype)

    @classmethod
    def frozen(cls, batched: BatchedSAE, device: str = "cpu", dtype: str | torch.dtype | None = None) -> SAE:
        """A loaded SAE: on `device` (and `dtype`), in eval mode, its parameters without gradients."""
        sae = cls.wrap(batched)
        for p in sae.parameters():
            p.requires_grad_(False)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        return sae.to(device, dtype).eval() if dtype is not None else sae.to(device).eval()

    def save_model(self, path: str | Path, extra_cfg: dict | None = None) -> Path:
        """Write cfg.json and sae_weights.safetensors (the layout SAELens 6 loads) into `path`."""
        from superposition.sae.io import save_sae

        return save_sae(self, path, extra_cfg=extra_cfg)

    # ------------------------------------------------------------------ tensors
    @property
    def W_enc(self) -> Tensor:
        """(d_in, d_sae); a tied SAE's is W_decᵀ."""
        return self.batched.encoder_weight()[0]

    @property
    def W_dec(self) -> Tensor:
        """(d_sae, d_out): row i is latent i's direction."""
        return self.batched.W_dec[0]

    @property
    def b_enc(self) -> Tensor:
        """(d_sae); a gated SAE's gate bias (SAELens's b_gate)."""
        return self.batched.b_enc[0]

    @property
    def b_dec(self) -> Tensor:
        """(d_out)."""
        return self.batched.b_dec[0]

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            pass
        batched = self._modules.get("batched")
        if batched is not None and not name.startswith("_"):
            tensors = batched.saved_tensors(0)
            if name in tensors:  # threshold, b_gate, r_mag, b_mag, W_skip, ...
                return tensors[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def metadata(self) -> dict:
        """Where a loaded SAE came from (format, file, release) and its data settings; the same
        values as `cfg.metadata`."""
        return self.batched.metadata

    @property
    def dtype(self) -> torch.dtype:
        return self.batched.W_dec.dtype

    @property
    def device(self) -> torch.device:
        return self.batched.W_dec.device

    @property
    def transcodes(self) -> bool:
        return self.batched.transcodes

    @property
    def d_out(self) -> int:
        return self.batched.d_out

    def to(self, *args: Any, **kwargs: Any) -> SAE:
        out = super().to(*args, **kwargs)
        self.cfg.__dict__.update(dtype=str(self.dtype).removeprefix("torch."), device=str(self.device))
        return out

    def tensors(self) -> dict[str, Tensor]:
        """Every saved tensor under SAELens's names (views, without the instance axis)."""
        return self.batched.saved_tensors(0)

    # ------------------------------------------------------------------ the forward pass
    def _rows(self, x: Tensor, width: int, what: str) -> tuple[Tensor, tuple[int, ...]]:
        """x (..., width) as (rows, 1, width) in the SAE's dtype, and the leading shape; hook_z's
        (..., n_heads, d_head) is flattened as SAELens does."""
        if x.shape[-1] != width and x.ndim >= 2 and x.shape[-2] * x.shape[-1] == width:
            x = x.flatten(-2)
        if x.shape[-1] != width:
            raise SuperpositionError(
                f"{what}: the last dimension must be {width}; got a tensor of shape {tuple(x.shape)}"
            )
        lead = tuple(x.shape[:-1])
        return x.reshape(-1, 1, width).to(self.dtype), lead

    def encode(self, x: Tensor) -> Tensor:
        """Latents (..., d_sae) of activations (..., d_in)."""
        rows, lead = self._rows(x, self.cfg.d_in, "encode")
        if self.batched.cfg.input_normalization != "none":
            self._last_input = rows
        return self.batched.encode(rows).reshape(*lead, self.cfg.d_sae)

    def decode(self, z: Tensor, x: Tensor | None = None) -> Tensor:
        """z W_dec + b_dec (..., d_out) of latents (..., d_sae). An SAE that normalises each input
        maps back through the normalisation of `x` (default: the input last encoded, as SAELens);
        a skip transcoder adds its skip path when given `x`."""
        rows, lead = self._rows(z, self.cfg.d_sae, "decode")
        xr = None
        if x is not None:
            xr = self._rows(x, self.cfg.d_in, "decode x")[0]
        elif self.batched.cfg.input_normalization != "none":
            xr = self._last_input
            if xr is None or xr.shape[0] != rows.shape[0]:
                raise SuperpositionError(
                    f"decode: this SAE normalises each input ({self.batched.cfg.input_normalization}); "
                    "give decode(z, x)"
                )
        return self.batched.decode(rows, xr).reshape(*lead, self.d_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.run_with_hooks(x)

    def run_with_hooks(
        self,
        x: Tensor,
        fwd_hooks: Iterable[tuple[str, HookFn]] = (),
        cache: dict[str, Tensor] | None = None,
        names: Iterable[str] | None = None,
        target: Tensor | None = None,
    ) -> Tensor:
        """The output with hook functions applied at the named points (TransformerLens's
        fn(tensor, hook) -> tensor or None), and the points in `names` (default: all) stored in
        `cache`. `target`: what the error term is measured against (a transcoder's: the MLP output
        it replaces; default x)."""
        fns: dict[str, list[HookFn]] = {}
        for name, fn in fwd_hooks:
            if name not in HOOK_POINTS:
                raise SuperpositionError(
                    f"hook {name!r}: not an SAE hook point; one of {', '.join(HOOK_POINTS)}"
                )
            fns.setdefault(name, []).append(fn)
        wanted = set(HOOK_POINTS if names is None else names)

        def point(name: str, t: Tensor) -> Tensor:
            for fn in fns.get(name, ()):
                new = fn(t, HookInfo(name))
                if new is not None:
                    t = new
            if cache is not None and name in wanted:
                cache[name] = t
            return t

        sae_in = point("hook_sae_input", x)
        rows, lead = self._rows(sae_in, self.cfg.d_in, "forward")
        b = self.batched
        if "hook_sae_acts_pre" in fns or (cache is not None and "hook_sae_acts_pre" in wanted):
            point("hook_sae_acts_pre", b.pre_acts(rows).reshape(*lead, self.cfg.d_sae))
        z = point("hook_sae_acts_post", b.encode(rows).reshape(*lead, self.cfg.d_sae))
        recons = point("hook_sae_recons", self.decode(z, sae_in))
        out = recons
        if self.use_error_term:
            with torch.no_grad():
                clean = self.decode(self.encode(x), x) if (fns or sae_in is not x) else recons.detach()
                ref = x if target is None else target
                error = ref.reshape(recons.shape).to(recons.dtype) - clean
            out = recons + point("hook_sae_error", error)
        return point("hook_sae_output", out)

    def run_with_cache(
        self, x: Tensor, names_filter: Iterable[str] | str | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(output, {hook point: tensor}) for the points in `names_filter` (default: all)."""
        names = [names_filter] if isinstance(names_filter, str) else names_filter
        cache: dict[str, Tensor] = {}
        out = self.run_with_hooks(x, cache=cache, names=names)
        return out, cache

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        return f"SAE({self.batched.extra_repr()})"

    def extra_repr(self) -> str:
        return self.batched.extra_repr()


__all__ = ["HOOK_POINTS", "SAE", "SAECfg", "as_batched"]
