"""The SAE experiments write loadable SAEs and ground truth, and show their effects."""

import pytest
import torch
from safetensors.torch import load_file

from superposition.experiments import run_experiment
from superposition.experiments.absorption import absorption_rates
from superposition.experiments.sae_common import ALL_ARCHITECTURES
from superposition.sae import ground_truth as gt
from superposition.sae.io import load_sae


def _check_saved(out, n_features, d):
    features = load_file(str(out / "ground_truth.safetensors"))["features"]
    assert features.shape == (n_features, d)
    for arch in ALL_ARCHITECTURES:
        sae = load_sae(out / "saes" / arch)
        assert sae.cfg.architecture == arch and sae.W_dec.shape == (sae.cfg.d_sae, d)
    return features


def test_sae_toy_recovers_the_pentagon_and_resampling_revives_dead_latents(run_quick):
    out, s = run_quick("sae-toy")
    features = _check_saved(out, 5, 2)
    W = torch.tensor(s["toy_W"])
    assert torch.allclose(features, W.T)  # ground truth = the toy model's feature directions
    for arch, m in s["results"].items():
        assert m["mcc"] >= 0.9, arch
        # the saved SAE scores the same against the saved ground truth
        sae = load_sae(out / "saes" / arch)
        assert gt.mcc(sae.W_dec.detach(), features) == pytest.approx(m["mcc"], abs=1e-4)
    r = s["resampling"]
    assert r["none"]["frac_dead"] > 0.05 and r["anthropic"]["frac_dead"] < r["none"]["frac_dead"]
    assert sum(r["anthropic"]["resampled_per_round"]) > 0
    # Matryoshka's 4 of 5 is its nature here (its 1- and 2-latent prefixes), not its training:
    # twice the training does not help, a first prefix as wide as the features does
    m = s["matryoshka_check"]
    assert (m["recovered_default"], m["recovered_twice_as_long"], m["recovered_wide_first_prefix"]) == (
        4,
        4,
        5,
    )
    assert m["nature"] and "nature" in (out / "report.html").read_text()


@pytest.mark.slow
def test_sae_synthetic_matched_l0_and_recovery(run_quick):
    out, s = run_quick("sae-synthetic")
    _check_saved(out, 128, 32)
    res = s["results"]
    assert res["topk"]["mcc"] > 0.95 and res["topk"]["recovered"] > 0.9
    for arch, m in res.items():
        assert 1.5 <= m["l0"] <= 6, (arch, m["l0"])  # matched to k = 3 within a factor of two
        assert {
            "mcc",
            "recovered",
            "explained_variance",
            "frac_dead",
            "uniqueness",
            "precision",
            "recall",
        } <= set(m)
    assert len(res["standard"]["sweep"]) == 5


def test_sae_synthetic_single_architecture_and_bad_k(run_quick, tmp_path_factory):
    out, s = run_quick("sae-synthetic", "architecture=topk", "samples=50000")
    assert list(s["results"]) == ["topk"]
    from superposition.errors import SuperpositionError

    with pytest.raises(SuperpositionError, match="k: must be at most d_sae"):
        run_experiment("sae-synthetic", tmp_path_factory.mktemp("bad") / "r", quick=True, overrides=["k=999"])


def test_absorption_runs_and_rates_are_probabilities(run_quick):
    out, s = run_quick("absorption")
    for m in s["results"].values():
        assert 0 <= m["absorption"] <= 1 and 0 <= m["parent_miss_without_child"] <= 1
        assert len(m["parent_latents"]) == 8


def test_absorption_rates_on_a_constructed_case():
    F = torch.eye(3)  # feature 0 is the parent of 1 and 2
    W_dec = torch.eye(3)  # latent i points at feature i
    coeffs = torch.tensor([[1.0, 0, 0], [1.0, 1.0, 0], [1.0, 0, 1.0], [1.0, 0, 0]])
    # the parent latent fires only when no child is present: total absorption, no baseline misses
    z = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.5, 0, 0]])
    r = absorption_rates(W_dec, F, z, coeffs, {0: [1, 2]})
    assert r["absorption"] == 1.0 and r["parent_miss_without_child"] == 0.0 and r["parent_latents"] == [0]


def test_family_latents_on_a_constructed_case():
    from superposition.experiments.splitting import family_latents

    F = torch.eye(6)  # parents 0, 1; children 2, 3 of 0 and 4, 5 of 1
    children = {0: [2, 3], 1: [4, 5]}
    whole = family_latents(F.clone(), F, children)  # one latent per feature
    assert whole == {"latents_per_family": 3.0, "parents_recovered": 1.0, "children_recovered": 1.0}
    # two latents on the parents' sums only: one latent per family, no child and no parent at |cos| ≥ 0.9
    merged = torch.stack([F[0] + F[2] + F[3], F[1] + F[4] + F[5]])
    assert family_latents(merged, F, children) == {
        "latents_per_family": 1.0,
        "parents_recovered": 0.0,
        "children_recovered": 0.0,
    }


def test_splitting_widens_families_and_saves_every_width(tmp_path):
    from superposition.errors import SuperpositionError

    out = tmp_path / "r"
    run_experiment("splitting", out, overrides=["widths=[4,32]", "samples=60000"])
    import json

    rows = json.loads((out / "summary.json").read_text())["widths"]
    assert [r["d_sae"] for r in rows] == [4, 32]
    assert rows[0]["latents_per_family"] <= 0.5 < rows[1]["latents_per_family"]  # 4 latents over 8 families
    assert 0.0 <= rows[1]["frac_split_from_previous"] <= 1.0 and 0.0 <= rows[1]["absorption"] <= 1.0
    for width in (4, 32):
        assert load_sae(out / "saes" / f"topk-{width}").cfg.d_sae == width
    with pytest.raises(SuperpositionError, match="widths: at least two positive widths, strictly increasing"):
        run_experiment("splitting", tmp_path / "bad", overrides=["widths=[32,8]"])


def test_transcoder_toy_recovers_halves_of_the_abs_computation(run_quick):
    """The quick transcoder-toy: TopK transcoders in place of the compute-abs ReLU layer explain its
    output (FVU < 0.1) and most halves ReLU(±x_i) the model computes are some latent's read and
    write (measured: 11, 6 and 7 of 12)."""
    from superposition.experiments.transcoder_toy import recovered_halves, true_halves

    out, s = run_quick("transcoder-toy")
    assert len(s["transcoders"]) == 3 and len(s["halves_computed_by_model"]) > 0
    for r in s["transcoders"]:
        assert r["fvu"] < 0.1 and 1.0 < r["l0"] <= 2.0
    assert max(r["halves_recovered"] for r in s["transcoders"]) >= 0.75 * len(s["halves_computed_by_model"])
    sae = load_sae(out / "transcoders" / "seed0")
    assert sae.cfg.architecture == "transcoder" and sae.W_dec.shape[-1] == s["d_hidden"]
    # the scoring on a hand-made case: a latent reading −x_1 and writing ReLU(−W_in[:, 1]) is half 3
    W_in = torch.tensor([[1.0, -2.0], [0.5, 1.0]])
    dec, computed = true_halves(W_in)
    assert computed.tolist() == [True, False, True, True]
    W_enc = torch.tensor([[0.1], [-1.0]])
    W_dec = torch.tensor([[2.0, 0.0]])
    assert recovered_halves(W_enc, W_dec, dec).tolist() == [0.0, 0.0, 0.0, 1.0]
