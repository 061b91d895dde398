"""Each reader on files made here, against the format's own forward pass written out from its
specification (the cross-library proof, with SAELens, sparsify and dictionary_learning themselves,
is benchmarks/check_formats.py)."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from superposition.errors import SuperpositionError
from superposition.sae import SAEConfig, make_sae
from superposition.sae.formats import load, save
from superposition.sae.io import load_sae

D, M, K = 6, 16, 3
G = torch.Generator().manual_seed(0)
X = torch.randn(40, D, generator=G) * 2 + 0.5


def _w(*shape, scale=1.0):
    return torch.randn(*shape, generator=G) * scale


def _enc(sae, x=X):
    with torch.no_grad():
        z = sae.encode(x.unsqueeze(1))
        return z[:, 0], sae.decode(z, x.unsqueeze(1))[:, 0]


def _saelens(folder, cfg, tensors):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"d_in": D, "d_sae": M, "dtype": "float32", **cfg}))
    return folder


BASE = {"W_enc": _w(D, M), "b_enc": _w(M, scale=0.3), "W_dec": _w(M, D), "b_dec": _w(D)}


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_saelens_standard_honours_apply_b_dec_to_input(tmp_path, apply_b_dec):
    sae = load_sae(
        _saelens(tmp_path / "s", {"architecture": "standard", "apply_b_dec_to_input": apply_b_dec}, BASE)
    )
    xin = X - BASE["b_dec"] if apply_b_dec else X
    z_want = torch.relu(xin @ BASE["W_enc"] + BASE["b_enc"])
    z, x_hat = _enc(sae)
    torch.testing.assert_close(z, z_want)
    torch.testing.assert_close(x_hat, z_want @ BASE["W_dec"] + BASE["b_dec"])


def test_saelens_jumprelu_without_b_dec_on_the_input(tmp_path):
    """The reported defect: Gemma-Scope-like JumpReLU files (apply_b_dec_to_input false)."""
    t = {**BASE, "threshold": torch.full((M,), 0.4)}
    sae = load_sae(_saelens(tmp_path / "j", {"architecture": "jumprelu", "apply_b_dec_to_input": False}, t))
    pre = X @ BASE["W_enc"] + BASE["b_enc"]
    torch.testing.assert_close(_enc(sae)[0], torch.relu(pre) * (pre > 0.4))


@pytest.mark.parametrize("norm", ["layer_norm", "constant_norm_rescale"])
def test_saelens_per_example_input_normalisation(tmp_path, norm):
    sae = load_sae(
        _saelens(tmp_path / norm, {"architecture": "standard", "normalize_activations": norm}, BASE)
    )
    if norm == "layer_norm":
        mu, std = X.mean(-1, keepdim=True), (X - X.mean(-1, keepdim=True)).std(-1, keepdim=True)
        xn = (X - mu) / (std + 1e-5)
        back = lambda y: y * std + mu  # noqa: E731
    else:
        c = D**0.5 / X.norm(dim=-1, keepdim=True)
        xn = X * c
        back = lambda y: y / c  # noqa: E731
    z_want = torch.relu((xn - BASE["b_dec"]) @ BASE["W_enc"] + BASE["b_enc"])
    z, x_hat = _enc(sae)
    torch.testing.assert_close(z, z_want)
    torch.testing.assert_close(x_hat, back(z_want @ BASE["W_dec"] + BASE["b_dec"]))


def test_saelens_topk_rescaled_by_decoder_norm(tmp_path):
    W_dec = BASE["W_dec"] * torch.linspace(0.5, 3.0, M).unsqueeze(1)  # rows far from unit norm
    t = {**BASE, "W_dec": W_dec}
    sae = load_sae(
        _saelens(tmp_path / "t", {"architecture": "topk", "k": K, "rescale_acts_by_decoder_norm": True}, t)
    )
    n = W_dec.norm(dim=-1)
    pre = ((X - BASE["b_dec"]) @ BASE["W_enc"] + BASE["b_enc"]) * n
    vals, idx = pre.topk(K, dim=-1)
    z_want = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
    z, x_hat = _enc(sae)
    torch.testing.assert_close(z, z_want)
    torch.testing.assert_close(x_hat, z_want @ (W_dec / n.unsqueeze(1)) + BASE["b_dec"])


def test_saelens_batchtopk_training_checkpoint_and_old_configs(tmp_path):
    t = {**BASE, "topk_threshold": torch.tensor(0.3, dtype=torch.float64)}
    sae = load_sae(_saelens(tmp_path / "b", {"architecture": "batchtopk", "k": 4.0}, t))
    pre = (X - BASE["b_dec"]) @ BASE["W_enc"] + BASE["b_enc"]
    assert sae.cfg.architecture == "batchtopk" and sae.cfg.k == 4
    torch.testing.assert_close(_enc(sae)[0], pre * (pre > 0.3))
    old = _saelens(tmp_path / "old", {"activation_fn_str": "topk", "activation_fn_kwargs": {"k": K},
                                      "hook_point": "blocks.3.hook_resid_pre", "model_name": "gpt2"}, BASE)  # fmt: skip
    sae = load_sae(old)
    assert (sae.cfg.architecture, sae.cfg.k, sae.cfg.hook_name, sae.cfg.model_name) == (
        "topk",
        K,
        "blocks.3.hook_resid_pre",
        "gpt2",
    )


@pytest.mark.parametrize("cfg, tensors, match", [
    ({"architecture": "temporal"}, {}, "unknown architecture 'temporal'"),
    ({"architecture": "standard", "metadata": {"hook_head_index": 2}}, {}, "hook_head_index 2"),
    ({"architecture": "standard"}, {"scaling_factor": torch.full((M,), 2.0)}, "scaling_factor"),
    ({"architecture": "standard", "normalize_activations": "whiten"}, {}, "normalize_activations 'whiten'"),
    ({"architecture": "standard"}, {"W_dec": _w(M, D + 1)}, r"W_dec has shape \[16, 7\], expected \[16, 6\]"),
])  # fmt: skip
def test_saelens_files_that_would_compute_something_else_are_refused(tmp_path, cfg, tensors, match):
    with pytest.raises(SuperpositionError, match=match) as err:
        load_sae(_saelens(tmp_path / "x", cfg, {**BASE, **tensors}))
    assert "\n" not in str(err.value)


def test_ours_round_trip_through_the_saelens_layout_keeps_every_input_mode(tmp_path):
    for apply_b_dec, norm in ((False, "none"), (True, "layer_norm")):
        cfg = SAEConfig(
            architecture="gated", d_in=D, d_sae=M, apply_b_dec_to_input=apply_b_dec, input_normalization=norm
        )
        sae = make_sae(cfg, torch.Generator().manual_seed(3))
        with torch.no_grad():
            for p in sae.parameters():
                p.add_(_w(*p.shape, scale=0.2))
        back = load_sae(save(sae, tmp_path / f"g{apply_b_dec}{norm}"))
        for a, b in zip(_enc(sae), _enc(back), strict=True):
            torch.testing.assert_close(a, b)


def _sparsify(folder, k=K, **extra):
    folder.mkdir(parents=True)
    t = {
        "encoder.weight": BASE["W_enc"].T.contiguous(),
        "encoder.bias": BASE["b_enc"],
        "W_dec": BASE["W_dec"],
        "b_dec": BASE["b_dec"],
    }
    save_file(t, str(folder / "sae.safetensors"))
    cfg = {"activation": "topk", "expansion_factor": 1, "normalize_decoder": True, "num_latents": M, "k": k,
           "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": D, **extra}  # fmt: skip
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def test_sparsify_folders_single_and_per_hook(tmp_path):
    sae = load_sae(_sparsify(tmp_path / "one"))
    pre = torch.relu((X - BASE["b_dec"]) @ BASE["W_enc"] + BASE["b_enc"])
    vals, idx = pre.topk(K, dim=-1)
    z_want = torch.zeros_like(pre).scatter(-1, idx, vals)
    torch.testing.assert_close(_enc(sae)[0], z_want)
    ckpt = tmp_path / "ckpt"
    _sparsify(ckpt / "layers.3")
    _sparsify(ckpt / "layers.5.mlp")
    with pytest.raises(SuperpositionError, match=r"holds SAEs for 2 hook points \(layers.3, layers.5.mlp\)"):
        load_sae(ckpt)
    assert load_sae(ckpt / "layers.5.mlp").cfg.hook_name == "blocks.5.hook_mlp_out"
    with pytest.raises(SuperpositionError, match="activation 'groupmax': only topk"):
        load_sae(_sparsify(tmp_path / "gm", activation="groupmax"))


def test_sparsify_writer_folds_an_uncentred_input_and_refuses_what_it_cannot_hold(tmp_path):
    sae = make_sae(SAEConfig(architecture="topk", d_in=D, d_sae=M, k=K, apply_b_dec_to_input=False))
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(_w(*p.shape, scale=0.3))
    back = load_sae(save(sae, tmp_path / "sp", to="sparsify"))
    assert back.metadata["format"] == "sparsify" and back.cfg.apply_b_dec_to_input
    for a, b in zip(_enc(sae), _enc(back), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(SuperpositionError, match="sparsify stores TopK SAEs; this one is standard"):
        save(make_sae(SAEConfig(architecture="standard", d_in=D, d_sae=M)), tmp_path / "no", to="sparsify")


def test_gemma_scope_npz(tmp_path):
    folder = tmp_path / "gemma-scope-2b-pt-res" / "layer_12" / "width_16k" / "average_l0_82"
    folder.mkdir(parents=True)
    arrays = {k: v.numpy() for k, v in BASE.items()} | {"threshold": np.full(M, 0.5, np.float32)}
    np.savez(folder / "params.npz", **arrays)
    sae = load_sae(folder)
    pre = X @ BASE["W_enc"] + BASE["b_enc"]  # Gemma Scope does not centre the input
    acts = (pre > 0.5) * torch.relu(pre)
    z, x_hat = _enc(sae)
    torch.testing.assert_close(z, acts)
    torch.testing.assert_close(x_hat, acts @ BASE["W_dec"] + BASE["b_dec"])
    assert sae.cfg.hook_name == "blocks.12.hook_resid_post" and not sae.cfg.apply_b_dec_to_input
    np.savez(tmp_path / "nothr.npz", **{k: v for k, v in arrays.items() if k != "threshold"})
    with pytest.raises(SuperpositionError, match=r"nothr.npz: missing threshold"):
        load_sae(tmp_path / "nothr.npz")
    np.savez(tmp_path / "obj.npz", W_enc=np.array([{"a": 1}], dtype=object))
    with pytest.raises(SuperpositionError, match="not a readable .npz of arrays"):
        load_sae(tmp_path / "obj.npz")


def _dl(folder, dict_class, sd, **trainer):
    folder.mkdir(parents=True)
    torch.save(sd, folder / "ae.pt")
    (folder / "config.json").write_text(json.dumps({"trainer": {"dict_class": dict_class, **trainer}}))
    return folder


def test_dictionary_learning_every_dict_class(tmp_path):
    enc_w, dec_w = BASE["W_enc"].T.contiguous(), BASE["W_dec"].T.contiguous()  # nn.Linear layouts
    pre = (X - BASE["b_dec"]) @ BASE["W_enc"] + BASE["b_enc"]
    relu = torch.relu(pre)
    cases = {
        "AutoEncoder": ({"encoder.weight": enc_w, "encoder.bias": BASE["b_enc"], "decoder.weight": dec_w, "bias": BASE["b_dec"]}, {}, relu),
        "AutoEncoderTopK": ({"encoder.weight": enc_w, "encoder.bias": BASE["b_enc"], "decoder.weight": dec_w, "b_dec": BASE["b_dec"],
                             "k": torch.tensor(K), "threshold": torch.tensor(-1.0)}, {"k": K},
                            torch.zeros_like(pre).scatter(-1, relu.topk(K).indices, relu.topk(K).values)),
        "BatchTopKSAE": ({"encoder.weight": enc_w, "encoder.bias": BASE["b_enc"], "decoder.weight": dec_w, "b_dec": BASE["b_dec"],
                          "k": torch.tensor(K), "threshold": torch.tensor(0.3)}, {"k": K}, relu * (relu > 0.3)),
        "MatryoshkaBatchTopKSAE": ({**BASE, "k": torch.tensor(K), "threshold": torch.tensor(0.3), "group_sizes": torch.tensor([4, 4, 8])},
                                   {"k": K}, relu * (relu > 0.3)),
        "JumpReluAutoEncoder": ({**BASE, "threshold": torch.full((M,), 0.2)}, {},
                                torch.relu(X @ BASE["W_enc"] + BASE["b_enc"]) * ((X @ BASE["W_enc"] + BASE["b_enc"]) > 0.2)),
    }  # fmt: skip
    for name, (sd, trainer, z_want) in cases.items():
        sae = load_sae(_dl(tmp_path / name, name, sd, **trainer))
        torch.testing.assert_close(_enc(sae)[0], z_want, msg=name)
    assert load_sae(tmp_path / "MatryoshkaBatchTopKSAE").cfg.prefixes == [4, 8, 16]


class _Payload:
    """Unpickling this would create a file: a stand-in for code in a hostile checkpoint."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_dictionary_learning_refuses_pickled_objects_without_running_them(tmp_path):
    folder = tmp_path / "evil"
    folder.mkdir()
    canary = tmp_path / "code-ran"
    with open(folder / "ae.pt", "wb") as f:
        pickle.dump({"encoder.weight": _Payload(canary)}, f)
    (folder / "config.json").write_text(json.dumps({"trainer": {"dict_class": "AutoEncoder"}}))
    with pytest.raises(
        SuperpositionError, match="holds pickled objects, not only tensors; refusing to load it"
    ):
        load_sae(folder)
    assert not canary.exists()
    torch.save({"encoder.weight": [1, 2]}, folder / "ae.pt")  # unpicklable safely, but not tensors
    with pytest.raises(SuperpositionError, match="expected a dict of tensors"):
        load_sae(folder)


