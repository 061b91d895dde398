"""`meta-sae RUN_DIR`: a BatchTopK meta-SAE on an SAE's decoder directions (sae/meta.py), written as
a run directory: the meta-SAE folder, summary.json (fve, l0, frac_dead), the meta-latents of every
base latent and the base latents of every meta-latent."""

from __future__ import annotations

import csv
import html
from pathlib import Path

from pydantic import Field, model_validator

from superposition.atomic import write_json
from superposition.commands.base import PickSAE, SAEOptions, command
from superposition.errors import SuperpositionError
from superposition.report.output import FigureSpec, Result
from superposition.runs.targets import load_single_sae


class MetaOptions(PickSAE, SAEOptions):
    """Options of `meta-sae`."""

    width: int | None = Field(None, gt=0, description="meta-latents (default: a quarter of the base latents)")
    k: int = Field(4, gt=0, description="mean meta-latents per base latent")
    steps: int = Field(2000, gt=0, description="training steps")
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False, description="Adam learning rate")
    seed: int = Field(0, description="random seed")

    @model_validator(mode="after")
    def _k(self):
        if self.width is not None and self.k > self.width:
            raise ValueError(f"k: must be at most the width ({self.width}), got {self.k}")
        return self


@command("meta-sae", "a BatchTopK meta-SAE on an SAE's decoder directions (Bussmann et al.)", MetaOptions,
         kind="meta-sae")  # fmt: skip
def run(opts: MetaOptions, out: Path) -> Result:
    from superposition.sae.io import save_sae
    from superposition.sae.meta import base_latents_by_meta, meta_latents_of, train_meta_sae
    from superposition.viz.sae import density_histogram

    base, where = load_single_sae(opts.sae, "SAE", opts.sae_name, first_of_experiment=True)
    n_base = base.cfg.d_sae
    directions = int((base.W_dec[0].detach().norm(dim=-1) > 0).sum())
    if directions < 2:  # one row has no variance to explain, zero rows no direction to normalise
        raise SuperpositionError(
            f"SAE {where}: {directions} non-zero decoder rows of {n_base}; a meta-SAE needs at least 2 "
            "directions"
        )
    width = opts.width or max(1, n_base // 4)
    k = opts.k
    if k > width:
        raise SuperpositionError(f"k: must be at most the width ({width}), got {k}")
    m = train_meta_sae(base.W_dec[0], width, k, opts.steps, lr=opts.lr, seed=opts.seed)
    summary = {
        "base": where,
        "n_base_latents": n_base,
        "d_in": base.cfg.d_in,
        "width": width,
        "k": k,
        "steps": opts.steps,
        "fve": m.fve,
        "l0": m.l0,
        "frac_dead": m.frac_dead,
    }
    per_base = meta_latents_of(m.z)
    by_meta = base_latents_by_meta(m.z)
    density = (m.z != 0).float().mean(0).tolist()
    save_sae(m.sae, out / "meta_sae")
    with open(out / "meta_latents.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["base_latent", "meta_latents", "activations"])
        for i, pairs in enumerate(per_base):
            w.writerow([i, " ".join(str(j) for j, _ in pairs), " ".join(f"{a:.4f}" for _, a in pairs)])
    write_json(out / "base_latents_by_meta_latent.json", {str(j): v for j, v in by_meta.items()})
    figures = [
        FigureSpec(
            "meta_density",
            "How many base latents each meta-latent is active on (as a fraction of them)",
            density_histogram({"meta-latents": density}),
        )
    ]
    text = (
        f"A BatchTopK meta-SAE of {width} latents (k = {k}) on the {n_base} unit-normalised decoder "
        f"rows of {where}: FVE {m.fve:.3f}, L0 {m.l0:.2f}, {m.frac_dead:.1%} of meta-latents dead."
    )
    return Result(
        title="meta-sae",
        explanation=html.escape(text),
        summary=summary,
        figures=figures,
        highlights=dict(summary),
        message=(
            f"meta-SAE of {width} latents on {n_base} decoder rows: FVE {m.fve:.3f}, "
            f"L0 {m.l0:.2f}, {m.frac_dead:.1%} dead"
        ),
    )


def meta_sae(sae: str | Path, out: str | Path, **options) -> Path:
    """The Python form of `superposition meta-sae SAE --out OUT` (options as keywords)."""
    from superposition.commands.base import execute

    return execute("meta-sae", MetaOptions(sae=str(sae), **options), out)[0]
