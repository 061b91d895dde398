"""Figures of toy-model geometry: static (matplotlib) and interactive (plotly).

Every function takes plain tensors/arrays and returns a figure; saving is the caller's job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from superposition.toy import geometry
from superposition.viz import on_use

if TYPE_CHECKING:
    from matplotlib.figure import Figure


plt = on_use("matplotlib.pyplot")
go = on_use("plotly.graph_objects")


def make_subplots(*args, **kwargs):
    from plotly.subplots import make_subplots as make

    return make(*args, **kwargs)


FRACTION_LABELS = {1.0: "1", 3 / 4: "3/4", 2 / 3: "2/3", 1 / 2: "1/2", 2 / 5: "2/5", 3 / 8: "3/8"}


def _grid(n: int, max_cols: int = 8, size: float = 2.4) -> tuple[Figure, np.ndarray]:
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + 0.4), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat)


def _square_panel(ax, lim: float, title: str) -> None:
    """A bare square panel from -lim to lim on both axes."""
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def feature_directions_2d(W: Tensor, titles: Sequence[str], importance: Tensor | None = None) -> Figure:
    """Each instance's feature directions W_i in its 2-D hidden space, side by side, coloured by
    importance (bright = important)."""
    W = W.detach().cpu()
    n_inst, _, n_feat = W.shape
    imp = importance if importance is not None else np.ones((n_inst, n_feat))
    imp = np.broadcast_to(np.asarray(imp, dtype=float), (n_inst, n_feat))
    cmap = plt.get_cmap("viridis")
    fig, axes = _grid(n_inst)
    lim = max(1.2, float(W.abs().max()) * 1.1)
    for i, ax in enumerate(axes):
        if i >= n_inst:
            break
        ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, ls=":", color="0.7"))
        span = imp[i].max() - imp[i].min()
        for f in range(n_feat):
            c = cmap(0.15 + 0.85 * ((imp[i, f] - imp[i].min()) / span if span > 0 else 1.0))
            x, y = W[i, 0, f].item(), W[i, 1, f].item()
            ax.plot([0, x], [0, y], color=c, lw=1.5)
            ax.scatter([x], [y], color=c, s=14, zorder=3)
        _square_panel(ax, lim, titles[i])
    fig.suptitle("Feature directions $W_i$ in the hidden plane (colour: importance)", fontsize=11)
    fig.tight_layout()
    return fig


def gram_heatmaps(W: Tensor, titles: Sequence[str]) -> Figure:
    """WᵀW per instance: the diagonal shows which features are represented, off-diagonal entries
    show interference between pairs."""
    W = W.detach().cpu()
    gram = (W.transpose(1, 2) @ W).numpy()
    vmax = max(1.0, float(np.abs(gram).max()))
    fig, axes = _grid(gram.shape[0])
    im = None
    for i, ax in enumerate(axes):
        if i >= gram.shape[0]:
            break
        im = ax.imshow(gram[i], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(titles[i], fontsize=9)
    fig.suptitle("$W^T W$ (red: positive, blue: negative)", fontsize=11)
    fig.tight_layout()
    if im is not None:
        fig.colorbar(im, ax=list(axes), shrink=0.6)
    return fig


def superposition_bars(W: Tensor, titles: Sequence[str], max_cols: int = 8) -> Figure:
    """Per instance, the norm ‖W_i‖ of every feature as a bar, coloured by its interference
    Σ_{j≠i} (Ŵ_i·W_j)²: black = a dedicated dimension, yellow = in superposition."""
    W = W.detach().cpu()
    norms = geometry.feature_norms(W).numpy()
    interf = geometry.interference(W).clamp(0, 1).numpy()
    n_inst, n_feat = norms.shape
    cmap = plt.get_cmap("inferno")
    cols = min(n_inst, max_cols)
    rows = math.ceil(n_inst / cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(1.9 * cols, 0.5 + min(6.0, 0.16 * n_feat + 0.8) * rows),
        squeeze=False,
        sharex=True,
    )
    for ax in axes.flat[n_inst:]:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n_inst]):
        ax.barh(np.arange(n_feat), norms[i], color=cmap(0.1 + 0.8 * interf[i]), height=0.8)
        ax.invert_yaxis()
        ax.set_yticks([])
        ax.set_xlim(0, max(1.1, float(norms.max()) * 1.05))
        ax.set_title(titles[i], fontsize=9)
    fig.suptitle("Feature norms $\\|W_i\\|$ (colour: interference, black = none, yellow = high)", fontsize=11)
    fig.tight_layout()
    return fig


def dimensions_per_feature(
    inv_sparsity: np.ndarray, dims_per_feature: np.ndarray, feature_dims: np.ndarray
) -> Figure:
    """Dimensions per feature D* = m/‖W‖_F² (line) and every feature's dimensionality D_i (dots)
    against 1/(1−S) on a log axis, with the sticky fractions marked."""
    fig, ax = plt.subplots(figsize=(8, 4.8))
    n_inst, n_feat = feature_dims.shape
    xs = np.repeat(inv_sparsity[:, None], n_feat, axis=1)
    jitter = np.exp(np.random.default_rng(0).uniform(-0.03, 0.03, size=xs.shape))
    keep = feature_dims > 0.02
    ax.scatter(
        (xs * jitter)[keep],
        feature_dims[keep],
        s=5,
        alpha=0.35,
        color="tab:blue",
        label="feature dimensionality $D_i$",
    )
    ax.plot(
        inv_sparsity,
        dims_per_feature,
        color="black",
        lw=2,
        marker="o",
        ms=4,
        label="dimensions per feature $m/\\|W\\|_F^2$",
    )
    for frac, label in FRACTION_LABELS.items():
        ax.axhline(frac, color="tab:red", ls=":", lw=0.9)
        ax.text(inv_sparsity.max() * 1.08, frac, label, va="center", fontsize=9, color="tab:red")
    ax.set_xscale("log")
    ax.set_xlabel("1 / (1 − S)   (S = sparsity, 1/(1−S) = 1 / feature probability)")
    ax.set_ylabel("dimensions per feature")
    ax.set_ylim(0, 1.1)
    ax.legend(loc="lower left", fontsize=9)
    ax.set_title("Features stick to fractions of a dimension as sparsity grows")
    fig.tight_layout()
    return fig


def feature_dimensionality_scatter(inv_sparsity: np.ndarray, feature_dims: np.ndarray) -> Figure:
    """Histogram-like strip per instance of D_i, showing the clusters at the sticky fractions."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 1]})
    ax = axes[0]
    n_inst, n_feat = feature_dims.shape
    for i in range(n_inst):
        d = feature_dims[i][feature_dims[i] > 0.02]
        ax.scatter(
            np.full_like(d, i) + np.random.default_rng(i).uniform(-0.3, 0.3, d.shape), d, s=4, alpha=0.4
        )
    for frac in FRACTION_LABELS:
        ax.axhline(frac, color="0.5", ls=":", lw=0.8)
    ax.set_xticks(range(n_inst))
    ax.set_xticklabels([f"{v:.3g}" for v in inv_sparsity], rotation=90, fontsize=7)
    ax.set_xlabel("1 / (1 − S) of the instance")
    ax.set_ylabel("feature dimensionality $D_i$")
    ax.set_ylim(0, 1.1)
    # the histogram leaves out D_i < 0.3: heavily packed features would swamp the sticky peaks
    all_d = feature_dims[feature_dims >= 0.3]
    axes[1].hist(all_d, bins=80, range=(0.3, 1.1), orientation="horizontal", color="tab:blue")
    for frac, label in FRACTION_LABELS.items():
        axes[1].axhline(frac, color="tab:red", ls=":", lw=0.8)
        axes[1].text(
            axes[1].get_xlim()[1] * 0.98, frac, label, ha="right", va="bottom", fontsize=8, color="tab:red"
        )
    axes[1].set_ylim(0, 1.1)
    axes[1].set_xlabel("count, D_i ≥ 0.3 (all instances)")
    fig.suptitle("Per-feature dimensionality $D_i = \\|W_i\\|^2 / \\sum_j (\\hat W_i \\cdot W_j)^2$")
    fig.tight_layout()
    return fig


