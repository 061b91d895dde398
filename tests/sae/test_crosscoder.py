"""The crosscoder's batchtopk training loss on the active pairs equals its dense form, value and
gradients, on both of sparse.py's product paths; files read back exactly."""

import pytest
import torch

from superposition.errors import SuperpositionError
from superposition.sae.crosscoder import Crosscoder
from superposition.sae.sparse import force_path


@pytest.mark.parametrize("path", ["sparse", "dense"])
def test_active_pair_loss_equals_the_dense_loss(path):
    g = torch.Generator().manual_seed(0)
    cc = Crosscoder(3, 24, 96, "batchtopk", k=5, generator=g)
    with torch.no_grad():
        cc.b_enc.normal_(0, 0.1, generator=g)
        cc.b_dec.normal_(0, 0.5, generator=g)
    x = torch.randn(40, 3, 24, generator=g)
    cc.train()
    with force_path(path):
        loss, terms = cc.loss(x)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in cc.named_parameters()}
    cc.zero_grad()
    ref, ref_terms = cc.loss_dense(x)
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)
    assert float(terms["l0"]) == pytest.approx(float(ref_terms["l0"])) and float(terms["l0"]) <= 5
    for n, p in cc.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-5, msg=n)


def test_save_and_load_are_exact_and_a_wrong_shape_is_one_line(tmp_path):
    from safetensors.torch import load_file, save_file

    cc = Crosscoder(2, 8, 16, "l1", l1_coefficient=0.3, generator=torch.Generator().manual_seed(1))
    cc.save(tmp_path / "cc", {"sources": ["a", "b"]})
    back = Crosscoder.load(tmp_path / "cc")
    for n in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(back, n), getattr(cc, n))
    assert back.sparsity == "l1" and back.l1_coefficient == 0.3 and back.metadata["sources"] == ["a", "b"]
    t = load_file(str(tmp_path / "cc" / "crosscoder.safetensors"))
    t["W_dec"] = t["W_dec"][:, :1].contiguous()
    save_file(t, str(tmp_path / "cc" / "crosscoder.safetensors"))
    with pytest.raises(SuperpositionError, match=r"W_dec is \[16, 1, 8\], expected \[16, 2, 8\]"):
        Crosscoder.load(tmp_path / "cc")


def test_folding_the_scales_keeps_the_latents_and_reconstructions_of_raw_activations():
    """Trained on scaled sources, saved for raw ones (`finish` folds the scales in): the same latents,
    so the batchtopk ranking (decoder norms) is the saved decoder's all along."""
    cc = Crosscoder(2, 8, 16, "batchtopk", k=3, generator=torch.Generator().manual_seed(2)).eval()
    cc.threshold.fill_(0.02)
    scales = torch.tensor([0.5, 4.0])
    cc.input_scale.copy_(scales)
    raw = torch.randn(10, 2, 8)
    z, x_hat = cc.encode(raw * scales.view(1, -1, 1)), cc(raw * scales.view(1, -1, 1))
    assert 0 < int((z > 0).sum()) < z.numel()
    cc.finish()
    assert torch.equal(cc.input_scale, torch.ones(2))
    torch.testing.assert_close(cc.encode(raw), z)
    torch.testing.assert_close(cc(raw), x_hat / scales.view(1, -1, 1))


def _two_latents(rank="decoder_norms"):
    """A crosscoder of 2 sources, d 2, 2 latents: latent 0 reads x[0, 0] and has decoder norms
    0.5 + 0.5 = 1; latent 1 reads x[1, 1] with norms 1 + 2 = 3."""
    cc = Crosscoder(2, 2, 2, "batchtopk", k=1, rank=rank)
    with torch.no_grad():
        cc.W_enc.zero_()
        cc.W_enc[0, 0, 0] = 1.0
        cc.W_enc[1, 1, 1] = 1.0
        cc.W_dec.zero_()
        cc.W_dec[0, 0, 0], cc.W_dec[0, 1, 0] = 0.5, 0.5
        cc.W_dec[1, 0, 1], cc.W_dec[1, 1, 1] = 1.0, 2.0
        cc.b_dec.zero_()
    return cc


