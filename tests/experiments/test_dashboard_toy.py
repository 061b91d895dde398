"""The dashboard of an SAE experiment run: each latent beside its best-matching true feature."""

import json

import pytest
from safetensors.torch import load_file

from superposition.cli import main
from superposition.commands.dashboard import build_dashboard
from superposition.errors import SuperpositionError


@pytest.fixture(scope="module")
def sae_toy(tmp_path_factory):
    from superposition.experiments import run_experiment

    out = tmp_path_factory.mktemp("sae-toy") / "run"
    run_experiment("sae-toy", out, quick=True)
    return out


def _rows(site):
    html = (site / "index.html").read_text()
    return json.loads(html.split('<script type="application/json" id="data">')[1].split("</script>")[0])[
        "rows"
    ]


def test_every_true_feature_has_a_matching_latent(sae_toy, tmp_path):
    site = build_dashboard(sae_toy, tmp_path / "site", sae_name="topk")
    rows = _rows(site)
    F = load_file(str(sae_toy / "ground_truth.safetensors"))["features"]
    n_features = F.shape[-2]
    cfg = json.loads((sae_toy / "saes" / "topk" / "cfg.json").read_text())
    assert len(rows) == cfg["d_sae"] == len(list((site / "latents").glob("*.html")))
    assert {r["feature"] for r in rows if r["cos"] > 0.9} == set(range(n_features))
    # a latent that fires on a feature presented alone is the one aligned with it
    for r in rows:
        if r["fires_on"] == 1:
            assert r["cos"] > 0.9 and r["max_response"] > 0
    page = (site / "latents" / "0.html").read_text()
    assert "best-matching feature" in page and "Decoder direction beside its feature" in page
    cfg = json.loads((site / "config.json").read_text())
    assert cfg["command"] == "dashboard" and cfg["sae_name"] == "topk" and cfg["sae"] == str(sae_toy)


def test_unknown_sae_name_is_one_line(sae_toy, tmp_path, capsys):
    assert main(["dashboard", str(sae_toy), "--out", str(tmp_path / "s"), "--sae", "relu"]) == 2
    err = capsys.readouterr().err
    assert (
        "--sae 'relu': not in this run; choose one of batchtopk, gated, jumprelu, matryoshka, standard, topk"
        in err
    )
    assert not (tmp_path / "s").exists()
    with pytest.raises(SuperpositionError, match="not a train-sae run"):
        build_dashboard(tmp_path, tmp_path / "s2")
