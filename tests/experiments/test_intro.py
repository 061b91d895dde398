"""`intro --quick` reproduces the paper's result and writes a complete run directory."""

import json
import re

import pytest
import torch

from superposition.cli import main
from superposition.toy import geometry


@pytest.fixture(scope="module")
def intro_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "intro"
    assert main(["run", "intro", "--quick", "--out", str(out)]) == 0
    return out


def test_run_directory_layout(intro_run):
    names = {p.name for p in intro_run.iterdir()}
    assert {"summary.json", "config.json", "report.html"} <= names
    assert any(n.endswith(".png") for n in names) and any(
        n.endswith(".html") and n != "report.html" for n in names
    )
    config = json.loads((intro_run / "config.json").read_text())
    assert config["experiment"] == "intro" and config["quick"] is True
    assert {
        "n_instances",
        "n_features",
        "d_hidden",
        "steps",
        "batch_size",
        "lr",
        "feature_probability",
        "importance",
        "seed",
    } <= set(config)
    report = (intro_run / "report.html").read_text()
    assert "data:image/png;base64," in report
    # opens offline: no script, stylesheet or image fetched from the network
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=[\"']?(https?:)?//", report)


def test_weights_in_summary(intro_run):
    summary = json.loads((intro_run / "summary.json").read_text())
    insts = summary["instances"]
    assert len(insts) == 10
    for rec in insts:
        W = torch.tensor(rec["W"])
        assert W.shape == (2, 5)  # [d_hidden][n_features]
        assert len(rec["b"]) == 5
        assert {"feature_probability", "importance", "final_loss"} <= set(rec)
        # recorded geometry agrees with the recorded weights
        assert rec["n_represented"] == int(geometry.represented(W).sum())
    probs = [r["feature_probability"] for r in insts]
    assert probs[0] == pytest.approx(1.0) and probs[-1] == pytest.approx(0.02)


def test_reproduces_orthogonal_pair_and_pentagon(intro_run):
    summary = json.loads((intro_run / "summary.json").read_text())
    dense, sparse = summary["instances"][0], summary["instances"][-1]
    W_dense, W_sparse = torch.tensor(dense["W"]), torch.tensor(sparse["W"])
    # dense: the two most important features, orthogonal; the rest dropped
    assert geometry.represented(W_dense).tolist() == [True, True, False, False, False]
    assert geometry.angles(W_dense)[0, 1].item() == pytest.approx(90.0, abs=10)
    # sparse: all five, a regular pentagon
    gaps = geometry.polar_angle_gaps(W_sparse)
    assert len(gaps) == 5
    assert (gaps - 72.0).abs().max().item() <= 10.0


def test_hidden_states_figure(intro_run):
    assert (intro_run / "hidden_states.png").exists()
    assert "hidden_states" in (intro_run / "report.html").read_text()
