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

from pydantic import Field, field_validator

from superposition.atomic import write_json
from superposition.commands.base import SAE_HELP, command, positional
from superposition.config import Config
from superposition.report.output import FigureSpec, Result
from superposition.runs.targets import load_single_sae
from superposition.sae.splitting import compare


class CompareOptions(Config):
    """Options of `compare-saes`."""

    a: str = positional(SAE_HELP, "A")
    b: str = positional("the other SAE, with the same d_in (either may be the wider)", "B")
    threshold: float = Field(
        0.7, description="a wide latent whose best decoder cosine is below this is novel"
    )

    @field_validator("threshold")
    @classmethod
    def _between(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError(f"threshold: must be between 0 and 1, got {v}")
        return v


@command(
    "compare-saes",
    "feature splitting: each latent of the wider SAE against the narrower one's",
    CompareOptions,
    kind="compare-saes",
)
def run(opts: CompareOptions, out: Path) -> Result:
    a, _ = load_single_sae(opts.a, "A")
    b, _ = load_single_sae(opts.b, "B")
    r = compare(a.W_dec[0], b.W_dec[0], opts.threshold)
    summary = {"a": opts.a, "b": opts.b, **r["summary"]}
    from superposition.viz.sae import splitting_figure

    figure = splitting_figure(r["sizes"].numpy(), r["cosine"].numpy(), opts.threshold)
    with open(out / "nearest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["wide_latent", "nearest_narrow_latent", "cosine", "novel"])
        for j, (i, c, n) in enumerate(zip(r["nearest"].tolist(), r["cosine"].tolist(), r["novel"].tolist())):
            w.writerow([j, i, f"{c:.6f}", int(n)])
    write_json(out / "families.json", _families(r))
    s = summary
    return Result(
        title="compare-saes",
        explanation=_explanation(summary),
        summary=summary,
        figures=[FigureSpec("families", "family sizes and each wide latent's best cosine", figure)],
        highlights=dict(summary),
        message=(
            f"{s['d_sae_wide']} latents ({s['wide']}) against {s['d_sae_narrow']}: "
            f"{s['frac_narrow_split']:.1%} of narrow latents split, "
            f"{s['frac_novel']:.1%} of wide latents novel, "
            f"mean best cosine {s['mean_max_cosine']:.3f}"
        ),
    )


def compare_saes(a: str, b: str, out: str | Path, threshold: float = 0.7) -> Path:
    """The Python form of `superposition compare-saes A B --out OUT`."""
    from superposition.commands.base import execute

    return execute("compare-saes", CompareOptions(a=str(a), b=str(b), threshold=threshold), out)[0]


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
