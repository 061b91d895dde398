"""Quick forms of the phase-diagram, dynamics and double-descent experiments reproduce their known
results."""

import numpy as np
import pytest


@pytest.mark.slow
def test_phase_diagram_corners(run_quick):
    _, s = run_quick("phase-diagram")
    one = next(x for x in s["setups"] if x["n_features"] == 2)
    # rows: relative importance (low -> high), columns: density (dense -> sparse)
    phase = np.array(one["phase"])
    g = phase.shape[0]
    assert phase[-1, 0] == 1  # dense, extra more important: it takes the dimension
    assert phase[0, 0] == 0  # dense, extra less important: dropped
    assert phase[g // 2, -1] == 2  # sparse, equal importance: superposition
    assert phase[-1, -1] == 2


def test_dynamics_settles_on_fractions(run_quick):
    _, s = run_quick("dynamics")
    dims = np.array(s["feature_dimensionality"])
    assert dims.shape == (len(s["snapshot_steps"]), 100)
    assert s["snapshot_steps"][0] == 0 and s["snapshot_steps"][-1] == 2999
    # plateaus: in the second half of training almost every feature's dimensionality stays put
    late = dims[len(dims) // 2 :]
    assert (np.abs(np.diff(late, axis=0)) < 0.01).mean() > 0.9
    # features move between plateaus, and each move is short next to the whole run
    assert len(s["transitions"]) >= 10
    assert s["median_transition_steps"] < 0.1 * 3000


def test_double_descent_peak_between_regimes(run_quick):
    _, s = run_quick("double-descent")
    per = s["per_T"]
    test = np.array([r["test_loss"] for r in per])
    peak = int(test.argmax())
    assert 0 < peak < len(per) - 1  # the spike is inside the sweep
    assert test[peak] > 1.3 * test[0] and test[peak] > 1.3 * test[-1]
    # memorising: with 3 points, their hidden vectors spread like a triangle, D = 2/T
    assert per[0]["mean_data_dimensionality"] == pytest.approx(2 / 3, abs=0.05)
    assert per[0]["train_loss"] < 0.1 * per[0]["test_loss"]
    for r in per:
        assert len(r["hidden_vectors"]) == r["T"] and len(r["W"]) == 2


def test_plateau_transitions_on_a_constructed_trajectory():
    from superposition.experiments.dynamics import plateau_transitions

    steps = np.arange(0, 100, 10)
    # feature 0: 0 → 1/2 through one in-between snapshot; feature 1: 1/2 → 2/5 directly; feature 2 stays
    dims = np.array(
        [
            [0.0, 0.5, 1.0],
            [0.0, 0.5, 1.0],
            [0.25, 0.5, 1.0],
            [0.5, 0.5, 1.0],
            [0.5, 0.4, 1.0],
            [0.5, 0.4, 1.0],
            [0.5, 0.4, 1.0],
            [0.5, 0.4, 1.0],
            [0.5, 0.4, 1.0],
            [0.5, 0.4, 1.0],
        ]
    )
    t = plateau_transitions(dims, steps)
    assert [(x["feature"], x["from"], x["to"], x["duration"]) for x in t] == [
        (0, 0.0, 0.5, 20),
        (1, 0.5, 0.4, 10),
    ]
