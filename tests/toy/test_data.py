"""Statistics of the feature distribution: marginals, correlation constraints, values, cost."""

import math

import pytest
import torch

from superposition.errors import SuperpositionError
from superposition.toy import data as data_mod
from superposition.toy.data import FeatureDistribution, Group


def _within_binomial(freq: torch.Tensor, p: torch.Tensor, n: int, sigmas: float = 5.0) -> bool:
    sd = torch.sqrt(p * (1 - p) / n).clamp(min=1.0 / n)
    return bool(((freq - p).abs() <= sigmas * sd).all())


@pytest.mark.parametrize("batch", [4096, 50_000])
def test_marginals_dense_and_sparse(batch):
    # mixes dense instances (filled per entry), sparse ones (geometric gaps) and a mixed one
    p = torch.tensor([[1.0] * 6, [0.5] * 6, [0.05] * 6, [0.001] * 6, [0.9, 0.3, 0.08, 0.02, 0.0, 1.0]])
    d = FeatureDistribution(p)
    x = d.sample(batch, torch.Generator().manual_seed(0))
    assert x.shape == (batch, 5, 6)
    freq = (x > 0).double().mean(0)
    assert _within_binomial(freq, p.double(), batch)
    assert (x[:, 4, 4] == 0).all()  # probability 0 never fires
    assert (x[:, 0] > 0).all()  # probability 1 always fires


def test_values_uniform_on_unit_interval():
    d = FeatureDistribution(torch.tensor([[1.0] * 10, [0.03] * 10]))
    x = d.sample(40_000, torch.Generator().manual_seed(1))
    for inst in range(2):
        v = x[:, inst][x[:, inst] > 0].double()
        n = v.numel()
        assert v.min() > 0 and v.max() <= 1
        assert abs(v.mean() - 0.5) < 5 * math.sqrt(1 / 12 / n)
        assert abs(v.var() - 1 / 12) < 0.004
        # deciles of U[0,1)
        q = torch.quantile(v[:100_000], torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
        assert torch.allclose(q, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), atol=0.02)


def test_signed_value_range():
    d = FeatureDistribution(torch.tensor([[1.0] * 4, [0.05] * 4]), value_range=(-1.0, 1.0))
    x = d.sample(20_000, torch.Generator().manual_seed(2))
    for inst in range(2):
        v = x[:, inst][x[:, inst] != 0].double()
        assert v.min() >= -1 and v.max() <= 1 and abs(v.mean()) < 0.02
    assert _within_binomial(
        (x[:, 1] != 0).double().mean(0), torch.full((4,), 0.05, dtype=torch.float64), 20_000
    )


def test_rows_are_independent_in_sparse_columns():
    # adjacent rows of a geometric-gap column co-fire with probability p², as for i.i.d. rows
    p = 0.08
    d = FeatureDistribution(torch.full((1, 200), p))
    on = d.sample(20_000, torch.Generator().manual_seed(3))[:, 0] > 0
    both = (on[1:] & on[:-1]).double().mean().item()
    n = on[1:].numel()
    assert abs(both - p * p) < 5 * math.sqrt(p * p / n)


@pytest.mark.parametrize("p", [[0.3, 0.3, 0.3], [0.05, 0.05, 0.05], [0.6, 0.2, 0.05]])
def test_correlated_group(p):
    probs = torch.tensor([p + [0.2]])  # feature 3 independent
    d = FeatureDistribution(probs, [Group("correlated", (0, 1, 2))])
    x = d.sample(40_000, torch.Generator().manual_seed(4))[:, 0] > 0
    assert _within_binomial(x.double().mean(0), probs[0].double(), 40_000)
    # a less likely member fires only together with every more likely one (all-or-none if equal)
    order = sorted(range(3), key=lambda f: -p[f])
    for hi, lo in zip(order, order[1:]):
        assert not (x[:, lo] & ~x[:, hi]).any()
    # the independent feature is independent of the group
    joint = (x[:, 0] & x[:, 3]).double().mean().item()
    assert abs(joint - p[0] * 0.2) < 5 * math.sqrt(p[0] * 0.2 / 40_000)