def loss_curves(steps: Sequence[int], losses: np.ndarray, labels: Sequence[str]) -> Figure:
    """Training loss per instance (log scale)."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    cmap = plt.get_cmap("plasma")
    n = losses.shape[1]
    for i in range(n):
        ax.plot(
            steps,
            losses[:, i],
            color=cmap(i / max(1, n - 1) * 0.9),
            lw=1,
            label=labels[i] if n <= 12 else None,
        )
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if n <= 12:
        ax.legend(fontsize=7, ncol=2)
    ax.set_title("Training loss per instance")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- interactive (plotly)


def _importance_hue(value: float, imp: np.ndarray) -> str:
    """An HSL colour from blue (least important) to red (most)."""
    return f"hsl({int(260 * (1 - (value - imp.min()) / max(1e-9, np.ptp(imp))))},70%,45%)"


def feature_directions_2d_interactive(
    W: Tensor, titles: Sequence[str], importance: Tensor | None = None
) -> go.Figure:
    """Interactive version of `feature_directions_2d`: hover shows feature, norm and importance."""
    W = W.detach().cpu().numpy()
    n_inst, _, n_feat = W.shape
    imp = np.broadcast_to(
        np.asarray(importance if importance is not None else 1.0, dtype=float), (n_inst, n_feat)
    )
    cols = min(n_inst, 5)
    rows = math.ceil(n_inst / cols)
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=list(titles), horizontal_spacing=0.02, vertical_spacing=0.06
    )
    for i in range(n_inst):
        r, c = i // cols + 1, i % cols + 1
        for f in range(n_feat):
            x, y = W[i, 0, f], W[i, 1, f]
            fig.add_trace(
                go.Scatter(
                    x=[0, x],
                    y=[0, y],
                    mode="lines+markers",
                    marker=dict(size=[0, 7]),
                    line=dict(
                        color=_importance_hue(imp[i, f], imp),
                    ),
                    hovertext=f"feature {f}<br>norm {np.hypot(x, y):.3f}<br>importance {imp[i, f]:.3g}",
                    hoverinfo="text",
                    showlegend=False,
                ),
                row=r,
                col=c,
            )
        fig.update_xaxes(range=[-1.3, 1.3], visible=False, row=r, col=c)
        fig.update_yaxes(range=[-1.3, 1.3], visible=False, scaleanchor=f"x{i + 1 if i else ''}", row=r, col=c)
    fig.update_layout(
        height=260 * rows + 60,
        title="Feature directions (hover for details)",
        margin=dict(l=10, r=10, t=70, b=10),
    )
    return fig


def dimensions_per_feature_interactive(
    inv_sparsity: np.ndarray, dims_per_feature: np.ndarray, feature_dims: np.ndarray
) -> go.Figure:
    fig = go.Figure()
    n_inst, n_feat = feature_dims.shape
    xs, ys, text = [], [], []
    for i in range(n_inst):
        for f in range(n_feat):
            if feature_dims[i, f] > 0.02:
                xs.append(inv_sparsity[i])
                ys.append(feature_dims[i, f])
                text.append(f"instance {i}, feature {f}: D = {feature_dims[i, f]:.3f}")
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers",
            marker=dict(size=4, opacity=0.4),
            hovertext=text,
            hoverinfo="text",
            name="feature dimensionality D_i",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=inv_sparsity,
            y=dims_per_feature,
            mode="lines+markers",
            line=dict(color="black"),
            name="dimensions per feature",
        )
    )
    for frac, label in FRACTION_LABELS.items():
        fig.add_hline(
            y=frac,
            line_dash="dot",
            line_color="firebrick",
            annotation_text=label,
            annotation_position="right",
        )
    fig.update_xaxes(type="log", title="1 / (1 − S)")
    fig.update_yaxes(title="dimensions per feature", range=[0, 1.1])
    fig.update_layout(height=480, title="Dimensions per feature against sparsity")
    return fig


def weight_heatmaps(
    mats: Tensor | np.ndarray, titles: Sequence[str], xlabel: str, ylabel: str, suptitle: str
) -> Figure:
    """One signed heat map per instance (red positive, blue negative), e.g. W as neurons × features."""
    mats = np.asarray(mats.detach().cpu() if isinstance(mats, Tensor) else mats)
    vmax = max(1e-6, float(np.abs(mats).max()))
    fig, axes = _grid(mats.shape[0], size=2.6)
    im = None
    for i, ax in enumerate(axes[: mats.shape[0]]):
        im = ax.imshow(mats[i], cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest")
        ax.set_title(titles[i], fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.6)
    return fig


def neuron_stacked_bars(W: Tensor, titles: Sequence[str], mono: Tensor | None = None) -> Figure:
    """Per instance and neuron, the weights from every feature stacked into one bar, coloured by
    feature: positive weights above zero, negative below. A monosemantic neuron is one colour."""
    W = W.detach().cpu().numpy()  # (inst, hidden, feat)
    n_inst, n_hidden, n_feat = W.shape
    colours = plt.get_cmap("tab20" if n_feat > 10 else "tab10")
    fig, axes = _grid(n_inst, size=2.6)
    for i, ax in enumerate(axes[:n_inst]):
        pos_base = np.zeros(n_hidden)
        neg_base = np.zeros(n_hidden)
        for f in range(n_feat):
            w = W[i, :, f]
            pos, neg = np.clip(w, 0, None), np.clip(w, None, 0)
            ax.bar(
                np.arange(n_hidden),
                pos,
                bottom=pos_base,
                color=colours(f % 20),
                width=0.8,
                label=f"feature {f}" if i == 0 else None,
            )
            ax.bar(np.arange(n_hidden), neg, bottom=neg_base, color=colours(f % 20), width=0.8)
            pos_base += pos
            neg_base += neg
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks(range(n_hidden))
        labels = [f"n{j}{'*' if mono is not None and bool(mono[i, j]) else ''}" for j in range(n_hidden)]
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_title(titles[i], fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(n_feat, 10), fontsize=7, frameon=False)
    fig.suptitle("Each neuron's input weights, stacked by feature (* = monosemantic)", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def dimensionality_over_time(steps: np.ndarray, dims: np.ndarray, losses: np.ndarray) -> Figure:
    """Every feature's dimensionality D_i through training (one thin line each) above the loss."""
    fig, (ax, ax_loss) = plt.subplots(
        2, 1, figsize=(9, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot(steps, dims, lw=0.7, alpha=0.45)
    for frac, label in FRACTION_LABELS.items():
        ax.axhline(frac, color="black", ls=":", lw=0.7)
        ax.text(steps[-1] * 1.01, frac, label, va="center", fontsize=8)
    ax.set_ylabel("feature dimensionality $D_i$")
    ax.set_ylim(-0.02, 1.1)
    ax.set_title("Feature dimensionality through training: plateaus joined by sudden jumps")
    ax_loss.plot(steps, losses, color="black")
    ax_loss.set_yscale("log")
    ax_loss.set_xscale(
        "symlog", linthresh=max(1, int(steps[1]) if len(steps) > 1 else 1)
    )  # early jumps are fast
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    fig.tight_layout()
    return fig


def dimensionality_slider(steps: np.ndarray, dims: np.ndarray, losses: np.ndarray) -> go.Figure:
    """Interactive: features (sorted by final D_i) and their dimensionality, one frame per snapshot,
    with a slider over training steps."""
    order = np.argsort(-dims[-1])
    x = np.arange(dims.shape[1])
    frames = [
        go.Frame(
            data=[go.Scatter(x=x, y=dims[t, order], mode="markers", marker=dict(size=5))],
            name=str(int(steps[t])),
            layout=go.Layout(title=f"step {int(steps[t])}: loss {losses[t]:.4g}"),
        )
        for t in range(len(steps))
    ]
    fig = go.Figure(data=frames[0].data, frames=frames)
    for frac, label in FRACTION_LABELS.items():
        fig.add_hline(
            y=frac, line_dash="dot", line_color="gray", annotation_text=label, annotation_position="right"
        )
    fig.update_layout(
        height=520,
        title=frames[0].layout.title.text,
        xaxis=dict(title="feature (sorted by final dimensionality)"),
        yaxis=dict(title="D_i", range=[-0.02, 1.1]),
        sliders=[
            dict(
                active=0,
                currentvalue=dict(prefix="step "),
                steps=[
                    dict(
                        method="animate",
                        label=f.name,
                        args=[
                            [f.name],
                            dict(
                                mode="immediate",
                                frame=dict(duration=0, redraw=True),
                                transition=dict(duration=0),
                            ),
                        ],
                    )
                    for f in frames
                ],
            )
        ],
        updatemenus=[
            dict(
                type="buttons",
                showactive=False,
                x=0,
                y=1.15,
                buttons=[
                    dict(
                        label="play",
                        method="animate",
                        args=[None, dict(frame=dict(duration=60, redraw=True), fromcurrent=True)],
                    )
                ],
            )
        ],
    )
    return fig


def ranked_losses(names: Sequence[str], losses: Sequence[float], stderr: Sequence[float]) -> Figure:
    """Horizontal bars of losses (lowest at the top) with ± 2 standard-error whiskers."""
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(names) + 1.2))
    y = np.arange(len(names))[::-1]
    ax.barh(y, losses, xerr=2 * np.asarray(stderr), color="#4c72b0", ecolor="black", capsize=2)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel("expected loss")
    lo, hi = min(losses), max(losses)
    ax.set_xlim(max(0.0, lo - 0.1 * (hi - lo + 1e-12)), hi + 0.05 * (hi - lo + 1e-12))
    fig.tight_layout()
    return fig


