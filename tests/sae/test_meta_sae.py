"""Meta-SAEs against a planted answer: decoder rows built from 4 of M shared atoms are explained
by a width-M meta-SAE almost entirely; Gaussian rows, with nothing shared, are not."""

import csv
import json

import pytest
import torch

from superposition.cli import main
from superposition.sae import SAEConfig, make_sae
from superposition.sae.io import load_sae, save_sae
from superposition.sae.meta import base_latents_by_meta, meta_latents_of, score, train_meta_sae

M, D, N, STEPS = 32, 64, 1024, 1500


def _planted(seed=0):
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(M, D, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    which = torch.rand(N, M, generator=g).argsort(1)[:, :4]  # 4 distinct atoms per row
    coef = 0.5 + torch.rand(N, 4, generator=g)
    return torch.einsum("nk,nkd->nd", coef, atoms[which])


def test_planted_atoms_are_explained_and_gaussian_rows_are_not():
    planted = train_meta_sae(_planted(), width=M, k=4, steps=1500, lr=3e-3)
    gaussian = train_meta_sae(
        torch.randn(N, D, generator=torch.Generator().manual_seed(1)), M, 4, 1500, lr=3e-3
    )
    assert planted.fve > 0.9, planted.fve
    assert gaussian.fve < 0.5, gaussian.fve
    assert 3.0 <= planted.l0 <= 5.0  # BatchTopK: k on average


def test_score_and_tables_on_a_hand_case():
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # x̂ equal to x: FVE 1; x̂ the mean: FVE 0
    z = torch.tensor([[2.0, 0.0, 0.0], [0.5, 1.0, 0.0]])
    assert score(rows, rows, z) == pytest.approx((1.0, 1.5, 1 / 3))
    assert score(rows, rows.mean(0).expand(2, 2), z)[0] == 0.0
    assert meta_latents_of(z) == [[(0, 2.0)], [(1, 1.0), (0, 0.5)]]
    assert base_latents_by_meta(z) == {0: [0, 1], 1: [1], 2: []}


def test_cli_writes_the_meta_sae_and_refuses_bad_flags(tmp_path, capsys):
    base = make_sae(SAEConfig(architecture="topk", d_in=D, d_sae=N, k=4))
    with torch.no_grad():
        base.W_dec.copy_(_planted().unsqueeze(0))
    save_sae(base, tmp_path / "base")
    out = tmp_path / "meta"
    assert (
        main(["meta-sae", str(tmp_path / "base"), "--out", str(out), "--width", str(M), "--steps", "300"])
        == 0
    )
    s = json.loads((out / "summary.json").read_text())
    assert s["width"] == M and s["n_base_latents"] == N and 0.5 < s["fve"] <= 1.0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["command"] == "meta-sae" and cfg["width"] == M and cfg["steps"] == 300
    rows = list(csv.DictReader(open(out / "meta_latents.csv")))
    assert len(rows) == N
    by_meta = json.loads((out / "base_latents_by_meta_latent.json").read_text())
    assert sum(len(v) for v in by_meta.values()) == sum(len(r["meta_latents"].split()) for r in rows)
    assert load_sae(out / "meta_sae").cfg.d_sae == M
    capsys.readouterr()
    for extra, needle in [
        (["--k", "0"], "--k: must be positive"),
        (["--width", "2", "--k", "4"], "--k: must be at most the width (2)"),
    ]:
        assert main(["meta-sae", str(tmp_path / "base"), "--out", str(tmp_path / "bad"), *extra]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_dashboard_shows_each_latents_meta_latents_and_who_shares_them(tmp_path, capsys):
    """An experiment-style run (ground truth + saes/) whose decoder rows 0 and 1 are built from the
    same atom: the dashboard with --meta lists, on latent 0's page, a meta-latent that latent 1 shares."""
    from safetensors.torch import save_file

    run = tmp_path / "run"
    (run / "saes").mkdir(parents=True)
    rows = _planted(1)[:256]
    rows[1] = rows[0] + 0.01 * torch.randn(D, generator=torch.Generator().manual_seed(0))
    save_file({"features": rows[:8].contiguous()}, str(run / "ground_truth.safetensors"))
    base = make_sae(SAEConfig(architecture="topk", d_in=D, d_sae=256, k=4))
    with torch.no_grad():
        base.W_dec.copy_((rows / rows.norm(dim=1, keepdim=True)).unsqueeze(0))
    save_sae(base, run / "saes" / "topk")
    meta = tmp_path / "meta"
    assert main(["meta-sae", str(run), "--out", str(meta), "--width", str(M), "--steps", "200"]) == 0
    site = tmp_path / "site"
    assert main(["dashboard", str(run), "--out", str(site), "--meta", str(meta), "--latents", "4"]) == 0
    per_base = list(csv.DictReader(open(meta / "meta_latents.csv")))
    first = per_base[0]["meta_latents"].split()
    assert first and set(first) & set(per_base[1]["meta_latents"].split())  # near-identical rows share
    page = (site / "latents" / "0.html").read_text()
    assert "Meta-latents" in page and "other latents sharing it" in page
    index = (site / "index.html").read_text()
    assert '"meta-latents"' in index
    # a meta-SAE of another SAE (other width) is refused in one line, writing nothing
    other = tmp_path / "other"
    small = make_sae(SAEConfig(architecture="topk", d_in=D, d_sae=64, k=4))
    save_sae(small, other)
    assert (
        main(["meta-sae", str(other), "--out", str(tmp_path / "meta2"), "--width", "8", "--steps", "20"]) == 0
    )
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert main(["dashboard", str(run), "--out", str(bad), "--meta", str(tmp_path / "meta2")]) == 2
    err = capsys.readouterr().err
    assert "an SAE with 64 latents; this one has 256" in err and len(err.strip().splitlines()) == 1
    assert not bad.exists()
    assert main(["dashboard", str(run), "--out", str(bad), "--meta", str(tmp_path)]) == 2
    assert "not a readable meta-sae output folder" in capsys.readouterr().err and not bad.exists()
