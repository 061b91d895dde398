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
    cc = Crosscoder(2, 8, 16, "batchtopk", k=3, generator=torch.Generator().manual_seed(2)).eval()
    cc.threshold.fill_(0.01)
    scales = torch.tensor([0.5, 4.0])
    raw = torch.randn(10, 2, 8)
    z, x_hat = cc.encode(raw * scales.view(1, -1, 1)), cc(raw * scales.view(1, -1, 1))
    cc.fold_scales(scales)
    torch.testing.assert_close(cc.encode(raw), z)
    torch.testing.assert_close(cc(raw), x_hat / scales.view(1, -1, 1))


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
