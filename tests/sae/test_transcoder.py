"""Transcoders: known answers (a skip path that is the map, a copy of a ReLU MLP), normalisation
of input and target each on its own and folded back, and training that learns a map."""

import pytest
import torch

from superposition.sae import SAEConfig, StepState, make_sae
from superposition.sae.metrics import Accumulator
from superposition.sae.train import SAETrainConfig, SAETrainer


def _fvu(y: torch.Tensor, y_hat: torch.Tensor) -> float:
    acc = Accumulator()
    acc.add(y.unsqueeze(1), y_hat.unsqueeze(1), torch.zeros(y.shape[0], 1, 1))
    return 1 - acc.result()["explained_variance"].item()


def test_skip_transcoder_with_the_map_as_skip_has_fvu_zero():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(5, 7, generator=g)
    sae = make_sae(SAEConfig(architecture="skip_transcoder", d_in=7, d_out=5, d_sae=12, k=2))
    with torch.no_grad():
        sae.W_skip.copy_(A.unsqueeze(0))
        sae.W_dec.zero_()
        sae.b_dec.zero_()
    x = torch.randn(200, 7, generator=g)
    y_hat = sae(x.unsqueeze(1))[:, 0]
    assert _fvu(x @ A.T, y_hat) == pytest.approx(0.0, abs=1e-6)
    # and the loss on rows [x | y] is zero
    out = sae.loss(torch.cat([x, x @ A.T], -1).unsqueeze(1), StepState())
    assert out.terms["mse"].item() == pytest.approx(0.0, abs=1e-8)


def test_a_standard_transcoder_copies_a_relu_mlp_exactly():
    """A ReLU MLP y = ReLU(x W_in + b_in) W_out + b_out is a transcoder with those weights."""
    g = torch.Generator().manual_seed(1)
    W_in, b_in = torch.randn(6, 20, generator=g), torch.randn(20, generator=g)
    W_out, b_out = torch.randn(20, 6, generator=g), torch.randn(6, generator=g)
    sae = make_sae(SAEConfig(architecture="transcoder", sparsity="standard", d_in=6, d_sae=20))
    sae.load_saved({"W_enc": W_in, "b_enc": b_in, "W_dec": W_out, "b_dec": b_out})
    x = torch.randn(100, 6, generator=g)
    y = torch.relu(x @ W_in + b_in) @ W_out + b_out
    torch.testing.assert_close(sae(x.unsqueeze(1))[:, 0], y)


def test_input_is_not_centred_and_decoder_norms_are_free_except_under_l1():
    x = torch.randn(4, 1, 6)
    tc = make_sae(SAEConfig(architecture="transcoder", d_in=6, d_sae=8, k=2))
    with torch.no_grad():
        tc.b_dec.fill_(3.0)
    assert torch.equal(tc.encoder_input(x), x)  # no − b_dec, whatever apply_b_dec_to_input says
    assert not tc.unit_norm_decoder
    assert make_sae(
        SAEConfig(architecture="transcoder", sparsity="standard", d_in=6, d_sae=8)
    ).unit_norm_decoder


def test_normalisation_of_input_and_target_is_folded_back():
    """Trained on x·10 → y/10 with each normalised on its own, the saved weights take raw x and
    give raw y: the folded transcoder on x equals the unfolded one on the scaled rows."""
    g = torch.Generator().manual_seed(2)
    A = torch.randn(4, 6, generator=g)

    class Rows:
        def sample(self, n, gen=None, out=None):
            x = 10 * torch.randn(n, 6, generator=gen)
            return torch.cat([x, torch.relu(x @ A.T) / 10], -1)

    sae = make_sae(
        SAEConfig(architecture="skip_transcoder", sparsity="jumprelu", d_in=6, d_out=4, d_sae=16),
        torch.Generator().manual_seed(0),
    )
    trainer = SAETrainer(sae, Rows(), SAETrainConfig(steps=30, batch_size=128, normalize_activations=True))
    trainer.train(progress=False)
    s, t = trainer.scale.clone(), trainer.out_scale.clone()
    assert s.item() == pytest.approx(0.1, rel=0.1) and t.item() != pytest.approx(s.item(), rel=0.5)
    x = Rows().sample(64, torch.Generator().manual_seed(9))[:, :6].unsqueeze(1)
    with torch.no_grad():
        want = sae(x * s) / t
        trainer.fold_normalization()
        got = sae(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sparsity", ["topk", "batchtopk", "jumprelu", "standard"])
def test_training_learns_a_sparse_map(sparsity):
    """y = ReLU(x W) V with 12 hidden units, of which few are active per input: a 48-latent
    transcoder of any sparsity explains most of y's variance."""
    g = torch.Generator().manual_seed(3)
    W, V = torch.randn(8, 12, generator=g) - 0.6, torch.randn(12, 8, generator=g)

    class Rows:
        def sample(self, n, gen=None, out=None):
            x = torch.randn(n, 8, generator=gen)
            return torch.cat([x, torch.relu(x @ W) @ V], -1)

    extra = {"l1_coefficient": 0.01} if sparsity == "standard" else {"l0_coefficient": 1e-3}
    sae = make_sae(
        SAEConfig(architecture="transcoder", sparsity=sparsity, d_in=8, d_sae=48, k=6, **extra),
        torch.Generator().manual_seed(0),
    )
    SAETrainer(sae, Rows(), SAETrainConfig(steps=600, batch_size=256, lr=3e-3)).train(progress=False)
    rows = Rows().sample(4000, torch.Generator().manual_seed(1))
    with torch.no_grad():
        y_hat = sae(rows[:, :8].unsqueeze(1))[:, 0]
    assert _fvu(rows[:, 8:], y_hat) < 0.15  # measured 0.02-0.08


def test_bad_sparsity_and_width_are_one_line_errors():
    with pytest.raises(ValueError, match="sparsity: one of"):
        SAEConfig(architecture="transcoder", sparsity="skip_transcoder", d_in=4, d_sae=8)
    sae = make_sae(SAEConfig(architecture="transcoder", d_in=4, d_out=3, d_sae=8, k=2))
    with pytest.raises(ValueError, match=r"rows \[x \| y\] of width 7"):
        sae.loss(torch.randn(5, 1, 4), StepState())
