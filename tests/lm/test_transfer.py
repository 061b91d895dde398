"""The transfer table: an SAE on a model and on itself agrees perfectly; on a perturbed copy the
correlations fall below 1 and the reconstruction worsens; outlier positions are left out of both."""

import copy

import pytest
import torch

from superposition.lm.hooks import HookedModel
from superposition.lm.transfer import transfer_table
from superposition.sae import SAEConfig, make_sae

TOKENIZER = type("T", (), {"all_special_ids": [0]})()


def _seqs():
    ids = torch.randint(1, 100, (8, 16), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = 0
    return ids


def test_an_sae_transfers_perfectly_to_its_own_model_and_less_to_another(tiny_gpt2):
    model, hooked = tiny_gpt2
    torch.manual_seed(0)
    sae = make_sae(SAEConfig(architecture="topk", d_in=64, d_sae=128, k=8)).eval()
    hook = "blocks.1.hook_resid_post"
    same = transfer_table({"a": hooked, "b": HookedModel(model)}, TOKENIZER, sae, hook, _seqs())
    assert same["freq_correlation"] == pytest.approx(1.0) and same[
        "max_activation_correlation"
    ] == pytest.approx(1.0)
    assert same["a"] == same["b"] and same["positions"] == 8 * 15 - same["excluded_outlier_positions"]
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.transformer.h[1].parameters():
            p.add_(0.05 * torch.randn_like(p))
    diff = transfer_table({"a": hooked, "b": HookedModel(other)}, TOKENIZER, sae, hook, _seqs())
    assert diff["freq_correlation"] < 0.999 and diff["a"] == same["a"]
    assert diff["b"]["explained_variance"] != diff["a"]["explained_variance"]


def test_outlier_positions_are_left_out(tiny_gpt2):
    _, hooked = tiny_gpt2
    sae = make_sae(SAEConfig(architecture="topk", d_in=64, d_sae=128, k=8)).eval()
    hook = "blocks.0.hook_resid_post"
    loose = transfer_table({"a": hooked, "b": hooked}, TOKENIZER, sae, hook, _seqs(), outlier=1e9)
    tight = transfer_table({"a": hooked, "b": hooked}, TOKENIZER, sae, hook, _seqs(), outlier=1.0)
    assert loose["excluded_outlier_positions"] == 0 and 0 < tight["excluded_outlier_positions"] < 120
