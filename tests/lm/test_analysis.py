"""Analysis methods on cases with a known answer."""

import numpy as np
import pytest
import torch

from superposition.lm import analysis as an
from superposition.lm.data import special_mask
from superposition.sae import SAEConfig, make_sae
from superposition.sae.ground_truth import best_matches


def _standard(d_in, d_sae, seed=0, W_dec=None):
    sae = make_sae(
        SAEConfig(architecture="standard", d_in=d_in, d_sae=d_sae), torch.Generator().manual_seed(seed)
    )
    with torch.no_grad():
        if W_dec is not None:
            sae.W_dec.copy_(W_dec[None])
        sae.b_enc.fill_(-0.05)
    return sae.eval()


def _seqs(lm, n=3, ctx=24):
    text = (
        "The library reads the file, parses every line, and returns a list of records. "
        "Errors are raised when the input is malformed or the path does not exist. "
    ) * 4
    ids = lm.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]
    rows = [
        torch.cat([torch.tensor([lm.tokenizer.bos_token_id]), ids[i * ctx : (i + 1) * ctx - 1]])
        for i in range(n)
    ]
    return torch.stack(rows)


def test_logit_lens_of_a_direction_built_from_one_tokens_unembedding():
    """With unit-norm unembedding rows, W_U[t] · W_U[s] < 1 = W_U[t] · W_U[t] for s ≠ t, so a latent
    whose decoder row (through the final norm's gain g) is W_U[t] has t on top, and −W_U[t] at
    the bottom. (Real models need not satisfy the premise: in SmolLM2 a few high-norm special
    tokens top most directions, so the raw logit lens of W_U[t] ranks t first for only ~10% of t.)"""
    from transformers import GPT2Config, GPT2LMHeadModel

    from superposition.lm.hooks import HookedModel

    torch.manual_seed(1)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=16, vocab_size=300)).eval()
    with torch.no_grad():
        W = torch.randn(300, 32)
        model.transformer.wte.weight.copy_(W / W.norm(dim=1, keepdim=True))  # tied: also W_U
        model.transformer.ln_f.weight.uniform_(0.5, 2.0)
    hooked = HookedModel(model)
    W_U, g = an.unembedding(model).detach(), an.final_norm_gain(hooked).detach()
    tokens = [3, 77, 150, 299]
    W_dec = torch.randn(8, 32) * 0.01
    for n, t in enumerate(tokens):
        W_dec[n], W_dec[4 + n] = W_U[t] / g, -W_U[t] / g
    sae = _standard(32, 8, W_dec=W_dec)
    top, top_v, bottom, bottom_v = an.logit_lens(hooked, sae, "blocks.1.hook_resid_post", k=3)
    assert top[:4, 0].tolist() == tokens and bottom[4:, 0].tolist() == tokens
    torch.testing.assert_close(top_v[:4, 0], torch.ones(4)) and torch.testing.assert_close(
        bottom_v[4:, 0], -torch.ones(4)
    )
    unfolded = an.logit_lens(hooked, sae, "blocks.1.hook_resid_post", k=300, fold_final_norm=False)
    expected = (W_U[tokens[0]] / g) @ W_U[tokens[0]]  # without the gain: Σ_i W_U[t, i]² / g_i
    torch.testing.assert_close(unfolded[1][0][unfolded[0][0] == tokens[0]][0], expected)


def test_latent_activations_match_dense_encoding(smol):
    lm, hooked = smol
    seqs = _seqs(lm)
    sae = _standard(576, 64, seed=1)
    la = an.latent_activations(hooked, lm.tokenizer, sae, "blocks.2.hook_mlp_out", seqs, batch_size=2)
    x = hooked.run_with_cache(seqs, ["blocks.2.hook_mlp_out"])["blocks.2.hook_mlp_out"]
    z = sae.encode(x.reshape(-1, 1, 576))[:, 0].detach()
    z[special_mask(lm.tokenizer, seqs).reshape(-1)] = 0
    assert la.n_tokens == seqs.numel() - 3
    np.testing.assert_allclose(
        la.density(), (z > 0).float().mean(0).numpy() * seqs.numel() / la.n_tokens, rtol=1e-6
    )
    j = int((z > 0).sum(0).argmax())
    ex = an.top_examples(la, j, n=3, before=4, after=2)
    best = z[:, j].topk(3)
    assert [e.seq * seqs.shape[1] + e.pos for e in ex] == best.indices.tolist()
    assert ex[0].value == pytest.approx(float(best.values[0])) and ex[0].acts[ex[0].focus] == pytest.approx(
        ex[0].value
    )
    e = ex[0]  # the window's per-token activations are latent j's on those tokens
    flat = e.seq * seqs.shape[1] + e.pos - e.focus
    np.testing.assert_allclose(e.acts, z[flat : flat + len(e.acts), j].numpy(), rtol=1e-5)
    assert e.token_ids == seqs[e.seq, e.pos - e.focus : e.pos - e.focus + len(e.acts)].tolist()
    counts, edges = an.activation_histogram(la, j)
    assert counts.sum() == int((z[:, j] > 0).sum()) and edges[-1] == pytest.approx(float(best.values[0]))
    bins = an.quantile_examples(la, j, n_bins=3, per_bin=2)
    assert all(len(exs) <= 2 for _, exs in bins) and bins[0][1][0].value > bins[-1][1][0].value


