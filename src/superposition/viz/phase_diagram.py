"""The phase-diagram figure: the phase of the extra feature in each cell, and its norm."""

from __future__ import annotations

import numpy as np

from superposition.toy import geometry
from superposition.viz import on_use

plt = on_use("matplotlib.pyplot")

PHASE_COLOURS = ("#d9d9d9", "#3b6fb6", "#d6452b")  # not represented, dedicated dimension, superposition


def phase_figure(phase: np.ndarray, norm: np.ndarray, density: np.ndarray, rel_imp: np.ndarray, name: str):
    """phase and norm are (importance row, density column) grids over `rel_imp` × `density`."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    extent = [np.log10(density[0]), np.log10(density[-1]), np.log10(rel_imp[0]), np.log10(rel_imp[-1])]
    im = axes[0].imshow(
        phase,
        origin="lower",
        cmap=on_use("matplotlib.colors").ListedColormap(PHASE_COLOURS),
        vmin=-0.5,
        vmax=2.5,
        extent=extent,
        aspect="auto",
        interpolation="nearest",
    )
    cb = fig.colorbar(im, ax=axes[0], ticks=[0, 1, 2])
    cb.ax.set_yticklabels(list(geometry.PHASES))
    im2 = axes[1].imshow(
        norm,
        origin="lower",
        cmap="viridis",
        vmin=0,
        vmax=max(1.0, float(norm.max())),
        extent=extent,
        aspect="auto",
        interpolation="nearest",
    )
    fig.colorbar(im2, ax=axes[1], label="‖W_extra‖")
    for ax, title in zip(axes, ("phase of the extra feature", "norm of the extra feature")):
        ax.set_xlabel("feature density 1 − S (log10), dense → sparse")
        ax.set_ylabel("relative importance of the extra feature (log10)")
        ax.set_title(title)
        ax.axhline(0, color="white", lw=0.6, ls=":")
    fig.suptitle(name)
    fig.tight_layout()
    return fig
