"""Released SAEs by (release, sae_id) and `push`, against a Hugging Face hub on localhost
(tests/fake_hub.py) that serves folders laid out as the real repositories are: the loader goes
through huggingface_hub as it does online and must not care. Each call runs in a fresh process
with HF_ENDPOINT and HF_HOME pointing at the fake hub and a private cache."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from superposition.cli import main
from superposition.sae import SAE, SAEConfig
from superposition.sae.formats import load
from superposition.sae.formats.sparsify import write as write_sparsify

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_hub import FakeHub  # noqa: E402

D, M = 8, 24
TOKEN = "hf_" + "s3cr3t" * 6


@pytest.fixture
def hub(tmp_path):
    h = FakeHub(tmp_path / "hub").start()
    yield h
    h.stop()


def _env(hub, tmp_path) -> dict:
    return {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home"), "HF_TOKEN": TOKEN,
            "HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # fmt: skip


def _python(code: str, env: dict) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()


def _w(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _lay_out_releases(root: Path) -> dict:
    """Five releases' files, laid out as their hub repositories are; returns the raw weights."""
    raw = {}
    # Gemma Scope: params.npz under layer_L/width_W/average_l0_N (the canonical id maps to one of them)
    for i, folder in enumerate(("layer_12/width_16k/average_l0_71", "layer_12/width_16k/average_l0_82")):
        p = {"W_enc": _w(D, M, seed=i), "W_dec": _w(M, D, seed=i + 10), "b_enc": _w(M, seed=i + 20) * 0.1,
             "b_dec": _w(D, seed=i + 30) * 0.1, "threshold": torch.rand(M, generator=torch.Generator().manual_seed(i)) * 0.5}  # fmt: skip
        where = root / "google" / "gemma-scope-2b-pt-res" / folder
        where.mkdir(parents=True)
        np.savez(where / "params.npz", **{k: v.numpy() for k, v in p.items()})
        raw[folder] = p
    # SAELens's GPT-2 residual SAEs: an older SAELens cfg.json (hook_point, no metadata)
    where = root / "jbloom" / "GPT2-Small-SAEs-Reformatted" / "blocks.8.hook_resid_pre"
    where.mkdir(parents=True)
    t = {
        "W_enc": _w(D, M, seed=40),
        "W_dec": _w(M, D, seed=41),
        "b_enc": _w(M, seed=42) * 0.1,
        "b_dec": _w(D, seed=43),
    }
    save_file(t, str(where / "sae_weights.safetensors"))
    (where / "cfg.json").write_text(json.dumps({"d_in": D, "d_sae": M, "hook_point": "blocks.8.hook_resid_pre",
                                                "model_name": "gpt2-small", "apply_b_dec_to_input": True}))  # fmt: skip
    raw["gpt2"] = t
    # Llama Scope: hyperparams.json and checkpoints/final.safetensors
    where = root / "fnlp" / "Llama3_1-8B-Base-LXR-8x" / "Llama3_1-8B-Base-L12R-8x"
    (where / "checkpoints").mkdir(parents=True)
    t = {"encoder.weight": _w(M, D, seed=50), "encoder.bias": _w(M, seed=51) * 0.1,
         "decoder.weight": _w(D, M, seed=52), "decoder.bias": _w(D, seed=53) * 0.1}  # fmt: skip
    save_file(t, str(where / "checkpoints" / "final.safetensors"))
    hp = {"d_model": D, "d_sae": M, "hook_point_in": "blocks.12.hook_resid_post", "jump_relu_threshold": 0.4,
          "dataset_average_activation_norm": {"in": 6.0, "out": 6.0}}  # fmt: skip
    (where / "hyperparams.json").write_text(json.dumps(hp))
    raw["llama"] = (t, hp)
    # EleutherAI's sparsify skip transcoders: layers.L.mlp/ with cfg.json and sae.safetensors
    tc = SAE(SAEConfig(architecture="skip_transcoder", sparsity="topk", d_in=D, d_sae=M, k=3))
    with torch.no_grad():
        for n, p in enumerate(tc.parameters()):
            p.copy_(_w(*p.shape, seed=60 + n) * 0.5)
    write_sparsify(tc.batched, root / "EleutherAI" / "Llama-3.2-1B-mntss-skip-transcoder" / "layers.3.mlp")
    raw["skip"] = tc
    return raw


