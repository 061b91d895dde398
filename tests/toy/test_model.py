"""The toy model's forward pass, loss and gradients on hand-made weights."""

import pytest
import torch

from superposition.schedules import lr_factor
from superposition.toy.data import FeatureDistribution
from superposition.toy.model import ToyModel
from superposition.toy.train import train_toy_model


def _model(W, b, importance=None, hidden_relu=False):
    W = torch.tensor(W, dtype=torch.float32)
    m = ToyModel(W.shape[0], W.shape[2], W.shape[1], importance=importance, hidden_relu=hidden_relu)
    with torch.no_grad():
        m.W.copy_(W)
        m.b.copy_(torch.tensor(b, dtype=torch.float32))
    return m


def test_forward_on_hand_made_weights():
    # one instance, 3 features in 2 dims: f0 -> e0, f1 -> -e0 (antipodal), f2 -> e1
    m = _model([[[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]]], [[-0.2, -0.2, 0.0]])
    x = torch.tensor([[[0.8, 0.0, 0.5]]])  # (batch 1, inst 1, feat 3)
    # h = (0.8, 0.5); Wᵀh = (0.8, -0.8, 0.5); + b = (0.6, -1.0, 0.5); ReLU -> (0.6, 0, 0.5)
    assert torch.allclose(m.hidden(x), torch.tensor([[[0.8, 0.5]]]))
    assert torch.allclose(m(x), torch.tensor([[[0.6, 0.0, 0.5]]]))
    # loss = mean over feats of (0.2², 0, 0) = 0.04 / 3
    assert m.loss(x).item() == pytest.approx(0.04 / 3)


def test_neuron_variant_applies_relu_to_hidden():
    m = _model([[[1.0, -1.0]]], [[0.0, 0.0]], hidden_relu=True)
    x = torch.tensor([[[0.0, 0.7]]])
    # h = ReLU(-0.7) = 0, so nothing is reconstructed; the linear model would give (−0.7→0, 0.7)
    assert torch.allclose(m(x), torch.zeros(1, 1, 2))
    m.hidden_relu = False
    assert torch.allclose(m(x), torch.tensor([[[0.0, 0.7]]]))


def test_importance_weights_and_instances_sum():
    W = [[[1.0, 0.0]], [[0.0, 0.0]]]  # two instances, 1 hidden dim, 2 features
    m = _model(W, [[0.0, 0.0], [0.0, 0.0]], importance=torch.tensor([[1.0, 3.0], [1.0, 3.0]]))
    x = torch.tensor([[[0.5, 1.0], [0.5, 1.0]]])
    # inst 0 reconstructs f0 only: error (0, 1) -> (3·1)/2; inst 1 nothing: (0.25 + 3)/2
    per = m.instance_losses(x)
    assert per.tolist() == pytest.approx([1.5, 1.625])
    assert m.loss(x).item() == pytest.approx(3.125)


@pytest.mark.parametrize("hidden_relu", [False, True])
def test_hand_derived_gradients_match_autograd(hidden_relu):
    gen = torch.Generator().manual_seed(0)
    m = ToyModel(
        3, 12, 4, importance=torch.rand(3, 12, generator=gen), hidden_relu=hidden_relu, generator=gen
    )
    with torch.no_grad():
        m.b.normal_(0, 0.3, generator=gen)
    x = FeatureDistribution(torch.tensor([[1.0] * 12, [0.3] * 12, [0.05] * 12])).sample(256, gen)
    loss = m.loss(x)
    loss.backward()
    gW, gb = m.W.grad.clone(), m.b.grad.clone()
    losses = m.accumulate_grads(x, want_loss=True)
    assert torch.allclose(m.W.grad, gW, atol=1e-6, rtol=1e-4)
    assert torch.allclose(m.b.grad, gb, atol=1e-6, rtol=1e-4)
    assert losses.sum().item() == pytest.approx(loss.item(), rel=1e-5)


def test_lr_schedules():
    assert lr_factor(0, 100, "constant", warmup=10) == pytest.approx(0.1)
    assert lr_factor(9, 100, "constant", warmup=10) == pytest.approx(1.0)
    assert lr_factor(50, 100, "constant") == 1.0
    assert lr_factor(50, 100, "linear") == pytest.approx(0.5)
    assert lr_factor(0, 100, "cosine") == pytest.approx(1.0)
    assert lr_factor(50, 100, "cosine") == pytest.approx(0.5)
    assert lr_factor(55, 100, "cosine", warmup=10) == pytest.approx(0.5)
    assert lr_factor(100, 100, "linear") == pytest.approx(0.0)


def test_training_is_deterministic_and_learns():
    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        m = ToyModel(2, 5, 2, importance=0.9 ** torch.arange(5.0), generator=gen)
        data = FeatureDistribution(torch.tensor([[1.0] * 5, [0.05] * 5]))
        hist = train_toy_model(m, data, steps=300, batch_size=256, lr=1e-2, seed=seed, progress=False)
        return m.W.detach().clone(), hist

    (Wa, ha), (Wb, hb), (Wc, _) = run(0), run(0), run(1)
    assert torch.equal(Wa, Wb) and ha.losses == hb.losses
    assert not torch.equal(Wa, Wc)
    assert all(last < first for first, last in zip(ha.losses[0], ha.losses[-1]))
