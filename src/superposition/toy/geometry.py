"""Geometry of feature directions, after Toy Models of Superposition (Elhage et al. 2022).

Every function takes W of shape (..., hidden, feat), so one call measures all instances of a
batched model; column W_i = W[..., :, i] is feature i's direction and Ŵ_i = W_i / ‖W_i‖.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

EPS = 1e-8
# The fractions of a dimension per feature that the paper finds features "stick" to.
STICKY_FRACTIONS = (1.0, 3 / 4, 2 / 3, 1 / 2, 2 / 5, 3 / 8)


def feature_norms(W: Tensor) -> Tensor:
    """‖W_i‖: Float[Tensor, "... feat"]."""
    return W.norm(dim=-2)


def overlaps(W: Tensor) -> Tensor:
    """O[..., i, j] = Ŵ_i · W_j (rows are unit directions; zero rows for zero-norm features)."""
    norms = feature_norms(W).unsqueeze(-1)  # (..., feat, 1)
    unit_rows = W.transpose(-1, -2) / norms.clamp(min=EPS)
    return unit_rows @ W


def interference(W: Tensor) -> Tensor:
    """Σ_{j≠i} (Ŵ_i · W_j)²: how much other features project onto feature i's direction."""
    o2 = overlaps(W).square()
    return o2.sum(-1) - o2.diagonal(dim1=-2, dim2=-1)


def feature_dimensionality(W: Tensor) -> Tensor:
    """D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)², the fraction of a dimension feature i occupies.

    1 for a feature with a dedicated dimension, 1/2 for an antipodal pair, 2/5 in a pentagon,
    0 for a feature that is not represented (‖W_i‖ = 0).
    """
    norms2 = feature_norms(W).square()
    denom = overlaps(W).square().sum(-1)
    return torch.where(norms2 > EPS, norms2 / denom.clamp(min=EPS), torch.zeros_like(norms2))


def dimensions_per_feature(W: Tensor) -> Tensor:
    """D* = d_hidden / ‖W‖_F²: Float[Tensor, "..."]. About 1/n_represented per dimension."""
    return W.shape[-2] / W.square().sum((-1, -2)).clamp(min=EPS)


def represented(W: Tensor, threshold: float = 0.5) -> Tensor:
    """Bool[Tensor, "... feat"]: features with ‖W_i‖ above `threshold` (trained ones sit near 0 or 1)."""
    return feature_norms(W) > threshold


def in_superposition(W: Tensor, norm_threshold: float = 0.5, interference_threshold: float = 0.1) -> Tensor:
    """Represented features that share their direction with others (interference above threshold)."""
    return represented(W, norm_threshold) & (interference(W) > interference_threshold)


def angles(W: Tensor) -> Tensor:
    """Angle in degrees between every pair of feature directions: Float[Tensor, "... feat feat"].

    NaN where either feature has zero norm.
    """
    norms = feature_norms(W)
    cos = overlaps(W) / norms.unsqueeze(-2).clamp(min=EPS)
    deg = torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))
    zero = (norms <= EPS).unsqueeze(-1) | (norms <= EPS).unsqueeze(-2)
    return deg.masked_fill(zero, math.nan)


def polar_angle_gaps(W: Tensor, threshold: float = 0.5) -> Tensor:
    """For a 2-D hidden space, W of shape (2, feat): the angles in degrees between neighbouring
    represented features going round the circle (they sum to 360). Five features in a regular
    pentagon give five gaps of 72°; two orthogonal features give 90° and 270°."""
    if W.ndim != 2 or W.shape[0] != 2:
        raise ValueError(f"polar_angle_gaps needs W of shape (2, feat), got {tuple(W.shape)}")
    keep = represented(W, threshold)
    if keep.sum() < 2:
        return torch.empty(0)
    theta = torch.rad2deg(torch.atan2(W[1, keep], W[0, keep])).sort().values
    return torch.diff(torch.cat([theta, theta[:1] + 360.0]))


PHASES = ("not represented", "dedicated dimension", "superposition")


def classify_feature(
    W: Tensor, feature: int = -1, norm_threshold: float = 0.5, interference_threshold: float = 0.1
) -> Tensor:
    """Phase of one feature in each instance: Long[Tensor, "..."] indexing `PHASES`.

    0 not represented (‖W_f‖ ≤ norm_threshold); 1 a dedicated dimension (represented, and no other
    feature projects onto it: interference ≤ threshold); 2 superposition (represented and shared).
    """
    rep = feature_norms(W)[..., feature] > norm_threshold
    shared = interference(W)[..., feature] > interference_threshold
    return torch.where(rep, torch.where(shared, 2, 1), 0)


def sticky_share(fdims: np.ndarray, tol: float = 0.03, floor: float = 0.3) -> tuple[float, float, int]:
    """Share of feature dimensionalities D_i ≥ `floor` within `tol` of a sticky fraction, and the
    share that values spread uniformly over the same range would give (the chance level).

    Dimensionalities below `floor` are left out: very sparse instances pack features at small D_i
    (about m/n), where the named fractions do not apply.
    """
    fractions = np.array(STICKY_FRACTIONS)

    def near(v: np.ndarray) -> np.ndarray:
        return np.min(np.abs(v[:, None] - fractions[None, :]), axis=1) <= tol

    d = fdims[fdims >= floor]
    if d.size == 0:
        return 0.0, 0.0, 0
    grid = np.linspace(floor, max(1.0 + tol, float(d.max())), 10_001)
    return float(near(d).mean()), float(near(grid).mean()), int(d.size)
