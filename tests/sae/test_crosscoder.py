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
