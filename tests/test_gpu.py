"""The checks that need CUDA (marked `gpu`; skipped where there is none, so CI skips them):
every architecture's training step, the activation store, bfloat16 evaluation against float32,
and attribution, each on the GPU against the same computation on the CPU.
benchmarks/gpu_check.sh runs them with the headline benchmarks on a CUDA machine."""

import os

import pytest
import torch

from superposition.lm.hooks import HookedModel
from superposition.sae import ARCHITECTURES, SAE, SAEConfig
from superposition.sae.sources import SyntheticDictionary
from superposition.sae.train import SAETrainConfig, SAETrainer

# `gpu_check.sh --dry-run` sets this to cpu: the same checks, their code paths proven without a GPU
DEVICE = os.environ.get("SUPERPOSITION_GPU_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _cfg(arch: str) -> SAEConfig:
    kw = {"architecture": arch, "d_in": 32, "d_sae": 128}
    if ARCHITECTURES[arch].transcodes:
        kw["sparsity"] = "topk"
    if arch in ("topk", "batchtopk", "matryoshka") or ARCHITECTURES[arch].transcodes:
        kw["k"] = 4
    if arch == "matryoshka":
        kw["prefixes"] = [32, 64, 128]
    return SAEConfig.build(kw)


class _Pairs:
    """[x | y] rows for a transcoder: y a fixed linear map of x."""

    def __init__(self, d: int) -> None:
        self.src = SyntheticDictionary(n_features=256, d=d, mean_l0=4, seed=0)
        self.M = torch.randn(d, d, generator=torch.Generator().manual_seed(1)) / d**0.5

    def sample(self, n, generator=None):
        x = self.src.sample(n, generator)
        return torch.cat([x, x @ self.M], -1)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_trains_on_the_gpu_as_on_the_cpu(arch):
    losses = {}
    for device in ("cpu", DEVICE):
        sae = SAE(_cfg(arch), torch.Generator().manual_seed(0)).to(device)
        source = (
            _Pairs(32) if sae.transcodes else SyntheticDictionary(n_features=256, d=32, mean_l0=4, seed=0)
        )
        tr = SAETrainer(sae, source, SAETrainConfig(steps=20, batch_size=256, lr=1e-3))
        history = tr.train(progress=False)
        assert sae.W_dec.device.type == device
        losses[device] = history.terms["mse"][-1][0]
    assert losses[DEVICE] == pytest.approx(losses["cpu"], rel=0.05)


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    from superposition.lm.model import load_model

    return {"cpu": load_model(str(tiny_llama), "cpu"), "gpu": load_model(str(tiny_llama), DEVICE)}


def test_the_activation_store_on_the_gpu(tiny):
    from superposition.lm.store import ActivationStore

    acts = {}
    for name, lm in tiny.items():
        store = ActivationStore(
            lm, HookedModel(lm.model), "blocks.1.hook_resid_post", dataset_path="python-docs",
            context_size=32, prepend_bos=True, buffer_sequences=8, model_batch_size=4,
            device=str(lm.model.device),
        )  # fmt: skip
        acts[name] = store.sample(256).cpu()
    torch.testing.assert_close(acts["gpu"], acts["cpu"], atol=1e-4, rtol=1e-4)


def test_bfloat16_evaluation_is_close_to_float32(tiny_llama):
    from superposition.lm.evals import evaluate_sae
    from superposition.lm.model import load_model

    sae = SAE(SAEConfig(architecture="topk", d_in=64, d_sae=256, k=8), torch.Generator().manual_seed(0))
    seqs = torch.randint(100, 5000, (8, 32), generator=torch.Generator().manual_seed(0))
    out = {}
    for dtype in ("float32", "bfloat16"):
        lm = load_model(str(tiny_llama), DEVICE, dtype)
        hooked = HookedModel(lm.model)
        out[dtype] = evaluate_sae(
            hooked, lm.tokenizer, sae.to(DEVICE), "blocks.1.hook_resid_post", seqs, device=DEVICE
        )
    for key in ("explained_variance", "l0", "ce_loss_clean"):
        assert out["bfloat16"][key] == pytest.approx(out["float32"][key], rel=0.05, abs=0.02), key


def test_attribution_on_the_gpu_matches_the_cpu(tiny):
    from superposition.interp.attribution import attribute
    from superposition.interp.replacement import ReplacementModel

    graphs = {}
    for name, lm in tiny.items():
        device = lm.model.device
        g = torch.Generator().manual_seed(0)
        tcs = {}
        for L in range(2):
            sae = SAE(SAEConfig(architecture="transcoder", sparsity="topk", d_in=64, d_sae=128, k=8))
            with torch.no_grad():
                for p in sae.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            tcs[L] = sae.batched.to(device).eval()
        rm = ReplacementModel(HookedModel(lm.model), tcs)
        ids = torch.tensor([1, 504, 3575, 282, 4649, 314], device=device)
        graphs[name] = attribute(rm, ids, batch_size=16, progress=False)
    torch.testing.assert_close(graphs["gpu"].adjacency.cpu(), graphs["cpu"].adjacency, atol=1e-3, rtol=1e-3)
