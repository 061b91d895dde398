"""Training SAEs of every architecture at a matched L0 and scoring them against ground truth."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from superposition.sae import ARCHITECTURES, SAEConfig, make_sae
from superposition.sae import ground_truth as gt
from superposition.sae.base import BatchedSAE, training_bytes
from superposition.sae.metrics import Accumulator
from superposition.sae.train import SAETrainConfig, SAETrainer
from superposition.seeding import derive_seed

# the SAEs (transcoders, which map one activation to another, are compared elsewhere)
ALL_ARCHITECTURES = [name for name, cls in ARCHITECTURES.items() if not cls.transcodes]


def matched_training_bytes(d_in: int, d_sae: int, batch: int, n_features: int) -> int:
    """Memory for the widest matched-L0 training (a penalty sweep's instances) plus the source's
    dense (batch, n_features) coefficients and its (n_features, d) dictionary."""
    widest = max((len(c.penalty_sweep[1]) for c in ARCHITECTURES.values() if c.penalty_sweep), default=1)
    return training_bytes(widest, d_in, d_sae, batch) + 4 * n_features * (3 * batch + d_in)


def steps_for(examples: int, batch_size: int) -> int:
    """Steps of `batch_size` that first reach `examples` (a window given in examples, in steps)."""
    return -(-examples // batch_size)


@dataclass
class MatchedSAE:
    architecture: str
    sae: BatchedSAE
    instance: int  # the kept instance
    metrics: dict[str, Any]
    sweep: list[dict[str, float]]  # L0 and coefficient of every swept instance


def experiment_train_config(cfg, dead_window_samples: int = 50_000) -> SAETrainConfig:
    """The SAE training the experiments share: `cfg.samples` examples in batches of
    `cfg.batch_size` at `cfg.lr`, the learning rate decayed to 0 over the last fifth, the sparsity
    penalty warmed up over the first twentieth, a latent dead after `dead_window_samples` examples
    without firing, seeded by `cfg.seed`."""
    steps = max(1, cfg.samples // cfg.batch_size)
    return SAETrainConfig(
        steps=steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        lr_decay_steps=steps // 5,
        sparsity_warm_up_steps=steps // 20,
        dead_feature_window=steps_for(dead_window_samples, cfg.batch_size),
        seed=cfg.seed,
    )


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
) -> MatchedSAE:
    """Train `arch` at L0 ≈ target_l0 on `source` and score the kept SAE.

    The architecture says how: a key set to the target (`l0_key`, the TopK family's k), or a
    penalty swept over instances of one batched SAE (`penalty_sweep`), keeping the instance whose
    L0 lands closest to the target. `features` are the true directions, (n, d) for a shared source
    or (inst, n, d) for a per-instance one (then the SAE has one instance per source instance and
    no sweep)."""
    cls = ARCHITECTURES[arch]
    per_instance_truth = features.ndim == 3
    sweep_key, sweep_values = (
        cls.penalty_sweep if cls.penalty_sweep and not per_instance_truth else (None, [])
    )
    kw: dict[str, Any] = dict(architecture=arch, d_in=d_in, d_sae=d_sae, **sae_kwargs)
    if cls.l0_key:
        kw[cls.l0_key] = max(1, round(target_l0))
    if per_instance_truth:
        kw["n_instances"] = features.shape[0]
    elif sweep_key:
        kw[sweep_key], kw["n_instances"] = sweep_values, len(sweep_values)
    sae = make_sae(
        SAEConfig.build(kw, source=f"{arch} SAE"),
        torch.Generator().manual_seed(derive_seed(train.seed, "sae-init")),
    )
    trainer = SAETrainer(sae, source, train)
    trainer.train()
    trainer.fold_normalization()
    sae.eval()
    m, z, coeffs = evaluate_on_source(sae, source, eval_samples, train.seed)
    l0 = m["l0"]
    sweep, keep = [], 0
    if sweep_key:
        sweep = [{sweep_key: v, "l0": float(l0_v)} for v, l0_v in zip(sweep_values, l0.tolist(), strict=True)]
        keep = int(torch.argmin((torch.log(l0.clamp(min=1e-3)) - math.log(target_l0)).abs()))
    metrics = {k: float(v[keep]) for k, v in m.items() if k != "density"}
    metrics["density"] = m["density"][keep].tolist()
    truth = features[keep] if per_instance_truth else features
    metrics.update(gt.score(sae.W_dec[keep].detach(), truth, z[:, keep], coeffs[:, keep] != 0))
    if sweep_key:
        metrics[sweep_key] = sweep_values[keep]
    return MatchedSAE(arch, sae, keep, metrics, sweep)


@torch.no_grad()
def evaluate_on_source(
    sae: BatchedSAE, source, n: int, seed: int
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Every metric per instance on n fresh examples, with the latents and true coefficients."""
    x, coeffs = source.sample_with_truth(n, torch.Generator().manual_seed(derive_seed(seed, "sae-eval")))
    if x.ndim == 2:
        x = x.unsqueeze(1).expand(-1, sae.n_instances, -1)
        coeffs = coeffs.unsqueeze(1).expand(-1, sae.n_instances, -1)
    z = sae.encode(x)
    acc = Accumulator()
    acc.add(x, sae.decode(z, x), z)
    return acc.result(), z, coeffs


def metrics_table(results: list[MatchedSAE], columns: list[str]) -> str:
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
