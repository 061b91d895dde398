"""Every supported model family (lm/hooks.FAMILIES), as a tiny local folder (tests/conftest.
make_tiny_model): the one loader reads it, every hook point has the family's shapes, and train-sae
trains and evaluates an SAE and a transcoder on it. Tests that need a family's code paths use these
folders; SmolLM2 stays for the known answers that need a trained model."""

import json

import pytest
import torch

from superposition.cli import main
from superposition.lm.hooks import HookedModel
from superposition.lm.model import load_model
from tests.conftest import TINY_FAMILIES


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_each_family_loads_and_every_hook_has_its_shape(tiny_models, family):
    lm = load_model(str(tiny_models[family]))
    hooked = HookedModel(lm.model)
    assert hooked.n_layers == 2 and hooked.d_model == 64
    kinds = ("hook_resid_pre", "hook_resid_post", "hook_mlp_out", "ln2.hook_normalized", "hook_attn_out",
             "mlp.hook_post")  # fmt: skip
    names = [f"blocks.1.{k}" for k in kinds]
    ids = lm.tokenizer("def f(x): return x", return_tensors="pt").input_ids
    cache = hooked.run_with_cache(ids, names)
    for name in names:
        assert cache[name].shape[:2] == ids.shape and cache[name].shape[-1] == hooked.widths(name)[-1], name
    # the residual stream adds up: resid_post = resid_pre + attn_out + mlp_out (sequential blocks)
    if family != "neox":  # GPT-NeoX runs attention and MLP in parallel off one residual
        total = (
            cache["blocks.1.hook_resid_pre"]
            + cache["blocks.1.hook_attn_out"]
            + cache["blocks.1.hook_mlp_out"]
        )
        torch.testing.assert_close(cache["blocks.1.hook_resid_post"], total, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_train_sae_trains_an_sae_and_a_transcoder_on_each_family(tiny_models, family, tmp_path):
    sets = [f"model_name={tiny_models[family]}", "d_sae=64", "k=4", "context_size=32",
            "batch_size_tokens=128", "training_tokens=2560", "n_batches_in_buffer=2", "model_batch_size=8",
            "eval_sequences=2", "tensorboard=false"]  # fmt: skip
    # an SAE at a residual hook, and a transcoder from the MLP's input to its output
    for name, hook, arch in (
        ("sae", "blocks.1.hook_resid_post", "topk"),
        ("tc", "blocks.0.mlp", "transcoder"),
    ):
        args = [*sets, f"hook_name={hook}", f"architecture={arch}"]
        out = tmp_path / name
        assert main(["train-sae", "--out", str(out), *[a for s in args for a in ("--set", s)]]) == 0
        s = json.loads((out / "summary.json").read_text())
        assert s["train_steps"] == 20 and 0 < s["l0"] <= 4 + 1e-6, s
        # 20 steps on random activations: some variance explained, and the model's loss computed with the
        # SAE spliced in (a random model's CE says nothing about zero-ablation, so that is not compared)
        floor = 0.05 if name == "sae" else -0.5  # a random MLP's output is barely learnable in 20 steps
        assert floor < s["explained_variance"] < 1 and s["ce_loss_with_sae"] > 0 and s["kl_div"] >= 0