def test_attribution_patching_is_the_derivative_of_scaling_a_latent(smol):
    lm, hooked = smol
    ids = _seqs(lm, n=1)
    sae = _standard(576, 32, seed=2)
    hook, target = "blocks.3.hook_resid_post", 1000

    def metric(lg):
        return lg[0, -1, target]

    attr = an.attribution_patching(hooked, sae, hook, ids, metric)
    j = int(attr[0, -1].abs().argmax())
    eps = 1e-2  # float32 logits: smaller steps drown in rounding

    def scale(s):
        def edit(z):
            z = z.clone()
            z[0, -1, j] = z[0, -1, j] * s
            return z

        with torch.no_grad():
            return float(metric(an.spliced_logits(hooked, sae, hook, ids, edit)[0]))

    numeric = (scale(1 + eps) - scale(1 - eps)) / (2 * eps)  # d metric / d s = z_j ∂metric/∂z_j
    assert float(attr[0, -1, j]) == pytest.approx(numeric, rel=2e-2, abs=1e-4)
    assert abs(float(attr[0, -1, j])) > 1e-4


def test_ablation_of_a_silent_latent_changes_nothing(smol):
    lm, hooked = smol
    ids = _seqs(lm, n=1)
    sae = _standard(576, 32, seed=3)
    with torch.no_grad():
        sae.b_enc[0, 5] = -1e6  # never fires
    hook = "blocks.3.hook_resid_post"
    assert float(an.ablation_effect(hooked, sae, hook, ids, 5).abs().max()) == 0.0
    _, z = an.spliced_logits(hooked, sae, hook, ids)
    active = int((z[0] > 0).sum(0).argmax())
    assert float(an.ablation_effect(hooked, sae, hook, ids, active).abs().max()) > 1e-4


def test_latent_to_latent_gradients_through_an_identity_path(smol):
    lm, hooked = smol
    ids = _seqs(lm, n=1, ctx=12)
    up, down = _standard(576, 16, seed=4), _standard(576, 8, seed=5)
    # resid_post of block 1 is resid_pre of block 2: z_down = ReLU(W_encᵀ(x − b_dec) + b), x = x̂_up + error
    G = an.latent_gradients(
        hooked, up, "blocks.1.hook_resid_post", down, "blocks.2.hook_resid_pre", ids, [0, 3]
    )
    x = hooked.run_with_cache(ids, ["blocks.2.hook_resid_pre"])["blocks.2.hook_resid_pre"]
    z_down = down.encode(x.reshape(-1, 1, 576))[:, 0].detach()
    for row, j in zip(G, [0, 3]):
        expected = (z_down[:, j] > 0).sum() * (up.W_dec[0] @ down.W_enc[0][:, j]).detach()
        torch.testing.assert_close(row, expected, rtol=1e-4, atol=1e-5)


def test_per_head_attribution_and_source_tokens_for_an_attention_sae(smol, tiny_gpt2):
    lm, hooked = smol
    ids = _seqs(lm, n=1, ctx=10)
    hook = "blocks.4.attn.hook_z"
    sae = _standard(576, 24, seed=6)
    _, z = an.spliced_logits(hooked, sae, hook, ids)
    z = z.detach()[0, -1]
    total = an.direct_logit_attribution(hooked, sae, hook, z, 42)
    per_head = an.direct_attribution_per_head(hooked, sae, hook, z, 42)
    assert per_head.shape == (24, 9)
    torch.testing.assert_close(per_head.sum(-1), total, rtol=1e-4, atol=1e-5)
    # source tokens: z = Σ_k A[h,q,k] v[h,k], so the contributions add up to the pre-activation
    for h, name, seq in (
        (hooked, hook, ids),
        (tiny_gpt2[1], "blocks.1.attn.hook_z", torch.randint(0, 100, (1, 9))),
    ):
        s = _standard(h.n_heads * h.d_head, 6, seed=7)
        xs = h.run_with_cache(seq, [name])[name].flatten(-2)[0]
        pre = ((xs - s.b_dec[0]) @ s.W_enc[0] + s.b_enc[0]).detach()
        contrib, const = an.source_token_contributions(h, s, name, seq, latent=2, pos=6)
        assert contrib.shape == (h.n_heads, 7)
        torch.testing.assert_close(contrib.sum() + const, pre[6, 2], rtol=1e-4, atol=1e-4)


def test_best_matches_by_hand():
    F = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    W = torch.tensor([[0.6, 0.8], [-1.0, 0.0], [0.8, -0.6]])
    feat, cos = best_matches(W, F)
    assert feat.tolist() == [1, 0, 0] and cos.tolist() == pytest.approx([0.8, 1.0, 0.8])
