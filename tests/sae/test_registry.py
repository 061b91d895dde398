"""Every registered architecture, derived from the registry: a new one is picked up here without
editing this file. Each must save and load to the same outputs, compute each instance of a batch
as if it were alone, and have the gradients of its loss (where the loss is differentiable).
Transcoders run as "transcoder:<sparsity>" for every SAE sparsity, d_in 6 -> d_out 5."""

import ast
import inspect

import pytest
import torch

from superposition.sae import ARCHITECTURES, SAEConfig, StepState, make_sae
from superposition.sae import base as sae_base
from superposition.sae.base import architecture
from superposition.sae.io import load_sae, save_instances
from superposition.sae.sparse import force_path
from superposition.sae.standard import L1Options
from superposition.sae.topk import TopKFamily, topk_mask

SAE_NAMES = [n for n, c in ARCHITECTURES.items() if not c.transcodes]
VARIANTS = SAE_NAMES + [f"{t}:{s}" for t, c in ARCHITECTURES.items() if c.transcodes for s in SAE_NAMES]


def _config(name: str, n_instances: int, **kw) -> SAEConfig:
    name, _, sparsity = name.partition(":")
    cls = ARCHITECTURES[sparsity or name]
    values = {"architecture": name, "d_in": 6, "d_sae": 16, "n_instances": n_instances, **kw}
    if sparsity:
        values.update(sparsity=sparsity, d_out=5)
    if cls.l0_key:
        values[cls.l0_key] = 3
    if cls.penalty_sweep:  # one coefficient per instance, so instances really differ
        key, sweep = cls.penalty_sweep
        values[key] = sweep[:n_instances]
    return SAEConfig.build(values)


def _perturbed(name: str, n_instances: int, seed: int = 1):
    sae = make_sae(_config(name, n_instances), torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return sae


def _width(sae) -> int:
    """Width of a training row: x, or [x | y] for a transcoder."""
    return sae.cfg.d_in + (sae.d_out if sae.transcodes else 0)


def check_round_trip(name: str, tmp_path) -> None:
    sae = _perturbed(name, 2)
    sae.loss(torch.randn(64, 2, _width(sae)), StepState())  # sets running statistics (BatchTopK's θ)
    sae.eval()
    x = torch.randn(32, 2, 6)
    for i, folder in enumerate(save_instances(sae, tmp_path / name.replace(":", "-"), ["a", "b"])):
        loaded = load_sae(folder)
        assert type(loaded.batched) is type(sae) and loaded.cfg.architecture == name.partition(":")[0]
        with torch.no_grad():
            assert torch.allclose(loaded.encode(x[:, i : i + 1]), sae.encode(x)[:, i : i + 1], atol=1e-5)
            assert torch.allclose(loaded(x[:, i : i + 1]), sae(x)[:, i : i + 1], atol=1e-5)


def check_batched_equals_one_by_one(name: str) -> None:
    """Instance i of a 3-instance SAE computes exactly what a 1-instance SAE with its weights and
    settings computes: latents, loss terms and gradients."""
    batched = _perturbed(name, 3)
    x = torch.randn(40, 3, _width(batched), generator=torch.Generator().manual_seed(5))
    out = batched.loss(x, StepState())
    out.total.backward()
    for i in range(3):
        cfg = batched.cfg.model_copy(update={"n_instances": 1})
        if batched.penalty_sweep:
            key = batched.penalty_sweep[0]
            cfg = cfg.model_copy(update={key: getattr(batched.cfg, key)[i]})
        single = make_sae(cfg)
        single.load_saved(batched.saved_tensors(i))
        one = single.loss(x[:, i : i + 1], StepState())
        one.total.backward()
        for term, value in one.terms.items():
            assert value[0].item() == pytest.approx(out.terms[term][i].item(), rel=1e-5, abs=1e-7), term
        with torch.no_grad():
            xs = batched.split(x)[0]
            assert torch.allclose(
                single.encode(xs[:, i : i + 1]), batched.encode(xs)[:, i : i + 1], atol=1e-6
            )
        for pname, p in single.named_parameters():
            if p.grad is not None:
                assert torch.allclose(p.grad[0], batched.get_parameter(pname).grad[i], atol=1e-5), pname


def check_gradients(name: str) -> None:
    """Autograd against central finite differences (float64) for every parameter, except those an
    architecture declares as having surrogate gradients (JumpReLU's threshold, Gated's decoder):
    theirs must still be finite and nonzero."""
    sae = _perturbed(name, 1).double()
    x = torch.randn(24, 1, _width(sae), dtype=torch.float64, generator=torch.Generator().manual_seed(7))

    def total() -> torch.Tensor:
        return sae.loss(x, StepState()).total

    total().backward()
    g = torch.Generator().manual_seed(3)
    checked = 0
    for pname, p in sae.named_parameters():
        if pname in sae.surrogate_gradients:
            assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
            continue
        for flat in torch.randint(p.numel(), (6,), generator=g).tolist():
            idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), p.shape))
            eps, keep = 1e-6, p.data[idx].item()
            with torch.no_grad():
                p.data[idx] = keep + eps
                up = total().item()
                p.data[idx] = keep - eps
                down = total().item()
                p.data[idx] = keep
            assert p.grad[idx].item() == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-7), (
                pname,
                idx,
            )
            checked += 1
    assert checked >= 12


