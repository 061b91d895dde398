"""Figures for SAEs: latent density histograms, training curves, metrics per SAE, and decoder
directions over the true features of 2-D toy activations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # matplotlib is imported by the functions that draw, not by importing this module
    from matplotlib.figure import Figure


def density_histogram(densities: Mapping[str, Sequence[float]], dead_threshold: float = 0.0) -> Figure:
    """Histogram of log10 latent density (fraction of inputs a latent fires on), one line per
    label; dead latents (density ≤ dead_threshold) are counted at the left edge."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4))
    bins = np.linspace(-6, 0, 49)
    for label, d in densities.items():
        d = np.asarray(d, dtype=float)
        logd = np.log10(np.clip(d, 10**-5.99, None))
        ax.hist(
            logd,
            bins=bins,
            histtype="step",
            lw=1.5,
            label=f"{label} ({(d <= dead_threshold).mean():.0%} dead)",
        )
    ax.axvline(-2, color="0.6", ls=":", lw=1)
    ax.axvline(-1, color="0.6", ls=":", lw=1)
    ax.set_xlabel("log10 latent density (dotted: 1% and 10%; dead latents at the left edge)")
    ax.set_ylabel("latents")
    ax.legend(fontsize=8)
    ax.set_title("Latent density histogram")
    fig.tight_layout()
    return fig


def training_curves(
    rows: Sequence[Mapping[str, float]], keys: Sequence[str], x: str = "tokens", group: str | None = None
) -> Figure:
    """One panel per logged quantity against `x`; with `group` (e.g. hook_name), one line per
    value of that key. Rows without `x` (a damaged log) are left out."""
    import matplotlib.pyplot as plt

    rows = [r for r in rows if x in r]
    keys = [k for k in keys if any(k in r for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(3.6 * max(1, len(keys)), 3.2), squeeze=False)
    labels = list(dict.fromkeys(r.get(group) for r in rows)) if group else [None]
    for ax, k in zip(axes[0], keys):
        for label in labels:
            mine = [r for r in rows if group is None or r.get(group) == label]
            ax.plot([r[x] for r in mine], [r.get(k, np.nan) for r in mine], lw=1.2, label=label)
        if group and len(labels) <= 12 and ax is axes[0][0]:
            ax.legend(fontsize=6)
        ax.set_title(k, fontsize=10)
        ax.set_xlabel(x)
        if k in ("mse", "auxk", "l1"):
            ax.set_yscale("log")
    fig.tight_layout()
    return fig


def metric_bars(metrics: Mapping[str, Mapping[str, float]], columns: Sequence[str]) -> Figure:
    """One bar chart per metric, one bar per SAE: metrics[name][column]."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(columns), figsize=(2.6 * len(columns), 3.4))
    names = list(metrics)
    colours = plt.get_cmap("tab10")(np.arange(len(names)))
    for ax, c in zip(np.atleast_1d(axes), columns, strict=False):
        ax.bar(range(len(names)), [metrics[n].get(c, np.nan) for n in names], color=colours)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, fontsize=8)
        ax.set_title(c, fontsize=10)
    fig.tight_layout()
    return fig


def decoder_directions_2d(
    features, panels: Sequence[tuple], colour: str | None = None, panel_width: float = 2.6
) -> Figure:
    """SAEs on 2-D activations: each panel (W_dec (d_sae, 2), density (d_sae,), title) draws the
    decoder directions (dashed, in `colour` or one tab10 colour per panel; grey for latents that
    never fire) over the true feature directions `features` (n, 2) as black arrows."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(panel_width * len(panels), 3.3))
    for n, (ax, (W_dec, density, title)) in enumerate(zip(np.atleast_1d(axes), panels, strict=True)):
        line_colour = colour or plt.get_cmap("tab10")(n)
        for f in np.asarray(features):
            ax.annotate(
                "",
                xy=f / np.linalg.norm(f),
                xytext=(0, 0),
                arrowprops=dict(arrowstyle="->", color="black", lw=1.6),
            )
        for w, dens in zip(np.asarray(W_dec), density, strict=True):
            w = w / max(1e-8, np.linalg.norm(w))
            ax.plot([0, w[0]], [0, w[1]], ls="--", lw=1.3, color=line_colour if dens > 0 else "0.75")
        ax.set_xlim(-1.15, 1.15)
        ax.set_ylim(-1.15, 1.15)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def splitting_figure(family_sizes: Sequence[int], best_cosines: Sequence[float], threshold: float) -> Figure:
    """compare-saes: how many wide latents each narrow latent has as children, and each wide
    latent's best decoder cosine to the narrow SAE (novel below the threshold)."""
    import matplotlib.pyplot as plt

    sizes, cos = np.asarray(family_sizes), np.asarray(best_cosines, dtype=float)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.hist(sizes, bins=np.arange(0, sizes.max() + 2), align="left", color="#4c72b0")
    ax1.set(xlabel="children per narrow latent", ylabel="narrow latents", title="Family sizes")
    ax2.hist(cos, bins=50, range=(min(0.0, float(cos.min())), 1.0), color="#55a868")
    ax2.axvline(threshold, color="k", ls="--", lw=1, label=f"novel below {threshold}")
    ax2.set(xlabel="best cosine to the narrow SAE", ylabel="wide latents", title="Each wide latent's nearest")
    ax2.legend(frameon=False)
    fig.tight_layout()
    return fig


def latents_over_training(
    runs: Mapping[str, tuple[Sequence[int], Sequence[float], Sequence[float]]], d_sae: int
) -> Figure:
    """Per run (label -> steps, L0, fraction dead): the fraction of latents active on an example
    and the fraction of latents dead, against the training step."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    for label, (steps, l0, dead) in runs.items():
        a.plot(steps, np.asarray(l0, dtype=float) / d_sae, lw=1.3, label=label)
        b.plot(steps, dead, lw=1.3, label=label)
    a.set_title("Active latents per example (L0 / width)", fontsize=10)
    a.set_ylim(bottom=0)
    b.set_title("Dead latents (share of the width)", fontsize=10)
    b.set_ylim(0, 1.02)
    for ax in (a, b):
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def depth_profile(records: Mapping[str, Mapping[str, float]], keys: Sequence[str]) -> Figure:
    """Metrics of a multi-hook run against depth: one panel per key, x = the hook's layer, one
    line per kind of hook point (resid_post, mlp_out, ...)."""
    import re

    import matplotlib.pyplot as plt

    kinds: dict[str, list[tuple[int, Mapping[str, float]]]] = {}
    for hook, rec in records.items():
        m = re.match(r"^blocks\.(\d+)\.(.+)$", hook)
        layer, kind = (int(m.group(1)), m.group(2)) if m else (0, hook)
        kinds.setdefault(kind, []).append((layer, rec))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 3.2), squeeze=False)
    for ax, k in zip(axes[0], keys, strict=True):
        for kind, pts in kinds.items():
            pts = sorted(pts, key=lambda t: t[0])
            ax.plot([p[0] for p in pts], [p[1].get(k, np.nan) for p in pts], "o-", ms=4, lw=1.2, label=kind)
        ax.set_title(k, fontsize=10)
        ax.set_xlabel("layer")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig
