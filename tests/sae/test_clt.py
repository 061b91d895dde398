"""Cross-layer transcoders: the decoder writes each layer's latents to that layer and every later
one; files in circuit-tracer's layout round-trip; training recovers a planted cross-layer map;
substituting every MLP at once scores exact transcoders 1 and a silent CLT 0."""

import pytest
import torch

from superposition.lm.evals import CLTReplacement, PerLayer, evaluate_substitution
from superposition.sae.clt import CrossLayerTranscoder

TOKENIZER = type("T", (), {"all_special_ids": [0]})()


def _random_clt(n=3, d=6, m=10, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    clt = CrossLayerTranscoder(n, d, m, k, g)
    with torch.no_grad():
        for W in clt.W_dec:
            W.copy_(torch.randn(W.shape, generator=g))
        clt.b_dec.copy_(torch.randn(n, d, generator=g))
        clt.b_enc.copy_(torch.randn(n, m, generator=g) * 0.1)
    return clt


def test_each_layers_output_sums_the_latents_of_it_and_every_earlier_layer():
    clt = _random_clt()
    x = torch.randn(5, 3, 6)
    z = clt.encode(x)
    assert ((z > 0).sum(-1) <= 3).all()
    y = clt.decode(z)
    for L in range(3):
        want = clt.b_dec[L] + sum(z[:, i] @ clt.W_dec[i][:, L - i] for i in range(L + 1))
        torch.testing.assert_close(y[:, L], want)
        torch.testing.assert_close(clt.decode_layer([clt.encode(x[:, i], i) for i in range(3)], L), want)


def test_files_are_circuit_tracers_layout_and_round_trip(tmp_path):
    from safetensors.torch import load_file

    clt = _random_clt()
    clt.save(tmp_path / "c", {"model_name": "m"})
    enc, dec = (
        load_file(str(tmp_path / "c" / "W_enc_1.safetensors")),
        load_file(str(tmp_path / "c" / "W_dec_1.safetensors")),
    )
    assert {k: tuple(v.shape) for k, v in enc.items()} == {
        "W_enc_1": (10, 6),
        "b_enc_1": (10,),
        "b_dec_1": (6,),
    }
    assert {k: tuple(v.shape) for k, v in dec.items()} == {"W_dec_1": (10, 2, 6)}
    back = CrossLayerTranscoder.load(tmp_path / "c")
    x = torch.randn(4, 3, 6)
    assert torch.equal(back(x), clt(x)) and back.metadata["model_name"] == "m"
    # without cfg.json, our files' own header says TopK and k
    (tmp_path / "c" / "cfg.json").unlink()
    assert CrossLayerTranscoder.load(tmp_path / "c").k == 3
    from safetensors.torch import save_file

    # circuit-tracer's ReLU CLT (no thresholds, no k anywhere) is read as circuit-tracer reads it
    for i in range(3):
        e = load_file(str(tmp_path / "c" / f"W_enc_{i}.safetensors"))
        save_file(e, str(tmp_path / "c" / f"W_enc_{i}.safetensors"))  # no metadata
    relu = CrossLayerTranscoder.load(tmp_path / "c")
    assert relu.k is None and torch.equal(relu.encode(x), torch.relu(relu.pre_acts(x)))
    # a circuit-tracer JumpReLU file (thresholds, no cfg.json) is read as one

    for i in range(3):
        e = load_file(str(tmp_path / "c" / f"W_enc_{i}.safetensors"))
        save_file(
            {**e, f"threshold_{i}": torch.full((10,), 0.5)}, str(tmp_path / "c" / f"W_enc_{i}.safetensors")
        )
    jump = CrossLayerTranscoder.load(tmp_path / "c")
    pre = jump.pre_acts(x)
    torch.testing.assert_close(jump.encode(x), pre * (pre > 0.5))


def _planted(n=3, d=16, m=12, k=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    E = torch.randn(n, m, d, generator=g)
    D = [torch.randn(m, n - i, d, generator=g) * 0.5 for i in range(n)]

    def batch(b=512):
        z = torch.zeros(b, n, m)
        idx = torch.rand(b, n, m, generator=g).argsort(-1)[..., :k]
        z.scatter_(-1, idx, torch.rand(b, n, k, generator=g) + 0.5)
        x = torch.einsum("blm,lmd->bld", z, E)
        y = torch.zeros(b, n, d)
        for i in range(n):
            y[:, i:] += torch.einsum("bm,mld->bld", z[:, i], D[i])
        return x, y

    return batch


def _train_jumprelu(coefficient: float, steps: int = 600):
    from superposition.sae.base import StepState

    batch = _planted()
    clt = CrossLayerTranscoder(3, 16, 48, generator=torch.Generator().manual_seed(0), sparsity="jumprelu",
                               sparsity_coefficient=coefficient, init_threshold=0.1)  # fmt: skip
    opt = torch.optim.Adam(clt.parameters(), lr=3e-3)
    start = clt.log_threshold.detach().clone()
    clt.train()
    for _ in range(steps):
        x, y = batch()
        out = clt.train_loss(torch.stack([x, y], 2).reshape(x.shape[0], 6, 16), StepState())
        opt.zero_grad()
        out.total.backward()
        opt.step()
    clt.eval()
    x, y = batch(2048)
    with torch.no_grad():
        _, terms = clt.loss(x, y)
    return clt, terms, start


def test_a_jumprelu_clt_trains_its_thresholds_and_its_penalty_sets_the_l0():
    """The published recipe: the tanh penalty on ‖W_dec‖·z trades L0 for reconstruction, the
    thresholds move through the straight-through estimator, and the saved files say JumpReLU."""
    loose, t_loose, start = _train_jumprelu(0.01)
    tight, t_tight, _ = _train_jumprelu(1.0)
    assert not torch.equal(tight.log_threshold.detach(), start)  # θ is trained
    l0_loose, l0_tight = float(t_loose["l0"].mean()), float(t_tight["l0"].mean())
    assert l0_tight < 0.7 * l0_loose, (l0_loose, l0_tight)
    assert float(t_loose["fvu"].max()) < 0.2  # and it reconstructs
    assert float(t_tight["fvu"].max()) > float(t_loose["fvu"].max())


def test_a_jumprelu_clt_saves_thresholds_circuit_tracer_reads(tmp_path):
    import json

    from safetensors import safe_open

    clt, _, _ = _train_jumprelu(0.1, steps=50)
    clt.save(tmp_path / "c")
    with safe_open(str(tmp_path / "c" / "W_enc_0.safetensors"), "pt") as f:
        assert f.metadata() == {"activation": "jump_relu"}
        torch.testing.assert_close(f.get_tensor("threshold_0"), clt.log_threshold[0].detach().exp())
    assert json.loads((tmp_path / "c" / "cfg.json").read_text())["activation_function"] == "jump_relu"
    back = CrossLayerTranscoder.load(tmp_path / "c")
    x = torch.randn(8, 3, 16)
    with torch.no_grad():
        torch.testing.assert_close(back.encode(x), clt.encode(x))


def test_training_recovers_a_planted_cross_layer_map():
    """Sparse features z_i of layer i are read from x_i and written to layer i and later layers."""
    n, d, m, k = 3, 16, 12, 2
    batch = _planted(n, d, m, k)
    torch.manual_seed(0)
    clt = CrossLayerTranscoder(n, d, 4 * m, k, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(clt.parameters(), lr=3e-3)
    for _ in range(1500):
        x, y = batch()
        loss, terms = clt.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = batch(2048)
    _, terms = clt.loss(x, y)
    assert float(terms["fvu"].detach().max()) < 0.1


@pytest.fixture(scope="module")
def relu_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    from superposition.lm.hooks import HookedModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=32, vocab_size=50, activation_function="relu")
    ).eval()
    return model, HookedModel(model)


def test_substituting_every_mlp_with_exact_transcoders_recovers_everything(relu_gpt2):
    from tests.lm.test_transcoder_lm import _mlp_copy, _seqs

    model, hooked = relu_gpt2
    m = evaluate_substitution(
        hooked, TOKENIZER, PerLayer({L: _mlp_copy(model, L) for L in range(2)}), [0, 1], _seqs()
    )
    assert m["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-5) and m["kl_div"] == pytest.approx(
        0.0, abs=1e-7
    )
    assert max(m["fvu_per_layer"].values()) < 1e-8


def test_a_silent_clt_is_zero_ablation(relu_gpt2):
    from tests.lm.test_transcoder_lm import _seqs

    _, hooked = relu_gpt2
    clt = CrossLayerTranscoder(2, 32, 16, 4)  # decoders and b_dec start at zero
    m = evaluate_substitution(hooked, TOKENIZER, CLTReplacement(clt), [0, 1], _seqs())
    assert m["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-6)
    assert m["ce_loss_with_replacement"] == pytest.approx(m["ce_loss_zero_ablation"], rel=1e-6)
    # predicting 0 misses all the variance and the mean besides: Σy² / Σ(y − ȳ)² ≥ 1
    assert all(v >= 1 - 1e-6 for v in m["fvu_per_layer"].values())


def test_train_sae_clt_end_to_end(tmp_path, capsys):
    import json

    from superposition.cli import main

    out = tmp_path / "clt"
    sets = [
        "architecture=clt",
        "hook_name=blocks.*.mlp",
        "d_sae=32",
        "k=4",
        "context_size=16",
        "batch_size_tokens=64",
        "training_tokens=128",
        "n_batches_in_buffer=2",
        "model_batch_size=4",
        "eval_sequences=2",
        "tensorboard=false",
    ]
    assert main(["train-sae", "--out", str(out), *[a for s in sets for a in ("--set", s)]]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert (
        s["architecture"] == "clt"
        and len(s["fvu_per_layer"]) == 30
        and s["ce_loss_zero_ablation"] > s["ce_loss_clean"]
    )
    clt = CrossLayerTranscoder.load(out / "clt")
    assert (clt.n_layers, clt.d_model, clt.d_sae, clt.k) == (30, 576, 32, 4)
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in (out / "clt").glob("*.safetensors")}
    assert main(["train-sae", "--out", str(out), "--resume"]) == 0  # finished: resuming re-evaluates it
    assert {p.name: p.read_bytes() for p in (out / "clt").glob("*.safetensors")} == before
    # attribute reads the CLT run: every MLP replaced, latents of layer L writing to layers L..29
    assert main(["attribute", str(out), "--prompt", "x", "--out", str(tmp_path / "a")]) == 0
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert a["cross_layer_transcoder"] and a["transcoder_layers"] == list(range(30))
    assert a["layers_without_transcoder"] == [] and a["n_active_features"] > 0
    # intervene edits a CLT latent of the graph: it writes to every later layer, so the logits move
    node = next(
        n["node_id"] for n in json.loads((tmp_path / "a" / "graph.json").read_text())["nodes"]
        if n["feature_type"] == "cross layer transcoder"
    ) if a["pruned"]["n_features"] else f"0_0_{a['n_tokens'] - 1}"  # fmt: skip
    capsys.readouterr()
    assert (
        main(["intervene", str(out), "--prompt", "x", "--nodes", node, "--mode", "add", "--value", "50"]) == 0
    )
    printed = capsys.readouterr().out
    assert "frozen: KL" in printed and "unfrozen: KL" in printed
    assert main(["eval-sae", str(out)]) == 2  # per-layer SAE commands still say what a CLT run is
    assert "a cross-layer transcoder run" in capsys.readouterr().err


def test_convert_to_circuit_tracer_writes_jumprelu_clts_and_refuses_topk(tmp_path, capsys):
    from superposition.cli import main
    from tests.reliability.test_hostile import _one_line_exit_2

    clt, _, _ = _train_jumprelu(0.1, steps=20)
    clt.save(tmp_path / "j", {"model_name": "m"})
    assert (
        main(["convert", str(tmp_path / "j"), "--to", "circuit-tracer", "--out", str(tmp_path / "ct")]) == 0
    )
    back = CrossLayerTranscoder.load(tmp_path / "ct")
    x = torch.randn(4, 3, 16)
    with torch.no_grad():
        torch.testing.assert_close(back.encode(x), clt.encode(x))
    _random_clt().save(tmp_path / "t")
    _one_line_exit_2(capsys, ["convert", str(tmp_path / "t"), "--to", "circuit-tracer", "--out",
                              str(tmp_path / "no")], "is a TopK CLT (k 3)")  # fmt: skip
    assert not (tmp_path / "no").exists()
