"""The one writer of output folders: every experiment and every command hands back a `Result`, and
`write_output` turns it into a folder written whole or not at all.

    OUT/config.json      every setting, enough to repeat the run
    OUT/summary.json     the results (finite JSON: NaN and infinities become null)
    OUT/*.png, *.html    figures; interactive ones share plotly.min.js beside them
    OUT/report.html      everything in one self-contained page (unless the result is a site)
    OUT/.superposition-run.json   the marker: the tool, the kind of output, every file written

`write_output` builds the folder in a hidden sibling and renames it into place (files.staged_directory);
`write_result` writes the same files into a folder that already exists (a train-sae run, which is
written in place so that it can be resumed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from superposition import __version__
from superposition.atomic import resolve_out, staged_directory, write_json
from superposition.report.html import FigureSpec, close_figures, render_report, save_figures


@dataclass
class Result:
    """What an experiment or a command hands back to be written.

    title, explanation (trusted HTML written by the code), summary (summary.json), figures and
    highlights (key numbers for the report). `config`: what config.json records, when that is not
    the options the command was given. `report`: False for outputs that are a site of their own (a
    dashboard) or an SAE folder. `message`: what the CLI prints when the command is done, before
    where the output is."""

    title: str = ""
    explanation: str = ""
    summary: dict[str, Any] | None = None
    figures: list[FigureSpec] = field(default_factory=list)
    highlights: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    report: bool = True
    message: str = ""
    folder: Path | None = None  # where it was written (set by the writer)

    def headline(self) -> dict[str, Any]:
        """The numbers a person looks at first: the highlights, else the summary's top-level
        numbers and words (its first 12)."""
        if self.highlights:
            return dict(self.highlights)
        flat = {
            k: v
            for k, v in (self.summary or {}).items()
            if isinstance(v, int | float | str | bool) and v is not None and k != "version"
        }
        return dict(list(flat.items())[:12])

    def _repr_html_(self) -> str:  # a notebook shows the headline numbers
        import html

        rows = "".join(
            f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
            for k, v in self.headline().items()
        )
        parts = [f"<b>{html.escape(self.title)}</b>" if self.title else ""]
        if self.message:
            parts.append(f"<pre>{html.escape(self.message)}</pre>")
        if rows:
            parts.append(f"<table>{rows}</table>")
        if self.folder is not None:
            parts.append(f"<p>written to <code>{html.escape(str(self.folder))}</code></p>")
        return "".join(parts) or "<i>(no results)</i>"

    def __repr__(self) -> str:
        keys = ", ".join(f"{k}={_fmt(v)}" for k, v in list(self.headline().items())[:6])
        where = f", folder={str(self.folder)!r}" if self.folder is not None else ""
        return f"Result({self.title!r}{', ' if keys else ''}{keys}{where})"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_result(folder: Path, result: Result, config: dict[str, Any] | None) -> None:
    """config.json (unless config is None), summary.json, figures and report.html into `folder`."""
    config = None if config is None else {**config, "version": __version__}
    try:
        if config is not None:
            write_json(folder / "config.json", config)
        if result.summary is not None:
            write_json(folder / "summary.json", result.summary)
        save_figures(result.figures, folder)
        if result.report:
            render_report(
                folder, result.title, result.explanation, result.figures, result.highlights, config or {}
            )
    finally:
        close_figures(result.figures)


def write_output(
    out: str | Path,
    kind: str,
    produce: Callable[[Path], Result],
    config: dict[str, Any] | None,
) -> tuple[Path, Result]:
    """Write output folder `out` (a `kind` of output): `produce(tmp)` computes the results (and may
    write files of its own into tmp); then config.json (`result.config`, else `config`),
    summary.json, figures and report.html join them and the folder is renamed into place.
    Nothing is left at `out` if anything fails."""
    out = resolve_out(out)
    result = None
    try:
        with staged_directory(out, kind) as tmp:
            started = time.time()
            result = produce(tmp)
            if result.summary is not None:
                result.summary.setdefault("elapsed_seconds", round(time.time() - started, 2))
            write_result(tmp, result, result.config if result.config is not None else config)
    finally:
        if result is not None:
            close_figures(result.figures)
    result.folder = out
    return out, result


__all__ = ["FigureSpec", "Result", "write_output", "write_result"]