@pytest.mark.parametrize("name", VARIANTS)
def test_save_load_round_trip(name, tmp_path):
    check_round_trip(name, tmp_path)


# every product after the encoder's runs on the active pairs or densely (sae/sparse.py): each
# architecture must be right both ways, whichever the shape would choose
@pytest.mark.parametrize("path", ["dense", "sparse"])
@pytest.mark.parametrize("name", VARIANTS)
def test_batched_equals_one_by_one(name, path):
    with force_path(path):
        check_batched_equals_one_by_one(name)


@pytest.mark.parametrize("path", ["dense", "sparse"])
@pytest.mark.parametrize("name", VARIANTS)
def test_gradients_match_finite_differences(name, path):
    with force_path(path):
        check_gradients(name)


def test_no_base_module_names_an_architecture():
    """The shared base knows no architecture: every list of them comes from the registry."""
    tree = ast.parse(inspect.getsource(sae_base))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
    }
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    for name, cls in ARCHITECTURES.items():
        assert cls.__name__ not in names and name not in strings, name


@pytest.fixture
def seventh():
    """A seventh architecture written as a new module would be: a TopK whose latents are the
    absolute values of the pre-activations' top k (an architecture nobody ships; the point is the
    seam). Registered for this test only."""

    @architecture
    class AbsTopKSAE(TopKFamily):
        name = "abs_topk"

        def encode(self, x):
            return topk_mask(self.pre_acts(x).abs(), self.k)

        def loss(self, x, state):
            z = self.encode(x)
            x_hat = self.decode(z)
            mse = self.mse(x, x_hat)
            return sae_base.LossOut(mse.sum(), {"mse": mse}, z, x_hat)

    yield AbsTopKSAE
    del ARCHITECTURES["abs_topk"]


def test_a_seventh_architecture_plugs_into_every_seam(seventh, tmp_path):
    assert "abs_topk" in ARCHITECTURES
    check_round_trip("abs_topk", tmp_path)
    check_batched_equals_one_by_one("abs_topk")
    check_gradients("abs_topk")
    # the one trainer and the matched-L0 experiments take it as it is
    from superposition.experiments.sae_common import train_matched
    from superposition.sae.sources import SyntheticDictionary
    from superposition.sae.train import SAETrainConfig

    source = SyntheticDictionary(n_features=12, d=6, mean_l0=2, seed=0)
    r = train_matched(
        "abs_topk", source, 6, 16, 2, SAETrainConfig(steps=20, batch_size=64, lr=1e-2), source.features
    )
    assert r.metrics["l0"] == pytest.approx(2.0) and 0 < r.metrics["mcc"] <= 1


def test_an_architecture_options_class_holds_its_keys():
    """Keys live with the architecture that reads them, and SAEConfig has all of them."""
    for cls in ARCHITECTURES.values():
        assert set(cls.Options.model_fields) <= set(SAEConfig.model_fields)
    assert (
        "l1_coefficient" in L1Options.model_fields
        and "bandwidth" in ARCHITECTURES["jumprelu"].Options.model_fields
    )


@pytest.mark.parametrize("name", VARIANTS)
def test_a_one_instance_sae_takes_plain_token_rows(name):
    """encode/decode/forward take (tokens, d_in) as SAELens users call them, and give exactly the
    batched result's only instance; a batched SAE refuses such rows in one line."""
    sae = _perturbed(name, 1)
    sae.loss(torch.randn(64, 1, _width(sae)), StepState())
    sae.eval()
    x = torch.randn(20, 6)
    with torch.no_grad():
        z3 = sae.encode(x.unsqueeze(1))
        z2 = sae.encode(x)
        assert z2.shape == (20, 16) and torch.equal(z2, z3[:, 0])
        assert torch.equal(sae.decode(z2, x), sae.decode(z3, x.unsqueeze(1))[:, 0])
        assert torch.equal(sae(x), sae(x.unsqueeze(1))[:, 0])
    with pytest.raises(ValueError, match="this one has 2 instances"):
        _perturbed(name, 2).encode(x)
