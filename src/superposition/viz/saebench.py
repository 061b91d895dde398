"""The field's figures for many SAEs side by side (eval-sae over several SAEs): L0 against a metric,
one marker per architecture with the Pareto frontier drawn, and one bar per SAE for each metric."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MARKERS = "osD^v<>PXh*"


def _num(v) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def pareto_front(
    points: Sequence[tuple[float, float]], higher_is_better: bool = True
) -> list[tuple[float, float]]:
    """The points no other point beats: lower L0 (x) and a better metric (y), sorted by x."""
    front, best = [], None
    for x, y in sorted(points, key=lambda p: (p[0], -p[1] if higher_is_better else p[1])):
        if best is None or (y > best if higher_is_better else y < best):
            front.append((x, y))
            best = y
    return front


def l0_against(rows: Sequence[Mapping], metric: str, label: str, higher_is_better: bool = True) -> Figure:
    """Each SAE at (L0, metric), one marker per architecture, names beside; the frontier dashed."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    archs = sorted({str(r.get("architecture")) for r in rows})
    pts, named = [], []
    for n, arch in enumerate(archs):
        mine = [
            (r, _num(r.get("l0")), _num(r.get(metric))) for r in rows if str(r.get("architecture")) == arch
        ]
        mine = [(r, x, y) for r, x, y in mine if x is not None and y is not None]
        if not mine:
            continue
        ax.scatter(
            [x for _, x, _ in mine],
            [y for _, _, y in mine],
            marker=MARKERS[n % len(MARKERS)],
            s=60,
            label=arch,
            zorder=3,
        )
        named += mine
        pts += [(x, y) for _, x, y in mine]
    for rank, (r, x, y) in enumerate(
        sorted(named, key=lambda m: (m[1], m[2]))
    ):  # neighbours' names alternate
        ax.annotate(
            str(r["name"]), (x, y), fontsize=7, xytext=(5, -10 if rank % 2 else 4), textcoords="offset points"
        )
    front = pareto_front(pts, higher_is_better)
    if len(front) > 1:
        ax.plot(
            [p[0] for p in front],
            [p[1] for p in front],
            ls="--",
            color="0.4",
            lw=1,
            label="Pareto frontier",
            zorder=2,
        )
    if pts and min(p[0] for p in pts) > 0 and max(p[0] for p in pts) / min(p[0] for p in pts) > 5:
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "1235" else "")  # 20, 30, 50, not 2×10¹
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel("L0 (latents firing per token)")
    ax.set_ylabel(label)
    ax.set_title(f"L0 against {label}")
    ax.grid(alpha=0.3)
    if pts:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def metric_bars(rows: Sequence[Mapping], metric: str, label: str) -> Figure:
    """One bar per SAE for `metric` (missing values left empty)."""
    import matplotlib.pyplot as plt

    names = [str(r["name"]) for r in rows]
    vals = [_num(r.get(metric)) for r in rows]
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(rows) + 2), 3.6))
    ax.bar(range(len(rows)), [v if v is not None else 0 for v in vals], color="tab:blue")
    for i, v in enumerate(vals):
        ax.text(
            i,
            v if v is not None else 0,
            "n/a" if v is None else f"{v:.3g}",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(label)
    ax.set_title(label)
    fig.tight_layout()
    return fig
