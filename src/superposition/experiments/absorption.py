"""`absorption`: does a parent feature's latent stop firing when one of its children is present?"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

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
from superposition.sae import ground_truth as gt
from superposition.sae.io import save_sae
from superposition.sae.sources import SyntheticDictionary
from superposition.seeding import derive_seed
from superposition.viz.sae import metric_bars

COLUMNS = ["absorption", "parent_miss_without_child", "excess_absorption", "mcc", "explained_variance", "l0"]


class HierarchyConfig(Config):
    """The feature hierarchy that absorption and splitting share."""

    n_parents: int = Field(8, gt=0, description="parent features, the most frequent ones")
    children_per_parent: int = Field(3, gt=0, description="children of each parent (fire only with it)")
    n_other: int = Field(40, ge=0, description="independent features besides the hierarchy")
    d: int = Field(32, gt=0, description="dimension of the activations")

    @property
    def n_features(self) -> int:
        return self.n_parents * (1 + self.children_per_parent) + self.n_other


class AbsorptionConfig(HierarchyConfig):
    d_sae: int = Field(128, gt=0, description="latents of each SAE")
    k: int = Field(3, gt=0, description="target L0")
    samples: int = Field(600_000, gt=0, description="training examples per SAE")
    batch_size: int = Field(1024, gt=0, description="SAE training batch")
    lr: float = Field(5e-3, gt=0.0, description="SAE learning rate (Adam)")
    seed: int = Field(
        0, description="seeds the data, the SAEs and the evaluation (each purpose its own stream)"
    )

    def memory_needed(self) -> int:
        return matched_training_bytes(self.d, self.d_sae, self.batch_size, self.n_features)


def hierarchy_source(cfg: HierarchyConfig) -> tuple[dict[int, list[int]], SyntheticDictionary]:
    """The parent → children map and the synthetic dictionary of a hierarchy config that also has
    `k` and `seed` (absorption, splitting). Features are
    numbered parents first, then each parent's children, then the independent ones; the Zipf
    order makes the parents the most frequent features."""
    children = {
        p: [cfg.n_parents + p * cfg.children_per_parent + c for c in range(cfg.children_per_parent)]
        for p in range(cfg.n_parents)
    }
    source = SyntheticDictionary(
        cfg.n_features, cfg.d, mean_l0=cfg.k, zipf_exponent=0.6, hierarchy=children, seed=cfg.seed
    )
    return children, source


@register(
    "absorption",
    "parent/child feature hierarchies: how often each architecture's parent latent stays silent when a child "
    "is present (feature absorption)",
    AbsorptionConfig,
    quick={"samples": 200_000},
)
def run(cfg: AbsorptionConfig, out: Path) -> Result:
    children, source = hierarchy_source(cfg)
    train = experiment_train_config(cfg)
    x, c = source.sample_with_truth(
        65536, torch.Generator().manual_seed(derive_seed(cfg.seed, "absorption-eval"))
    )
    results = []
    for arch in ALL_ARCHITECTURES:
        r = train_matched(arch, source, cfg.d, cfg.d_sae, cfg.k, train, source.features)
        with torch.no_grad():
            z = r.sae.encode(x.unsqueeze(1).expand(-1, r.sae.n_instances, -1))[:, r.instance]
        r.metrics.update(absorption_rates(r.sae.W_dec.detach()[r.instance], source.features, z, c, children))
        save_sae(r.sae, out / "saes" / arch, r.instance)
        results.append(r)
    atomic_save_tensors(out / "ground_truth.safetensors", {"features": source.features.contiguous()})
    table = metrics_table(results, COLUMNS)
    print(table)
    highlights = {
        r.architecture: f"absorption {r.metrics['absorption']:.1%} (parent latent silent with a child "
        "present), "
        f"{r.metrics['parent_miss_without_child']:.1%} without"
        for r in results
    }
    explanation = f"""
<p>{cfg.n_parents} parent features, each with {cfg.children_per_parent} children that fire only together with
their
parent (think "animal" and "dog"), plus {cfg.n_other} independent features, in {cfg.d} dimensions. An SAE that
represents the hierarchy faithfully fires the parent's latent whenever the parent is present. A sparsity
penalty
tempts it to do otherwise: a latent for "parent + child" can reconstruct both with one activation, and the
parent's own latent then stays silent when a child is there. This is <i>feature absorption</i>.</p>
<p>For each parent, its latent is the one whose decoder direction is closest to the parent's.
<b>absorption</b> is
the share of examples with the parent and one of its children present on which that latent does not fire;
<b>parent_miss_without_child</b> the same share when no child is present, the baseline.</p>
<pre>{html.escape(table)}</pre>
"""
    figures = [
        FigureSpec(
            "absorption",
            "Absorption and baseline miss rate, recovery and reconstruction per architecture.",
            metric_bars({r.architecture: r.metrics for r in results}, COLUMNS),
        )
    ]
    summary = {
        "hierarchy": {str(p): cs for p, cs in children.items()},
        "results": {r.architecture: {k: v for k, v in r.metrics.items() if k != "density"} for r in results},
    }
    return Result("Feature absorption across SAE architectures", explanation, summary, figures, highlights)


def absorption_rates(W_dec, F, z, coeffs, children: dict[int, list[int]]) -> dict:
    """Mean over parents of P(parent latent silent | parent and a child present) and of
    P(parent latent silent | parent present, no child)."""
    cos = gt.cosine_matrix(W_dec, F[list(children)])  # (d_sae, n_parents)
    latent = cos.argmax(0)
    with_child, without = [], []
    for k, (p, cs) in enumerate(children.items()):
        present = coeffs[:, p] != 0
        child = (coeffs[:, cs] != 0).any(1)
        silent = z[:, latent[k]] == 0
        if bool((present & child).any()):
            with_child.append(float((silent & present & child).sum() / (present & child).sum()))
        if bool((present & ~child).any()):
            without.append(float((silent & present & ~child).sum() / (present & ~child).sum()))
    absorbed = float(np.mean(with_child)) if with_child else float("nan")
    baseline = float(np.mean(without)) if without else float("nan")
    return {
        "absorption": absorbed,
        "parent_miss_without_child": baseline,
        "excess_absorption": absorbed - baseline,
        "parent_latents": latent.tolist(),
    }
