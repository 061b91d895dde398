"""compare-saes against a planted answer: a narrow dictionary whose every atom splits into two
children in the wide one, plus wide latents that point nowhere near the narrow ones."""

import csv
import json

import pytest
import torch

from superposition.cli import main
from superposition.sae import SAEConfig, make_sae
from superposition.sae.io import save_sae
from superposition.sae.splitting import compare, nearest

D, N_NARROW, N_NOVEL = 64, 8, 4


def _sae(rows: torch.Tensor, d_in: int = D):
    sae = make_sae(SAEConfig(architecture="topk", d_in=d_in, d_sae=rows.shape[0], k=1))
    with torch.no_grad():
        sae.W_dec.copy_(rows.unsqueeze(0))
    return sae


def _planted():
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(0)))
    parents = q[:N_NARROW]  # orthonormal atoms
    # two children per parent: parent ± 0.4 · its own orthogonal direction (cosine 1/√1.16 = 0.928)
    children = torch.cat(
        [parents + 0.4 * q[N_NARROW : 2 * N_NARROW], parents - 0.4 * q[N_NARROW : 2 * N_NARROW]]
    )
    novel = q[2 * N_NARROW : 2 * N_NARROW + N_NOVEL]  # orthogonal to every parent: cosine 0
    wide = torch.cat([children, novel])
    wide = wide / wide.norm(dim=1, keepdim=True)
    return parents, wide


def test_nearest_matches_a_dense_argmax_across_blocks(monkeypatch):
    import superposition.sae.splitting as cmp

    monkeypatch.setattr(cmp, "CHUNK", 7)  # several blocks, the last one short
    g = torch.Generator().manual_seed(1)
    wide, narrow = torch.randn(30, 5, generator=g), torch.randn(9, 5, generator=g) * 3.0
    idx, cos = nearest(wide, narrow)
    full = torch.nn.functional.cosine_similarity(wide.unsqueeze(1), narrow.unsqueeze(0), dim=-1)
    assert torch.equal(idx, full.argmax(1))
    assert torch.allclose(cos, full.max(1).values, atol=1e-6)


def test_planted_splitting_is_found_whichever_order():
    parents, wide = _planted()
    for a, b in [(parents, wide), (wide, parents)]:
        r = compare(a, b, threshold=0.7)
        s = r["summary"]
        assert s["d_sae_wide"] == 2 * N_NARROW + N_NOVEL and s["d_sae_narrow"] == N_NARROW
        # every parent has exactly its two children, plus possibly novel latents (cosine 0 to all)
        assert r["nearest"][: 2 * N_NARROW].tolist() == list(range(N_NARROW)) * 2
        assert torch.allclose(r["cosine"][: 2 * N_NARROW], torch.full((2 * N_NARROW,), 1.16**-0.5), atol=1e-5)
        assert s["frac_novel"] == pytest.approx(N_NOVEL / (2 * N_NARROW + N_NOVEL))
        assert r["novel"][2 * N_NARROW :].all() and not r["novel"][: 2 * N_NARROW].any()
        assert s["frac_narrow_split"] == 1.0 and s["frac_narrow_with_children"] == 1.0
    assert (s["wide"], compare(wide, parents, 0.7)["summary"]["wide"]) == ("A", "A")


def test_cli_writes_the_run_and_refuses_bad_input(tmp_path, capsys):
    parents, wide = _planted()
    save_sae(_sae(parents), tmp_path / "narrow")
    save_sae(_sae(wide), tmp_path / "wide")
    out = tmp_path / "cmp"
    assert main(["compare-saes", str(tmp_path / "narrow"), str(tmp_path / "wide"), "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["wide"] == "B" and s["frac_narrow_split"] == 1.0
    # two children each, and the novel latents (cosine ~0 to every parent) land anywhere
    assert min(int(k) for k in s["family_size_counts"]) >= 2
    assert sum(int(k) * v for k, v in s["family_size_counts"].items()) == 2 * N_NARROW + N_NOVEL
    rows = list(csv.DictReader(open(out / "nearest.csv")))
    assert len(rows) == 2 * N_NARROW + N_NOVEL and sum(int(r["novel"]) for r in rows) == N_NOVEL
    fams = json.loads((out / "families.json").read_text())
    assert sum(len(f["children"]) for f in fams) == 2 * N_NARROW + N_NOVEL
    assert (out / "families.png").is_file() and (out / "report.html").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["command"] == "compare-saes" and cfg["threshold"] == 0.7 and cfg["b"] == str(tmp_path / "wide")
    capsys.readouterr()

    save_sae(_sae(torch.randn(4, 32), d_in=32), tmp_path / "other")
    bad = [
        (["--threshold", "1.5"], "--threshold: must be between 0 and 1"),
        (["--b", str(tmp_path / "other")], "B: d_in 32 differs from A's 64"),
        (["--b", str(tmp_path / "missing")], "B "),
    ]
    for extra, needle in bad:
        b = extra[1] if extra[0] == "--b" else str(tmp_path / "wide")
        argv = ["compare-saes", str(tmp_path / "narrow"), b, "--out", str(tmp_path / "bad")]
        argv += extra if extra[0] != "--b" else []
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "bad").exists()
