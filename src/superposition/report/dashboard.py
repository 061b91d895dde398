"""A static, offline dashboard of SAE latents: `index.html` (sortable, searchable table of every
latent) and `latents/<j>.html` (one page per latent).

Nothing is fetched from a network. The index's data is JSON inside a <script type="application/json">
element (with `<` escaped, so dataset text can't close the element) and is put on the page with
`textContent` only; latent pages are rendered by Jinja with autoescaping. Dataset text is
untrusted, and neither path lets it become markup.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup

from superposition.report import TEMPLATES


@dataclass
class TokenSpan:
    text: str
    act: float
    alpha: float  # 0..1: colour strength (activation / the latent's max)
    focus: bool = False


@dataclass
class LatentPage:
    index: int
    stats: dict[str, Any]  # shown as a small table (density, max activation, ...)
    histogram: tuple[list[int], list[float]] | None = None  # counts, edges
    top: list[list[TokenSpan]] = field(default_factory=list)
    quantiles: list[tuple[str, list[list[TokenSpan]]]] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)  # title, header, rows
    bars: list[tuple[str, list[str], list[float]]] = field(default_factory=list)  # title, labels, values
    quantiles_title: str = "Examples from activation intervals"


def json_for_script(data: Any) -> str:
    """JSON safe to place inside <script type="application/json">: no '<' survives."""
    return (
        json.dumps(data, separators=(",", ":"))
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )


def histogram_svg(counts: list[int], edges: list[float], width: int = 420, height: int = 140) -> Markup:
    """Bars as inline SVG (numbers only, so it is safe markup)."""
    counts = np.asarray(counts, dtype=float)
    top = max(counts.max(initial=0.0), 1.0)
    bw = width / max(len(counts), 1)
    rects = "".join(
        f'<rect x="{i * bw:.1f}" y="{height - 18 - (c / top) * (height - 24):.1f}" '
        f'width="{max(bw - 1, 1):.1f}" '
        f'height="{(c / top) * (height - 24):.1f}"><title>{edges[i]:.3g}–{edges[i + 1]:.3g}: '
        f"{int(c)}</title></rect>"
        for i, c in enumerate(counts)
    )
    labels = (
        f'<text x="0" y="{height - 4}">{edges[0]:.3g}</text>'
        f'<text x="{width}" y="{height - 4}" text-anchor="end">{edges[-1]:.3g}</text>'
    )
    return Markup(
        f'<svg class="hist" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}">{rects}{labels}</svg>'
    )


def bars_svg(labels: list[str], values: list[float], width: int = 420) -> Markup:
    """Horizontal bars with escaped labels."""
    from markupsafe import escape

    row, pad = 16, 150
    h = row * len(values) + 4
    vmax = max((abs(v) for v in values), default=1.0) or 1.0
    parts = []
    for i, (lab, v) in enumerate(zip(labels, values)):
        w = abs(v) / vmax * (width - pad - 50)
        cls = "pos" if v >= 0 else "neg"
        parts.append(
            f'<text x="{pad - 4}" y="{i * row + 12}" text-anchor="end">{escape(lab)}</text>'
            f'<rect class="{cls}" x="{pad}" y="{i * row + 2}" width="{w:.1f}" height="{row - 4}"></rect>'
            f'<text x="{pad + w + 4:.1f}" y="{i * row + 12}">{v:.3g}</text>'
        )
    return Markup(
        f'<svg class="bars" viewBox="0 0 {width} {h}" width="{width}" height="{h}">{"".join(parts)}</svg>'
    )


def write_dashboard(
    out: Path,
    title: str,
    subtitle: str,
    columns: list[dict],
    rows: list[dict],
    pages: list[LatentPage],
    notes: str = "",
) -> Path:
    """The site as its own output folder at `out`, written whole or not at all (report.output),
    replacing only an earlier site."""
    from superposition.report.output import Result, write_output

    def produce(tmp: Path) -> Result:
        render_site(tmp, title, subtitle, columns, rows, pages, notes)
        return Result(title=title, report=False)

    return write_output(out, "dashboard", produce, None)[0]


def render_site(
    out: Path,
    title: str,
    subtitle: str,
    columns: list[dict],
    rows: list[dict],
    pages: list[LatentPage],
    notes: str = "",
) -> Path:
    """Write the site into the folder `out` (report.output stages it). columns: [{"key", "label",
    "type": "num"|"text"}]; rows: one dict per latent with "id"."""
    tmp = Path(out)
    (tmp / "latents").mkdir()
    (tmp / "style.css").write_text(TEMPLATES.get_template("dashboard.css").render())
    index = TEMPLATES.get_template("dashboard_index.html").render(
        title=title,
        subtitle=subtitle,
        notes=notes,
        columns=columns,
        data=Markup(json_for_script({"columns": columns, "rows": rows})),
        n=len(rows),
    )
    (tmp / "index.html").write_text(index, encoding="utf-8")
    page_t = TEMPLATES.get_template("dashboard_latent.html")
    ids = [p.index for p in pages]
    for n, p in enumerate(pages):
        html = page_t.render(
            title=title,
            p=p,
            prev=ids[n - 1] if n else None,
            next=ids[n + 1] if n + 1 < len(ids) else None,
            hist=histogram_svg(*p.histogram) if p.histogram else None,
            bar_svgs=[(t, bars_svg(labels, vals)) for t, labels, vals in p.bars],
        )
        (tmp / "latents" / f"{p.index}.html").write_text(html, encoding="utf-8")
    return tmp
