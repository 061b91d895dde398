"""Each architecture's encode/decode/loss on hand-made weights and its defining property."""

import math

import pytest
import torch

from superposition.errors import SuperpositionError
from superposition.sae import SAEConfig, StepState, make_sae
from superposition.sae.jumprelu import _JumpReLU, _Step
from superposition.sae.topk import topk_mask


def _sae(arch, d_in=3, d_sae=4, **kw):
    return make_sae(
        SAEConfig(architecture=arch, d_in=d_in, d_sae=d_sae, **kw), torch.Generator().manual_seed(0)
    )


def _set_identity(sae):
    with torch.no_grad():
        eye = torch.eye(3, 4)  # latents 0..2 are the coordinate axes, latent 3 unused
        sae.W_dec.copy_(eye.T.unsqueeze(0))
        if isinstance(getattr(sae, "W_enc", None), torch.nn.Parameter):
            sae.W_enc.copy_(eye.unsqueeze(0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()


def test_standard_forward_and_loss_by_hand():
    sae = _sae("standard", l1_coefficient=0.5)
    _set_identity(sae)
    x = torch.tensor([[[0.5, -1.0, 2.0]]])
    z = sae.encode(x)
    assert z[0, 0].tolist() == [0.5, 0.0, 2.0, 0.0]
    assert sae(x)[0, 0].tolist() == [0.5, 0.0, 2.0]
    out = sae.loss(x, StepState())
    # mse = 1 (the negative coordinate is lost); L1 = 2.5; total = 1 + 0.5 * 2.5
    assert out.terms["mse"].item() == pytest.approx(1.0)
    assert out.total.item() == pytest.approx(2.25)
    assert sae.loss(x, StepState(sparsity_scale=0.0)).total.item() == pytest.approx(1.0)


def test_tied_standard_uses_decoder_transpose():
    sae = _sae("standard", tied=True)
    assert "W_enc" not in dict(sae.named_parameters())
    assert torch.equal(sae.encoder_weight(), sae.W_dec.transpose(1, 2))


def test_topk_keeps_k_per_example_and_batchtopk_k_per_example_on_average():
    acts = torch.tensor([[[5.0, 1.0, 3.0, 2.0]], [[0.5, 0.25, 0.125, 0.375]]])  # exact in binary
    assert topk_mask(acts, 2)[:, 0].tolist() == [[5.0, 0, 3.0, 0], [0.5, 0, 0, 0.375]]
    for arch, expected in [
        ("topk", [[5.0, 0, 3.0], [0.5, 0.25, 0]]),
        ("batchtopk", [[5.0, 1.0, 3.0], [0.5, 0, 0]]),
    ]:
        sae = _sae(arch, k=2)
        _set_identity(sae)
        x = acts[..., :3]  # identity weights: the latents are x, and x̂ the latents kept
        out = sae.loss(x, StepState())
        # topk: 2 per example; batchtopk: the 4 largest over the batch, 5, 3, 1, 0.5 (3 from example 0)
        assert out.x_hat[:, 0].tolist() == expected, arch
        assert out.l0.tolist() == [2.0]
    assert sae.threshold.tolist() == [0.5]  # the smallest kept


def test_batchtopk_inference_uses_threshold():
    sae = _sae("batchtopk", k=1)
    _set_identity(sae)
    sae.loss(torch.tensor([[[3.0, 1.0, 0.0]], [[0.0, 2.0, 0.5]]]), StepState())  # kept: 3 and 2 → smallest 2
    assert sae.threshold.tolist() == [2.0]
    sae.eval()
    assert sae.encode(torch.tensor([[[2.5, 1.5, 3.0]]]))[0, 0].tolist() == [2.5, 0.0, 3.0, 0.0]


def test_jumprelu_forward_and_pseudo_gradients():
    theta, eps = 1.0, 0.5
    pre = torch.tensor([[[0.5, 0.9, 1.1, 2.0]]], requires_grad=True)
    log_t = torch.full((1, 4), math.log(theta), requires_grad=True)
    z = _JumpReLU.apply(pre, log_t, eps)
    assert z[0, 0].tolist() == pytest.approx([0.0, 0.0, 1.1, 2.0])
    z.sum().backward()
    # ∂/∂θ = −(θ/ε) K((z−θ)/ε): K=1 for |z−θ| < ε/2 = 0.25 → entries 0.9 and 1.1; chain ×θ for log θ
    assert log_t.grad[0].tolist() == pytest.approx([0.0, -2.0, -2.0, 0.0])
    assert pre.grad[0, 0].tolist() == [0.0, 0.0, 1.0, 1.0]
    log_t.grad = None
    _Step.apply(pre, log_t, eps).sum().backward()
    assert log_t.grad[0].tolist() == pytest.approx([0.0, -2.0, -2.0, 0.0])  # −(1/ε) K(...) · θ


def test_gated_gate_and_magnitude():
    sae = _sae("gated")
    _set_identity(sae)
    with torch.no_grad():
        sae.r_mag.fill_(math.log(2.0))  # magnitude path doubles
        sae.b_mag.fill_(-0.5)
    x = torch.tensor([[[1.0, -1.0, 0.2]]])
    # gate: (1, -1, 0.2, 0) > 0 → latents 0, 2; magnitude ReLU(2·proj − 0.5) = (1.5, ·, 0, ·)
    assert sae.encode(x)[0, 0].tolist() == pytest.approx([1.5, 0.0, 0.0, 0.0])
    out = sae.loss(x, StepState())
    assert set(out.terms) == {"mse", "l1", "aux"}


def test_matryoshka_prefix_losses():
    sae = _sae("matryoshka", d_in=3, d_sae=4, k=2, prefixes=[1, 2, 4])
    _set_identity(sae)
    x = torch.tensor([[[1.0, 2.0, 0.0]]])
    out = sae.loss(x, StepState())
    # k·batch = 2 latents kept: 0 and 1. Prefix 1 reconstructs (1,0,0): err 4; prefixes 2 and 4: exact
    assert out.terms["prefix_mse"].item() == pytest.approx(4 / 3)
    assert out.terms["mse"].item() == pytest.approx(0.0)


def test_decoder_constraint_keeps_unit_norm_and_removes_parallel_gradient():
    sae = _sae("standard")
    x = torch.randn(16, 1, 3)
    sae.loss(x, StepState()).total.backward()
    sae.remove_parallel_grad()
    W = sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True)
    assert (sae.W_dec.grad * W).sum(-1).abs().max().item() < 1e-6
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.normalize_decoder()
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(1, 4))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(architecture="topk", d_in=4, d_sae=8, k=9), "k: must be at most d_sae"),
        (dict(architecture="topk", d_in=4, d_sae=8), "k: required"),
        (dict(architecture="standard", d_in=4, d_sae=0), "d_sae"),
        (dict(architecture="standard", d_in=4, d_sae=8, l1_coefficient=-1.0), "l1_coefficient: must be ≥ 0"),
        (dict(architecture="matryoshka", d_in=4, d_sae=8, k=2, prefixes=[4, 2, 8]), "prefixes"),
        (dict(architecture="nope", d_in=4, d_sae=8), "architecture"),
    ],
)
def test_bad_hyperparameters(kw, match):
    with pytest.raises(SuperpositionError, match=match):
        SAEConfig.build(kw)


