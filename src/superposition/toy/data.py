"""Sparse synthetic features, batched over instances.

Each feature is present with its own probability p[inst, feat] and then takes a value uniform in
`value_range` ((0, 1] by default, as in Toy Models of Superposition; excluding 0 makes x > 0
mean exactly "present"). Features can be grouped:

* ``correlated``: members are present together. One uniform u per group and row decides, and
  member i is present iff u < p_i, so equal probabilities give all-or-none and every marginal is
  exactly p_i.
* ``anticorrelated``: at most one member is present. Member i is present iff u falls in its own
  slice [c_{i-1}, c_i) of [0, Σp), c being the running sum of the members' probabilities; this
  needs Σp ≤ 1 and again keeps every marginal exactly p_i.
* features in no group are independent (a group of one).

Instances whose features are all independent and common are filled densely, one uniform per
entry (r < p decides presence and 1 − r/p is the value). Everything else works per group *event* (some member
present, probability q = max p for correlated
groups, Σp for anticorrelated ones, p for single features). Dense columns (q > ``DENSE_BELOW``)
draw one uniform per row; sparse columns draw only the gaps between events, which are geometric
with parameter q, so very sparse data costs O(batch · q) random numbers rather than O(batch).
The conditional u ~ U[0, q) of each event then picks its members.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from superposition.errors import SuperpositionError

GroupKind = Literal["correlated", "anticorrelated"]
DENSE_BELOW = 0.1  # columns with event probability above this are sampled densely


@dataclass(frozen=True)
class Group:
    kind: GroupKind
    features: tuple[int, ...]


@dataclass
class FeatureDistribution:
    """Sparse features for `n_instances` independent instances.

    probability: marginal presence probability, shape (inst, feat).
    groups: correlation structure: one list of groups shared by every instance, or one list per
        instance. Features that belong to no group are independent.
    value_range: values of present features are uniform in (lo, hi].
    """

    probability: Tensor
    groups: Sequence[Group] | Sequence[Sequence[Group]] = ()
    value_range: tuple[float, float] = (0.0, 1.0)
    _tables: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        p = torch.as_tensor(self.probability, dtype=torch.float64)
        if p.ndim != 2:
            raise SuperpositionError(
                f"feature_probability: expected shape (inst, feat), got {tuple(p.shape)}"
            )
        if not torch.isfinite(p).all() or (p < 0).any() or (p > 1).any():
            raise SuperpositionError("feature_probability: every probability must lie in [0, 1]")
        self.probability = p
        n_inst, n_feat = p.shape
        per_inst = _groups_per_instance(self.groups, n_inst)
        self._per_instance_groups = per_inst
        self._tables = _build_tables(p, per_inst)
        lo, hi = self.value_range
        if not hi > lo:
            raise SuperpositionError(f"value_range: need lo < hi, got {self.value_range}")

    @property
    def n_instances(self) -> int:
        return self.probability.shape[0]

    def subset(self, instances: Sequence[int]) -> FeatureDistribution:
        """The distribution of some of the instances, in the order given."""
        idx = list(instances)
        return FeatureDistribution(
            self.probability[idx], [self._per_instance_groups[i] for i in idx], self.value_range
        )

    @property
    def n_features(self) -> int:
        return self.probability.shape[1]

    def sample(
        self, batch: int, generator: torch.Generator | None = None, out: Tensor | None = None
    ) -> Tensor:
        """Draw a batch: Float[Tensor, "batch inst feat"].

        The result is a transposed view of an (inst, batch, feat) buffer, so
        ``x.transpose(0, 1)`` is contiguous and ready for batched matmuls over instances. Pass that
        buffer back as `out` to reuse its memory on the next call.
        """
        shape = (self.n_instances, batch, self.n_features)
        if out is None:
            out = torch.empty(shape)
        elif out.shape != shape or not out.is_contiguous():
            raise ValueError(f"out must be a contiguous {shape} buffer, got {tuple(out.shape)}")
        t = self._tables
        lo, hi = self.value_range
        rng = numpy_rng(generator)
        # runs of consecutive instances, so a sweep of many small instances costs a few ops, not
        # a few per instance
        for a, b in t["dense_runs"]:
            # Every feature independent and common: one uniform r per entry. Given r < p,
            # 1 − r/p is uniform on (0, 1], so it serves as the value too, and ReLU zeroes the
            # absent entries (r ≥ p).
            block = out[a:b]
            rng.random(out=block.numpy(), dtype=np.float32)
            block.mul_(t["neg_inv_p"][a:b].unsqueeze(1)).add_(1.0).relu_()
            if (lo, hi) != (0.0, 1.0):
                block.mul_(hi - lo).add_(lo * (block > 0))
        for a, b in t["sparse_runs"]:
            out[a:b].zero_()
        inst, row, feat = self._indices(batch, rng)
        # 1 − U lies in (0, 1], like the dense path's values, so x > 0 exactly when present
        values = torch.from_numpy(rng.random(inst.shape[0], dtype=np.float32)).neg_().add_(1.0)
        if (lo, hi) != (0.0, 1.0):
            values = values.mul_(hi - lo).add_(lo)
        out.view(-1)[(inst * batch + row) * self.n_features + feat] = values
        return out.transpose(0, 1)

    def _indices(self, batch: int, rng: np.random.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """The (inst, row, feat) indices of the present features of a batch, leaving out the
        instances that `sample` fills densely."""
        t = self._tables
        rows, cols, u = _sample_events(t["q_events"], batch, rng)
        if t["trivial"]:  # every group is a single feature, always present when its event is
            n_groups = t["n_groups"]
            return cols // n_groups, rows, cols % n_groups
        members = t["members"][cols]  # (event, slot) feature index or -1
        u = u.unsqueeze(1)
        # each slot's [lo, hi) of its event's u, gathered by row (padding slots: [0, 0), never present)
        present = (u >= t["slot_lo"][cols]) & (u < t["slot_hi"][cols])
        ev, slot = present.nonzero(as_tuple=True)
        return cols[ev] // t["n_groups"], rows[ev], members.view(-1)[ev * members.shape[1] + slot]


def _groups_per_instance(groups, n_inst: int) -> list[list[Group]]:
    groups = list(groups)
    if not groups:
        return [[] for _ in range(n_inst)]
    if all(isinstance(g, Group) for g in groups):
        return [list(groups) for _ in range(n_inst)]
    if len(groups) != n_inst:
        raise SuperpositionError(
            f"groups: expected one list of groups per instance ({n_inst}), got {len(groups)}"
        )
    return [list(g) for g in groups]


def _build_tables(p: Tensor, per_inst: list[list[Group]]) -> dict:
    """Per instance and group: event probability q, member table, and each feature's slice
    [lo, hi) of the event's uniform u."""
    n_inst, n_feat = p.shape
    layouts: list[list[tuple[str, list[int]]]] = []
    for i, groups in enumerate(per_inst):
        seen: set[int] = set()
        layout = []
        for g in groups:
            if g.kind not in ("correlated", "anticorrelated"):
                raise SuperpositionError(
                    f"groups: unknown kind {g.kind!r}; allowed: correlated, anticorrelated"
                )
            for f in g.features:
                if not 0 <= f < n_feat:
                    raise SuperpositionError(f"groups: feature {f} out of range [0, {n_feat})")
                if f in seen:
                    raise SuperpositionError(f"groups: feature {f} is in two groups of instance {i}")
                seen.add(f)
            layout.append((g.kind, list(g.features)))
        layout += [("correlated", [f]) for f in range(n_feat) if f not in seen]
        layouts.append(layout)

    n_groups = max(len(lay) for lay in layouts)
    width = max(len(m) for lay in layouts for _, m in lay)
    q = torch.zeros(n_inst, n_groups, dtype=torch.float64)
    members = torch.full((n_inst, n_groups, width), -1, dtype=torch.long)
    lo = torch.zeros(n_inst, n_feat, dtype=torch.float64)
    hi = torch.zeros(n_inst, n_feat, dtype=torch.float64)
    for i, layout in enumerate(layouts):
        for g, (kind, feats) in enumerate(layout):
            members[i, g, : len(feats)] = torch.tensor(feats)
            probs = p[i, feats]
            if kind == "correlated":
                q[i, g] = probs.max()
                hi[i, feats] = probs
            else:
                ends = probs.cumsum(0)
                if ends[-1] > 1 + 1e-6:  # float32 inputs that sum to 1 land a little above it
                    raise SuperpositionError(
                        f"feature_probability: an anticorrelated group's probabilities must sum to at most 1 "
                        f"(instance {i}, features {feats} sum to {ends[-1].item():.3g})"
                    )
                q[i, g] = ends[-1].clamp(max=1)
                lo[i, feats] = ends - probs
                hi[i, feats] = ends
    singletons = [len(lay) == n_feat and all(m == [g] for g, (_, m) in enumerate(lay)) for lay in layouts]
    dense_blocks = {i for i in range(n_inst) if singletons[i] and bool((p[i] > DENSE_BELOW).all())}
    q_events = q.clone()
    q_events[sorted(dense_blocks)] = 0.0
    dense_flag = [i in dense_blocks for i in range(n_inst)]
    flat = members.reshape(n_inst * n_groups, width)
    owner = torch.arange(n_inst).repeat_interleave(n_groups).unsqueeze(1).expand_as(flat)
    real = flat >= 0
    slot_lo = torch.where(real, lo[owner, flat.clamp(min=0)], torch.zeros(()))
    slot_hi = torch.where(real, hi[owner, flat.clamp(min=0)], torch.zeros(()))
    return {
        "q_events": q_events.reshape(-1),
        "slot_lo": slot_lo,
        "slot_hi": slot_hi,
        "dense_runs": _runs(dense_flag, True),
        "sparse_runs": _runs(dense_flag, False),
        "neg_inv_p": -1.0 / p.float().clamp(min=1e-30),
        "members": members.reshape(n_inst * n_groups, width),
        "n_groups": n_groups,
        "trivial": width == 1 and all(singletons),
    }