def test_batchtopk_ranks_activations_times_decoder_norms_as_dictionary_learning():
    x = torch.tensor([[[1.0, 0.0], [0.0, 0.8]]])  # latent 0 at 1.0 (ranked 1.0), latent 1 at 0.8 (2.4)
    cc = _two_latents().train()
    assert torch.equal(cc.encode(x), torch.tensor([[0.0, 0.8]]))  # kept unscaled
    assert float(cc.threshold) == pytest.approx(2.4)  # the smallest kept ranked value
    old = _two_latents("activation").train()
    assert torch.equal(old.encode(x), torch.tensor([[1.0, 0.0]]))
    # inference: z = ReLU(pre) where ReLU(pre)·Σ‖W_dec‖ > threshold
    cc.eval()
    cc.threshold.fill_(1.5)
    assert torch.equal(cc.encode(x), torch.tensor([[0.0, 0.8]]))  # 1.0 < 1.5 < 2.4
    cc.threshold.fill_(0.9)
    assert torch.equal(cc.encode(x), torch.tensor([[1.0, 0.8]]))
    # one source alone as a JumpReLU SAE: the threshold per latent is threshold / Σ‖W_dec‖
    sae = cc.source_as_sae(1)
    torch.testing.assert_close(sae.saved_tensors(0)["threshold"], torch.tensor([0.9, 0.3]))


def test_files_from_before_the_rule_load_ranking_raw_activations(tmp_path):
    import json

    cc = _two_latents()
    cc.save(tmp_path / "cc")
    assert Crosscoder.load(tmp_path / "cc").rank == "decoder_norms"
    cfg = json.loads((tmp_path / "cc" / "cfg.json").read_text())
    del cfg["batchtopk_rank"]
    (tmp_path / "cc" / "cfg.json").write_text(json.dumps(cfg))
    old = Crosscoder.load(tmp_path / "cc")
    assert old.rank == "activation"
    with pytest.raises(SuperpositionError, match="ranks raw activations"):
        old.to_dictionary_learning()


def test_the_dictionary_learning_state_dict_swaps_the_decoders_axes():
    cc = _two_latents()
    cc.threshold.fill_(0.7)
    sd, cfg = cc.to_dictionary_learning()
    assert cfg["trainer"]["dict_class"] == "BatchTopKCrossCoder" and int(sd["k"]) == 1
    assert sd["decoder.weight"].shape == (2, 2, 2) and torch.equal(sd["decoder.weight"][1, 0], cc.W_dec[0, 1])
    assert torch.equal(sd["encoder.weight"], cc.W_enc.detach()) and float(sd["threshold"]) == pytest.approx(
        0.7
    )
    assert int(sd["code_normalization_id"]) == 1 and bool(sd["activation_mean"].isnan().all())
    l1 = Crosscoder(2, 4, 8, "l1")
    sd, cfg = l1.to_dictionary_learning()
    assert cfg["trainer"]["dict_class"] == "CrossCoder" and "k" not in sd and "threshold" not in sd


def test_auxk_gives_dead_latents_gradient_and_equals_its_dense_form():
    g = torch.Generator().manual_seed(3)
    cc = Crosscoder(2, 12, 48, "batchtopk", k=3, generator=g, dead_tokens=50, aux_k=6).train()
    with torch.no_grad():
        cc.b_enc.normal_(0, 0.2, generator=g)
    x = torch.randn(20, 2, 12, generator=g)
    cc.since_fired[:24] = 100  # latents 0..23 have not fired for 100 tokens
    loss, terms = cc.loss(x)
    loss.backward()
    got = {n: p.grad.clone() for n, p in cc.named_parameters()}
    cc.zero_grad()
    # the same loss written densely
    pre = cc.pre_acts(x)
    z = cc._batch_topk(pre)
    x_hat = cc.decode(z)
    mse = (x_hat - x).square().sum((1, 2)).mean()
    fired = (z > 0).any(0)
    dead = torch.zeros(48, dtype=torch.bool)
    dead[:24] = True
    dead &= ~fired
    sub = torch.relu(pre.detach())[:, dead]
    vals, idx = sub.topk(6, dim=-1)
    keep = torch.zeros_like(sub).scatter_(1, idx, 1.0) * (sub > 0)
    z_aux = torch.zeros_like(pre)
    z_aux[:, dead] = torch.relu(pre[:, dead]) * keep
    e = (x - x_hat).detach()
    e_hat = torch.einsum("bf,fsd->bsd", z_aux, cc.W_dec)
    aux = min(1.0, int(dead.sum()) / 6) * (e_hat - e).square().sum() / 20
    ref = mse + aux / 32
    ref.backward()
    assert int(terms["dead"]) == int(dead.sum()) > 6 and float(terms["auxk"]) > 0
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)
    for n, p in cc.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-5, msg=n)
    assert got["W_enc"][:, :, dead].abs().sum() > 0  # the dead latents' encoder columns move
