"""`sae-toy`: SAEs on the hidden layer of the 5-features-in-2-dimensions toy model."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from pydantic import Field
from safetensors.torch import save_file

from superposition.config import Config
from superposition.experiments.base import Result, register
from superposition.experiments.sae_common import (
    ALL_ARCHITECTURES,
    density_figure,
    metrics_table,
    train_matched,
)
from superposition.report.html import FigureSpec
from superposition.sae import SAEConfig, make_sae
from superposition.sae.io import save_sae
from superposition.sae.metrics import Accumulator
from superposition.sae.sources import ToyHidden
from superposition.sae.train import SAETrainConfig, SAETrainer
from superposition.seeding import derive_seed
from superposition.toy.data import FeatureDistribution
from superposition.toy.model import ToyModel
from superposition.toy.train import train_toy_model

COLUMNS = ["mcc", "recovered", "explained_variance", "l0", "frac_dead"]


class SAEToyConfig(Config):
    n_features: int = Field(5, gt=0)
    d_hidden: int = Field(2, gt=0)
    feature_probability: float = Field(0.05, gt=0.0, le=1.0)
    importance: float = Field(0.9, gt=0.0)
    toy_steps: int = Field(5000, gt=0)
    d_sae: int = Field(8, gt=0)
    k: int = Field(1, gt=0, description="target L0 of the SAEs")
    samples: int = Field(600_000, gt=0, description="training examples per SAE")
    batch_size: int = Field(1024, gt=0)
    lr: float = Field(5e-3, gt=0.0)
    resampling_d_sae: int = Field(32, gt=0, description="width of the SAEs in the dead-latent comparison")
    resampling_lr: float = Field(
        3e-2, gt=0.0, description="a high learning rate, a common cause of dead latents"
    )
    seed: int = 0


@register(
    "sae-toy",
    "SAEs of every architecture on the hidden layer of the 5-in-2 toy model (sparse regime): latents over the true pentagon; dead latents with and without resampling",
    SAEToyConfig,
    quick={"toy_steps": 3000, "samples": 200_000},
)
def run(cfg: SAEToyConfig, out: Path) -> Result:
    # 1. the toy model, in its sparse regime
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "toy-init"))
    importance = cfg.importance ** torch.arange(cfg.n_features, dtype=torch.float32)
    model = ToyModel(1, cfg.n_features, cfg.d_hidden, importance.unsqueeze(0), generator=gen)
    data = FeatureDistribution(torch.full((1, cfg.n_features), cfg.feature_probability))
    train_toy_model(
        model,
        data,
        steps=cfg.toy_steps,
        batch_size=1024,
        lr=1e-2,
        schedule="cosine",
        seed=cfg.seed,
        desc="toy model",
    )
    source = ToyHidden(model, data, instance=0)
    F = source.features
    # 2. SAEs of every architecture on its hidden activations
    steps = max(1, cfg.samples // cfg.batch_size)
    train = SAETrainConfig(
        steps=steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        lr_decay_steps=steps // 5,
        sparsity_warm_up_steps=steps // 20,
        dead_window=50_000,
        seed=cfg.seed,
    )
    results = [train_matched(a, source, cfg.d_hidden, cfg.d_sae, cfg.k, train, F) for a in ALL_ARCHITECTURES]
    for r in results:
        save_sae(r.sae, out / "saes" / r.architecture, r.instance)
    save_file({"features": F.contiguous()}, str(out / "ground_truth.safetensors"))
    # 3. dead latents with and without resampling
    dead = {}
    for mode in ("none", "anthropic"):
        sae = make_sae(
            SAEConfig(
                architecture="standard", d_in=cfg.d_hidden, d_sae=cfg.resampling_d_sae, l1_coefficient=0.3
            ),
            torch.Generator().manual_seed(derive_seed(cfg.seed, "sae-init")),
        )
        t = SAETrainer(
            sae,
            source,
            train.model_copy(
                update={
                    "resample": mode,
                    "resample_every": max(1, steps // 4),
                    "dead_window": 20_000,
                    "lr": cfg.resampling_lr,
                }
            ),
        )
        t.train()
        sae.eval()
        x, _ = source.sample_with_truth(
            16384, torch.Generator().manual_seed(derive_seed(cfg.seed, "sae-eval"))
        )
        x = x.unsqueeze(1)
        acc = Accumulator()
        with torch.no_grad():
            z = sae.encode(x)
            acc.add(x, sae.decode(z), z)
        m = acc.result()
        dead[mode] = {
            "frac_dead": float(m["frac_dead"][0]),
            "explained_variance": float(m["explained_variance"][0]),
            "resampled_per_round": t.history.resampled,
            "W_dec": sae.W_dec.detach()[0],
            "density": m["density"][0],
        }
    table = metrics_table(results, COLUMNS)
    print(table)
    highlights = {r.architecture: ", ".join(f"{c} {r.metrics[c]:.3f}" for c in COLUMNS) for r in results}
    highlights["dead latents, standard SAE of width %d" % cfg.resampling_d_sae] = (
        f"without resampling {dead['none']['frac_dead']:.0%}, with Anthropic resampling {dead['anthropic']['frac_dead']:.0%}"
    )
    figures = [
        FigureSpec(
            "latents_over_features",
            "Decoder directions of each SAE (coloured, dashed) over the toy model's true feature "
            "directions (black). Latents that never fire are grey.",
            _directions_figure(F, results),
        ),
        FigureSpec(
            "resampling",
            "A wider standard SAE without and with resampling of dead latents: grey directions never fire.",
            _resampling_figure(F, dead),
        ),
        FigureSpec("density", "How often each latent fires, per architecture.", density_figure(results)),
    ]
    explanation = f"""
