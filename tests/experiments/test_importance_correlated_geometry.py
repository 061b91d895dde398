"""Quick forms of `importance`, `correlated` and `geometry` show their effects."""

import numpy as np
import pytest
import torch

from superposition.toy import geometry


def test_importance_dense_keeps_the_most_important_sparse_shares(run_quick):
    _, s = run_quick("importance")
    dense, sparse = s["instances"][0], s["instances"][-1]
    W_dense = torch.tensor(dense["W"])
    assert W_dense.shape == (5, 20)
    # dense: exactly the 5 most important features, each with a dimension of its own
    assert geometry.represented(W_dense).nonzero().squeeze(1).tolist() == [0, 1, 2, 3, 4]
    assert dense["n_in_superposition"] == 0
    assert torch.allclose(geometry.feature_dimensionality(W_dense)[:5], torch.ones(5), atol=0.05)
    # sparse: more features than dimensions, sharing them
    assert sparse["n_represented"] > 5 and sparse["n_in_superposition"] > 5
    assert sparse["dimensions_per_feature"] < 0.6


def test_correlated_local_bases_and_antipodal_pairs(run_quick):
    out, s = run_quick("correlated")
    kinds = {r["correlation"] for r in s["instances"]}
    assert kinds == {"correlated", "anticorrelated", "uncorrelated"}
    assert all(r["groups"] == [[0, 1], [2, 3]] for r in s["instances"])
    assert s["within_group_angle"]["correlated"] == pytest.approx(90, abs=15)
    assert s["within_group_angle"]["anticorrelated"] == pytest.approx(180, abs=15)
    # the kept replica is the lowest-loss one of its kind
    for r in s["instances"]:
        assert len(r["replica_losses"]) == 8
        assert r["final_loss"] == pytest.approx(min(r["replica_losses"]))
        assert r["replica_losses"][r["kept_replica"]] == pytest.approx(r["final_loss"])
    assert (out / "data_vs_model.png").is_file()


def test_data_correlation_has_the_groups_signs():
    """x = B·U with B ~ Bernoulli(p) and U uniform: Var x = p/3 − p²/4. Correlated members share B,
    so Cov = p/4 − p²/4 and r = (1 − p)/(4/3 − p) (0.692 at the quick config's p = 0.25);
    anticorrelated members are never present together, Cov = −p²/4, r = −p/(4/3 − p) (−0.231);
    independent ones r = 0."""
    import torch

    from superposition.experiments.base import make_config
    from superposition.experiments.correlated import _data_correlation
    from superposition.experiments.toy_common import train_toy
    from superposition.toy.data import Group

    cfg = make_config("correlated", quick=True).model_copy(
        update={"steps": 1, "replicas": 1, "n_instances": 3}
    )
    groups = [[Group(k, (0, 1)), Group(k, (2, 3))] for k in ("correlated", "anticorrelated")] + [[]]
    trained = train_toy(cfg, cfg.probabilities([0.25] * 3), cfg.importance_vector(), groups=groups)
    C = _data_correlation(trained)
    p = float(trained.data.probability[0, 0])
    assert C[0, 0, 1].item() == pytest.approx((1 - p) / (4 / 3 - p), abs=0.02)
    assert C[1, 0, 1].item() == pytest.approx(-p / (4 / 3 - p), abs=0.02) and abs(C[2, 0, 1]) < 0.02
    assert abs(C[0, 0, 2]) < 0.02 and torch.allclose(C.diagonal(dim1=1, dim2=2), torch.ones(3, 4), atol=1e-5)


@pytest.mark.slow
def test_geometry_features_stick_to_fractions(run_quick):
    _, s = run_quick("geometry")
    inv = np.array(s["inv_sparsity"])
    assert inv.min() == pytest.approx(1) and inv.max() >= 100 and len(inv) >= 12
    dpf = np.array(s["dimensions_per_feature"])
    assert dpf[0] > 0.9 and dpf[-1] < 0.2  # from a dimension per feature to heavy packing
    # stickiness: within an instance, represented features share one dimensionality (a polytope),
    # instead of spreading continuously; and some instances are all digons, D = 1/2
    clustered, digons = 0, 0
    counted = [np.array(r["feature_dimensionality"]) for r in s["instances"]]
    counted = [d[d >= 0.3] for d in counted if (d >= 0.3).sum() >= 10]
    for d in counted:
        clustered += np.mean(np.abs(d - np.median(d)) <= 0.03) >= 0.8
        digons += np.mean(np.abs(d - 0.5) <= 0.01) >= 0.9
    assert clustered >= len(counted) / 2 and digons >= 1
    # the polytopes, from the trained weights: a plateau where every represented feature is in a digon
    # (D = 1/2 each), then, sparser, square antiprisms or pentagons whose features sit at 3/8 or 2/5;
    # the per-instance census agrees with the groups
    groups = s["polytopes"]["groups"]
    all_digons = [i for i, gs in enumerate(groups) if len(gs) >= 10 and {g["kind"] for g in gs} == {"digon"}]
    assert all_digons and all(
        abs(d - 0.5) < 0.02 for i in all_digons for g in groups[i] for d in g["dimensionality"]
    )
    later = [(i, g) for i, gs in enumerate(groups) for g in gs if i > max(all_digons)]
    packed = [(i, g) for i, g in later if g["kind"] in ("pentagon", "square antiprism")]
    assert packed, [g["name"] for _, g in later][:10]
    for _, g in packed:
        frac = 0.4 if g["kind"] == "pentagon" else 0.375
        assert all(abs(d - frac) < 0.05 for d in g["dimensionality"]), g
        assert g["rank"] == (2 if g["kind"] == "pentagon" else 3)
    for rec, gs in zip(s["instances"], groups):
        assert sum(k["features"] for k in rec["polytopes"].values()) == sum(len(g["features"]) for g in gs)
        assert sum(k["features"] for k in rec["polytopes"].values()) == rec["n_represented"]
