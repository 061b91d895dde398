"""A model with SAEs spliced in, as SAELens's HookedSAETransformer: run_with_saes,
run_with_cache_with_saes under SAELens's cache names, hooks on SAE points, several SAEs and a
transcoder at once, and generation with interventions (add, clamp, ablate; positions; sampling)."""

import pytest
import torch

import superposition as sp
from superposition.errors import SuperpositionError
from superposition.lm.hooked_sae import Intervention
from superposition.sae import SAE, SAEConfig

W = 64  # the tiny Llama's width


@pytest.fixture(scope="module")
def model(tiny_llama):
    return sp.load_model(str(tiny_llama))


def _sae(hook: str, seed: int = 0, arch: str = "topk", d_in: int = W, **kw) -> SAE:
    cfg = {"architecture": arch, "d_in": d_in, "d_sae": 96, "hook_name": hook, **kw}
    if arch in ("topk",) or kw.get("sparsity") == "topk":
        cfg["k"] = 8
    sae = SAE(SAEConfig.build(cfg), torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
            p.requires_grad_(False)
    return sae.eval()


PROMPT = "The function returns a list of"


def test_with_the_error_term_the_model_computes_what_it_computes_alone(model):
    sae = _sae("blocks.1.hook_resid_post")
    toks = model.to_tokens(PROMPT)
    clean = model(toks)
    torch.testing.assert_close(
        model.run_with_saes(toks, saes=[sae], use_error_term=True), clean, atol=1e-4, rtol=1e-4
    )
    spliced = model.run_with_saes(toks, saes=[sae])
    assert (spliced - clean).abs().max() > 1e-2  # without it, the reconstruction replaces the stream

    # the same as replacing the hook's activation by the reconstruction by hand
    def replace(x):
        return sae(x)

    by_hand = model.hooked.logits(toks, {"blocks.1.hook_resid_post": replace})
    torch.testing.assert_close(spliced, by_hand, atol=1e-5, rtol=1e-5)


def test_the_cache_holds_each_saes_points_under_saelens_names(model):
    res = _sae("blocks.1.hook_resid_post", seed=1)
    attn = _sae("blocks.0.attn.hook_z", seed=2, arch="standard")
    tc = _sae("blocks.0.ln2.hook_normalized", seed=3, arch="transcoder", sparsity="topk",
              hook_name_out="blocks.0.hook_mlp_out")  # fmt: skip
    toks = model.to_tokens(PROMPT)
    logits, cache = model.run_with_cache_with_saes(toks, saes=[res, attn, tc], use_error_term=True)
    P = toks.shape[1]
    for hook, sae in (
        ("blocks.1.hook_resid_post", res),
        ("blocks.0.attn.hook_z", attn),
        ("blocks.0.hook_mlp_out", tc),
    ):
        for point in ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons", "hook_sae_error",
                      "hook_sae_output"):  # fmt: skip
            assert f"{hook}.{point}" in cache, f"{hook}.{point}"
        z = cache[f"{hook}.hook_sae_acts_post"]
        assert z.shape == (1, P, 96)
        torch.testing.assert_close(z, sae.encode(cache[f"{hook}.hook_sae_input"]))
    # the transcoder reads the MLP's input and its error is measured against the MLP's output
    torch.testing.assert_close(
        cache["blocks.0.hook_mlp_out.hook_sae_input"], cache["blocks.0.ln2.hook_normalized"]
    )
    assert "blocks.1.hook_resid_post" not in cache  # replaced by the SAE, as in SAELens
    torch.testing.assert_close(logits, model(toks), atol=1e-4, rtol=1e-4)
    _, only = model.run_with_cache_with_saes(toks, saes=[res], names_filter=lambda n: n.endswith("acts_post"))
    assert list(only) == ["blocks.1.hook_resid_post.hook_sae_acts_post"]


def test_an_edit_of_the_latents_is_an_ablation_intervention(model):
    sae = _sae("blocks.1.hook_resid_post", seed=4)
    toks = model.to_tokens(PROMPT)
    _, cache = model.run_with_cache_with_saes(
        toks, saes=[sae], names_filter=lambda n: n.endswith("acts_post")
    )
    j = int(cache["blocks.1.hook_resid_post.hook_sae_acts_post"][0].sum(0).argmax())  # a latent that fires

    def zero_j(z, hook):
        z = z.clone()
        z[..., j] = 0
        return z

    edited = model.run_with_hooks(toks, [("blocks.1.hook_resid_post.hook_sae_acts_post", zero_j)], saes=[sae],
                                  use_error_term=True)  # fmt: skip
    ablated = model.run_with_hooks(toks, interventions=[Intervention(sae, j, "ablate")])
    torch.testing.assert_close(edited, ablated, atol=1e-4, rtol=1e-4)
    assert (ablated - model(toks)).abs().max() > 1e-3


