"""`meta-sae RUN_DIR`: a BatchTopK meta-SAE on an SAE's decoder directions (sae/meta.py), written as
a run directory: the meta-SAE folder, summary.json (fve, l0, frac_dead), the meta-latents of every
base latent and the base latents of every meta-latent."""

from __future__ import annotations

import csv
import html
from pathlib import Path

from superposition.errors import SuperpositionError
from superposition.files import resolve_out, staged_directory, write_json
from superposition.runs.resolve import experiment_sae, experiment_saes, load_single_sae
from superposition.sae import BatchedSAE

KIND = "meta-sae"


def _base_sae(run_dir: str, sae_name: str | None) -> tuple[BatchedSAE, str]:
    p = Path(run_dir).expanduser()
    if experiment_saes(p) is not None:
        folder = experiment_sae(p, sae_name)
        return load_single_sae(folder, "RUN_DIR"), str(folder)
    if sae_name is not None:
        raise SuperpositionError("--sae: only for an experiment run (a folder with saes/)")
    return load_single_sae(run_dir, "RUN_DIR"), str(run_dir)


def meta_sae(
    run_dir: str,
    out: str | Path,
    width: int | None = None,
    k: int = 4,
    steps: int = 2000,
    lr: float = 1e-3,
    sae_name: str | None = None,
    seed: int = 0,
) -> Path:
    from superposition.report.html import FigureSpec, close_figures, render_report, save_figures
    from superposition.sae.io import save_sae
    from superposition.sae.meta import base_latents_by_meta, meta_latents_of, train_meta_sae
    from superposition.viz.sae import density_histogram

    for flag, value in (("k", k), ("steps", steps), ("width", width)):
        if value is not None and value <= 0:
            raise SuperpositionError(f"--{flag}: must be positive, got {value}")
    if lr <= 0:
        raise SuperpositionError(f"--lr: must be positive, got {lr}")
    out = resolve_out(out)
    base, where = _base_sae(run_dir, sae_name)
    n_base = base.cfg.d_sae
    width = width or max(1, n_base // 4)
    if k > width:
        raise SuperpositionError(f"--k: must be at most the width ({width}), got {k}")
    m = train_meta_sae(base.W_dec[0], width, k, steps, lr=lr, seed=seed)
    summary = {
        "base": where,
        "n_base_latents": n_base,
        "d_in": base.cfg.d_in,
        "width": width,
        "k": k,
        "steps": steps,
        "fve": m.fve,
        "l0": m.l0,
        "frac_dead": m.frac_dead,
    }
    per_base = meta_latents_of(m.z)
    by_meta = base_latents_by_meta(m.z)
    density = (m.z != 0).float().mean(0).tolist()
    with staged_directory(out, KIND) as tmp:
        save_sae(m.sae, tmp / "meta_sae")
        write_json(tmp / "summary.json", summary)
        with open(tmp / "meta_latents.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["base_latent", "meta_latents", "activations"])
            for i, pairs in enumerate(per_base):
                w.writerow([i, " ".join(str(j) for j, _ in pairs), " ".join(f"{a:.4f}" for _, a in pairs)])
        write_json(tmp / "base_latents_by_meta_latent.json", {str(j): v for j, v in by_meta.items()})
        figures = [
            FigureSpec(
                "meta_density",
                "How many base latents each meta-latent is active on (as a fraction of them)",
                density_histogram({"meta-latents": density}),
            )
        ]
        save_figures(figures, tmp)
        text = (
            f"A BatchTopK meta-SAE of {width} latents (k = {k}) on the {n_base} unit-normalised decoder "
            f"rows of {where}: FVE {m.fve:.3f}, L0 {m.l0:.2f}, {m.frac_dead:.1%} of meta-latents dead."
        )
        render_report(tmp, "meta-sae", html.escape(text), figures, summary, {"run_dir": run_dir})
        close_figures(figures)
    return out
