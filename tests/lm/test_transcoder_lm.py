"""Transcoders on a language model: the MLP hook pair, evaluation by substitution with known
answers (a transcoder that is the MLP, an all-zero one), and a small train-sae run on SmolLM2."""

import json
from types import SimpleNamespace

import pytest
import torch

from superposition.lm.data import special_mask
from superposition.lm.evals import capture_into, evaluate_sae, splice_at
from superposition.lm.hooks import HookedModel, read_names
from superposition.sae import SAEConfig, make_sae

TOKENIZER = SimpleNamespace(all_special_ids=[0])  # token 0 is "BOS": left as it is


@pytest.fixture(scope="module")
def relu_gpt2():
    """A small GPT-2 whose MLPs are ReLU MLPs: exactly a transcoder's form."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=2, n_embd=32, n_head=4, n_positions=32, vocab_size=50, activation_function="relu"
    )
    model = GPT2LMHeadModel(cfg).eval()
    return model, HookedModel(model)


def _seqs(n=6, ctx=16):
    ids = torch.randint(1, 50, (n, ctx), generator=torch.Generator().manual_seed(1))
    ids[:, 0] = 0
    return ids


def _mlp_copy(model, layer: int, skip: bool = False):
    """The layer's MLP as a transcoder: W_enc = c_fc, W_dec = c_proj (GPT-2's Conv1D is x W + b)."""
    mlp = model.transformer.h[layer].mlp
    arch = "skip_transcoder" if skip else "transcoder"
    sae = make_sae(SAEConfig(architecture=arch, sparsity="standard", d_in=32, d_sae=128))
    tensors = {
        "W_enc": mlp.c_fc.weight,
        "b_enc": mlp.c_fc.bias,
        "W_dec": mlp.c_proj.weight,
        "b_dec": mlp.c_proj.bias,
    }
    if skip:
        tensors["W_skip"] = torch.zeros(32, 32)
    sae.load_saved({k: v.detach() for k, v in tensors.items()})
    return sae.eval()


def test_a_transcoder_reads_the_mlp_input_after_its_norm(relu_gpt2):
    model, hooked = relu_gpt2
    ids = _seqs(2)
    names = read_names("blocks.1.mlp")
    assert names == ["blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"]
    cache = hooked.run_with_cache(ids, names)
    block = model.transformer.h[1]
    with torch.no_grad():
        torch.testing.assert_close(block.mlp(cache[names[0]]), cache[names[1]])
        resid_mid = {}
        h = block.ln_2.register_forward_hook(lambda m, a, o: resid_mid.setdefault("x", o))
        model(ids)
        h.remove()
    torch.testing.assert_close(cache[names[0]], resid_mid["x"])


@pytest.mark.parametrize("skip", [False, True])
def test_a_transcoder_that_is_the_mlp_recovers_everything(relu_gpt2, skip):
    model, hooked = relu_gpt2
    sae = _mlp_copy(model, 1, skip)
    ids = _seqs()
    m = evaluate_sae(hooked, TOKENIZER, sae, "blocks.1.mlp", ids, batch_size=3)
    assert m["fvu"] == pytest.approx(0.0, abs=1e-6)
    assert m["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-6) and m["kl_div"] == pytest.approx(
        0.0, abs=1e-7
    )
    # the logits with the transcoder substituted are bit for bit the model's own
    keep = ~special_mask(TOKENIZER, ids)
    seen = {}
    with torch.no_grad():
        clean = hooked.logits(ids, {"blocks.1.ln2.hook_normalized": capture_into(seen, "x")})
        y_hat = sae(seen["x"][keep].unsqueeze(1))[:, 0]
        spliced = hooked.logits(ids, {"blocks.1.hook_mlp_out": splice_at(keep, y_hat)})
    assert torch.equal(spliced, clean)


def test_an_all_zero_transcoder_recovers_nothing(relu_gpt2):
    model, hooked = relu_gpt2
    sae = make_sae(SAEConfig(architecture="transcoder", sparsity="standard", d_in=32, d_sae=64))
    with torch.no_grad():
        for p in sae.parameters():
            p.zero_()
    m = evaluate_sae(hooked, TOKENIZER, sae.eval(), "blocks.0.mlp", _seqs(), batch_size=3)
    assert m["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-6)
    assert m["ce_loss_with_sae"] == pytest.approx(m["ce_loss_zero_ablation"], abs=1e-6)
    assert m["fvu"] >= 1.0  # predicting 0 explains none of the output's variance (and misses its mean)


def test_train_sae_trains_a_skip_transcoder_on_smollm2(tmp_path, smol):
    """A small budget from a clean clone, offline: cfg.json names both hooks, W_skip is saved,
    and the evaluation is by substitution."""
    from safetensors.torch import load_file

    from superposition.lm.config import make_lm_config
    from superposition.runs.train import train_lm_sae

    sets = [
        "architecture=skip_transcoder", "hook_name=blocks.2.mlp", "context_size=32", "batch_size_tokens=256",
        "training_tokens=5120", "n_batches_in_buffer=2", "expansion_factor=2", "k=16", "eval_sequences=8",
        "log_every=5",
    ]  # fmt: skip
    out = train_lm_sae(make_lm_config(None, sets), tmp_path / "tc")
    cfg = json.loads((out / "sae" / "cfg.json").read_text())
    assert (
        cfg["hook_name"] == "blocks.2.ln2.hook_normalized" and cfg["hook_name_out"] == "blocks.2.hook_mlp_out"
    )
    assert (
        cfg["architecture"] == "topk_skip_transcoder"
        and cfg["superposition_architecture"] == "skip_transcoder"
    )
    w = load_file(str(out / "sae" / "sae_weights.safetensors"))
    assert w["W_skip"].shape == (576, 576) and w["W_skip"].abs().sum() > 0  # learned from zero
    s = json.loads((out / "summary.json").read_text())
    assert s["l0"] == pytest.approx(16, abs=0.5)
    assert 0 < s["fvu"] < 1 and s["fvu"] == pytest.approx(1 - s["explained_variance"])
    assert 0 < s["ce_loss_recovered"] <= 1.05 and s["ce_loss_with_sae"] < s["ce_loss_zero_ablation"]
