"""Neuron-level analysis for models with a privileged hidden basis.

Input weights are W of shape (..., hidden, feat): row j holds neuron j's weight from every
feature. A neuron is *monosemantic* when one feature dominates its row, measured by
max_f |W_jf| / ‖W_j‖ (1 for a single feature, 1/√k for k equal ones).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

EPS = 1e-8


def monosemanticity(W: Tensor) -> Tensor:
    """max_f |W_jf| / ‖W_j‖ per neuron: Float[Tensor, "... hidden"] (0 for a dead neuron)."""
    norms = W.norm(dim=-1)
    return torch.where(norms > EPS, W.abs().amax(-1) / norms.clamp(min=EPS), torch.zeros_like(norms))


def monosemantic_neurons(W: Tensor, threshold: float = 0.9, min_norm: float = 0.1) -> Tensor:
    """Bool[Tensor, "... hidden"]: alive neurons (‖W_j‖ > min_norm) whose top feature carries
    more than `threshold` of the row norm."""
    return (W.norm(dim=-1) > min_norm) & (monosemanticity(W) > threshold)


def dominant_feature(W: Tensor) -> Tensor:
    """Long[Tensor, "... hidden"]: the feature with the largest |weight| into each neuron."""
    return W.abs().argmax(-1)


def abs_pairs(W_in: Tensor, W_out: Tensor, threshold: float = 0.7, min_norm: float = 0.1) -> Tensor:
    """For the |x| computation model: Bool[Tensor, "... feat"], True where feature f has a pair of
    (mostly) monosemantic neurons with input weights of opposite sign and positive output weights,
    the two halves ReLU(x) and ReLU(−x) of |x| = ReLU(x) + ReLU(−x).

    W_in: (..., hidden, feat); W_out: (..., feat, hidden).
    """
    mono = monosemantic_neurons(W_in, threshold, min_norm)  # (..., hidden)
    dom = dominant_feature(W_in)  # (..., hidden)
    n_feat = W_in.shape[-1]
    sign = torch.gather(W_in, -1, dom.unsqueeze(-1)).squeeze(-1).sign()  # (..., hidden)
    out_w = torch.gather(W_out.transpose(-1, -2), -1, dom.unsqueeze(-1)).squeeze(-1)  # W_out[f=dom(j), j]
    useful = mono & (out_w > 0)
    onehot = torch.nn.functional.one_hot(dom, n_feat).bool() & useful.unsqueeze(-1)  # (..., hidden, feat)
    has_pos = (onehot & (sign > 0).unsqueeze(-1)).any(-2)
    has_neg = (onehot & (sign < 0).unsqueeze(-1)).any(-2)
    return has_pos & has_neg


@dataclass
class AsymmetricMotif:
    neuron: int
    strong_feature: int
    weak_feature: int
    ratio: float  # |W[j, strong]| / |W[j, weak]|
    opposite_signs: bool


def asymmetric_motifs(W_in: Tensor, min_ratio: float = 2.0, min_share: float = 0.25) -> list[AsymmetricMotif]:
    """Neurons (of one instance, W_in (hidden, feat)) that carry two features with very different
    weights: the top two |weights| belong to features a and b with |W_ja| ≥ `min_ratio`·|W_jb| and
    |W_jb| ≥ `min_share`·‖W_j‖, so the neuron is polysemantic but one feature dominates it.

    This is our operational reading of the paper's "asymmetric superposition", in which two
    features share a neuron with unequal strengths and the weaker one is compensated elsewhere.
    It is a heuristic for finding candidates to inspect, not a proof of the mechanism.
    """
    motifs = []
    norms = W_in.norm(dim=-1)
    top = W_in.abs().topk(2, dim=-1)
    for j in range(W_in.shape[0]):
        (va, vb), (a, b) = top.values[j].tolist(), top.indices[j].tolist()
        if norms[j] <= EPS or vb < min_share * norms[j].item() or va < min_ratio * vb:
            continue
        motifs.append(AsymmetricMotif(j, a, b, va / vb, bool(W_in[j, a] * W_in[j, b] < 0)))
    return motifs