def _batch_topk_definition(acts, k):
    """acts (batch, 1, d_sae) ≥ 0: keep the k·batch largest over the whole batch."""
    flat = acts.reshape(-1)
    vals, idx = flat.topk(k * acts.shape[0])
    return torch.zeros_like(flat).scatter(0, idx, vals).view_as(acts)


@pytest.mark.parametrize("path", ["dense", "sparse"])
@pytest.mark.parametrize(
    "arch, low_precision, k",
    [
        ("topk", "off", 3),
        ("topk", "on", 3),
        ("batchtopk", None, 3),
        ("topk", "off", 20),
        ("batchtopk", None, 20),
    ],
)
def test_topk_family_loss_equals_its_dense_definition(arch, low_precision, k, path):
    """With the pairs' products run either way, with every latent kept (k = d_sae), and for TopK
    also with the top k chosen from a bfloat16 product: away from near-ties it chooses the same
    latents, and everything after the choice is float32."""
    from superposition.sae.sparse import force_path

    torch.manual_seed(0)
    extra = {"low_precision": low_precision} if low_precision else {}
    n_inst = 2 if arch == "topk" else 1
    sae = _sae(arch, d_in=6, d_sae=20, k=k, n_instances=n_inst, **extra)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(17, n_inst, 6)
    dead = torch.zeros(n_inst, 20, dtype=torch.bool)
    dead[0, :7] = True
    dead[-1, 5:9] = True
    with force_path(path):
        out = sae.loss(x, StepState(dead=dead))
        out.total.backward()
    sparse_grads = {n: p.grad.clone() for n, p in sae.named_parameters()}
    # the dense definition: z = TopK(ReLU(pre)), x̂ = z W_dec + b_dec, plus AuxK on every column
    sae.zero_grad()
    pre = sae.pre_acts(x)
    if arch == "topk":
        z = topk_mask(torch.relu(pre), k)
    else:
        z = _batch_topk_definition(torch.relu(pre), k)
    x_hat = sae.decode(z)
    mse = sae.mse(x, x_hat)
    masked = torch.where(dead.unsqueeze(0), torch.relu(pre), torch.zeros_like(pre))
    z_aux = topk_mask(masked, min(sae.aux_k, int(dead.sum(-1).max())))
    e = (x - x_hat).detach()
    e_hat = torch.einsum("bis,isd->bid", z_aux, sae.W_dec)
    aux = (
        (dead.sum(-1).float() / sae.aux_k).clamp(max=1)
        * (e_hat - e).square().sum((0, 2))
        / (e - e.mean(0)).square().sum((0, 2))
    )
    ((mse + sae.cfg.aux_coefficient * aux).sum()).backward()
    assert out.terms["mse"].tolist() == pytest.approx(mse.tolist(), rel=1e-5)
    assert out.terms["auxk"].tolist() == pytest.approx(aux.tolist(), rel=1e-4)
    for n, p in sae.named_parameters():
        assert torch.allclose(sparse_grads[n], p.grad, atol=1e-5), n
    assert out.fired.tolist() == (z != 0).any(0).tolist()
    assert out.l0.tolist() == pytest.approx((z != 0).sum(-1).float().mean(0).tolist())


