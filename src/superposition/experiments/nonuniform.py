"""`nonuniform`: the paper's non-uniform superposition, two sweeps.

(a) One feature against the rest of a pentagon: 5 features in 2 dimensions in the sparse regime,
    feature 0's importance (or, with `vary=sparsity`, its probability) swept while the other four
    stay fixed. The pentagon deforms, then changes shape; each model's geometry is named
    (toy/polytopes.py) and the transitions are where the name changes along the sweep.
(b) Correlated features at increasing correlation: two groups of features in 2 dimensions, each
    group present together with probability c and independently otherwise (c is the correlation of
    the members' presence). Sparse correlated pairs take orthogonal directions (a local
    orthogonal basis: co-occurring features must not cancel; independent ones may sit
    antipodal); denser triples, which cannot all be
    orthogonal in 2 dimensions, collapse onto one shared direction each (PCA-like). The transitions
    are where the members become and stay orthogonal (|cos| < 0.1), and where the mean cosine
    within a group crosses 0.5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from superposition.experiments.base import Result, register
from superposition.experiments.toy_common import ToyConfig, log_sweep, train_toy
from superposition.report.html import FigureSpec
from superposition.seeding import derive_seed
from superposition.toy import geometry
from superposition.toy.data import FeatureDistribution, Group
from superposition.toy.model import ToyModel
from superposition.toy.polytopes import name_geometry
from superposition.toy.train import train_toy_model
from superposition.viz import toy as viz


class NonuniformConfig(ToyConfig):
    n_instances: int = Field(9, gt=0, description="points of each sweep")
    n_features: int = Field(5, ge=2, description="(a): the pentagon's features")
    d_hidden: int = Field(2, ge=2, le=2, description="2 dimensions (the pentagon's plane)")
    feature_probability: float = Field(0.05, gt=0.0, le=1.0, description="probability of every other feature")
    vary: Literal["importance", "sparsity"] = Field(
        "importance", description="(a): what of feature 0 is swept"
    )
    low: float = Field(0.1, gt=0.0, description="(a): feature 0's value at one end, relative to the others")
    high: float = Field(10.0, gt=0.0, description="(a): ... and at the other end")
    pair_probability: float = Field(
        0.05, gt=0.0, le=1.0, description="(b): two correlated pairs, each feature's probability"
    )
    triple_probability: float = Field(
        0.5, gt=0.0, le=1.0, description="(b): two correlated triples, each feature's probability"
    )
    replicas: int = Field(3, ge=1, description="initialisations per point, the lowest loss kept")
    lr: float = Field(1e-2, gt=0.0)
    schedule: Literal["constant", "linear", "cosine"] = "cosine"


@register(
    "nonuniform",
    "non-uniform superposition: one feature's importance against a pentagon (the polygon deforms, then "
    "changes shape), and correlated pairs (local orthogonal bases, then a PCA-like collapse)",
    NonuniformConfig,
    quick={"steps": 3000, "n_instances": 7, "replicas": 2},
)
def run(cfg: NonuniformConfig, out: Path) -> Result:
    sweep_a = log_sweep(cfg.high, cfg.low, cfg.n_instances)[::-1].copy()  # low -> high
    a = _one_feature(cfg, sweep_a)
    corr = np.linspace(0.0, 1.0, cfg.n_instances)
    b = _correlated(cfg, corr, 2, cfg.pair_probability, "pairs")
    b3 = _correlated(cfg, corr, 3, cfg.triple_probability, "triples")
    figures = [
        FigureSpec(
            "one_feature",
            f"(a) Feature 0 (darkest) at {cfg.vary} × r against four others: the geometry along the sweep.",
            viz.feature_directions_2d(a["W"], [f"× {v:.3g}: {n}" for v, n in zip(sweep_a, a["names"])]),
        ),
        FigureSpec(
            "correlated",
            "(b) Two pairs (0, 1) and (2, 3), each present together with probability c: the directions "
            "along the sweep.",
            viz.feature_directions_2d(b["W"], [f"c = {c:.2f}" for c in corr]),
        ),
        FigureSpec(
            "correlated_triples",
            "(b) Two triples, each present together with probability c: the directions along the sweep.",
            viz.feature_directions_2d(b3["W"], [f"c = {c:.2f}" for c in corr]),
        ),
        FigureSpec(
            "pair_cosines",
            "(b) Mean cosine between the members of each group against the correlation c: correlated "
            "pairs are orthogonal (a local basis); triples, which cannot be orthogonal in 2 dimensions, "
            "collapse onto one shared direction (cosine 1).",
            viz.pair_cosines(
                corr,
                [w + w3 for w, w3 in zip(b["within"], b3["within"])],
                ["pair 1", "pair 2", "triple 1", "triple 2"],
            ),
        ),
    ]
    highlights = {"(a) transitions": a["verdict"], "(b) pairs": b["verdict"], "(b) triples": b3["verdict"]}
    summary = {
        "one_feature": {k: v for k, v in a.items() if k != "W"}
        | {"sweep": sweep_a.tolist(), "vary": cfg.vary},
        "correlated_pairs": {k: v for k, v in b.items() if k != "W"} | {"correlation": corr.tolist()},
        "correlated_triples": {k: v for k, v in b3.items() if k != "W"} | {"correlation": corr.tolist()},
    }
    explanation = f"""