@pytest.mark.parametrize("p", [[0.25, 0.25], [0.02, 0.03, 0.01], [0.5, 0.3, 0.2]])
def test_anticorrelated_group(p):
    probs = torch.tensor([p])
    d = FeatureDistribution(probs, [Group("anticorrelated", tuple(range(len(p))))])
    x = d.sample(40_000, torch.Generator().manual_seed(5))[:, 0] > 0
    assert int(x.sum(1).max()) <= 1  # never two at once
    assert _within_binomial(x.double().mean(0), probs[0].double(), 40_000)


def test_groups_per_instance():
    probs = torch.full((3, 4), 0.3)
    groups = [
        [Group("correlated", (0, 1))],
        [Group("anticorrelated", (0, 1)), Group("anticorrelated", (2, 3))],
        [],
    ]
    x = FeatureDistribution(probs, groups).sample(20_000, torch.Generator().manual_seed(6)) > 0
    assert (x[:, 0, 0] == x[:, 0, 1]).all()
    assert not (x[:, 1, 0] & x[:, 1, 1]).any() and not (x[:, 1, 2] & x[:, 1, 3]).any()
    both = (x[:, 2, 0] & x[:, 2, 1]).double().mean().item()
    assert abs(both - 0.09) < 0.01  # independent


def test_reproducible_from_seed():
    d = FeatureDistribution(torch.tensor([[0.5] * 8, [0.01] * 8]))
    a = d.sample(1000, torch.Generator().manual_seed(7))
    b = d.sample(1000, torch.Generator().manual_seed(7))
    c = d.sample(1000, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_reuses_buffer():
    d = FeatureDistribution(torch.tensor([[0.5] * 8, [0.01] * 8]))
    gen = torch.Generator().manual_seed(0)
    x = d.sample(64, gen)
    buf = x.transpose(0, 1)
    buf.fill_(7.0)  # stale contents must be overwritten
    y = d.sample(64, gen, out=buf)
    assert y.data_ptr() == buf.data_ptr()
    assert (y <= 1).all()
    assert _within_binomial(
        (y[:, 1] > 0).double().mean(0), torch.full((8,), 0.01, dtype=torch.float64), 64, sigmas=6
    )


def test_sparse_sampling_draws_few_random_numbers(monkeypatch):
    """Very sparse data must not pay for a dense grid of random numbers."""
    drawn = []
    real = data_mod._uniform

    def counting(rng, *shape, **kw):
        drawn.append(math.prod(shape))
        return real(rng, *shape, **kw)

    monkeypatch.setattr(data_mod, "_uniform", counting)
    batch, n_feat, p = 100_000, 1000, 1e-4
    d = FeatureDistribution(torch.full((2, n_feat), p))
    x = d.sample(batch, torch.Generator().manual_seed(9))
    expected_events = 2 * n_feat * batch * p  # 20 000
    assert sum(drawn) < 10 * expected_events  # versus 2e8 for a dense draw
    assert _within_binomial(
        torch.tensor([(x > 0).double().mean().item()]),
        torch.tensor([p], dtype=torch.float64),
        2 * n_feat * batch,
    )


@pytest.mark.parametrize(
    "probs, groups, match",
    [
        (torch.tensor([[0.5, 1.2]]), (), "feature_probability"),
        (torch.tensor([[-0.1, 0.2]]), (), "feature_probability"),
        (torch.tensor([[0.7, 0.6]]), [Group("anticorrelated", (0, 1))], "sum to at most 1"),
        (
            torch.tensor([[0.1, 0.1, 0.1]]),
            [Group("correlated", (0, 1)), Group("correlated", (1, 2))],
            "two groups",
        ),
        (torch.tensor([[0.1, 0.1]]), [Group("correlated", (0, 5))], "out of range"),
    ],
)
def test_bad_input(probs, groups, match):
    with pytest.raises(SuperpositionError, match=match):
        FeatureDistribution(probs, groups)