def test_interventions_touch_only_their_positions(model):
    sae = _sae("blocks.0.hook_resid_post", seed=5)
    toks = model.to_tokens(PROMPT)
    clean = model(toks)
    steered = model.run_with_hooks(
        toks, interventions=[Intervention(sae, [3, 9], "add", [4.0, -2.0], positions=[3])]
    )
    torch.testing.assert_close(steered[0, :3], clean[0, :3])  # causal: nothing before position 3 moves
    assert (steered[0, 3:] - clean[0, 3:]).abs().max() > 1e-3
    # clamping a latent to the value it has changes nothing
    _, cache = model.run_with_cache(toks, names_filter="blocks.0.hook_resid_post")
    z = sae.encode(cache["blocks.0.hook_resid_post"])[0, 2]
    j = int(z.argmax())
    same = model.run_with_hooks(
        toks, interventions=[Intervention(sae, j, "clamp", float(z[j]), positions=[2])]
    )
    torch.testing.assert_close(same, clean, atol=1e-4, rtol=1e-4)


def test_generate_greedy_sampled_and_steered(model):
    sae = _sae("blocks.1.hook_resid_post", seed=6)
    plain = model.generate(PROMPT, max_new_tokens=6, return_type="tokens")
    assert plain.shape == (1, model.to_tokens(PROMPT).shape[1] + 6)
    zero = model.generate(PROMPT, max_new_tokens=6, return_type="tokens",
                          interventions=[Intervention(sae, [1, 2], "add", 0.0)])  # fmt: skip
    assert torch.equal(plain, zero)
    pushed = model.generate(PROMPT, max_new_tokens=6, return_type="tokens",
                            interventions=[Intervention(sae, 5, "add", 200.0)])  # fmt: skip
    assert not torch.equal(plain, pushed)
    gen = model.generate(PROMPT, max_new_tokens=6, return_type="tokens",
                         interventions=[Intervention(sae, 5, "add", 200.0, positions="generated")])  # fmt: skip
    assert (
        gen[0, : plain.shape[1] - 5].tolist() == plain[0, : plain.shape[1] - 5].tolist()
    )  # the first new token reads the prompt only
    a = model.generate(PROMPT, max_new_tokens=8, temperature=1.0, seed=3, return_type="continuation")
    b = model.generate(PROMPT, max_new_tokens=8, temperature=1.0, seed=3, return_type="continuation")
    c = [
        model.generate(PROMPT, max_new_tokens=8, temperature=1.0, seed=s, return_type="continuation")
        for s in (4, 5)
    ]
    assert a == b and any(x != a for x in c)
    text = model.generate(PROMPT, max_new_tokens=3)
    assert text.startswith(PROMPT)


def test_saes_added_stay_until_reset(model):
    sae = _sae("blocks.1.hook_resid_post", seed=7)
    toks = model.to_tokens(PROMPT)
    clean = model(toks)
    model.add_sae(sae)
    try:
        assert (model(toks) - clean).abs().max() > 1e-2 and "blocks.1.hook_resid_post" in model.saes
    finally:
        model.reset_saes()
    torch.testing.assert_close(model(toks), clean)


@pytest.mark.parametrize(
    "call,says",
    [
        (
            lambda m, s: m.run_with_saes(PROMPT, saes=[s, _sae("blocks.1.hook_resid_post", 9)]),
            "two SAEs at blocks.1.hook_resid_post",
        ),
        (
            lambda m, s: m.run_with_saes(PROMPT, saes=[_sae("blocks.1.hook_resid_post", d_in=32)]),
            "reads 32 and writes 32, but",
        ),
        (
            lambda m, s: m.run_with_saes(PROMPT, saes=[_sae("blocks.7.hook_resid_post")]),
            "not a hook point of this model",
        ),
        (lambda m, s: m.generate(PROMPT, max_new_tokens=0), "max_new_tokens: between 1"),
        (lambda m, s: m.generate("", max_new_tokens=2, prepend_bos=False), "text: empty"),
        (lambda m, s: Intervention(s, 500, "add", 1.0), "latents [500]: give latents in 0..95"),
        (lambda m, s: Intervention(s, 5, "add", float("inf")), "a finite number"),
        (lambda m, s: Intervention(s, [1, 2], "add", [1.0]), "one value, or one per latent"),
        (lambda m, s: Intervention(s, 1, "shift", 1.0), "mode 'shift'"),
    ],
)
def test_bad_calls_are_one_line(model, call, says):
    with pytest.raises(SuperpositionError, match=None) as err:
        call(model, _sae("blocks.1.hook_resid_post", 8))
    assert says in str(err.value) and "\n" not in str(err.value)
