"""Training SAEs of every architecture at a matched L0 and scoring them against ground truth."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from superposition.sae import ARCHITECTURES, SAEConfig, make_sae
from superposition.sae import ground_truth as gt
from superposition.sae.base import BatchedSAE
from superposition.sae.metrics import Accumulator
from superposition.sae.train import SAETrainConfig, SAETrainer
from superposition.seeding import derive_seed
from superposition.viz.sae import density_histogram

ALL_ARCHITECTURES = list(ARCHITECTURES)
# Architectures whose sparsity is a penalty get a sweep of coefficients, trained as instances of
# one batched SAE; the instance whose L0 lands closest to the target is kept.
# Ranges calibrated on the synthetic dictionary (coefficients in units of its activations).
_R2 = 2**0.5  # a factor of √2 between neighbours, so some instance lands within ~20% of the target L0
SWEEPS = {
    "standard": ("l1_coefficient", [round(0.16 * _R2**i, 4) for i in range(8)]),
    "gated": ("l1_coefficient", [round(0.16 * _R2**i, 4) for i in range(8)]),
    "jumprelu": ("l0_coefficient", [round(0.005 * _R2**i, 5) for i in range(8)]),
}


@dataclass
class Trained:
    architecture: str
    sae: BatchedSAE
    instance: int  # the kept instance
    metrics: dict[str, Any]
    sweep: list[dict[str, float]]  # L0 and coefficient of every swept instance


def train_matched(
    arch: str,
    source,
    d_in: int,
    d_sae: int,
    target_l0: float,
    train: SAETrainConfig,
    features: Tensor,
    eval_samples: int = 16384,
    **sae_kwargs,
) -> Trained:
    """Train `arch` at L0 ≈ target_l0 on `source` and score the kept SAE.

    `features` are the true directions, (n, d) for a shared source or (inst, n, d) for a
    per-instance one (then the SAE has one instance per source instance and no sweep)."""
    per_instance_truth = features.ndim == 3
    kw: dict[str, Any] = dict(architecture=arch, d_in=d_in, d_sae=d_sae, **sae_kwargs)
    if arch in ("topk", "batchtopk", "matryoshka"):
        kw["k"] = max(1, round(target_l0))
    if per_instance_truth:
        kw["n_instances"] = features.shape[0]
    elif arch in SWEEPS:
        key, values = SWEEPS[arch]
        kw[key] = values
        kw["n_instances"] = len(values)
    cfg = SAEConfig.build(kw, source=f"{arch} SAE")
    sae = make_sae(cfg, torch.Generator().manual_seed(derive_seed(train.seed, "sae-init")))
    trainer = SAETrainer(sae, source, train)
    trainer.train()
    trainer.fold_normalization()
    sae.eval()
    x, coeffs = source.sample_with_truth(
        eval_samples, torch.Generator().manual_seed(derive_seed(train.seed, "sae-eval"))
    )
    if x.ndim == 2:
        x = x.unsqueeze(1).expand(-1, sae.n_instances, -1)
        coeffs = coeffs.unsqueeze(1).expand(-1, sae.n_instances, -1)
    with torch.no_grad():
        z = sae.encode(x)
        x_hat = sae.decode(z)
    acc = Accumulator()
    acc.add(x, x_hat, z)
    m = acc.result()
    l0 = m["l0"]
    sweep = []
    if arch in SWEEPS and not per_instance_truth:
        key, values = SWEEPS[arch]
        sweep = [{key: v, "l0": float(l)} for v, l in zip(values, l0.tolist())]
        keep = int(torch.argmin((torch.log(l0.clamp(min=1e-3)) - math.log(target_l0)).abs()))
    else:
        keep = 0
    metrics = {k: float(v[keep]) for k, v in m.items() if k != "density"}
    metrics["density"] = m["density"][keep].tolist()
    truth = features[keep] if per_instance_truth else features
    metrics.update(gt.score(sae.W_dec[keep].detach(), truth, z[:, keep], coeffs[:, keep] != 0))
    if arch in SWEEPS and not per_instance_truth:
        metrics[SWEEPS[arch][0]] = SWEEPS[arch][1][keep]
    return Trained(arch, sae, keep, metrics, sweep)


def metrics_table(results: list[Trained], columns: list[str]) -> str:
    """A plain-text table for the terminal and the report."""
    widths = [max(10, len(c) + 2) for c in columns]
    head = f"{'architecture':<12}" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths))
    rows = [head] + [
        f"{r.architecture:<12}" + "".join(f"{_fmt(r.metrics.get(c)):>{w}}" for c, w in zip(columns, widths))
        for r in results
    ]
    return "\n".join(rows)


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def metrics_figure(results: list[Trained], columns: list[str]):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(columns), figsize=(2.6 * len(columns), 3.4))
    names = [r.architecture for r in results]
    colours = plt.get_cmap("tab10")(np.arange(len(names)))
    for ax, c in zip(np.atleast_1d(axes), columns):
        vals = [r.metrics.get(c, np.nan) for r in results]
        ax.bar(range(len(names)), vals, color=colours)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, fontsize=8)
        ax.set_title(c, fontsize=10)
    fig.tight_layout()
    return fig


def density_figure(results: list[Trained]):
    """Histogram of log10 latent density per architecture (see viz.sae.density_histogram)."""
    return density_histogram({r.architecture: r.metrics["density"] for r in results})
