"""The activation store (order, cache) and the spliced-SAE evaluation on SmolLM2."""

import pytest
import torch

from superposition.errors import SuperpositionError
from superposition.lm.data import special_mask
from superposition.lm.evals import ce_loss_recovered, evaluate_sae
from superposition.lm.store import ActivationStore
from superposition.sae import SAEConfig, make_sae

HOOK = "blocks.1.hook_resid_post"


def _store(smol, **kw):
    lm, hooked = smol
    args = dict(
        dataset_path="python-docs",
        context_size=32,
        prepend_bos=True,
        buffer_sequences=6,
        model_batch_size=6,
        seed=3,
    )
    return ActivationStore(lm, hooked, kw.pop("hook", HOOK), **{**args, **kw})


def test_store_serves_the_hook_activations_of_non_special_tokens(smol):
    lm, hooked = smol
    store = _store(smol)
    seqs = store.sequences(0, 6)
    assert seqs.shape == (6, 32) and bool((seqs[:, 0] == lm.tokenizer.bos_token_id).all())
    acts = hooked.run_with_cache(seqs, [HOOK])[HOOK]
    expected = acts[~special_mask(lm.tokenizer, seqs)]
    x = store.sample(expected.shape[0])  # exactly the first buffer, shuffled
    assert x.shape == expected.shape

    def key(t):
        return t[torch.argsort(t[:, 0])]

    torch.testing.assert_close(key(x), key(expected))
    assert not torch.equal(x, expected)


def test_store_position_resumes_exactly(smol):
    a, b = _store(smol), _store(smol)
    a.sample(100), a.sample(150)
    state = a.state_dict()
    nxt = a.sample(300)
    b.load_state_dict(state)
    assert torch.equal(b.sample(300), nxt)


def test_cache_is_reused_and_refused_for_another_hook(smol, tmp_path):
    first = _store(smol, cache=tmp_path / "cache")
    x = first.sample(400)
    assert first.model_tokens > 0 and (tmp_path / "cache" / "state.json").is_file()
    first.close()
    again = _store(smol, cache=tmp_path / "cache")
    assert torch.equal(again.sample(400), x) and again.model_tokens == 0
    again.close()
    with pytest.raises(
        SuperpositionError,
        match=r"made with hook_name=\['blocks.1.hook_resid_post'\], this run has \['blocks.2.hook_mlp_out'\]",
    ):
        _store(smol, cache=tmp_path / "cache", hook="blocks.2.hook_mlp_out")


def test_context_longer_than_the_model_allows(smol):
    with pytest.raises(
        SuperpositionError, match=r"context_size: 9000 is longer than the model allows \(8192\)"
    ):
        _store(smol, context_size=9000)


def _fixed_sae(d: int, W_enc, W_dec) -> object:
    sae = make_sae(SAEConfig(architecture="standard", d_in=d, d_sae=W_enc.shape[1]))
    with torch.no_grad():
        sae.W_enc.copy_(W_enc[None]), sae.W_dec.copy_(W_dec[None])
        sae.b_enc.zero_(), sae.b_dec.zero_()
    sae.unit_norm_decoder = False
    return sae.eval()


def test_ce_loss_recovered_is_one_for_perfect_and_zero_for_zero_ablation(smol):
    lm, hooked = smol
    seqs = _store(smol).sequences(0, 4)
    d = 576
    eye = torch.eye(d)
    identity = _fixed_sae(d, torch.cat([eye, -eye], 1), torch.cat([eye, -eye], 0))  # relu(x) − relu(−x) = x
    m = evaluate_sae(hooked, lm.tokenizer, identity, HOOK, seqs, batch_size=4)
    assert m["ce_loss_with_sae"] == pytest.approx(m["ce_loss_clean"], abs=1e-5)
    assert m["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-4) and m["kl_div"] == pytest.approx(
        0.0, abs=1e-5
    )
    assert m["explained_variance"] == pytest.approx(1.0, abs=1e-6) and m["l0"] == pytest.approx(d, rel=0.02)
    assert 2.0 < m["ce_loss_clean"] < 6.0 and m["ce_loss_zero_ablation"] > m["ce_loss_clean"] + 1
    zero = _fixed_sae(d, torch.cat([eye, -eye], 1), torch.zeros(2 * d, d))
    z = evaluate_sae(hooked, lm.tokenizer, zero, HOOK, seqs, batch_size=4)
    assert z["ce_loss_with_sae"] == pytest.approx(z["ce_loss_zero_ablation"], abs=1e-5)
    assert z["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-4)
    assert z["ce_loss_clean"] == pytest.approx(m["ce_loss_clean"])


def test_ce_loss_recovered_formula():
    assert ce_loss_recovered(clean=2.0, with_sae=3.0, zero=6.0) == pytest.approx(0.75)


def test_held_out_sequences_never_repeat_and_never_train(smol, tmp_path):
    lm, _ = smol
    (tmp_path / "small.txt").write_text(
        "\n\n".join(f"Paragraph number {i} says something different about item {i}." for i in range(300))
    )
    held = _store(smol, dataset_path=str(tmp_path / "small.txt"), holdout=True).first_sequences(10_000)
    train = _store(smol, dataset_path=str(tmp_path / "small.txt")).sequences(0, 200)  # cycles past the end
    rows = {tuple(r) for r in held.tolist()}
    assert len(rows) == held.shape[0] > 0 and not rows & {tuple(r) for r in train.tolist()}
    n_all = len(list(_store(smol, dataset_path=str(tmp_path / "small.txt"))._fresh_sequences()))
    assert held.shape[0] == (n_all + held.shape[0]) // 20


def test_several_hooks_in_one_pass_equal_each_hook_alone(smol):
    """evaluate_saes shares one clean forward pass per batch between hooks (1 + 2n passes instead of
    3n): every metric equals the one-hook evaluation's, and the depth statistics taken from its
    latents equal depth_characteristics' own forward pass."""
    from superposition.lm.analysis import depth_characteristics
    from superposition.lm.evals import evaluate_saes

    lm, hooked = smol
    seqs = _store(smol).sequences(0, 5)
    hooks = ["blocks.0.hook_resid_post", "blocks.2.hook_mlp_out"]
    saes = {
        h: make_sae(
            SAEConfig(architecture="topk", d_in=576, d_sae=256, k=8), torch.Generator().manual_seed(i)
        )
        for i, h in enumerate(hooks)
    }
    together = evaluate_saes(hooked, lm.tokenizer, saes, seqs, batch_size=2, depth=True)
    for h, sae in saes.items():
        alone = evaluate_sae(hooked, lm.tokenizer, sae, h, seqs, batch_size=2)
        alone.update(depth_characteristics(hooked, lm.tokenizer, sae, h, seqs, batch_size=2))
        assert set(alone) == set(together[h])
        for key, value in alone.items():
            if key == "density":
                assert together[h][key] == pytest.approx(value, abs=1e-7)
            else:
                assert together[h][key] == pytest.approx(value, rel=1e-5, abs=1e-7), (h, key)
    assert together[hooks[0]]["ce_loss_clean"] == together[hooks[1]]["ce_loss_clean"]
    assert together[hooks[0]]["kl_div"] != together[hooks[1]]["kl_div"]  # each hook its own splice
