"""Neuron-level analysis, the computation model and phase classification on constructed weights."""

import math

import pytest
import torch

from superposition.toy import geometry, neurons
from superposition.toy.model import ComputationModel


def test_monosemanticity_hand_cases():
    W = torch.tensor([[0.0, 2.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.3, -0.9, 0.1]])
    score = neurons.monosemanticity(W)
    assert score.tolist() == pytest.approx([1.0, 1 / math.sqrt(2), 0.0, 0.9 / math.sqrt(0.91)])
    assert neurons.monosemantic_neurons(W).tolist() == [True, False, False, True]
    assert neurons.dominant_feature(W)[[0, 3]].tolist() == [1, 1]


def test_computation_model_computes_abs_with_a_pair():
    m = ComputationModel(1, 1, 2)
    with torch.no_grad():
        m.W_in.copy_(torch.tensor([[[1.0], [-1.0]]]))  # neuron 0 reads +x, neuron 1 reads −x
        m.W_out.copy_(torch.tensor([[[1.0, 1.0]]]))
        m.b.zero_()
    x = torch.tensor([[[-0.7]], [[0.4]], [[0.0]]])  # (batch 3, inst 1, feat 1)
    assert m(x).flatten().tolist() == pytest.approx([0.7, 0.4, 0.0])
    assert torch.allclose(m.neurons(x)[:, 0], torch.tensor([[0.0, 0.7], [0.4, 0.0], [0.0, 0.0]]))
    assert m.loss(x).item() == pytest.approx(0.0)
    # only one half: |x| is right for x > 0 and ReLU(0)=0 for x < 0 -> loss = mean(0.7², 0, 0) / 1
    with torch.no_grad():
        m.W_out[0, 0, 1] = 0.0
    assert m.loss(x).item() == pytest.approx(0.49 / 3)


def test_abs_pairs_on_constructed_weights():
    # 3 features, 5 neurons: feature 0 has a ± pair; feature 1 only a + neuron; feature 2 a ± pair
    # whose negative neuron writes a negative output weight (not a valid half of |x|)
    W_in = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, -1.0]])
    W_out = torch.tensor([[1.0, 1.0, 0, 0, 0], [0, 0, 1.0, 0, 0], [0, 0, 0, 1.0, -1.0]])
    assert neurons.abs_pairs(W_in, W_out).tolist() == [True, False, False]
    W_out[2, 4] = 0.5
    assert neurons.abs_pairs(W_in, W_out).tolist() == [True, False, True]


def test_asymmetric_motifs():
    W_in = torch.tensor(
        [
            [1.0, -0.4, 0.0],  # strong 0, weak 1 (ratio 2.5, weak carries 0.37 of the norm): a motif
            [1.0, 0.9, 0.0],  # two equal features: polysemantic but symmetric
            [1.0, 0.05, 0.0],  # essentially monosemantic
        ]
    )
    motifs = neurons.asymmetric_motifs(W_in)
    assert [(m.neuron, m.strong_feature, m.weak_feature, m.opposite_signs) for m in motifs] == [
        (0, 0, 1, True)
    ]
    assert motifs[0].ratio == pytest.approx(2.5)


@pytest.mark.parametrize("T", [3, 4, 5, 8, 13, 50])
def test_regular_polygon_points_have_dimensionality_two_over_T(T):
    theta = torch.arange(T, dtype=torch.float64) * 2 * math.pi / T
    H = torch.stack([torch.cos(theta), torch.sin(theta)])  # (2, T): T training points' hidden vectors
    assert torch.allclose(geometry.feature_dimensionality(H), torch.full((T,), 2 / T, dtype=torch.float64))


def test_phase_classification_on_constructed_weights():
    not_rep, dedicated, superposed = 0, 1, 2
    one_dim = torch.tensor(
        [
            [[1.0, 0.0]],  # the extra feature is dropped
            [[0.0, 1.0]],  # the extra feature takes the dimension
            [[1.0, -1.0]],  # antipodal: both share it
            [[1.0, 0.3]],  # extra too weak to count as represented
        ]
    )
    assert geometry.classify_feature(one_dim).tolist() == [not_rep, dedicated, superposed, not_rep]
    c, s = math.cos(2 * math.pi / 3), math.sin(2 * math.pi / 3)
    two_dim = torch.tensor(
        [
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],  # two features orthogonal, extra dropped
            [[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]],  # the others antipodal, extra on its own axis
            [[1.0, c, c], [0.0, s, -s]],  # triangle: all three share the plane
        ]
    )
    assert geometry.classify_feature(two_dim).tolist() == [not_rep, dedicated, superposed]
    assert geometry.PHASES[superposed] == "superposition"
