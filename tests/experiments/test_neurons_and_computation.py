"""Quick forms of the privileged-basis (`neurons`) and computation-in-superposition (`compute-abs`)
experiments reproduce their known results."""

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