def feature_directions_3d(W: Tensor, titles: Sequence[str]) -> go.Figure:
    """Interactive 3-D feature directions: one scene per instance, a line from the origin to each
    column of W (inst, 3, feat); hover shows the feature and its norm."""
    W = W.detach().cpu().numpy()
    n_inst, _, n_feat = W.shape
    cols = min(n_inst, 4)
    rows = math.ceil(n_inst / cols)
    specs = [[{"type": "scene"}] * cols for _ in range(rows)]
    fig = make_subplots(rows=rows, cols=cols, specs=specs, subplot_titles=list(titles))
    palette = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]
    for i in range(n_inst):
        for f in range(n_feat):
            x, y, z = W[i, :, f]
            fig.add_trace(
                go.Scatter3d(
                    x=[0, x], y=[0, y], z=[0, z], mode="lines+markers", marker=dict(size=[0, 4]),
                    line=dict(color=palette[f % len(palette)], width=5),
                    hovertext=f"feature {f}<br>norm {np.sqrt(x * x + y * y + z * z):.3f}", hoverinfo="text",
                    showlegend=False,
                ),
                row=i // cols + 1, col=i % cols + 1,
            )  # fmt: skip
    axis = dict(range=[-1.2, 1.2], showticklabels=False, title="")
    fig.update_scenes(xaxis=axis, yaxis=axis, zaxis=axis, aspectmode="cube")
    fig.update_layout(height=320 * rows + 60, margin=dict(l=5, r=5, t=60, b=5))
    return fig


