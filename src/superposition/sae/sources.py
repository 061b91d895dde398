"""Activation sources whose true features are known, for measuring SAE recovery exactly.

A source has ``sample(batch, generator) -> x`` with x of shape (batch, d) or (batch, inst, d),
plus ``sample_with_truth`` returning the true feature coefficients too, and ``features``: the
true directions, (n, d) or (inst, n, d).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from superposition.errors import SuperpositionError
from superposition.seeding import derive_seed
from superposition.toy.data import FeatureDistribution, Group
from superposition.toy.model import ToyModel


@dataclass
class SyntheticDictionary:
    """N unit directions in d dimensions; x = Σ_i c_i f_i with sparse coefficients c.

    Feature i fires with probability p_i ∝ (i + 1)^(−zipf_exponent) (0: all equal), scaled so the
    expected number of active features is `mean_l0` (each p_i capped at 1); an active feature's
    coefficient is uniform in `magnitude`. `groups` correlate features (see toy.data). `hierarchy`
    maps a parent to its children: a child fires only when its parent does, so its marginal
    probability is p_child · p_parent.
    """

    n_features: int = 1024
    d: int = 128
    mean_l0: float = 8.0
    zipf_exponent: float = 1.0
    magnitude: tuple[float, float] = (0.0, 1.0)
    groups: Sequence[Group] = ()
    hierarchy: dict[int, list[int]] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_features <= 0 or self.d <= 0:
            raise SuperpositionError(
                f"synthetic dictionary: n_features and d must be positive, got {self.n_features}, {self.d}"
            )
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "synthetic-dictionary"))
        F = torch.randn(self.n_features, self.d, generator=gen)
        self.features = F / F.norm(dim=-1, keepdim=True)  # (n, d)
        weights = (torch.arange(self.n_features, dtype=torch.float64) + 1) ** (-self.zipf_exponent)
        self.probability = (weights * self.mean_l0 / weights.sum()).clamp(max=1.0)
        self._dist = FeatureDistribution(
            self.probability.unsqueeze(0), self.groups, value_range=self.magnitude
        )
        children = [c for cs in self.hierarchy.values() for c in cs]
        if any(not 0 <= i < self.n_features for i in list(self.hierarchy) + children):
            raise SuperpositionError(f"hierarchy: feature indices must lie in [0, {self.n_features})")
        self._parent_of = torch.full((self.n_features,), -1, dtype=torch.long)
        for parent, cs in self.hierarchy.items():
            self._parent_of[cs] = parent

    def sample_with_truth(
        self, batch: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """x (batch, d) and the coefficients c (batch, n_features)."""
        c = self._dist.sample(batch, generator)[:, 0]
        has_parent = self._parent_of >= 0
        if bool(has_parent.any()):
            parent_on = c[:, self._parent_of.clamp(min=0)] != 0
            c = torch.where(has_parent & ~parent_on, torch.zeros_like(c), c)
        return c @ self.features, c

    def sample(
        self, batch: int, generator: torch.Generator | None = None, out: Tensor | None = None
    ) -> Tensor:
        return self.sample_with_truth(batch, generator)[0]


class ToyHidden:
    """Hidden activations h = W x of a trained toy model: x (batch, inst, d_hidden), with
    `features` (inst, n_features, d), the columns of each instance's W. With `instance`, one
    instance as a plain source: x (batch, d_hidden) and `features` (n_features, d)."""

    def __init__(self, model: ToyModel, data: FeatureDistribution, instance: int | None = None) -> None:
        self.model = model
        self.data = data
        self.instance = instance
        features = model.W.detach().transpose(1, 2).clone()
        self.features = features if instance is None else features[instance]

    @torch.no_grad()
    def sample_with_truth(
        self, batch: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        x = self.data.sample(batch, generator)
        h = self.model.hidden(x)
        if self.instance is None:
            return h, x
        return h[:, self.instance], x[:, self.instance]

    def sample(
        self, batch: int, generator: torch.Generator | None = None, out: Tensor | None = None
    ) -> Tensor:
        return self.sample_with_truth(batch, generator)[0]


class TensorSource:
    """Serves consecutive batches of a fixed activation tensor (n, d), wrapping around; used to
    feed two trainers identical data. `coefficients` (n, n_features), if given, are the truth."""

    def __init__(self, x: Tensor, coefficients: Tensor | None = None) -> None:
        self.x, self.coefficients, self.pos = x, coefficients, 0

    def _take(self, t: Tensor, batch: int, start: int) -> Tensor:
        idx = (torch.arange(batch) + start) % t.shape[0]
        return t[idx] if start + batch > t.shape[0] else t[start : start + batch]

    def sample_with_truth(
        self, batch: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor | None]:
        start = self.pos
        self.pos = (self.pos + batch) % self.x.shape[0]
        c = None if self.coefficients is None else self._take(self.coefficients, batch, start)
        return self._take(self.x, batch, start), c

    def sample(
        self, batch: int, generator: torch.Generator | None = None, out: Tensor | None = None
    ) -> Tensor:
        return self.sample_with_truth(batch, generator)[0]
