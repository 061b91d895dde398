"""Model diffing with crosscoders, by known answers: the two relative-norm definitions at norm
ratios 0.1 and 0.5; closed-form latent scaling recovers a planted 0.3; an L1 crosscoder on a planted
40 shared / 5 a-only / 5 b-only set gives that histogram, and with one shared feature scaled ×0.1 in
model b labels it a-only, which latent scaling flags (ν ≈ 0.1) and no true a-only latent."""

import pytest
import torch

from superposition.interp.diffing import bands, flag_mislabelled, latent_scaling, relative_norm
from superposition.sae.crosscoder import Crosscoder, train_crosscoder


def test_the_two_relative_norm_definitions_at_known_ratios():
    norms = torch.tensor([[1.0, 0.1], [1.0, 0.5], [2.0, 2.0], [1.0, 0.0], [0.0, 3.0]])
    torch.testing.assert_close(
        relative_norm(norms, "lindsey"), torch.tensor([0.1 / 1.1, 0.5 / 1.5, 0.5, 0.0, 1.0])
    )
    torch.testing.assert_close(relative_norm(norms, "minder"), torch.tensor([0.05, 0.25, 0.5, 0.0, 1.0]))
    m = bands(relative_norm(norms))
    assert m["a_only"].tolist() == [True, False, False, True, False]
    assert m["shared"].tolist() == [False, False, True, False, False] and m["b_only"].tolist()[-1]


def test_latent_scaling_recovers_a_planted_scale():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(1, 16, generator=g)
    f = torch.rand(5000, 1, generator=g) * (torch.rand(5000, 1, generator=g) < 0.2)
    y = 0.3 * f * d + 0.05 * torch.randn(5000, 16, generator=g)
    assert float(latent_scaling(d, f, y)) == pytest.approx(0.3, abs=0.01)
    assert float(latent_scaling(2 * d, f, y)) == pytest.approx(0.15, abs=0.005)  # in units of ‖d‖


def _planted(seed, weak=None, d=64, p=0.05):
    """Both models read the same 50 directions; 40 features in both, 5 only in a, 5 only in b;
    `weak`: one shared feature's scale in b."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(50, d, generator=g)
    u /= u.norm(dim=-1, keepdim=True)
    sa, sb = torch.ones(50), torch.ones(50)
    sb[40:45], sa[45:] = 0, 0
    if weak is not None:
        sb[0] = weak

    def sample(b):
        f = (torch.rand(b, 50, generator=g) < p) * (0.5 + torch.rand(b, 50, generator=g))
        return torch.stack([(f * sa) @ u, (f * sb) @ u], 1)

    return sample, u


def _train(sample, seed):
    cc = Crosscoder(2, 64, 50, "l1", l1_coefficient=0.1, generator=torch.Generator().manual_seed(seed))
    train_crosscoder(cc, sample, 3000, lr=3e-3, batch=1024)
    x = sample(20000)
    with torch.no_grad():
        z = cc.encode(x)
        return cc, x, z, cc.decode(z)


def _counts(cc, z):
    alive = (z > 0).float().mean(0) > 1e-3
    return {k: int((v & alive).sum()) for k, v in bands(relative_norm(cc.decoder_norms().detach())).items()}


def test_an_l1_crosscoder_gives_the_planted_histogram():
    sample, _ = _planted(1)
    cc, x, z, _ = _train(sample, 1)
    assert _counts(cc, z) == {"a_only": 5, "b_only": 5, "shared": 40}


def test_a_feature_weaker_in_one_model_is_mislabelled_by_norms_and_flagged_by_scaling():
    sample, u = _planted(0, weak=0.1)
    cc, x, z, x_hat = _train(sample, 0)
    assert _counts(cc, z) == {"a_only": 6, "b_only": 5, "shared": 39}
    W = cc.W_dec.detach()
    cat = torch.cat([W[:, 0], W[:, 1]], -1)
    weak = int((cat / cat.norm(dim=-1, keepdim=True) @ torch.cat([u[0], 0.1 * u[0]])).argmax())
    out = flag_mislabelled(W, z, x, x_hat)
    assert bool(out["a_only"][weak])  # the norms call it a-only
    assert out["flagged"].nonzero().flatten().tolist() == [weak]  # latent scaling flags it, only it
    assert float(out["nu"][weak]) == pytest.approx(0.1, abs=0.03)


def test_batchtopk_keeps_k_latents_per_token_on_average():
    sample, _ = _planted(2)
    cc = Crosscoder(2, 64, 50, "batchtopk", k=3, generator=torch.Generator().manual_seed(0))
    log = train_crosscoder(cc, sample, 300, lr=3e-3, batch=512)
    assert log[-1]["l0"] == pytest.approx(3.0) and log[-1]["mse"] < log[0]["mse"] / 2
    with torch.no_grad():
        z = cc.encode(sample(4096))  # inference: the learned threshold instead of the batch choice
    assert 1.5 < float((z > 0).float().sum(-1).mean()) < 4.5
