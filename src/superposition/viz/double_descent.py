"""Figures of the double-descent experiment: losses against dataset size, the hidden geometry of
training points and features, and their dimensionalities against 2/T."""

from __future__ import annotations

import numpy as np

from superposition.viz import on_use

plt = on_use("matplotlib.pyplot")


def loss_vs_dataset_size(sizes, train, test):
    """Train and test loss against dataset size T (log-log)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.plot(sizes, test, "o-", label="test loss (fresh data)", color="tab:red")
    ax.plot(sizes, train, "o-", label="train loss", color="tab:blue")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dataset size T")
    ax.set_ylabel("loss")
    ax.legend()
    ax.set_title("Double descent in a toy model")
    fig.tight_layout()
    return fig


def hidden_geometry(records):
    """Per T: the hidden vectors of the training points and the 20 longest feature directions.
    records: dicts with T, hidden_vectors [T][2] and W [2][n_features]."""
    n = len(records)
    cols = min(n, 6)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, r in zip(axes.flat, records):
        H = np.asarray(r["hidden_vectors"])
        W = np.asarray(r["W"])
        top = np.argsort(-np.linalg.norm(W, axis=0))[:20]
        scale = max(1e-6, np.abs(H).max(), np.abs(W[:, top]).max())
        for i in top:
            ax.plot([0, W[0, i] / scale], [0, W[1, i] / scale], color="tab:orange", lw=0.8, alpha=0.8)
        ax.scatter(H[:, 0] / scale, H[:, 1] / scale, s=6, color="tab:blue", zorder=3)
        ax.set_xlim(-1.1, 1.1)
        ax.set_ylim(-1.1, 1.1)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"T = {r['T']}", fontsize=9)
    fig.suptitle("Hidden vectors of training points (blue) and feature directions (orange)")
    fig.tight_layout()
    return fig


def dimensionality_vs_dataset_size(records):
    """Dimensionality of each training point and each feature against T, with the curve 2/T."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for r in records:
        d = np.asarray(r["data_dimensionality"])
        f = np.asarray(r["feature_dimensionality"])
        f = f[f > 1e-3]
        ax.scatter(
            np.full(d.shape, r["T"]) * np.exp(np.random.default_rng(0).uniform(-0.05, 0.05, d.shape)),
            d,
            s=4,
            alpha=0.3,
            color="tab:blue",
        )
        ax.scatter(
            np.full(f.shape, r["T"]) * np.exp(np.random.default_rng(1).uniform(-0.05, 0.05, f.shape)),
            f,
            s=4,
            alpha=0.3,
            color="tab:orange",
        )
    sizes = np.array([r["T"] for r in records], dtype=float)
    grid = np.geomspace(sizes.min(), sizes.max(), 200)
    ax.plot(grid, np.minimum(1.0, 2 / grid), "k--", label="2/T")
    ax.plot(
        sizes,
        [r["mean_data_dimensionality"] for r in records],
        "o-",
        color="tab:blue",
        label="training points (mean)",
    )
    ax.plot(
        sizes,
        [r["mean_feature_dimensionality"] for r in records],
        "o-",
        color="tab:orange",
        label="features (mean of the strong ones)",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dataset size T")
    ax.set_ylabel("dimensionality")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