def test_auxk_without_its_topk_pass_equals_the_definition():
    """When no example has more than aux_k positive dead pre-activations, AuxK skips its top-k:
    the result and gradients must equal the definition with the top-k."""
    torch.manual_seed(1)
    sae = _sae("topk", d_in=6, d_sae=20, k=3, aux_k=4)
    dead = torch.zeros(1, 20, dtype=torch.bool)
    dead[0, 4:14] = True  # 10 dead latents, of which at most 3 can fire: more than aux_k = 4 are dead
    with torch.no_grad():
        sae.b_enc[0, 4:11] = -100.0
    x = torch.randn(33, 1, 6)
    x_hat = (x + 0.3 * torch.randn_like(x)).detach()
    enc = sae.encoded(x)
    with torch.no_grad():
        pairs = sae._aux_pairs(enc.pre, dead)
    assert pairs.per_row == 0  # the pass without top-k was taken
    aux = sae._auxk(enc, x, x_hat, pairs, dead)
    aux.sum().backward()
    grads = {n: p.grad.clone() for n, p in sae.named_parameters() if p.grad is not None}
    sae.zero_grad()
    pre = sae.pre_acts(x)
    z_aux = topk_mask(torch.where(dead.unsqueeze(0), torch.relu(pre), torch.zeros_like(pre)), 4)
    e = x - x_hat
    e_hat = torch.einsum("bis,isd->bid", z_aux, sae.W_dec)
    expected = (e_hat - e).square().sum((0, 2)) / (e - e.mean(0)).square().sum(
        (0, 2)
    )  # n_dead ≥ aux_k: scale 1
    expected.sum().backward()
    assert aux.tolist() == pytest.approx(expected.tolist(), rel=1e-5) and aux.item() > 0
    for n, g in grads.items():
        assert torch.allclose(g, sae.get_parameter(n).grad, atol=1e-6), n
