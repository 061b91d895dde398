"""Transcoders (Dunefsky et al. 2024) and skip transcoders (Paulo et al. 2025): a sparse dictionary
that reads one activation and predicts another, such as an MLP's input and its output:

    z = σ(x W_enc + b_enc),   ŷ = z W_dec + b_dec  (+ x W_skipᵀ for a skip transcoder)

with y = MLP(x) the target. σ is any SAE architecture's sparsity (`sparsity`: topk, batchtopk,
jumprelu, standard's ReLU + L1, ...): the transcoder is that architecture's class with the input
and target pulled apart, so its loss, AuxK, thresholds and penalties are the SAE's own.

Choices, following sparsify and the papers: the input is not centred by b_dec (it lives in
another space than the output); the decoder is left free (not unit-normalised) unless the sparsity
penalises latent magnitudes (L1), where a free decoder would let the penalty shrink to nothing;
W_skip (d_out × d_in) starts at zero so the skip path is learned, not assumed; a free decoder
starts at zero too (sparsify's choice: on SmolLM2's blocks.6 MLP it reaches FVU 0.707 after 100
steps against 0.777 from random unit rows), so the first steps do not fit a random map.

Training rows are [x | y] (width d_in + d_out, from the activation source); `split` separates
them. Saved tensors: W_enc [d_in, d_sae], W_dec [d_sae, d_out], b_enc, b_dec [d_out], and W_skip
[d_out, d_in] for a skip transcoder; cfg.json names both hooks (`hook_name`, `hook_name_out`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field
from torch import Tensor, nn

from superposition.config import Config
from superposition.sae.base import ARCHITECTURES, BatchedSAE, architecture

# sparsities whose penalty grows with latent magnitudes: their decoder rows keep unit norm
_MAGNITUDE_PENALTY = ("standard", "gated")


class TranscoderOptions(Config):
    sparsity: str = Field(
        "topk",
        description="transcoder, skip_transcoder: the latents' sparsity, as the SAE architecture of that "
        "name (topk, batchtopk, jumprelu, standard, gated, matryoshka) with its own keys (k, ...)",
    )
    d_out: int | None = Field(None, gt=0, description="transcoders: width of the target (default d_in)")
    hook_name_out: str | None = Field(
        None, description="transcoders on a language model: the hook of the target (blocks.L.hook_mlp_out)"
    )


_COMPOSED: dict[tuple[type, str], type] = {}


class _TranscoderBase(BatchedSAE):
    """The parts every transcoder shares; `__new__` returns the class composed with the SAE of
    `cfg.sparsity`, whose methods come after these in the MRO."""

    Options = TranscoderOptions
    transcodes = True
    skip_connection = False

    def __new__(cls, cfg=None, generator=None):
        if cls in ARCHITECTURES.values() and cfg is not None:  # the registered name: compose
            base = ARCHITECTURES[cfg.sparsity]
            key = (cls, cfg.sparsity)
            if key not in _COMPOSED:
                _COMPOSED[key] = type(f"{base.__name__}{cls.__name__}", (cls, base), {})
            cls = _COMPOSED[key]
        return super().__new__(cls)

    def __init__(self, cfg, generator: torch.Generator | None = None) -> None:
        cfg = cfg.model_copy(update={"apply_b_dec_to_input": False})  # as saved: never centred
        super().__init__(cfg, generator)
        self.unit_norm_decoder = self.unit_norm_decoder and cfg.sparsity in _MAGNITUDE_PENALTY
        if not self.unit_norm_decoder:  # a free decoder starts at zero (as sparsify's): ŷ = b_dec at first
            with torch.no_grad():
                self.W_dec.zero_()
        if self.skip_connection:
            self.W_skip = nn.Parameter(torch.zeros(cfg.n_instances, self.d_out_of(cfg), cfg.d_in))

    @classmethod
    def check_config(cls, cfg) -> None:
        base = ARCHITECTURES.get(cfg.sparsity)
        if base is None or base.transcodes:
            names = [a for a, c in ARCHITECTURES.items() if not c.transcodes]
            raise ValueError(f"sparsity: one of {', '.join(names)}, got {cfg.sparsity!r}")
        base.check_config(cfg)
        if cfg.input_normalization != "none":
            raise ValueError("input_normalization: transcoders read raw inputs (none)")

    @staticmethod
    def d_out_of(cfg) -> int:
        return cfg.d_out or cfg.d_in

    def centres_input(self) -> bool:
        return False

    def split(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        d_in = self.cfg.d_in
        if batch.shape[-1] != d_in + self.d_out:
            raise ValueError(
                f"a transcoder ({d_in} -> {self.d_out}) trains on rows [x | y] of width "
                f"{d_in + self.d_out}, got {batch.shape[-1]}"
            )
        return batch[..., :d_in], batch[..., d_in:]

    def skip(self, x: Tensor) -> Tensor | None:
        if not self.skip_connection:
            return None
        return torch.bmm(x.transpose(0, 1), self.W_skip.transpose(1, 2)).transpose(0, 1)

    @torch.no_grad()
    def fold_input_scale(self, s: Tensor, t: Tensor | None = None) -> None:
        t = s if t is None else t
        super().fold_input_scale(s, t)
        if self.skip_connection:  # ŷ/t = (x s) W_skipᵀ / t
            self.W_skip.mul_((s / t).unsqueeze(-1))

    def saved_tensors(self, i: int) -> dict[str, Tensor]:
        t = super().saved_tensors(i)
        return {**t, "W_skip": self.W_skip[i]} if self.skip_connection else t

    @torch.no_grad()
    def load_saved(self, t: Mapping[str, Tensor]) -> None:
        super().load_saved(t)
        if self.skip_connection:
            self.W_skip.copy_(t["W_skip"].unsqueeze(0))


@architecture
class Transcoder(_TranscoderBase):
    name = "transcoder"


@architecture
class SkipTranscoder(_TranscoderBase):
    name = "skip_transcoder"
    skip_connection = True
