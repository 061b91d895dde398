"""`sae-synthetic`: SAEs of every architecture on a synthetic dictionary with known features."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from superposition.atomic import atomic_save_tensors
from superposition.config import Config
from superposition.experiments.base import Result, register
from superposition.experiments.sae_common import (
    ALL_ARCHITECTURES,
    experiment_train_config,
    matched_training_bytes,
    metrics_table,
    train_matched,
)
from superposition.report.html import FigureSpec
from superposition.sae.config import known_architecture
from superposition.sae.io import save_sae
from superposition.sae.sources import SyntheticDictionary
from superposition.viz.sae import density_histogram, metric_bars

COLUMNS = ["mcc", "recovered", "explained_variance", "l0", "frac_dead", "uniqueness", "precision", "recall"]


class SAESyntheticConfig(Config):
    n_features: int = Field(1024, gt=0, description="true features of the synthetic dictionary")
    d: int = Field(128, gt=0, description="dimension of the activations")
    d_sae: int = Field(2048, gt=0, description="latents of each SAE")
    k: int = Field(
        8, gt=0, description="target L0: k of the TopK family; the penalised architectures are matched to it"
    )
    zipf_exponent: float = Field(
        0.8, ge=0.0, description="feature i fires with probability ∝ (i+1)^-exponent (0: equal)"
    )
    samples: int = Field(1_000_000, gt=0, description="training examples per SAE")
    batch_size: int = Field(1024, gt=0, description="SAE training batch")
    lr: float = Field(5e-3, gt=0.0, description="SAE learning rate (Adam)")
    architecture: Annotated[str, AfterValidator(lambda a: known_architecture(a, ("all",)))] = Field(
        "all", description=f"all, or one of {', '.join(ALL_ARCHITECTURES)}"
    )
    seed: int = Field(
        0, description="seeds the data, the SAEs and the evaluation (each purpose its own stream)"
    )

    @model_validator(mode="after")
    def _k_fits(self):
        if self.k > self.d_sae:
            raise ValueError(f"k: must be at most d_sae ({self.d_sae}), got {self.k}")
        return self

    def memory_needed(self) -> int:
        return matched_training_bytes(self.d, self.d_sae, self.batch_size, self.n_features)


@register(
    "sae-synthetic",
    "SAEs of every architecture on 1024 known features in 128 dimensions (Zipf-like firing) at matched L0: "
    "MCC, recovery, EV, dead",
    SAESyntheticConfig,
    quick={"n_features": 128, "d": 32, "d_sae": 256, "k": 3, "samples": 500_000},
)
def run(cfg: SAESyntheticConfig, out: Path) -> Result:
    source = SyntheticDictionary(
        cfg.n_features, cfg.d, mean_l0=cfg.k, zipf_exponent=cfg.zipf_exponent, seed=cfg.seed
    )
    archs = ALL_ARCHITECTURES if cfg.architecture == "all" else [cfg.architecture]
    train = experiment_train_config(cfg, max(50_000, cfg.samples // 10))
    results = [train_matched(a, source, cfg.d, cfg.d_sae, cfg.k, train, source.features) for a in archs]
    for r in results:
        save_sae(r.sae, out / "saes" / r.architecture, r.instance)
    atomic_save_tensors(out / "ground_truth.safetensors", {"features": source.features.contiguous()})
    table = metrics_table(results, COLUMNS)
    print(table)
    highlights = {
        r.architecture: ", ".join(f"{c} {r.metrics[c]:.3f}" for c in COLUMNS if c in r.metrics)
        for r in results
    }
    figures = [
        FigureSpec(
            "metrics",
            "Ground-truth recovery and reconstruction per architecture at matched L0.",
            metric_bars({r.architecture: r.metrics for r in results}, COLUMNS),
        ),
        FigureSpec(
            "density",
            "How often each latent fires, per architecture.",
            density_histogram({r.architecture: r.metrics["density"] for r in results}),
        ),
    ]
    explanation = f"""
<p>A synthetic dictionary of {cfg.n_features} random unit directions in {cfg.d} dimensions; feature i fires
with
probability ∝ (i+1)<sup>−{cfg.zipf_exponent}</sup>, {cfg.k} features per example on average, with a magnitude
uniform in (0, 1]. Because the true features are known, recovery is measured exactly: <b>MCC</b> is the mean
|cosine| of the best one-to-one matching of decoder rows to true features (Hungarian algorithm);
<b>recovered</b>
the share of true features some latent matches with |cos| ≥ 0.9; <b>precision / recall</b> compare each
matched
latent's firing with its feature's presence.</p>
<p>Every architecture has {cfg.d_sae} latents and is trained on {train.steps * cfg.batch_size:,} examples at
matched L0:
TopK, BatchTopK and Matryoshka use k = {cfg.k}; Standard, Gated and JumpReLU train a sweep of sparsity
coefficients as instances of one batched SAE, and the one whose L0 is closest to {cfg.k} is kept.</p>
<pre>{html.escape(table)}</pre>
"""
    summary = {
        "n_features": cfg.n_features,
        "d": cfg.d,
        "d_sae": cfg.d_sae,
        "target_l0": cfg.k,
        "training_examples": train.steps * cfg.batch_size,
        "results": {
            r.architecture: {**{k: v for k, v in r.metrics.items() if k != "density"}, "sweep": r.sweep}
            for r in results
        },
        "latent_density": {r.architecture: r.metrics["density"] for r in results},
    }
    return Result(
        "SAEs on a synthetic dictionary: recovery at matched L0", explanation, summary, figures, highlights
    )