def numpy_rng(generator: torch.Generator | None) -> np.random.Generator:
    """A numpy PCG64 generator seeded from `generator` (torch's default one when None).

    numpy draws float32 uniforms about twice as fast as torch on a CPU, and random numbers are
    most of the cost of sparse data; seeding it from the torch generator keeps runs reproducible
    from one seed.
    """
    seed = torch.randint(0, 2**62, (1,), generator=generator).item()
    return np.random.default_rng(seed)


def _uniform(rng: np.random.Generator, *shape: int, dtype=np.float64) -> Tensor:
    return torch.from_numpy(rng.random(shape, dtype=dtype))


def _runs(flags: list[bool], value: bool) -> list[tuple[int, int]]:
    """[start, end) of each maximal run of consecutive entries equal to `value`."""
    runs, start = [], None
    for i, f in enumerate(flags + [not value]):
        if f == value and start is None:
            start = i
        elif f != value and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _sample_events(q: Tensor, batch: int, rng: np.random.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Bernoulli(q[c]) events for every row of `batch` and column c.

    Returns (row, column, u) per event, u ~ U[0, q[c]) being the conditional uniform of the event.
    """
    dense = (q > DENSE_BELOW).nonzero().squeeze(1)
    sparse = ((q > 0) & (q <= DENSE_BELOW)).nonzero().squeeze(1)
    parts = []
    if dense.numel():
        r = _uniform(rng, dense.numel(), batch)
        hit = r < q[dense].unsqueeze(1)
        c, row = hit.nonzero(as_tuple=True)
        parts.append((row, dense[c], r[c, row]))
    if sparse.numel():
        row, c = _geometric_events(q[sparse], batch, rng)
        u = _uniform(rng, row.numel()) * q[sparse][c]
        parts.append((row, sparse[c], u))
    if not parts:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, torch.zeros(0, dtype=torch.float64)
    return tuple(torch.cat(xs) for xs in zip(*parts))  # type: ignore[return-value]


def _geometric_events(q: Tensor, batch: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """Event rows of independent Bernoulli(q) processes over `batch` rows, one per column.

    The gap to the next event is Geometric(q) on {1, 2, ...}: ceil(log U / log(1 - q)). We draw
    a few standard deviations more gaps than the expected count and top up the rare columns whose
    gaps did not reach the end of the batch, so the result is exact.
    """
    # float32 holds every integer position exactly below 2**24; it halves the cost of log and cumsum
    dtype = np.float32 if batch < 2**20 else np.float64
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    inv_log1mq = 1.0 / torch.log1p(-q).to(tdtype)
    # columns of similar q share one draw; `need` is their expected event count plus 6 sd
    mean = batch * q
    need = (mean + 6 * mean.sqrt() + 8).ceil().long()
    bucket = torch.ceil(torch.log2(need.double())).long()
    rows_out, cols_out = [], []
    for b in bucket.unique().tolist():
        cols_left = (bucket == b).nonzero().squeeze(1)
        start = torch.full((cols_left.numel(),), -1.0, dtype=tdtype)
        while cols_left.numel():
            n = int(need[cols_left].max())
            gaps = _uniform(rng, cols_left.numel(), n, dtype=dtype)
            gaps.log_().mul_(inv_log1mq[cols_left].unsqueeze(1)).ceil_().clamp_(1, batch + 1)
            pos = gaps.cumsum_(1).add_(start.unsqueeze(1))
            c, k = (pos < batch).nonzero(as_tuple=True)
            rows_out.append(pos[c, k].long())
            cols_out.append(cols_left[c])
            more = pos[:, -1] < batch - 1
            cols_left, start = cols_left[more], pos[more, -1]
    return torch.cat(rows_out), torch.cat(cols_out)


class Normalized:
    """A source whose rows (each instance's feature vector) are scaled to unit L2 norm; all-zero
    rows stay zero. Used for the finite-data (double descent) setting."""

    def __init__(self, source: FeatureDistribution) -> None:
        self.source = source

    def sample(
        self, batch: int, generator: torch.Generator | None = None, out: Tensor | None = None
    ) -> Tensor:
        x = self.source.sample(batch, generator, out=out)
        norms = x.norm(dim=-1, keepdim=True)
        return x.div_(torch.where(norms > 0, norms, torch.ones_like(norms)))


class FixedDataset:
    """A fixed training set of `n_points` rows per instance, returned whole by every `sample` call
    (full-batch training on finite data). Stored (inst, point, feat) like any batch."""

    def __init__(self, x: Tensor) -> None:
        """x: Float[Tensor, "point inst feat"]."""
        self.xi = x.transpose(0, 1).contiguous()

    @classmethod
    def draw(cls, source, n_points: int, generator: torch.Generator | None = None) -> FixedDataset:
        return cls(source.sample(n_points, generator))

    @property
    def x(self) -> Tensor:
        """Float[Tensor, "point inst feat"]."""
        return self.xi.transpose(0, 1)

    def sample(
        self, batch: int | None = None, generator: torch.Generator | None = None, out: Tensor | None = None
    ) -> Tensor:
        return self.x
