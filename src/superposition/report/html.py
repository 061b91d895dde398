"""Render a run's `report.html`: it opens from disk with no network. Static figures are inlined;
interactive ones read the one `plotly.min.js` written beside them in the run's folder (4.8 MB once,
not again inside the page), so the report opens from its folder. Numbers are shown to 4
significant digits."""

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

from superposition.atomic import atomic_write_bytes, atomic_write_text
from superposition.redact import redact
from superposition.report import TEMPLATES


@dataclass
class FigureSpec:
    """A figure of a run: saved as `<name>.png` (matplotlib) or `<name>.html` (plotly). `figure` may
    be a function that draws it: drawn when the run is written, after its summary, and a drawing
    that fails costs that figure (the report says why), never the run's results."""

    name: str
    caption: str
    figure: Any  # matplotlib Figure or plotly Figure, or a function of no arguments returning one
    failed: str | None = None  # why a figure drawn late could not be drawn

    def resolve(self) -> bool:
        """Draw a figure given as a function; False (and `failed` says why) when it cannot be."""
        if callable(self.figure) and not isinstance(self.figure, MplFigure | go.Figure):
            try:
                self.figure = self.figure()
            except Exception as err:  # noqa: BLE001 - any drawing failure loses only this figure
                self.figure = None
                self.failed = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
        return self.figure is not None


def save_figures(figures: list[FigureSpec], out: Path) -> None:
    """Write every figure into the run directory. Interactive figures share one `plotly.min.js`
    written beside them, so each opens from disk."""
    for spec in figures:  # each written whole, replacing (never following) whatever is at its name
        if not spec.resolve():
            continue
        if isinstance(spec.figure, MplFigure):
            buf = io.BytesIO()
            spec.figure.savefig(buf, format="png", dpi=110)
            atomic_write_bytes(out / f"{spec.name}.png", buf.getvalue())
        elif isinstance(spec.figure, go.Figure):
            page = spec.figure.to_html(include_plotlyjs="directory", full_html=True)
            atomic_write_text(out / f"{spec.name}.html", page)
            if not (out / "plotly.min.js").is_file() or (out / "plotly.min.js").is_symlink():
                # the library's own file: no secret can be in it, so it skips redaction (0.7 s for 4.8 MB)
                atomic_write_bytes(out / "plotly.min.js", plotly.offline.get_plotlyjs().encode())
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
        if not spec.resolve():
            items.append({"kind": "failed", "caption": spec.caption, "name": spec.name, "why": spec.failed})
            continue
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
    if any(i["kind"] == "plotly" for i in items) and not (out / "plotly.min.js").is_file():
        atomic_write_bytes(out / "plotly.min.js", plotly.offline.get_plotlyjs().encode())
    page = TEMPLATES.get_template("report.html").render(
        title=title,
        explanation=Markup(explanation),
        figures=items,
        highlights=highlights,
        config=config,
        plotly=any(i["kind"] == "plotly" for i in items),
    )
    path = out / "report.html"
    atomic_write_bytes(path, redact(page).encode("utf-8"))
    return path