def vulnerability(per_dim: np.ndarray, rows: Sequence[dict]) -> Figure:
    """Loss increase against features per dimension: adversarial (solid) and random (dashed)
    perturbations, one colour per budget ε (rows: {"epsilon", "adversarial", "random"})."""
    fig, ax = plt.subplots(figsize=(6, 4))
    order = np.argsort(per_dim)
    for k, row in enumerate(rows):
        color = plt.cm.viridis(k / max(1, len(rows) - 1))
        ax.plot(
            per_dim[order],
            np.asarray(row["adversarial"])[order],
            "o-",
            color=color,
            label=f"ε = {row['epsilon']}",
        )
        ax.plot(per_dim[order], np.asarray(row["random"])[order], "--", color=color, alpha=0.7)
    ax.set_xlabel("features per dimension (‖W‖²_F / d)")
    ax.set_ylabel("loss increase")
    ax.set_yscale("log")
    ax.legend(title="solid: worst case; dashed: random", fontsize=8, title_fontsize=8)
    fig.tight_layout()
    return fig


def convergence(
    steps: Sequence[int],
    gap: Sequence[float],
    angle: Sequence[float | None],
    default_gap: float,
    default_angle: float | None,
) -> Figure:
    """Loss gap to the optimum (log scale) and angle error against steps, with the default
    training's final values as dashed lines."""
    has_angle = any(a is not None for a in angle)
    fig, axes = plt.subplots(1, 2 if has_angle else 1, figsize=(9 if has_angle else 4.8, 3.4), squeeze=False)
    ax = axes[0, 0]
    ax.plot(steps, np.maximum(np.asarray(gap), 1e-9), "o-", ms=3, label="notebook setup")
    ax.axhline(max(default_gap, 1e-9), ls="--", color="gray", label="default training (final)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss above the lowest candidate")
    ax.legend(fontsize=8)
    if has_angle:
        ax = axes[0, 1]
        ax.plot(steps, [np.nan if a is None else a for a in angle], "o-", ms=3)
        if default_angle is not None:
            ax.axhline(default_angle, ls="--", color="gray")
        ax.set_xlabel("step")
        ax.set_ylabel("angle error (degrees)")
    fig.tight_layout()
    return fig


