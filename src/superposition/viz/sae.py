"""Figures for SAEs: latent density histograms and training curves."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
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


def training_curves(rows: Sequence[Mapping[str, float]], keys: Sequence[str], x: str = "tokens") -> Figure:
    """One panel per logged quantity against `x`."""
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(k in r for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(3.6 * max(1, len(keys)), 3.2), squeeze=False)
    xs = [r[x] for r in rows]
    for ax, k in zip(axes[0], keys):
        ax.plot(xs, [r.get(k, np.nan) for r in rows], lw=1.2)
        ax.set_title(k, fontsize=10)
        ax.set_xlabel(x)
        if k in ("mse", "auxk", "l1"):
            ax.set_yscale("log")
    fig.tight_layout()
    return fig