<p>First a toy model compresses {cfg.n_features} features into {cfg.d_hidden} dimensions at feature probability
{cfg.feature_probability} (sparse regime: the features sit in superposition, a pentagon). Then SAEs with {cfg.d_sae}
latents are trained on its hidden activations h = W x, where the true features are known: the columns of W.
A good SAE puts one latent on each column, undoing the superposition.</p>
<p>Matched at L0 ≈ {cfg.k}: TopK-style SAEs use k = {cfg.k}; penalised ones sweep their coefficient and keep the
closest L0. The second figure shows dead latents, a common failure of SAEs, here provoked by a high learning rate
({cfg.resampling_lr}) on a {cfg.resampling_d_sae}-latent standard SAE, and how resampling them (Anthropic's method:
new directions from badly reconstructed inputs, encoder rows at 0.2× the alive norm, Adam state reset) brings
them back.</p>
<pre>{html.escape(table)}</pre>
"""
    summary = {
        "toy_W": model.W.detach()[0],
        "results": {r.architecture: {k: v for k, v in r.metrics.items() if k != "density"} for r in results},
        "resampling": {
            k: {kk: vv for kk, vv in v.items() if kk not in ("W_dec", "density")} for k, v in dead.items()
        },
    }
    return Result(
        "SAEs on a toy model: recovering features from superposition",
        explanation,
        summary,
        figures,
        highlights,
    )


def _draw(ax, F, W_dec, density, colour, title):
    for f in F.numpy():
        ax.annotate(
            "",
            xy=f / np.linalg.norm(f),
            xytext=(0, 0),
            arrowprops=dict(arrowstyle="->", color="black", lw=1.6),
        )
    for w, dens in zip(W_dec.numpy(), density):
        w = w / max(1e-8, np.linalg.norm(w))
        ax.plot([0, w[0]], [0, w[1]], ls="--", lw=1.3, color=colour if dens > 0 else "0.75")
    ax.set_xlim(-1.15, 1.15)
    ax.set_ylim(-1.15, 1.15)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def _directions_figure(F, results):
    fig, axes = plt.subplots(1, len(results), figsize=(2.6 * len(results), 3.3))
    colours = plt.get_cmap("tab10")
    for n, (ax, r) in enumerate(zip(np.atleast_1d(axes), results)):
        _draw(
            ax,
            F,
            r.sae.W_dec.detach()[r.instance],
            r.metrics["density"],
            colours(n),
            f"{r.architecture}\nMCC {r.metrics['mcc']:.2f}",
        )
    fig.tight_layout()
    return fig


def _resampling_figure(F, dead):
    fig, axes = plt.subplots(1, 2, figsize=(6, 3.2))
    for ax, (mode, d) in zip(axes, dead.items()):
        _draw(ax, F, d["W_dec"], d["density"], "tab:blue", f"resampling: {mode}\n{d['frac_dead']:.0%} dead")
    fig.tight_layout()
    return fig
