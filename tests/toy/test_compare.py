"""compare-geometries: the constructions are the shapes they are named, the estimate matches the
closed form within its error, the paper's ranking in the dense and sparse regimes, and the user's
file read safely."""

import json
import math

import numpy as np
import pytest
import torch

from superposition.cli import main
from superposition.toy import compare


def test_constructions_are_the_named_shapes():
    tetra = compare.simplex(4)
    assert tetra.shape == (3, 4)
    G = tetra.T @ tetra
    torch.testing.assert_close(G.diagonal(), torch.ones(4, dtype=torch.float64))
    off = G[~torch.eye(4, dtype=bool)]
    torch.testing.assert_close(off, torch.full_like(off, -1 / 3))  # a regular tetrahedron
    pent = compare.polygon(5)
    cos = pent.T @ pent
    assert cos[0, 1].item() == pytest.approx(math.cos(2 * math.pi / 5)) and cos[0, 2].item() == pytest.approx(
        math.cos(4 * math.pi / 5)
    )
    pairs = compare.antipodal(4)
    assert (pairs.T @ pairs).tolist() == [[1, -1, 0, 0], [-1, 1, 0, 0], [0, 0, 1, -1], [0, 0, -1, 1]]
    names = [c.name for c in compare.candidates(6, 3)]
    assert "tetrahedron (4 features)" in names and "antipodal pairs (6 features)" in names
    assert "pentagon (5 features in a plane)" in names and names[0] == "none represented"


def test_estimate_matches_the_closed_form_within_its_error():
    importance = 0.9 ** torch.arange(5, dtype=torch.float64)
    p = 0.1
    cands = [c for c in compare.candidates(5, 2) if c.name.startswith(("none", "orthogonal"))]
    for e in compare.evaluate(cands, importance, p, fit_samples=20_000, eval_samples=200_000, seed=1):
        assert e.exact is not None
        assert abs(e.loss - e.exact) < 3 * e.stderr, (e.name, e.loss, e.exact, e.stderr)
    # the hand value for no features: every feature at its best constant p/2, loss (1/n) Σ I (p/3 − p²/4)
    none = compare.closed_form(torch.zeros(2, 5, dtype=torch.float64), torch.zeros(5), importance, p)
    assert none == pytest.approx(float(importance.sum()) * (p / 3 - p * p / 4) / 5)
    # a configuration whose features interfere has no closed form
    assert (
        compare.closed_form(compare._embed(compare.polygon(5), 5, 2), torch.zeros(5), importance, p) is None
    )


@pytest.mark.parametrize(("p", "winner"), [(1.0, "orthogonal"), (0.03, "pentagon")])
def test_dense_features_prefer_orthogonal_and_sparse_ones_the_pentagon(p, winner):
    """The paper's intro result (5 features in 2 dimensions, importance 0.9^i) as an exact ranking."""
    importance = 0.9 ** torch.arange(5, dtype=torch.float64)
    ranked = compare.evaluate(compare.candidates(5, 2), importance, p, 20_000, 100_000, seed=2)
    assert ranked[0].name.startswith(winner)
    gap, se = compare.paired_gap(ranked[0], ranked[1])
    assert gap > 2 * se  # told apart from the runner-up


def test_the_experiment_ranks_a_users_file_and_refuses_bad_ones(tmp_path, capsys):
    W = compare.polygon(5).numpy()
    np.save(tmp_path / "pent.npy", W)
    (tmp_path / "pent.json").write_text(json.dumps({"W": W.tolist(), "b": [-0.1] * 5}))
    out = tmp_path / "run"
    sets = ["--set", f"weights={tmp_path / 'pent.json'}", "--set", "steps=400", "--set", "eval_samples=40000"]
    assert main(["run", "compare-geometries", "--out", str(out), "--quick", *sets]) == 0
    s = json.loads((out / "summary.json").read_text())
    names = [r["candidate"] for r in s["ranked"]]
    assert "yours (your b)" in names and "yours (best b)" in names and s["verdict"].startswith(s["lowest"])
    assert all(r["loss"] >= s["ranked"][0]["loss"] for r in s["ranked"])
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    np.save(tmp_path / "wide.npy", np.zeros((3, 5)))
    for bad, needle in [
        (tmp_path / "none.npy", "weights: no file at"),
        (tmp_path / "obj.npy", "weights: "),
        (tmp_path / "wide.npy", "W must be finite with shape [2, 5]"),
    ]:
        capsys.readouterr()
        dest = tmp_path / "bad"
        assert (
            main(["run", "compare-geometries", "--out", str(dest), "--quick", "--set", f"weights={bad}"]) == 2
        )
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1 and not dest.exists()


def test_the_notebook_setup_is_shown_unconverged(tmp_path):
    """randn start, batch 64, lr 1e-3, few steps: above the optimum by much more than the default
    training, still falling, its angles far from the pentagon's 72°."""
    out = tmp_path / "nb"
    sets = ["--set", "notebook=true", "--set", "notebook_steps=600", "--set", "eval_samples=40000"]
    assert main(["run", "compare-geometries", "--out", str(out), "--quick", *sets]) == 0
    nb = json.loads((out / "summary.json").read_text())["notebook"]
    gap = nb["loss_gap"]
    assert gap[-1] > 10 * max(nb["default_gap"], 1e-5) and gap[-1] < gap[len(gap) // 2] < gap[0]
    assert nb["angle_error_deg"][-1] > 5 and nb["default_angle_error_deg"] < 2
    assert "unconverged" in nb["verdict"] and (out / "notebook.png").is_file()
