"""Render a run's `report.html`: self-contained (figures inlined, plotly.js embedded once), so it
opens from disk with no network."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.offline
from markupsafe import Markup
from matplotlib.figure import Figure as MplFigure

from superposition.report import TEMPLATES


@dataclass
class FigureSpec:
    """A figure of a run: saved as `<name>.png` (matplotlib) or `<name>.html` (plotly)."""

    name: str
    caption: str
    figure: Any  # matplotlib Figure or plotly Figure


def save_figures(figures: list[FigureSpec], out: Path) -> None:
    """Write every figure into the run directory. Interactive figures share one `plotly.min.js`
    written beside them, so each opens from disk."""
    for spec in figures:
        if isinstance(spec.figure, MplFigure):
            spec.figure.savefig(out / f"{spec.name}.png", dpi=110)
        elif isinstance(spec.figure, go.Figure):
            spec.figure.write_html(out / f"{spec.name}.html", include_plotlyjs="directory", full_html=True)
        else:
            raise TypeError(f"figure {spec.name}: unsupported type {type(spec.figure).__name__}")


def close_figures(figures: list[FigureSpec]) -> None:
    """Free matplotlib figures once written (pyplot keeps every open figure alive)."""
    import matplotlib.pyplot as plt

    for spec in figures:
        if isinstance(spec.figure, MplFigure):
            plt.close(spec.figure)


def render_report(
    out: Path,
    title: str,
    explanation: str,
    figures: list[FigureSpec],
    highlights: dict[str, Any],
    config: dict[str, Any],
) -> Path:
    """Write `report.html`. `explanation` is trusted HTML written by the experiment; every other
    string is escaped."""
    items = []
    for spec in figures:
        if isinstance(spec.figure, MplFigure):
            buf = io.BytesIO()
            spec.figure.savefig(buf, format="png", dpi=110)
            items.append(
                {
                    "kind": "png",
                    "caption": spec.caption,
                    "name": spec.name,
                    "data": base64.b64encode(buf.getvalue()).decode(),
                }
            )
        else:
            html = spec.figure.to_html(
                full_html=False,
                include_plotlyjs=False,
                default_height=f"{spec.figure.layout.height or 500}px",
            )
            items.append({"kind": "plotly", "caption": spec.caption, "name": spec.name, "html": html})
    plotlyjs = plotly.offline.get_plotlyjs() if any(i["kind"] == "plotly" for i in items) else ""
    page = TEMPLATES.get_template("report.html").render(
        title=title,
        explanation=Markup(explanation),
        figures=items,
        highlights=highlights,
        config=config,
        plotlyjs=Markup(plotlyjs),
    )
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