def pair_cosines(corr: np.ndarray, within: Sequence[Sequence[float]], labels: Sequence[str]) -> Figure:
    """Mean cosine between the members of each correlated group against the correlation."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    w = np.asarray(within)
    for j in range(w.shape[1]):
        ax.plot(corr, w[:, j], "o-", ms=4, label=labels[j])
    for level in (-0.5, 0.5):
        ax.axhline(level, ls=":", color="gray")
    ax.set_xlabel("correlation c of the pair's presence")
    ax.set_ylabel("mean cosine within the group")
    ax.set_ylim(-1.05, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def correlation_beside_gram(corr: Tensor, W: Tensor, titles: Sequence[str]) -> Figure:
    """Per instance, the data's feature correlation matrix above the model's WᵀW, both on a signed
    scale (red positive, blue negative)."""
    corr = corr.detach().cpu().numpy()
    W = W.detach().cpu()
    gram = (W.transpose(1, 2) @ W).numpy()
    n = corr.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(2.4 * n, 5.0), squeeze=False)
    gmax = max(1.0, float(np.abs(gram).max()))
    for i in range(n):
        for row, (mat, vmax, label) in enumerate(
            ((corr[i], 1.0, "data: correlation"), (gram[i], gmax, "model: WᵀW"))
        ):
            ax = axes[row, i]
            ax.imshow(mat, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{titles[i]}\n{label}" if row == 0 else label, fontsize=8)
    fig.tight_layout()
    return fig


def active_fraction_over_training(steps: Sequence[int], active: np.ndarray, labels: Sequence[str]) -> Figure:
    """Share of hidden neurons active (> 0) on an example, averaged over examples, per instance
    (`active` is (step, instance)) against the training step."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    cmap = plt.get_cmap("plasma")
    n = active.shape[1]
    for i in range(n):
        ax.plot(steps, active[:, i], color=cmap(i / max(1, n - 1) * 0.9), lw=1.2, label=labels[i])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel("active neurons per example")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Fraction of neurons active over training")
    fig.tight_layout()
    return fig


