"""Transcoders at several MLPs from one forward pass: `hook_name=blocks.*.mlp` expands to one
(input, output) pair per layer, and each transcoder instance reads its own layer's pair."""

import pytest
import torch

from superposition.lm.config import make_lm_config
from superposition.lm.hooks import expand_hooks
from superposition.lm.store import RankView
from tests.lm.test_store_evals import _store


def test_a_pattern_of_mlp_pairs_expands_to_one_pair_per_layer():
    assert expand_hooks("blocks.*.mlp", 3) == ["blocks.0.mlp", "blocks.1.mlp", "blocks.2.mlp"]
    assert expand_hooks(["blocks.2.mlp", "blocks.{0,1}.mlp"], 30) == [
        "blocks.0.mlp",
        "blocks.1.mlp",
        "blocks.2.mlp",
    ]
    assert expand_hooks("blocks.1*.hook_mlp_out", 12) == [
        "blocks.1.hook_mlp_out",
        "blocks.10.hook_mlp_out",
        "blocks.11.hook_mlp_out",
    ]


def test_each_transcoder_instance_reads_its_own_layers_mlp_input_and_output(smol):
    _, hooked = smol
    store = _store(smol, hook="blocks.{2,5}.mlp")
    assert store.units == ["blocks.2.mlp", "blocks.5.mlp"]
    rows = RankView(store).sample(64)
    assert rows.shape == (64, 2, 2 * 576)
    store.close()
    with torch.no_grad():
        for i, L in enumerate((2, 5)):
            x, y = rows[:, i, :576], rows[:, i, 576:]
            torch.testing.assert_close(hooked.blocks[L].mlp(x), y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "sets, needle",
    [
        (["architecture=transcoder", "hook_name=blocks.*.hook_mlp_out"], "give blocks.L.mlp names"),
        (["architecture=topk", "hook_name=blocks.*.mlp"], "an SAE reads one hook"),
    ],
)
def test_transcoders_and_saes_are_not_mixed_up(sets, needle):
    with pytest.raises(Exception, match=needle):
        make_lm_config(None, sets)
