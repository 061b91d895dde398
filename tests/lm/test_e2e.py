"""End-to-end SAEs: the KL's direction on a hand-computed case, the objective's known answers on a
small GPT-2 (an exact reconstruction costs nothing, the gradient reaches only the SAE), the
config's rules, and a short e2e_ds run on SmolLM2."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from superposition.errors import SuperpositionError
from superposition.lm.config import make_lm_config
from superposition.lm.e2e import EndToEndObjective, SequenceSource, kl_clean_to_sae
from superposition.sae.base import LossOut

TOKENIZER = SimpleNamespace(all_special_ids=[0])


def test_kl_is_clean_to_sae_on_a_two_token_case():
    """P_clean = (1/4, 3/4), P_sae = (1/2, 1/2): KL(P_clean ‖ P_sae) = ¼ ln ½ + ¾ ln 3/2 = 0.1308;
    the other direction would be ½ ln 2 + ½ ln ⅔ = 0.1438."""
    logp_clean = torch.log(torch.tensor([[0.25, 0.75]]))
    kl = kl_clean_to_sae(logp_clean, torch.zeros(1, 2)).item()
    assert kl == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), abs=1e-6)
    assert kl != pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), abs=1e-3)


class _Store:
    context_size, device, model_tokens = 12, "cpu", 0

    def sequences(self, start, count):
        ids = torch.randint(
            1, 100, (count, self.context_size), generator=torch.Generator().manual_seed(start)
        )
        ids[:, 0] = 0
        return ids


def test_objective_is_zero_for_an_exact_reconstruction_and_reaches_only_the_sae(tiny_gpt2):
    model, hooked = tiny_gpt2
    source = SequenceSource(
        _Store(), hooked, TOKENIZER, "blocks.0.hook_resid_post", ["blocks.2.hook_resid_post"]
    )
    objective = EndToEndObjective(source, kl_coefficient=2.0, downstream_coefficient=3.0)
    x = source.sample(40)
    assert x.shape == (4 * 11, 64)  # every non-BOS position of ceil(40 / 12) = 4 sequences
    delta = torch.zeros_like(x, requires_grad=True)
    base = LossOut(torch.tensor(0.5), {"mse": torch.tensor([0.2])}, x_hat=(x + delta).unsqueeze(1))
    out = objective(base, torch.ones(1, 1))
    assert out.terms["kl"].item() == pytest.approx(0.0, abs=1e-6)
    assert out.terms["downstream_mse"].item() == pytest.approx(0.0, abs=1e-10)
    assert out.total.item() == pytest.approx(0.5 - 0.2, abs=1e-5)  # the local term is replaced
    bumped = LossOut(
        torch.tensor(0.0),
        {"mse": torch.tensor([0.0])},
        x_hat=(x + 0.5 * torch.randn_like(x) + delta).unsqueeze(1),
    )
    out = objective(bumped, torch.ones(1, 1))
    assert out.terms["kl"].item() > 1e-4 and out.terms["downstream_mse"].item() > 1e-4
    out.total.backward()
    assert delta.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())  # the model stays frozen


def test_config_rules_for_end_to_end_losses():
    ok = make_lm_config(
        None,
        ["loss=e2e_ds", "hook_name=blocks.3.hook_resid_pre", "downstream_hooks=[blocks.3.hook_resid_post]"],
    )
    assert ok.downstream_hooks == ["blocks.3.hook_resid_post"]
    cases = {
        ("loss=e2e_ds",): "needs at least one",
        ("loss=e2e", "downstream_hooks=[blocks.8.hook_resid_post]"): "used by loss=e2e_ds only",
        ("loss=e2e_ds", "downstream_hooks=[blocks.2.hook_resid_post]"): "is not after the SAE's hook",
        ("loss=e2e_ds", "downstream_hooks=[blocks.6.hook_resid_post]"): "is not after the SAE's hook",
        ("loss=e2e_ds", "downstream_hooks=[layer9]"): "not a hook point name",
        ("loss=e2e", "architecture=transcoder", "hook_name=blocks.2.mlp"): "trains with loss=local",
    }
    for sets, msg in cases.items():
        with pytest.raises(SuperpositionError, match=msg):
            make_lm_config(None, list(sets))


def test_an_e2e_ds_run_on_smollm2_lowers_its_kl(tmp_path, smol):
    from superposition.runs.train import train_lm_sae

    sets = [
        "loss=e2e_ds", "hook_name=blocks.1.hook_resid_post", "downstream_hooks=[blocks.3.hook_resid_post]",
        "context_size=32", "batch_size_tokens=128", "training_tokens=1280", "expansion_factor=2", "k=16",
        "eval_sequences=4", "log_every=1", "lr=1e-2", "lr_warm_up_steps=1",
    ]  # fmt: skip
    out = train_lm_sae(make_lm_config(None, sets), tmp_path / "e2e")
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    kls = [r["kl"] for r in rows]
    assert len(kls) == 10 and "downstream_mse" in rows[0]
    s = json.loads((out / "summary.json").read_text())
    # the held-out KL after 10 steps, against the KL of the initial SAE on the first batch (measured
    # 2.82 against 4.76)
    assert s["kl_div"] < 0.7 * kls[0]
    assert s["l0"] == pytest.approx(16, abs=0.5) and s["ce_loss_recovered"] > 0


def test_the_replaced_term_is_each_architectures_whole_local_reconstruction():
    """Matryoshka's local term is the mean over its prefixes (not the full dictionary's MSE alone):
    total − reconstruction leaves exactly its AuxK term, as for TopK."""
    from superposition.sae import SAEConfig, StepState, make_sae

    x = torch.randn(64, 1, 8, generator=torch.Generator().manual_seed(0))
    for arch, extra in (("topk", {}), ("matryoshka", {"prefixes": [4, 8, 16]})):
        sae = make_sae(SAEConfig(architecture=arch, d_in=8, d_sae=16, k=2, **extra))
        out = sae.loss(x, StepState())
        rest = out.total - out.local_reconstruction().sum()
        assert rest.item() == pytest.approx(
            (sae.cfg.aux_coefficient * out.terms["auxk"]).sum().item(), abs=1e-6
        )
    assert out.local_reconstruction().item() == pytest.approx(out.terms["prefix_mse"].item())
    assert out.terms["prefix_mse"].item() != pytest.approx(out.terms["mse"].item())