def hidden_states_2d(
    W: Tensor, samples: Sequence[Tensor], n_active: Sequence[Tensor], titles: Sequence[str]
) -> Figure:
    """Per instance, the 2-D hidden state h = W x of each feature alone (x = e_i: arrows, numbered)
    and of sampled inputs (dots, coloured by how many features are present)."""
    from matplotlib.lines import Line2D

    W = W.detach().cpu()
    fig, axes = _grid(W.shape[0], size=2.6)
    groups = ((3, "tab:green", "3+ present"), (2, "tab:orange", "2 present"), (1, "tab:blue", "1 present"))
    for i, ax in enumerate(axes[: W.shape[0]]):
        h, k = samples[i].detach().cpu().numpy(), n_active[i].cpu().numpy()
        for f in range(W.shape[2]):
            x, y = W[i, 0, f].item(), W[i, 1, f].item()
            ax.annotate(
                "", (x, y), (0, 0), arrowprops={"arrowstyle": "->", "color": "0.35", "lw": 0.8}, zorder=1
            )
            ax.text(1.1 * x, 1.1 * y, str(f), fontsize=7, ha="center", va="center")
        for count, colour, _ in groups:  # single-feature points last, on top of the arrows
            sel = k >= 3 if count == 3 else k == count
            if sel.any():
                ax.scatter(h[sel, 0], h[sel, 1], s=5, alpha=0.6, color=colour, lw=0, zorder=2 + (count == 1))
        lim = 1.2 * max(float(W[i].norm(dim=0).max()), float(np.abs(h).max()) if h.size else 0.0, 1e-6)
        _square_panel(ax, lim, titles[i])
    handles = [Line2D([], [], marker="o", ls="", color=c, label=lab) for _, c, lab in groups[::-1]]
    handles.append(Line2D([], [], color="0.35", label="feature i alone (x = e_i)"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


KIND_COLOURS = {"dedicated dimension": "tab:gray", "digon": "tab:blue", "triangle": "tab:orange",
                "tetrahedron": "tab:green", "pentagon": "tab:red", "square antiprism": "tab:purple",
                "hexagon": "tab:brown", "other": "tab:pink"}  # fmt: skip


def dimensionality_by_kind(
    inv_sparsity: np.ndarray, feature_dims: np.ndarray, kinds: Sequence[Sequence[str]]
) -> Figure:
    """The paper's scatter of each feature's dimensionality against 1/(1−S), every point coloured
    by the kind of polytope its group forms (toy/polytopes.feature_groups); dotted lines at the
    sticky fractions."""
    fig, ax = plt.subplots(figsize=(10, 4.6))
    x = np.log10(np.asarray(inv_sparsity, dtype=float))
    width = 0.35 * (np.diff(x).min() if len(x) > 1 else 1.0)
    seen = set()
    for i in range(feature_dims.shape[0]):
        rng = np.random.default_rng(i)
        for kind in dict.fromkeys(kinds[i]):
            if kind == "not represented":
                continue
            idx = [j for j, k in enumerate(kinds[i]) if k == kind]
            d = feature_dims[i][idx]
            colour = KIND_COLOURS.get(kind, KIND_COLOURS["other"])
            label = kind if kind not in seen else None
            seen.add(kind)
            ax.scatter(
                x[i] + rng.uniform(-width, width, d.shape), d, s=6, alpha=0.6, color=colour, label=label
            )
    for frac in FRACTION_LABELS:
        ax.axhline(frac, color="0.5", ls=":", lw=0.8)
    ticks = np.linspace(x.min(), x.max(), min(6, len(x)))
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{10**t:.3g}" for t in ticks])
    ax.set_xlabel("1 / (1 − S)")
    ax.set_ylabel("feature dimensionality $D_i$")
    ax.set_ylim(0, 1.1)
    ax.legend(fontsize=7, markerscale=2, loc="upper right", ncol=2)
    fig.tight_layout()
    return fig


def polytopes_in_subspaces(W: Tensor, groups: Sequence, title: str) -> Figure:
    """One example of each kind of group of one instance, drawn in its own subspace (the span of its
    features, from their SVD): a digon, triangle or pentagon in the plane, a tetrahedron or square
    antiprism in 3-D; each feature's direction from the origin."""
    from mpl_toolkits.mplot3d import Axes3D  # noqa: F401 - registers the 3-D projection

    examples = {}
    for g in groups:
        if g.kind not in ("dedicated dimension", "other") and g.kind not in examples and g.rank in (1, 2, 3):
            examples[g.kind] = g
    n = max(1, len(examples))
    fig = plt.figure(figsize=(3.2 * n, 3.4))
    for k, (kind, g) in enumerate(examples.items(), 1):
        V = W[:, g.features].double()
        u, s, _ = torch.linalg.svd(V, full_matrices=False)
        r = max(2, g.rank)
        P = (u[:, :r].T @ V).numpy()  # (r, features): the group in its own subspace
        colour = KIND_COLOURS.get(kind, KIND_COLOURS["other"])
        if r == 3:
            ax = fig.add_subplot(1, n, k, projection="3d")
            for j in range(P.shape[1]):
                ax.plot([0, P[0, j]], [0, P[1, j]], [0, P[2, j]], color=colour, lw=1.5)
            ax.scatter(*P, color=colour, s=14)
            lim = float(np.abs(P).max()) * 1.1
            ax.set(xlim=(-lim, lim), ylim=(-lim, lim), zlim=(-lim, lim))
            ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
        else:
            ax = fig.add_subplot(1, n, k)
            for j in range(P.shape[1]):
                ax.plot([0, P[0, j]], [0, P[1, j]], color=colour, lw=1.5)
            order = np.argsort(np.arctan2(P[1], P[0]))
            ring = np.concatenate([order, order[:1]])
            if P.shape[1] > 2:
                ax.plot(P[0, ring], P[1, ring], color=colour, lw=0.6, ls="--")
            ax.scatter(*P, color=colour, s=14)
            lim = float(np.abs(P).max()) * 1.15
            ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[])
        ax.set_title(f"{kind}\nfeatures {', '.join(map(str, g.features[:8]))}", fontsize=8)
    if not examples:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no polytope in this instance", ha="center", va="center")
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def polytope_census(inv_sparsity: np.ndarray, kinds_per_instance: Sequence[dict]) -> Figure:
    """Per instance (against 1/(1−S)): the features in groups of each kind (left) and the hidden
    dimensions groups of each kind take (right), stacked; `kinds_per_instance` is census()'s "kinds"."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = np.asarray(inv_sparsity, dtype=float)
    present = list(dict.fromkeys(k for c in kinds_per_instance for k in c))
    for ax, field, ylabel in ((axes[0], "features", "features in groups of the kind"),
                              (axes[1], "dimensions", "hidden dimensions the kind takes")):  # fmt: skip
        ys = [[c.get(k, {}).get(field, 0) for c in kinds_per_instance] for k in present]
        if ys:
            ax.stackplot(
                x, ys, labels=present, colors=[KIND_COLOURS.get(k, "0.3") for k in present], alpha=0.85
            )
        ax.set_xscale("log")
        ax.set_xlabel("1 / (1 − S)")
        ax.set_ylabel(ylabel)
    if present:
        axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig
