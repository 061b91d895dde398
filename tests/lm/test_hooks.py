"""Hook points against a plain transformers forward pass, on SmolLM2 (Llama-style) and GPT-2."""

import pytest
import torch

from superposition.errors import SuperpositionError


def _ids(lm):
    return lm.tokenizer(
        [
            "Sparse autoencoders decompose activations into features.",
            "The quick brown fox jumps over the lazy dog again.",
        ],
        return_tensors="pt",
        padding=True,
    ).input_ids


def test_residual_hooks_equal_hidden_states(smol):
    lm, hooked = smol
    ids = _ids(lm)
    with torch.no_grad():
        hidden = lm.model(ids, output_hidden_states=True).hidden_states
    names = [
        "blocks.0.hook_resid_pre",
        "blocks.4.hook_resid_pre",
        "blocks.4.hook_resid_post",
        "blocks.28.hook_resid_post",
    ]
    cache = hooked.run_with_cache(ids, names)
    assert torch.equal(cache["blocks.0.hook_resid_pre"], hidden[0])  # the embeddings
    assert torch.equal(cache["blocks.4.hook_resid_pre"], hidden[4])
    assert torch.equal(cache["blocks.4.hook_resid_post"], hidden[5])
    assert torch.equal(cache["blocks.28.hook_resid_post"], hidden[29])


def test_parts_add_up_and_z_projects_to_attn_out(smol):
    lm, hooked = smol
    ids = _ids(lm)
    L = 3
    c = hooked.run_with_cache(
        ids,
        [
            f"blocks.{L}.{k}"
            for k in ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out", "attn.hook_z")
        ],
    )
    resid = c[f"blocks.{L}.hook_resid_pre"] + c[f"blocks.{L}.hook_attn_out"] + c[f"blocks.{L}.hook_mlp_out"]
    torch.testing.assert_close(resid, c[f"blocks.{L}.hook_resid_post"], atol=1e-4, rtol=1e-4)
    z = c[f"blocks.{L}.attn.hook_z"]
    assert z.shape[-2:] == (9, 64)  # SmolLM2-135M: 9 heads of 64
    torch.testing.assert_close(
        lm.model.model.layers[L].self_attn.o_proj(z.flatten(-2)), c[f"blocks.{L}.hook_attn_out"]
    )


def test_capture_stops_after_the_last_hooked_block(smol):
    lm, hooked = smol
    ran = []
    handle = lm.model.model.layers[3].register_forward_hook(lambda *a: ran.append(3))
    try:
        hooked.run_with_cache(_ids(lm), ["blocks.2.hook_mlp_out"])
    finally:
        handle.remove()
    assert ran == []


def test_identity_replacement_leaves_logits_and_zeroing_changes_them(smol):
    lm, hooked = smol
    ids = _ids(lm)
    clean = hooked.logits(ids)
    same = hooked.logits(
        ids, {"blocks.2.hook_resid_pre": lambda x: x.clone(), "blocks.5.attn.hook_z": lambda z: z * 1.0}
    )
    assert torch.equal(clean, same)
    zeroed = hooked.logits(ids, {"blocks.5.hook_mlp_out": torch.zeros_like})
    assert (zeroed - clean).abs().max() > 1.0


def test_gpt2_family(tiny_gpt2):
    model, hooked = tiny_gpt2
    ids = torch.randint(0, 100, (2, 10))
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
    c = hooked.run_with_cache(
        ids,
        [
            "blocks.1.hook_resid_pre",
            "blocks.1.hook_resid_post",
            "blocks.1.attn.hook_z",
            "blocks.1.hook_attn_out",
        ],
    )
    assert torch.equal(c["blocks.1.hook_resid_pre"], hidden[1])
    assert torch.equal(c["blocks.1.hook_resid_post"], hidden[2])
    assert c["blocks.1.attn.hook_z"].shape == (2, 10, 4, 16)
    torch.testing.assert_close(
        model.transformer.h[1].attn.c_proj(c["blocks.1.attn.hook_z"].flatten(-2)), c["blocks.1.hook_attn_out"]
    )


@pytest.mark.parametrize(
    "name", ["blocks.30.hook_resid_post", "blocks.0.hook_resid", "resid_post", "blocks.-1.hook_mlp_out"]
)
def test_bad_hook_names_list_the_valid_ones(smol, name):
    _, hooked = smol
    with pytest.raises(SuperpositionError, match=r"hook_name .*L in 0\.\.29 and kind one of hook_resid_pre"):
        hooked.parse(name)


@pytest.mark.parametrize("family", ["smol", "tiny_gpt2"])
def test_hook_names_mean_what_they_mean_in_transformer_lens(family, request):
    """hook_resid_mid = resid_pre + attn_out; hook_mlp_in is *before* the MLP's norm (TransformerLens's
    resid_mid) and ln2.hook_normalized after it; ln1.hook_normalized is the attention's input; the
    MLP's output projection of mlp.hook_post is hook_mlp_out."""
    fixture = request.getfixturevalue(family)
    if family == "smol":
        lm, hooked = fixture
        ids, block = _ids(lm), lm.model.model.layers[3]
        ln1, ln2, down = block.input_layernorm, block.post_attention_layernorm, block.mlp.down_proj
    else:
        model, hooked = fixture
        ids, block = torch.randint(0, 100, (2, 10)), model.transformer.h[1]
        ln1, ln2, down = block.ln_1, block.ln_2, block.mlp.c_proj
    L = 3 if family == "smol" else 1
    kinds = ("hook_resid_pre", "ln1.hook_normalized", "hook_attn_out", "hook_resid_mid", "hook_mlp_in",
             "ln2.hook_normalized", "mlp.hook_post", "hook_mlp_out", "hook_resid_post")  # fmt: skip
    c = {k: v for k, v in hooked.run_with_cache(ids, [f"blocks.{L}.{k}" for k in kinds]).items()}
    c = {k.split(".", 2)[2]: v for k, v in c.items()}
    with torch.no_grad():
        torch.testing.assert_close(c["hook_resid_mid"], c["hook_resid_pre"] + c["hook_attn_out"])
        assert torch.equal(c["hook_mlp_in"], c["hook_resid_mid"])
        torch.testing.assert_close(ln2(c["hook_mlp_in"]), c["ln2.hook_normalized"])
        torch.testing.assert_close(ln1(c["hook_resid_pre"]), c["ln1.hook_normalized"])
        torch.testing.assert_close(down(c["mlp.hook_post"]), c["hook_mlp_out"])
        torch.testing.assert_close(c["hook_resid_mid"] + c["hook_mlp_out"], c["hook_resid_post"])
    assert c["mlp.hook_post"].shape[-1] == hooked.d_in(f"blocks.{L}.mlp.hook_post") > hooked.d_model
    assert not torch.allclose(c["hook_mlp_in"], c["ln2.hook_normalized"])  # the norm is between them
