"""Figures of the dictionaries over several sources: a cross-layer transcoder's error per layer, and
a crosscoder's error per source, relative decoder norms and latent scaling (model diffing)."""

from __future__ import annotations


def fvu_per_layer(fvu: dict):
    """Bars: the fraction of each MLP output's variance a CLT misses."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(list(fvu), list(fvu.values()))
    ax.set_xlabel("layer")
    ax.set_ylabel("FVU of the MLP output")
    return fig


def fvu_per_source(src: dict):
    """Bars: the fraction of each source's variance a crosscoder misses."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(list(src), [1 - v["explained_variance"] for v in src.values()])
    ax.set_ylabel("FVU")
    ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    return fig


def relative_norms(rel: dict):
    """The histograms of both relative-norm definitions (interp/diffing.diffing_summary), the
    a-only, shared and b-only bands shaded on Minder's."""
    import matplotlib.pyplot as plt

    edges = rel["edges"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
    for ax, name in zip(axes, ("minder", "lindsey"), strict=True):
        ax.stairs(rel[name], edges, fill=True, alpha=0.8)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_xlabel(f"relative decoder norm ({name})")
        if name == "minder":
            for lo, hi, c in ((0, 0.1, "tab:red"), (0.4, 0.6, "tab:gray"), (0.9, 1.0, "tab:green")):
                ax.axvspan(lo, hi, color=c, alpha=0.12)
    axes[0].set_ylabel("latents")
    fig.tight_layout()
    return fig


def latent_scaling(table: dict):
    """ν = β_other / β_own of the model-only latents against their relative norm."""
    import matplotlib.pyplot as plt

    m = (table["a_only"] | table["b_only"]) & (table["density"] > 0)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.scatter(table["relative_norm"][m], table["nu"][m].clamp(-0.5, 2), s=8)
    ax.axhline(0.05, color="k", lw=0.8, ls="--")
    ax.set_xlabel("relative decoder norm (Minder)")
    ax.set_ylabel("ν = β_other / β_own")
    fig.tight_layout()
    return fig