<p><b>(a)</b> Five features in two dimensions at probability {cfg.feature_probability} form a pentagon.
Feature 0's {cfg.vary} is multiplied by r from {cfg.low} to {cfg.high} while the others stay fixed.
{a["verdict"]}.</p>
<p><b>(b)</b> Two groups of correlated features in two dimensions, each group present together with
probability c and independently otherwise. Pairs (probability {cfg.pair_probability}): {b["verdict"]}.
Triples (probability {cfg.triple_probability}), which cannot all be orthogonal in two dimensions:
{b3["verdict"]}.</p>
"""
    return Result("Toy models: non-uniform superposition", explanation, summary, figures, highlights)


def _one_feature(cfg: NonuniformConfig, sweep: np.ndarray) -> dict:
    n = cfg.n_features
    probs = torch.full((len(sweep), n), cfg.feature_probability, dtype=torch.float64)
    importance = torch.ones(len(sweep), n)
    if cfg.vary == "importance":
        importance[:, 0] = torch.tensor(sweep, dtype=torch.float32)
    else:
        probs[:, 0] = torch.tensor(np.minimum(sweep * cfg.feature_probability, 1.0))
    scfg = cfg.model_copy(update={"n_instances": len(sweep)})
    trained = train_toy(scfg, probs, importance, desc="nonuniform (a)")
    W = trained.W
    names = [name_geometry(w) for w in W]
    norms0 = geometry.feature_norms(W)[:, 0].tolist()
    changes = [
        f"{names[i]} → {names[i + 1]} between × {sweep[i]:.3g} and × {sweep[i + 1]:.3g}"
        for i in range(len(names) - 1)
        if names[i] != names[i + 1]
    ]
    verdict = ("; ".join(changes) if changes else f"the geometry stays {names[0]} over the sweep") + (
        f" (feature 0's norm from {norms0[0]:.2f} to {norms0[-1]:.2f})"
    )
    return {"W": W, "names": names, "feature0_norm": norms0, "transitions": changes, "verdict": verdict,
            "final_loss": trained.final_loss.tolist()}  # fmt: skip


class _GroupMixture:
    """Two groups of g features: each row's groups come from the all-or-none distribution with
    probability c (per instance), otherwise from the independent one."""

    def __init__(self, p: float, corr: np.ndarray, g: int) -> None:
        prob = torch.full((len(corr), 2 * g), p, dtype=torch.float64)
        pairs = [Group("correlated", tuple(range(g))), Group("correlated", tuple(range(g, 2 * g)))]
        self.together, self.apart = FeatureDistribution(prob, pairs), FeatureDistribution(prob)
        self.c = torch.tensor(corr, dtype=torch.float32).view(1, -1, 1)

    def sample(self, batch: int, generator: torch.Generator | None = None, out=None) -> torch.Tensor:
        a, b = self.together.sample(batch, generator), self.apart.sample(batch, generator)
        pick = torch.rand(batch, self.c.shape[1], 1, generator=generator) < self.c
        return torch.where(pick, a, b)


def _correlated(cfg: NonuniformConfig, corr: np.ndarray, g: int, p: float, label: str) -> dict:
    """Two groups of g features with presence correlation c (one model per c): directions, the mean
    cosine within each group, from where it stays near 0 (orthogonal) and where it crosses 0.5
    (collapse)."""
    reps = cfg.replicas
    c = np.repeat(corr, reps)
    source = _GroupMixture(p, c, g)
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "nonuniform-b"))
    model = ToyModel(len(c), 2 * g, 2, generator=gen)
    train_toy_model(
        model, source, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, schedule=cfg.schedule,
        seed=cfg.seed, desc=f"nonuniform (b, {label})",
    )  # fmt: skip
    with torch.no_grad():
        x = source.sample(20_000, torch.Generator().manual_seed(derive_seed(cfg.seed, f"nonuniform-{label}")))
        losses = model.instance_losses(x)
    keep = [int(losses[i * reps : (i + 1) * reps].argmin()) + i * reps for i in range(len(corr))]
    W = model.W.detach()[keep]
    unit = W / W.norm(dim=1, keepdim=True).clamp(min=1e-8)
    off = ~torch.eye(g, dtype=torch.bool)
    within = [
        [float((u[:, s : s + g].T @ u[:, s : s + g])[off].mean()) for s in (0, g)] for u in unit
    ]  # mean cosine between the members of each group
    mean = [sum(w) / 2 for w in within]

    def crossing(level: float) -> str | None:
        for i in range(len(mean) - 1):
            if mean[i] < level <= mean[i + 1]:
                return f"{corr[i]:.2f}–{corr[i + 1]:.2f}"
        return None

    # orthogonal from the first c after which every group's members stay within |cos| < 0.1 (at
    # c = 0 the features are independent and any of them may pair up antipodally)
    ortho = next((f"{corr[i]:.2f}" for i in range(len(mean)) if all(abs(m) < 0.1 for m in mean[i:])), None)
    collapse = crossing(0.5)
    verdict = (
        f"within-group cosine {mean[0]:.2f} at c = 0 and {mean[-1]:.2f} at c = 1"
        + (f"; members orthogonal (a local orthogonal basis) from c = {ortho} on" if ortho else "")
        + (
            f"; collapse onto a shared direction between c = {collapse}"
            if collapse
            else "; no collapse in the sweep"
        )
    )
    return {"W": W, "within": within, "mean_within_cosine": mean, "orthogonal_from": ortho,
            "collapse_between": collapse, "verdict": verdict}  # fmt: skip