def test_released_saes_load_by_release_and_id_through_the_hub(hub, tmp_path):
    raw = _lay_out_releases(hub.root)
    x = _w(5, D, seed=99)
    save_file({"x": x}, str(tmp_path / "x.safetensors"))
    code = f"""
import json, torch
import superposition as sp
from safetensors.torch import load_file, save_file
x = load_file({str(tmp_path / "x.safetensors")!r})["x"]
out = {{}}
for name, release, sae_id in [
    ("gs", "gemma-scope-2b-pt-res", "layer_12/width_16k/average_l0_71"),
    ("gsc", "gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical"),
    ("gpt2", "gpt2-small-res-jb", "blocks.8.hook_resid_pre"),
    ("llama", "llama_scope_lxr_8x", "l12r_8x"),
    ("skip", "Llama-3.2-1B-mntss-skip-transcoder", "layers.3.mlp"),
]:
    sae = sp.load_sae(release, sae_id)
    print(name, sae.cfg.architecture, sae.cfg.hook_name, sae.cfg.model_name, sae.cfg.metadata.release)
    out[name] = sae(x)
save_file(out, {str(tmp_path / "out.safetensors")!r})
sae = sp.load_sae("release://gpt2-small-res-jb/blocks.8.hook_resid_pre")
print("address", sae.cfg.hook_name)
"""
    lines = _python(code, _env(hub, tmp_path))
    assert lines == [
        "gs jumprelu blocks.12.hook_resid_post google/gemma-2-2b gemma-scope-2b-pt-res",
        "gsc jumprelu blocks.12.hook_resid_post google/gemma-2-2b gemma-scope-2b-pt-res-canonical",
        "gpt2 standard blocks.8.hook_resid_pre gpt2-small gpt2-small-res-jb",
        "llama jumprelu blocks.12.hook_resid_post meta-llama/Llama-3.1-8B llama_scope_lxr_8x",
        "skip skip_transcoder blocks.3.ln2.hook_normalized meta-llama/Llama-3.2-1B Llama-3.2-1B-mntss-skip-transcoder",
        "address blocks.8.hook_resid_pre",
    ]
    out = load_file(str(tmp_path / "out.safetensors"))
    for name, folder in (
        ("gs", "layer_12/width_16k/average_l0_71"),
        ("gsc", "layer_12/width_16k/average_l0_82"),
    ):
        p = raw[folder]  # Gemma Scope's published forward pass: the input is not centred
        pre = x @ p["W_enc"] + p["b_enc"]
        z = (pre > p["threshold"]) * torch.relu(pre)
        torch.testing.assert_close(out[name], z @ p["W_dec"] + p["b_dec"], atol=1e-5, rtol=1e-5)
    t = raw["gpt2"]  # a SAELens ReLU SAE: (x − b_dec) W_enc + b_enc
    z = torch.relu((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"])
    torch.testing.assert_close(out["gpt2"], z @ t["W_dec"] + t["b_dec"], atol=1e-5, rtol=1e-5)
    t, hp = raw["llama"]  # SAELens's reading: s = √d / norm folded in, threshold θ·s on the pre-activation
    s = D**0.5 / hp["dataset_average_activation_norm"]["in"]
    pre = (x * s) @ t["encoder.weight"].T + t["encoder.bias"]
    z = pre * (pre > hp["jump_relu_threshold"] * s)
    torch.testing.assert_close(
        out["llama"], (z @ t["decoder.weight"].T + t["decoder.bias"]) / s, atol=1e-5, rtol=1e-5
    )
    tc = raw["skip"]  # sparsify's skip transcoder: TopK(ReLU(x W_encᵀ + b)) W_dec + b_dec + x W_skipᵀ
    pre = torch.relu(x @ tc.W_enc.detach() + tc.b_enc.detach())
    top = pre.topk(3, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    want = z @ tc.W_dec.detach() + tc.b_dec.detach() + x @ tc.W_skip.detach().T
    torch.testing.assert_close(out["skip"], want, atol=1e-5, rtol=1e-5)


def test_unknown_releases_and_ids_are_one_line(hub, tmp_path):
    code = """
import superposition as sp
from superposition.errors import SuperpositionError
for args in [("gemma-scope-2b-pt", "layer_1"), ("gemma-scope-2b-pt-res", "layer_x/width_16k"),
             ("gemma-scope-2b-pt-res-canonical", "layer_99/width_16k/canonical"),
             ("gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_7")]:
    try:
        sp.load_sae(*args)
    except SuperpositionError as e:
        print(str(e).replace(chr(10), " | ")[:150])
"""
    lines = _python(code, _env(hub, tmp_path))
    assert (
        lines[0].startswith("release 'gemma-scope-2b-pt': not in the release table")
        and "did you mean" in lines[0]
    )
    assert lines[1].startswith(
        "sae_id 'layer_x/width_16k': release gemma-scope-2b-pt-res names its SAEs like"
    )
    assert lines[2].startswith(
        "sae_id 'layer_99/width_16k/canonical': not in release gemma-scope-2b-pt-res-canonical"
    )
    assert lines[3].startswith(
        "hf://google/gemma-scope-2b-pt-res/layer_3/width_16k/average_l0_7: cannot fetch"
    )
    assert len(lines) == 4


def test_push_uploads_saelens_folders_and_a_card_and_never_writes_the_token(hub, tmp_path, tiny_run):
    env = _env(hub, tmp_path)
    done = subprocess.run([sys.executable, "-m", "superposition", "push", str(tiny_run), "hf://me/smol-saes/v1"],
                          env=env, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "uploaded to hf://me/smol-saes/v1" in done.stdout
    repo = hub.root / "me" / "smol-saes"
    folder = repo / "v1" / "blocks.0.hook_resid_post"
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    card = (repo / "v1" / "README.md").read_text()
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert (
        "| blocks.0.hook_resid_post | smollm2-135m-instruct | blocks.0.hook_resid_post | topk | 576 | 1152 |"
        in card
    )
    assert f"{summary['l0']:.4g}" in card and f"{summary['explained_variance']:.4g}" in card
    assert f"{summary['training_tokens']:,}" in card
    # what was uploaded is what was trained, and it loads back through the hub
    sent = load(folder)
    ours = load(tiny_run / "sae")
    for k, v in ours.saved_tensors(0).items():
        torch.testing.assert_close(sent.saved_tensors(0)[k], v)
    # the token went in the request headers only
    auth = [r["headers"].get("Authorization", r["headers"].get("authorization", "")) for r in hub.requests]
    assert any(TOKEN in a for a in auth)
    for p in list(repo.rglob("*")) + list((tmp_path / "hf-home").rglob("*")):
        if p.is_file():
            assert TOKEN.encode() not in p.read_bytes(), p
    lines = _python(
        "import superposition as sp; print(sp.load_sae('hf://me/smol-saes/v1/blocks.0.hook_resid_post'))", env
    )
    assert lines == ["SAE(topk, d_in=576, d_sae=1152, k=8, hook_name='blocks.0.hook_resid_post')"]


def test_push_refuses_bad_addresses_in_one_line(tmp_path, capsys):
    sae = SAE(SAEConfig(architecture="topk", d_in=D, d_sae=M, k=2))
    folder = sae.save_model(tmp_path / "s")
    for address, says in (("me/repo", "expected hf://owner/repo[/path/in/repo]"),
                          ("hf://only-owner", "expected hf://owner/repo"),
                          ("hf://me/repo/../x", "expected hf://owner/repo")):  # fmt: skip
        assert main(["push", str(folder), address]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1
    assert main(["push", str(tmp_path / "absent"), "hf://me/r"]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_saved_files_follow_the_users_umask(tmp_path):
    sae = SAE(SAEConfig(architecture="topk", d_in=D, d_sae=M, k=2))
    old = os.umask(0o002)
    try:
        folder = sae.save_model(tmp_path / "s")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert modes == {"cfg.json": 0o664, "sae_weights.safetensors": 0o664}
