"""`compare-saes A B`: feature splitting across widths, from the decoders alone.

For every latent of the wider SAE, its nearest latent of the narrower one by decoder cosine
(cos(i, j) = ⟨d_i, d_j⟩ / ‖d_i‖‖d_j‖). A *family* is a narrow latent with the wide latents that have
it as their nearest neighbour: a narrow latent that splits has several children, one that persists
has one, one that vanishes none. A wide latent whose best cosine is below `threshold` is *novel*:
nothing in the narrow SAE points its way. Works for any two readable SAEs with the same d_in.
"""

from __future__ import annotations

import csv
import html
from pathlib import Path

from superposition.errors import SuperpositionError
from superposition.files import resolve_out, staged_directory, write_json
from superposition.runs.resolve import load_single_sae
from superposition.sae.splitting import compare

KIND = "compare-saes"


def compare_saes(a_path: str, b_path: str, out: str | Path, threshold: float = 0.7) -> Path:
    if not 0.0 < threshold < 1.0:
        raise SuperpositionError(f"--threshold: must be between 0 and 1, got {threshold}")
    out = resolve_out(out)
    a, b = load_single_sae(a_path, "A"), load_single_sae(b_path, "B")
    r = compare(a.W_dec[0], b.W_dec[0], threshold)
    summary = {"a": str(a_path), "b": str(b_path), **r["summary"]}
    from superposition.viz.sae import splitting_figure

    figure = splitting_figure(r["sizes"].numpy(), r["cosine"].numpy(), threshold)
    with staged_directory(out, KIND) as tmp:
        write_json(tmp / "summary.json", summary)
        with open(tmp / "nearest.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["wide_latent", "nearest_narrow_latent", "cosine", "novel"])
            for j, (i, c, n) in enumerate(
                zip(r["nearest"].tolist(), r["cosine"].tolist(), r["novel"].tolist())
            ):
                w.writerow([j, i, f"{c:.6f}", int(n)])
        write_json(tmp / "families.json", _families(r))
        from superposition.report.html import FigureSpec, close_figures, render_report, save_figures

        figures = [FigureSpec("families", "family sizes and each wide latent's best cosine", figure)]
        save_figures(figures, tmp)
        render_report(
            tmp, "compare-saes", _explanation(summary), figures, summary, {"a": a_path, "b": b_path}
        )
        close_figures(figures)
    return out


def _families(r: dict) -> list[dict]:
    """Narrow latents with their children (wide latents, cosine), largest families first."""
    children: dict[int, list[dict]] = {}
    for j, (i, c) in enumerate(zip(r["nearest"].tolist(), r["cosine"].tolist())):
        children.setdefault(i, []).append({"latent": j, "cosine": round(c, 6)})
    fams = [
        {"narrow_latent": i, "children": sorted(ch, key=lambda x: -x["cosine"])} for i, ch in children.items()
    ]
    return sorted(fams, key=lambda f: (-len(f["children"]), f["narrow_latent"]))


def _explanation(s: dict) -> str:
    return html.escape(
        f"The wider SAE ({s['wide']}, {s['d_sae_wide']} latents) against the narrower ({s['d_sae_narrow']}): "
        f"{s['frac_narrow_split']:.1%} of narrow latents split into two or more wide latents, "
        f"{1 - s['frac_narrow_with_children']:.1%} have none, and {s['frac_novel']:.1%} of wide latents are "
        f"novel (best cosine below {s['threshold']})."
    )
