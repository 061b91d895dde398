"""Render a run's `report.html`: it opens from disk with no network. Static figures are inlined;
interactive ones read the one `plotly.min.js` written beside them in the run's folder (4.8 MB once,
not again inside the page), so the report opens from its folder. Numbers are shown to 4
significant digits."""

from __future__ import annotations

import base64
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from superposition.atomic import atomic_write_bytes, atomic_write_text
from superposition.redact import redact
from superposition.report import TEMPLATES


def _is_mpl(fig) -> bool:
    """A matplotlib Figure? Asked without importing matplotlib (a figure exists only once it is
    imported), so that importing this module, and with it every command, stays fast."""
    mod = sys.modules.get("matplotlib.figure")
    return mod is not None and isinstance(fig, mod.Figure)


def _is_plotly(fig) -> bool:
    """A plotly Figure? Asked without importing plotly, as `_is_mpl`."""
    mod = sys.modules.get("plotly.graph_objs._figure")
    return mod is not None and isinstance(fig, mod.Figure)


@dataclass
class FigureSpec:
    """A figure of a run: saved as `<name>.png` (matplotlib) or `<name>.html` (plotly). `figure` may
    be a function that draws it: drawn when the run is written, after its summary, and a drawing
    that fails costs that figure (the report says why), never the run's results."""

    name: str
    caption: str
    figure: Any  # matplotlib Figure or plotly Figure, or a function of no arguments returning one
    failed: str | None = None  # why a figure drawn late could not be drawn
    _png: bytes | None = field(default=None, repr=False)  # rendered once: the file and the report share it

    def png(self) -> bytes:
        """The matplotlib figure as PNG bytes, rendered on the first call."""
        if self._png is None:
            buf = io.BytesIO()
            self.figure.savefig(buf, format="png", dpi=110)
            self._png = buf.getvalue()
        return self._png

    def resolve(self) -> bool:
        """Draw a figure given as a function; False (and `failed` says why) when it cannot be."""
        if callable(self.figure) and not (_is_mpl(self.figure) or _is_plotly(self.figure)):
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
        if _is_mpl(spec.figure):
            atomic_write_bytes(out / f"{spec.name}.png", spec.png())
        elif _is_plotly(spec.figure):
            page = spec.figure.to_html(include_plotlyjs="directory", full_html=True)
            atomic_write_text(out / f"{spec.name}.html", page)
            if not (out / "plotly.min.js").is_file() or (out / "plotly.min.js").is_symlink():
                # the library's own file: no secret can be in it, so it skips redaction (0.7 s for 4.8 MB)
                import plotly.offline

                atomic_write_bytes(out / "plotly.min.js", plotly.offline.get_plotlyjs().encode())
        else:
            raise TypeError(f"figure {spec.name}: unsupported type {type(spec.figure).__name__}")


def close_figures(figures: list[FigureSpec]) -> None:
    """Free matplotlib figures once written (pyplot keeps every open figure alive)."""
    import matplotlib.pyplot as plt

    for spec in figures:
        if _is_mpl(spec.figure):
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
        if _is_mpl(spec.figure):
            data = base64.b64encode(spec.png()).decode()
            items.append({"kind": "png", "caption": spec.caption, "name": spec.name, "data": data})
        else:
            html = spec.figure.to_html(
                full_html=False,
                include_plotlyjs=False,
                default_height=f"{spec.figure.layout.height or 500}px",
            )
            items.append({"kind": "plotly", "caption": spec.caption, "name": spec.name, "html": html})
    if any(i["kind"] == "plotly" for i in items) and not (out / "plotly.min.js").is_file():
        import plotly.offline

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
