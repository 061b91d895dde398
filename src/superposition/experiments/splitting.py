"""`splitting`: TopK SAEs of growing width on a dictionary with parent/child hierarchies, measured
against the truth: parents split into their children as the width grows, and absorption alongside."""

from __future__ import annotations

import html
from pathlib import Path

import torch
from pydantic import Field, field_validator

from superposition.atomic import atomic_save_tensors
from superposition.experiments.absorption import HierarchyConfig, absorption_rates, hierarchy_source
from superposition.experiments.base import Result, register
from superposition.experiments.sae_common import (
    experiment_train_config,
    matched_training_bytes,
    train_matched,
)
from superposition.report.html import FigureSpec
from superposition.sae import ground_truth as gt
from superposition.sae.io import save_sae
from superposition.sae.splitting import compare
from superposition.seeding import derive_seed
from superposition.viz.sae import training_curves

COLUMNS = [
    "d_sae", "latents_per_family", "parents_recovered", "children_recovered", "absorption", "mcc",
    "explained_variance", "frac_split_from_previous",
]  # fmt: skip


class SplittingConfig(HierarchyConfig):
    widths: list[int] = Field([8, 16, 32, 64, 128], description="d_sae of each SAE, increasing")
    k: int = Field(3, gt=0, description="k of every (TopK) SAE")
    samples: int = Field(400_000, gt=0, description="training examples per SAE")
    batch_size: int = Field(1024, gt=0, description="SAE training batch")
    lr: float = Field(5e-3, gt=0.0, description="SAE learning rate (Adam)")
    seed: int = Field(
        0, description="seeds the data, the SAEs and the evaluation (each purpose its own stream)"
    )

    @field_validator("widths")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if len(v) < 2 or any(w <= 0 for w in v) or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"widths: at least two positive widths, strictly increasing; got {v}")
        return v

    def memory_needed(self) -> int:
        return matched_training_bytes(self.d, max(self.widths), self.batch_size, self.n_features)


def family_latents(W_dec, F, children: dict[int, list[int]]) -> dict:
    """Per width, how the hierarchy is carved: each latent goes to the true feature its decoder
    row is most aligned with; a parent's family is the parent and its children. Returns the mean
    number of latents per family, and the fractions of parents and of children that some latent
    matches at |cos| ≥ 0.9."""
    cos = gt.cosine_matrix(W_dec, F).abs()  # (d_sae, n_features)
    best = cos.argmax(1)  # each latent's feature, as gt.best_matches
    per_family = [int(torch.isin(best, torch.tensor([p, *cs])).sum()) for p, cs in children.items()]
    cos = cos.amax(0)  # each feature's best latent
    kids = [c for cs in children.values() for c in cs]
    return {
        "latents_per_family": sum(per_family) / len(per_family),
        "parents_recovered": float((cos[list(children)] >= 0.9).float().mean()),
        "children_recovered": float((cos[kids] >= 0.9).float().mean()),
    }


@register(
    "splitting",
    "feature splitting: TopK SAEs of growing width on parent/child hierarchies; parents split into children, "
    "absorption alongside",
    SplittingConfig,
    quick={"widths": [8, 32, 128], "samples": 150_000},
)
def run(cfg: SplittingConfig, out: Path) -> Result:
    children, source = hierarchy_source(cfg)
    train = experiment_train_config(cfg)
    x, c = source.sample_with_truth(
        65536, torch.Generator().manual_seed(derive_seed(cfg.seed, "splitting-eval"))
    )
    F = source.features
    rows, previous = [], None
    for width in cfg.widths:
        r = train_matched("topk", source, cfg.d, width, cfg.k, train, F)
        W = r.sae.W_dec.detach()[r.instance]
        with torch.no_grad():
            z = r.sae.encode(x.unsqueeze(1).expand(-1, r.sae.n_instances, -1))[:, r.instance]
        absorbed = absorption_rates(W, F, z, c, children)
        row = {
            "d_sae": width,
            **family_latents(W, F, children),
            "absorption": absorbed["absorption"],
            "parent_miss_without_child": absorbed["parent_miss_without_child"],
            "mcc": r.metrics["mcc"],
            "explained_variance": r.metrics["explained_variance"],
            "l0": r.metrics["l0"],
            "frac_split_from_previous": float("nan"),
        }
        if previous is not None:
            row["frac_split_from_previous"] = compare(previous, W, 0.7)["summary"]["frac_narrow_split"]
        save_sae(r.sae, out / "saes" / f"topk-{width}", r.instance)
        previous = W
        rows.append(row)
    atomic_save_tensors(out / "ground_truth.safetensors", {"features": F.contiguous()})
    w = {k: max(len(k), 8) for k in COLUMNS}
    table = "\n".join(
        [" ".join(f"{k:>{w[k]}}" for k in COLUMNS)]
        + [" ".join(f"{row[k]:>{w[k]}.3f}" for k in COLUMNS) for row in rows]
    )
    print(table)
    explanation = f"""
<p>{cfg.n_parents} parent features with {cfg.children_per_parent} children each (a child fires only with its
parent), plus {cfg.n_other} independent features, in {cfg.d} dimensions; TopK SAEs (k = {cfg.k}) of widths
{", ".join(map(str, cfg.widths))}. Each latent is assigned to the true feature its decoder row is closest to.
<b>latents_per_family</b> counts the latents that land on a parent or its children: about one when the SAE is
too narrow to tell them apart, growing towards {1 + cfg.children_per_parent} as the parent splits into its
children. <b>absorption</b> is the share of examples with a parent and a child present on which the parent's
latent stays silent (see the <code>absorption</code> experiment). <b>frac_split_from_previous</b> is what
<code>compare-saes</code> reports between consecutive widths: the share of the narrower SAE's latents that
two or more of the wider one's latents have as nearest neighbour.</p>
<pre>{html.escape(table)}</pre>
"""
    figures = [
        FigureSpec(
            "splitting",
            "Against the width: latents per parent family, recovery of parents and children, absorption.",
            training_curves(
                rows,
                ["latents_per_family", "parents_recovered", "children_recovered", "absorption"],
                x="d_sae",
            ),
        )
    ]
    highlights = {
        f"d_sae {row['d_sae']}": f"{row['latents_per_family']:.2f} latents per family, children recovered "
        f"{row['children_recovered']:.0%}, absorption {row['absorption']:.1%}"
        for row in rows
    }
    summary = {"hierarchy": {str(p): cs for p, cs in children.items()}, "widths": rows}
    return Result("Feature splitting across SAE widths", explanation, summary, figures, highlights)