def test_unknown_folders_and_half_pairs_are_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SuperpositionError, match="no SAE in a known format here; expected cfg.json"):
        load(tmp_path)
    with pytest.raises(SuperpositionError, match="no such file or folder"):
        load(tmp_path / "absent")


def _hub_cache(home, repo, inside):
    """A Hugging Face cache holding one snapshot of `repo` with an SAE under `inside`."""
    root = home / "hub" / f"models--{repo.replace('/', '--')}"
    sha = "0" * 40
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(sha)
    _saelens(root / "snapshots" / sha / inside, {"architecture": "standard"}, BASE)


def test_hf_paths_resolve_from_the_cache_offline(tmp_path):
    _hub_cache(tmp_path / "hf", "someone/saes", "layer_3")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    code = (
        "import sys\n"
        "from superposition.sae.io import load_sae\n"
        "from superposition.errors import SuperpositionError\n"
        "sae = load_sae('hf://someone/saes/layer_3')\n"
        "print(sae.cfg.architecture, sae.cfg.d_sae)\n"
        "try:\n"
        "    load_sae('hf://someone/other/layer_3')\n"
        "except SuperpositionError as e:\n"
        "    print('ERR', e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0] == f"standard {M}"
    assert lines[1].startswith(
        "ERR hf://someone/other/layer_3: cannot fetch someone/other/layer_3 from the Hugging Face hub"
    )
