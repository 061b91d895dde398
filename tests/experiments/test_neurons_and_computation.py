"""Quick forms of the privileged-basis (`neurons`) and computation-in-superposition (`compute-abs`)
experiments reproduce their known results."""

import pytest
import torch

from superposition.toy import neurons


def test_neurons_dense_one_neuron_per_important_feature(run_quick):
    _, s = run_quick("neurons")
    dense, sparse = s["instances"][0], s["instances"][-1]
    W = torch.tensor(dense["W"])
    assert W.shape == (5, 10)
    mono = neurons.monosemantic_neurons(W)
    assert mono.all()  # every neuron monosemantic ...
    assert sorted(neurons.dominant_feature(W).tolist()) == [0, 1, 2, 3, 4]  # ... one per important feature
    assert dense["monosemantic_features"] == [0, 1, 2, 3, 4]
    assert sparse["n_monosemantic"] < 3  # polysemantic when sparse
    assert len(dense["replica_losses"]) == 3


def test_compute_abs_learns_plus_minus_pairs(run_quick):
    _, s = run_quick("compute-abs")
    dense = s["instances"][0]
    W_in, W_out = torch.tensor(dense["W_in"]), torch.tensor(dense["W_out"])
    assert W_in.shape == (12, 30) and W_out.shape == (
        30,
        12,
    )  # [d_hidden][n_features], [n_features][d_hidden]
    pairs = neurons.abs_pairs(W_in, W_out)
    assert pairs[:4].all()  # the most important features each get a ± pair
    assert dense["n_monosemantic"] == 12
    assert s["instances"][-1]["n_monosemantic"] < 6  # polysemantic when sparse
    second = s["pairs_setting"]
    assert second["represented_features"] and second["every_represented_feature_has_a_pair"]


def test_neurons_tracks_the_share_of_active_neurons(run_quick):
    out, s = run_quick("neurons")
    active = [r["active_neurons"] for r in s["instances"]]
    # a neuron h = ReLU(W x) with x ≥ 0 is off unless a feature it reads positively is present, so
    # the share of active neurons falls with the feature probability
    assert active[0] > 0.5 and active[-1] < 0.15
    assert all(a >= b - 0.02 for a, b in zip(active, active[1:]))
    assert (out / "active_neurons.png").exists()


def test_track_active_matches_a_direct_count():
    from superposition.experiments.neurons import NeuronsConfig
    from superposition.experiments.toy_common import train_toy

    cfg = NeuronsConfig(n_instances=2, replicas=1, steps=20, batch_size=64)
    probs = torch.tensor([0.5, 0.05])
    trained = train_toy(cfg, probs, cfg.importance_vector(), hidden_relu=True, track_active=True, log_every=5)
    steps, share = trained.active
    assert steps == [0, 5, 10, 15, 19] and share.shape == (5, 2)
    x = trained.data.sample(4096, torch.Generator().manual_seed(1))
    with torch.no_grad():
        direct = (torch.relu(torch.einsum("bif,ihf->bih", x, trained.model.W)) > 0).float().mean((0, 2))
    assert torch.allclose(torch.tensor(share[-1]), direct, atol=0.03)
    with pytest.raises(ValueError, match="hidden_relu"):  # a linear hidden layer has no neurons
        train_toy(cfg, probs, cfg.importance_vector(), track_active=True)
