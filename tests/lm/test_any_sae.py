"""Any readable SAE, not only a train-sae run, can be converted, evaluated, browsed and analysed
on a language model (--model and --hook when the SAE does not name them)."""

import json
import shutil

import numpy as np
import pytest
import torch

from superposition.cli import main
from superposition.sae.io import load_sae


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_convert_between_layouts_keeps_the_outputs(tiny_run, tmp_path, capsys):
    sae = load_sae(tiny_run / "sae")
    assert _run(capsys, "convert", tiny_run / "sae", "--to", "sparsify", "--out", tmp_path / "sp")[0] == 0
    assert _run(capsys, "convert", tmp_path / "sp", "--to", "saelens", "--out", tmp_path / "sl")[0] == 0
    x = torch.randn(50, 1, 576, generator=torch.Generator().manual_seed(0)) * 3
    for folder in ("sp", "sl"):
        back = load_sae(tmp_path / folder)
        with torch.no_grad():
            torch.testing.assert_close(back.encode(x), sae.encode(x), atol=2e-5, rtol=1e-5)
            torch.testing.assert_close(back(x), sae(x), atol=2e-5, rtol=1e-5)
    assert load_sae(tmp_path / "sl").cfg.hook_name == "blocks.0.hook_resid_post"  # carried through sparsify
    code, _, err = _run(capsys, "convert", tiny_run / "sae", "--to", "sparsify", "--out", tmp_path / "sp")
    assert code == 0  # an earlier conversion is replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("x")
    code, _, err = _run(capsys, "convert", tiny_run / "sae", "--to", "saelens", "--out", tmp_path / "mine")
    assert code == 2 and "not a previous run of superposition" in err


def test_a_gemma_scope_file_converts_to_a_saelens_folder(tmp_path, capsys):
    g = torch.Generator().manual_seed(1)
    arrays = {"W_enc": torch.randn(8, 32, generator=g), "W_dec": torch.randn(32, 8, generator=g),
              "b_enc": torch.randn(32, generator=g), "b_dec": torch.randn(8, generator=g), "threshold": torch.rand(32, generator=g)}  # fmt: skip
    np.savez(tmp_path / "params.npz", **{k: v.numpy() for k, v in arrays.items()})
    assert (
        _run(capsys, "convert", tmp_path / "params.npz", "--to", "saelens", "--out", tmp_path / "out")[0] == 0
    )
    cfg = json.loads((tmp_path / "out" / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu" and cfg["apply_b_dec_to_input"] is False and "dtype" in cfg


def _foreign_copy(tiny_run, tmp_path):
    """The run's SAE alone, as someone would download it: no run directory around it."""
    folder = tmp_path / "downloaded"
    shutil.copytree(tiny_run / "sae", folder)
    return folder


def test_eval_an_sae_that_is_not_a_run(tiny_run, tmp_path, capsys):
    sae = _foreign_copy(tiny_run, tmp_path)
    code, out, err = _run(capsys, "eval-sae", sae, "--sequences", "2")
    assert code == 2 and "--out: " in err and "give --out DIR" in err
    code, out, err = _run(capsys, "eval-sae", sae, "--sequences", "2", "--out", tmp_path / "ev")
    assert code == 0, err
    s = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert (
        s["sae"] == str(sae)
        and s["hook_name"] == "blocks.0.hook_resid_post"
        and 0 < s["ce_loss_recovered"] <= 1.01
    )
    assert (tmp_path / "ev" / "report.html").is_file() and "ce_loss_recovered" in out
    # the same SAE on another hook of the same width: cross-hook (or cross-model) transfer is one command
    code, _, err = _run(
        capsys,
        "eval-sae",
        sae,
        "--hook",
        "blocks.2.hook_resid_post",
        "--sequences",
        "2",
        "--out",
        tmp_path / "ev2",
    )
    assert code == 0, err
    assert (
        json.loads((tmp_path / "ev2" / "summary.json").read_text())["hook_name"] == "blocks.2.hook_resid_post"
    )
    cfg = json.loads((tmp_path / "ev2" / "config.json").read_text())
    assert (
        cfg["command"] == "eval-sae" and cfg["hook"] == "blocks.2.hook_resid_post" and cfg["sequences"] == 2
    )


def test_an_sae_that_names_no_hook_needs_one_and_its_width_must_match(tmp_path, capsys):
    g = torch.Generator().manual_seed(2)
    arrays = {"W_enc": torch.randn(64, 32, generator=g), "W_dec": torch.randn(32, 64, generator=g),
              "b_enc": torch.zeros(32), "b_dec": torch.zeros(64), "threshold": torch.rand(32, generator=g)}  # fmt: skip
    np.savez(tmp_path / "params.npz", **{k: v.numpy() for k, v in arrays.items()})
    code, _, err = _run(capsys, "eval-sae", tmp_path / "params.npz", "--out", tmp_path / "ev")
    assert code == 2 and "--model: " in err and "give --model" in err
    code, _, err = _run(
        capsys,
        "eval-sae",
        tmp_path / "params.npz",
        "--model",
        "smollm2-135m-instruct",
        "--out",
        tmp_path / "ev",
    )
    assert code == 2 and "give --hook" in err
    code, _, err = _run(capsys, "eval-sae", tmp_path / "params.npz", "--model", "smollm2-135m-instruct", "--hook",
                        "blocks.1.hook_resid_post", "--out", tmp_path / "ev")  # fmt: skip
    assert (
        code == 2
        and "the SAE's d_in is 64, but blocks.1.hook_resid_post of smollm2-135m-instruct has width 576" in err
    )
    assert not (tmp_path / "ev").exists()


def test_dashboard_and_analyze_take_any_sae(tiny_run, tmp_path, capsys):
    sae = _foreign_copy(tiny_run, tmp_path)
    code, _, err = _run(
        capsys, "dashboard", sae, "--out", tmp_path / "site", "--sequences", "2", "--latents", "3"
    )
    assert code == 0, err
    assert len(list((tmp_path / "site" / "latents").glob("*.html"))) == 3
    code, out, err = _run(capsys, "analyze", sae, "--prompt", "The value of the argument is", "--top", "2")
    assert code == 0, err
    assert out.splitlines()[1].split() == ["latent", "activation", "DLA", "attrib.", "ablation"]


@pytest.mark.parametrize("argv, needle", [
    (["convert", "{tmp}/none", "--to", "saelens", "--out", "{tmp}/o"], "no such file or folder"),
    (["convert", "{tmp}", "--to", "saelens", "--out", "{tmp}/o"], "no SAE in a known format here"),
    (["convert", "{run}", "--to", "parquet", "--out", "{tmp}/o"], "invalid choice: 'parquet'"),
])  # fmt: skip
def test_convert_bad_input(tiny_run, tmp_path, capsys, argv, needle):
    code, _, err = _run(capsys, *[a.format(tmp=tmp_path, run=tiny_run / "sae") for a in argv])
    assert code == 2 and needle in err and err.count("\n") == 1 and not (tmp_path / "o").exists()
