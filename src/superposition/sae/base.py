"""What every SAE architecture shares, and the registry that lists them.

An architecture is one module with one class (or a few) decorated with `@architecture`. The class
declares everything the rest of the package needs to know about it:

    name             the `architecture` key in configs and cfg.json (`aliases`: other libraries')
    Options          a small Config of the keys it adds to SAEConfig (k, bandwidth, ...)
    check_config     requirements across keys ("k: required", "prefixes: ... ending at d_sae")
    encode / loss    its inference form and its training objective
    saved_tensors    its weights under the SAELens names, and load_saved to read them back
    l0_key / penalty_sweep   how an experiment reaches a target L0 with it

`superposition.sae.registry` imports the architecture modules (one line each); SAEConfig and every
list of architectures elsewhere are derived from `ARCHITECTURES`.

Shapes: activations are (batch, inst, d_in); latents (batch, inst, d_sae). Parameters carry a
leading instance axis so `n_instances` SAEs (seeds, sparsity coefficients, ...) train in one pass:
W_enc (inst, d_in, d_sae), W_dec (inst, d_sae, d_in), b_enc (inst, d_sae), b_dec (inst, d_in).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from superposition.config import Config
from superposition.sae.sparse import Encoded

if TYPE_CHECKING:
    from superposition.sae.config import SAEConfig


class NoOptions(Config):
    """An architecture that adds no config keys."""


def per_instance(default: float, description: str) -> Any:
    """A coefficient that takes one value, or a list with one per instance (a sweep trained as one
    batched SAE); SAEConfig checks the list's length and saving keeps each instance's own value."""
    return Field(
        default,
        description=f"{description}; a list gives one per instance",
        json_schema_extra={"per_instance": True},
    )


def training_bytes(n_instances: int, d_in: int, d_sae: int, batch: int) -> int:
    """A rough upper estimate of the memory to train an SAE: its parameters with their gradients
    and Adam moments (4 copies), and about six (batch, inst, d_sae) float tensors of latents,
    masks and their gradients."""
    params = n_instances * (2 * d_in * d_sae + d_sae + d_in)
    return 4 * (4 * params + 6 * batch * n_instances * d_sae + 4 * batch * n_instances * d_in)


def _one_instance(encode):
    """An architecture's encode, also taking x as (tokens, d_in) for a one-instance SAE (as SAELens
    users call it) and then giving (tokens, d_sae)."""

    @functools.wraps(encode)
    def wrapper(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if x.ndim == 2:
            self._check_one_instance(x)
            return encode(self, x.unsqueeze(1), *args, **kwargs)[:, 0]
        return encode(self, x, *args, **kwargs)

    return wrapper


ARCHITECTURES: dict[str, type[BatchedSAE]] = {}


def architecture(cls: type[BatchedSAE]) -> type[BatchedSAE]:
    """Class decorator: register an SAE architecture under `cls.name`."""
    if cls.name in ARCHITECTURES:
        raise ValueError(f"architecture {cls.name!r} is registered twice")
    ARCHITECTURES[cls.name] = cls
    return cls


@dataclass
class StepState:
    """What the trainer tells the loss at each step."""

    sparsity_scale: float = 1.0  # warm-up factor of the sparsity coefficient
    dead: Tensor | None = None  # Bool[Tensor, "inst d_sae"]: latents currently counted as dead


@dataclass
class LossOut:
    total: Tensor  # scalar: summed over instances, each instance's terms averaged over the batch
    terms: dict[str, Tensor] = field(default_factory=dict)  # name -> Float[Tensor, "inst"]
    z: Tensor | None = None  # latents used in training, (batch, inst, d_sae); sparse paths may omit it
    x_hat: Tensor | None = None
    fired: Tensor | None = None  # Bool[Tensor, "inst d_sae"]: latents that fired in this batch (else from z)
    l0: Tensor | None = None  # Float[Tensor, "inst"]: mean active latents per example (else from z)
    # Float[Tensor, "inst"]: the local reconstruction term inside `total` (else terms["mse"]), which
    # an end-to-end objective replaces (lm/e2e.py); Matryoshka's is the mean over its prefixes
    reconstruction: Tensor | None = None

    def local_reconstruction(self) -> Tensor:
        return self.terms["mse"] if self.reconstruction is None else self.reconstruction


class BatchedSAE(nn.Module):
    """Parameters, decoding, saving and the decoder constraint shared by every architecture."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()  # names other libraries' cfg.json use for it
    Options: ClassVar[type[Config]] = NoOptions
    # How an experiment reaches a target L0: a config key set to it (the TopK family's "k"), or a
    # penalty coefficient swept over instances, keeping the instance closest to the target.
    l0_key: ClassVar[str | None] = None
    penalty_sweep: ClassVar[tuple[str, list[float]] | None] = None
    # Parameters whose gradient is by design not the derivative of the loss: a straight-through
    # estimator's pseudo-gradient, or a term that holds them fixed (tests skip finite differences).
    surrogate_gradients: ClassVar[tuple[str, ...]] = ()
    # Tensors load_saved can do without (e.g. a threshold that files of other libraries lack).
    optional_tensors: ClassVar[tuple[str, ...]] = ()
    # A transcoder maps one activation to another (sae/transcoder.py): it is trained on rows
    # [x | y] and reconstructs y; experiments that compare SAEs leave such classes out.
    transcodes: ClassVar[bool] = False
    unit_norm_decoder = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "encode" in cls.__dict__:  # every architecture's encode takes a plain (tokens, d_in) tensor too
            cls.encode = _one_instance(cls.__dict__["encode"])

    def __init__(self, cfg: SAEConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        n_inst, d, m, d_out = cfg.n_instances, cfg.d_in, cfg.d_sae, self.d_out_of(cfg)
        W_dec = torch.randn(n_inst, m, d_out, generator=generator)
        W_dec /= W_dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec)
        if d_out == d:
            W_enc = W_dec.transpose(1, 2).clone()
        else:  # a transcoder between widths: its own random unit columns
            W_enc = torch.randn(n_inst, d, m, generator=generator)
            W_enc /= W_enc.norm(dim=1, keepdim=True)
        self.W_enc = nn.Parameter(W_enc)
        self.b_enc = nn.Parameter(torch.zeros(n_inst, m))
        self.b_dec = nn.Parameter(torch.zeros(n_inst, d_out))
        self.metadata: dict = {}  # where a loaded SAE came from (format, file, context size, ...)

    @classmethod
    def check_config(cls, cfg: SAEConfig) -> None:
        """Raise ValueError("key: what is wrong") when keys this architecture needs are missing or
        inconsistent. Keys it does not use are ignored."""

    @property
    def n_instances(self) -> int:
        return self.W_dec.shape[0]

    @property
    def n_latents(self) -> int:
        """Latents per instance (what the trainer's dead-latent counts track)."""
        return self.cfg.d_sae

    def train_loss(self, x: Tensor, state: StepState) -> LossOut:
        """The trainer's call: this architecture's `loss` (sae/dictionary.py says the same of the
        dictionaries of several sources)."""
        return self.loss(x, state)

    @staticmethod
    def d_out_of(cfg: SAEConfig) -> int:
        """Width of what the decoder writes: d_in for an SAE, the target's width for a transcoder."""
        return cfg.d_in

    @property
    def d_out(self) -> int:
        return self.W_dec.shape[-1]

    # ----------------------------------------------------------------- what a batch holds
    def split(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        """(encoder input, reconstruction target) of a training batch: an SAE reconstructs its
        input; a transcoder's rows are [x | y] (sae/transcoder.py)."""
        return batch, batch

    def skip(self, x: Tensor) -> Tensor | None:
        """A linear path from input to output added to the decoder's (skip transcoders); None."""
        return None

    def reconstruct(self, z, x: Tensor) -> Tensor:
        """Training form of the decoder: z (sae/sparse.py Latents) W_dec + b_dec (+ the skip of x)."""
        out = z.decode(self.W_dec, self.b_dec)
        s = self.skip(x)
        return out if s is None else out + s

    def centres_input(self) -> bool:
        """Whether the encoder reads x − b_dec (SAELens's apply_b_dec_to_input)."""
        return self.cfg.apply_b_dec_to_input

    def encoder_weight(self) -> Tensor:
        """W_enc (inst, d_in, d_sae); a tied SAE returns W_decᵀ."""
        return self.W_enc

    def encoder_param(self) -> nn.Parameter | None:
        """The learned encoder matrix, or None when the encoder is tied to the decoder."""
        return self._parameters.get("W_enc")

    def encoder_input(self, x: Tensor) -> Tensor:
        """What the encoder multiplies: n(x) − b_dec, with n the input normalisation (identity by
        default) and without − b_dec when `apply_b_dec_to_input` is false."""
        x = self._normalize(x)
        return x - self.b_dec if self.centres_input() else x

    def pre_acts(self, x: Tensor) -> Tensor:
        """encoder_input(x) W_enc + b_enc: Float[Tensor, "batch inst d_sae"]."""
        # batched matmul over instances on (inst, batch, ·) views: no permuted copies as with einsum
        xc = self.encoder_input(x).transpose(0, 1)
        return torch.baddbmm(self.b_enc.unsqueeze(1), xc, self.encoder_weight()).transpose(0, 1)

    def encoded(self, x: Tensor, dtype: torch.dtype | None = None) -> Encoded:
        """The encoder's product for x computed once without a graph (in `dtype` if given), from
        which a training loss chooses the active latents and takes their values with gradients
        (sae/sparse.py)."""
        b_sub = self.b_dec if self.centres_input() else None
        return Encoded(self._normalize(x), b_sub, self.encoder_weight().transpose(1, 2), self.b_enc, dtype)

    def initial_latents(self, x: Tensor) -> Tensor | None:
        """Latents for x that scale with W_enc (f(c·W_enc) = c·f(W_enc) for c > 0), from which the
        trainer fits W_enc's scale at the start; None (the default) leaves W_enc as initialised."""
        return None

    def extra_repr(self) -> str:
        c = self.cfg
        parts = [c.architecture, f"d_in={c.d_in}", f"d_sae={c.d_sae}"]
        if self.transcodes:
            parts.append(f"d_out={self.d_out}")
        parts += [
            f"{k}={getattr(c, k)}" for k in ("k",) if getattr(c, k, None) is not None and self.l0_key == k
        ]
        if self.n_instances != 1:
            parts.append(f"n_instances={self.n_instances}")
        if getattr(c, "hook_name", None):
            parts.append(f"hook_name={c.hook_name!r}")
        return ", ".join(parts)

    def decode(self, z: Tensor, x: Tensor | None = None) -> Tensor:
        """z W_dec + b_dec: Float[Tensor, "batch inst d_in"]; for an SAE that normalises each input,
        mapped back through the normalisation of the input x it encoded. A one-instance SAE also
        takes z as (tokens, d_sae) and gives (tokens, d_in)."""
        if z.ndim == 2:
            self._check_one_instance(z)
            return self.decode(z.unsqueeze(1), None if x is None else x.unsqueeze(1))[:, 0]
        out = torch.baddbmm(self.b_dec.unsqueeze(1), z.transpose(0, 1), self.W_dec).transpose(0, 1)
        if x is not None and (s := self.skip(x)) is not None:
            out = out + s
        if self.cfg.input_normalization == "none":
            return out
        if x is None:
            raise ValueError(
                f"this SAE normalises each input ({self.cfg.input_normalization}): use decode(z, x)"
            )
        return self._denormalize(out, x)

    def _normalize(self, x: Tensor) -> Tensor:
        mode = self.cfg.input_normalization
        if mode == "constant_norm_rescale":  # x · √d_in / ‖x‖
            return x * (self.cfg.d_in**0.5 / x.norm(dim=-1, keepdim=True))
        if mode == "layer_norm":  # (x − mean) / (std + 1e-5), std with Bessel's correction as SAELens
            centred = x - x.mean(-1, keepdim=True)
            return centred / (centred.std(-1, keepdim=True) + 1e-5)
        return x

    def _denormalize(self, out: Tensor, x: Tensor) -> Tensor:
        if self.cfg.input_normalization == "constant_norm_rescale":
            return out / (self.cfg.d_in**0.5 / x.norm(dim=-1, keepdim=True))
        mean = x.mean(-1, keepdim=True)
        return out * (x - mean).std(-1, keepdim=True) + mean

    def encode(self, x: Tensor) -> Tensor:  # pragma: no cover - every architecture defines it
        raise NotImplementedError

    def _check_one_instance(self, x: Tensor) -> None:
        if self.n_instances != 1:
            raise ValueError(
                f"a tensor of shape {tuple(x.shape)} is for a one-instance SAE; this one has "
                f"{self.n_instances} instances: give (batch, {self.n_instances}, features)"
            )

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x), x)

    def loss(self, x: Tensor, state: StepState) -> LossOut:  # pragma: no cover
        raise NotImplementedError

    def mse(self, x: Tensor, x_hat: Tensor) -> Tensor:
        """Per instance: mean over batch of the squared error summed over the features."""
        return (x_hat - x).square().sum(-1).mean(0)

    # ----------------------------------------------------------------- decoder constraint
    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Project out the gradient component along each (unit) decoder row, so the optimiser
        moves rows along the sphere rather than changing their length."""
        if not self.unit_norm_decoder or self.W_dec.grad is None:
            return
        W = self.W_dec / self.W_dec.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        g = self.W_dec.grad
        g -= (g * W).sum(-1, keepdim=True) * W

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        if self.unit_norm_decoder:
            self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True).clamp(min=1e-8)

    @torch.no_grad()
    def fold_input_scale(self, s: Tensor, t: Tensor | None = None) -> None:
        """Rewrite the weights of an SAE trained on x·s (s: (inst, 1)), reconstructing y·t (t = s
        for an SAE, whose target is its input), so it takes raw x and gives raw y.

        With W_enc' = s W_enc, W_dec' = W_dec / t and b_dec' = b_dec / t the pre-activations, and so
        every threshold and latent, are unchanged, and ŷ' = ŷ / t (an SAE's centring by b_dec
        stays consistent because t = s).
        """
        t = s if t is None else t
        enc = self.encoder_param()
        if enc is not None:
            enc.mul_(s.unsqueeze(-1))
        self.W_dec.div_(t.unsqueeze(-1))
        self.b_dec.div_(t)
        self.unit_norm_decoder = False

    # ----------------------------------------------------------------- saving
    def saved_tensors(self, i: int) -> dict[str, Tensor]:
        """Instance i's weights under the SAELens names: W_enc [d_in, d_sae], W_dec [d_sae, d_in],
        b_enc [d_sae], b_dec [d_in]; architectures add their own (threshold, ...)."""
        return {
            "W_enc": self.encoder_weight()[i],
            "W_dec": self.W_dec[i],
            "b_enc": self.b_enc[i],
            "b_dec": self.b_dec[i],
        }

    @torch.no_grad()
    def load_saved(self, t: Mapping[str, Tensor]) -> None:
        """Set this (one-instance) SAE from tensors named as `saved_tensors` names them. The
        caller has checked that every required tensor is there with the right shape."""
        self.W_dec.copy_(t["W_dec"].unsqueeze(0))
        self.b_dec.copy_(t["b_dec"].unsqueeze(0))
        self.b_enc.copy_(t["b_enc"].unsqueeze(0))
        enc = self.encoder_param()
        if enc is not None:
            enc.copy_(t["W_enc"].unsqueeze(0))

    def required_tensors(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every tensor `load_saved` reads."""
        return {k: tuple(v.shape) for k, v in self.saved_tensors(0).items() if k not in self.optional_tensors}
