"""`transcoder-toy`: transcoders in place of the hidden ReLU layer of the `compute-abs` model, where
the true features of the computation are known.

The layer computes h = ReLU(W_in x) from signed features x. For an input with one active feature,
h = x_i⁺ ReLU(W_in[:, i]) + x_i⁻ ReLU(−W_in[:, i]): the computation's true features are the two
halves of each input feature, ReLU(x_i) and ReLU(−x_i), each with its own output direction.
A transcoder (x -> h) recovers half (i, s) when one of its latents reads it (its encoder column's
largest entry is feature i, with sign s) and writes ReLU(s·W_in[:, i]) (decoder row at cos ≥ 0.9);
a recovered ± pair is both halves of one feature, which is what the model's own ± neuron pairs
compute.
"""

from __future__ import annotations

import html
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from superposition.experiments.base import Result, register
from superposition.experiments.sae_common import experiment_train_config
from superposition.experiments.toy_common import ToyConfig, train_toy
from superposition.memory import FLOAT
from superposition.report.html import FigureSpec
from superposition.sae import SAEConfig, make_sae
from superposition.sae.base import training_bytes
from superposition.sae.io import save_sae
from superposition.sae.metrics import Accumulator
from superposition.sae.train import SAETrainer
from superposition.seeding import derive_seed
from superposition.toy import neurons
from superposition.viz import toy as viz
from superposition.viz.sae import training_curves

MATCH = 0.9  # cosine at which a latent counts as a true half


class TranscoderToyConfig(ToyConfig):
    n_instances: int = Field(1, ge=1, le=1, description="toy models (one: the transcoders' subject)")
    n_features: int = Field(20, gt=0, description="compute-abs model: signed input features")
    d_hidden: int = Field(10, gt=0, description="compute-abs model: ReLU neurons (the transcoder's target)")
    feature_probability: float = Field(
        0.05, gt=0.0, le=1.0, description="compute-abs model: feature probability"
    )
    importance: float = Field(0.9, gt=0.0, description="compute-abs model: feature i has importance r**i")
    lr: float = Field(1e-2, gt=0.0, description="compute-abs model: learning rate")
    schedule: Literal["constant", "linear", "cosine"] = Field(
        "cosine", description="compute-abs model: learning-rate decay"
    )
    steps: int = Field(6000, gt=0, description="compute-abs model: training steps")
    transcoders: int = Field(3, gt=0, description="transcoders trained side by side (one seed each)")
    sparsity: str = Field("topk", description="the transcoders' sparsity (an SAE architecture's name)")
    k: int = Field(2, gt=0, description="k of a TopK-family sparsity")
    d_sae: int | None = Field(
        None, gt=0, description="latents; default 4 × n_features (twice the number of halves)"
    )
    samples: int = Field(2_000_000, gt=0, description="training examples per transcoder")
    sae_batch_size: int = Field(1024, gt=0, description="transcoder training batch")
    sae_lr: float = Field(3e-3, gt=0.0, description="transcoder learning rate (Adam)")

    @property
    def width(self) -> int:
        return self.d_sae or 4 * self.n_features

    def memory_needed(self) -> int:
        toy = FLOAT * 8 * self.batch_size * (self.n_features + self.d_hidden)
        return toy + training_bytes(
            self.transcoders, self.n_features + self.d_hidden, self.width, self.sae_batch_size
        )


class _Rows:
    """Rows [x | h] of the trained model's hidden layer: x (n_features), h = ReLU(W_in x) (d_hidden)."""

    def __init__(self, model, data) -> None:
        self.model, self.data = model, data

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, out=None) -> torch.Tensor:
        x = self.data.sample(n, generator)  # (n, 1, n_features)
        return torch.cat([x[:, 0], self.model.neurons(x)[:, 0]], -1)


def true_halves(W_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The computation's features for W_in (hidden, feat): the output directions ReLU(s·W_in[:, i])
    (2·feat, hidden), rows ordered (i, +), (i, −), and whether the model computes each half at all
    (its output direction has norm ≥ 0.1 of the largest)."""
    dec = torch.stack([torch.relu(W_in.T), torch.relu(-W_in.T)], 1).reshape(2 * W_in.shape[1], -1)
    norms = dec.norm(dim=-1)
    return dec, norms >= 0.1 * norms.max()


def recovered_halves(W_enc: torch.Tensor, W_dec: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
    """Per true half (i, s), the best decoder cosine with its output direction ReLU(s·W_in[:, i])
    among the latents that read it (whose encoder column's largest entry is feature i with sign s);
    0 where no latent reads it. W_enc (feat, d_sae), W_dec (d_sae, hidden), dec (2·feat, hidden)."""
    half = _half_read(W_enc)
    cos = (F.normalize(W_dec, dim=-1) * F.normalize(dec[half], dim=-1)).sum(-1)
    return torch.zeros(dec.shape[0]).scatter_reduce(0, half, cos, "amax", include_self=True)


def _half_read(W_enc: torch.Tensor) -> torch.Tensor:
    """Each latent's half 2i + (sign < 0), from its encoder column's largest entry."""
    dom = W_enc.abs().argmax(0)
    return dom * 2 + (W_enc.gather(0, dom.unsqueeze(0)).squeeze(0) < 0).long()


@register(
    "transcoder-toy",
    "transcoders replacing the hidden ReLU layer of the compute-abs model: which halves ReLU(±x_i) of the "
    "true computation, and which ± pairs, they recover",
    TranscoderToyConfig,
    quick={"steps": 3000, "samples": 600_000, "n_features": 12, "d_hidden": 6},
)
def run(cfg: TranscoderToyConfig, out: Path) -> Result:
    toy = train_toy(
        cfg, cfg.probabilities([]), cfg.importance_vector(), computation=True, desc="compute-abs model"
    )
    W_in = toy.W[0]  # (hidden, feat)
    model_pairs = neurons.abs_pairs(toy.W, toy.model.W_out.detach()[toy.keep])[0]
    source = _Rows(toy.model, toy.data)
    sae = make_sae(
        SAEConfig(
            architecture="transcoder", sparsity=cfg.sparsity, d_in=cfg.n_features, d_out=cfg.d_hidden,
            d_sae=cfg.width, k=cfg.k, n_instances=cfg.transcoders,
        ),
        torch.Generator().manual_seed(derive_seed(cfg.seed, "transcoder-init")),
    )  # fmt: skip
    train = experiment_train_config(
        SimpleNamespace(samples=cfg.samples, batch_size=cfg.sae_batch_size, lr=cfg.sae_lr, seed=cfg.seed)
    )
    trainer = SAETrainer(sae, source, train)
    history = trainer.train(progress=None)
    sae.eval()

    rows = source.sample(16384, torch.Generator().manual_seed(derive_seed(cfg.seed, "transcoder-eval")))
    x, h = rows[:, : cfg.n_features], rows[:, cfg.n_features :]
    acc = Accumulator()
    with torch.no_grad():
        xs = x.unsqueeze(1).expand(-1, cfg.transcoders, -1)
        z = sae.encode(xs)
        acc.add(h.unsqueeze(1).expand(-1, cfg.transcoders, -1), sae.decode(z, xs), z)
    m = acc.result()
    dec, computed = true_halves(W_in)
    records = []
    for i in range(cfg.transcoders):
        score = recovered_halves(sae.W_enc[i].detach(), sae.W_dec[i].detach(), dec)
        got = (score >= MATCH) & computed
        pairs = got.view(-1, 2).all(-1)
        records.append(
            {
                "fvu": 1 - m["explained_variance"][i].item(),
                "l0": m["l0"][i].item(),
                "frac_dead": (m["density"][i] == 0).float().mean().item(),
                "halves_computed": int(computed.sum()),
                "halves_recovered": int(got.sum()),
                "pairs_recovered": pairs.nonzero().squeeze(1).tolist(),
                "half_scores": [round(v, 4) for v in score.tolist()],
            }
        )
        save_sae(sae, out / "transcoders" / f"seed{i}", i)
    summary = {
        "n_features": cfg.n_features,
        "d_hidden": cfg.d_hidden,
        "model_loss": toy.final_loss[0].item(),
        "model_pair_features": model_pairs.nonzero().squeeze(1).tolist(),
        "halves_computed_by_model": computed.nonzero().squeeze(1).tolist(),
        "transcoders": records,
        "history": {"steps": history.steps, "mse": history.terms["mse"]},
    }
    best = max(records, key=lambda r: r["halves_recovered"])
    order = _latent_order(sae.W_enc[0].detach())
    figures = [
        FigureSpec(
            "encoders",
            "Encoder columns of each transcoder (latents × input features), latents ordered by the feature "
            "they read most: a latent that reads one feature with one sign is a half ReLU(±x_i).",
            viz.weight_heatmaps(
                torch.stack(
                    [
                        sae.W_enc[i].detach().T[_latent_order(sae.W_enc[i].detach())]
                        for i in range(cfg.transcoders)
                    ]
                ),
                [f"seed {i}" for i in range(cfg.transcoders)],
                "input feature",
                "latent",
                "Transcoder encoders",
            ),
        ),  # fmt: skip
        FigureSpec(
            "decoder_vs_truth",
            "Seed 0: decoder rows (latents × neurons, unit norm) beside the true output direction "
            "ReLU(±W_in[:, i]) of the half each latent reads, in the same order.",
            viz.weight_heatmaps(
                torch.stack(
                    [
                        F.normalize(sae.W_dec[0].detach(), dim=-1)[order],
                        _truth_for(order, sae.W_enc[0].detach(), dec),
                    ]
                ),
                ["transcoder decoder", "true output of the half each latent reads"],
                "neuron",
                "latent",
                "Decoder rows against the truth",
            ),
        ),  # fmt: skip
        FigureSpec(
            "training",
            "Transcoder training: mean squared error of h per logged step.",
            training_curves(
                [{"step": s, "mse": sum(v) / len(v)} for s, v in zip(history.steps, history.terms["mse"])],
                ["mse"],
                x="step",
            ),
        ),
    ]
    highlights = {
        "model": f"{cfg.n_features} signed features, {cfg.d_hidden} neurons; ± neuron pairs for features "
        f"{summary['model_pair_features']}",
        "halves the model computes": f"{int(computed.sum())} of {2 * cfg.n_features}",
        **{
            f"transcoder seed {i}": f"{r['halves_recovered']} halves recovered (cos ≥ {MATCH}), ± pairs "
            f"{r['pairs_recovered']}, FVU {r['fvu']:.3f}, L0 {r['l0']:.2f}"
            for i, r in enumerate(records)
        },
    }
    explanation = f"""
<p>The <code>compute-abs</code> model y = ReLU(W_out ReLU(W_in x) + b) is trained on {cfg.n_features} signed
features (p = {cfg.feature_probability}) with {cfg.d_hidden} neurons; then {cfg.transcoders}
{html.escape(cfg.sparsity)} transcoders with {cfg.width} latents each are trained to replace its hidden
layer: from x to h = ReLU(W_in x).</p>
<p><b>The truth.</b> One active feature gives h = ReLU(x_i)·ReLU(W_in[:, i]) + ReLU(−x_i)·ReLU(−W_in[:, i]):
the computation is made of <i>halves</i>, each read along ±e_i and written along its own output direction.
A latent recovers a half when it reads it (its encoder column's largest entry is that feature with that
sign) and its decoder row writes the half's output direction (cos ≥ {MATCH}). Where the model
has a ± neuron pair for a feature (features {summary["model_pair_features"]}), both halves have an
output; a recovered ± pair is a feature whose two halves the transcoder found. Halves the model does
not compute (no neuron reads that sign) have no output direction and are not counted.</p>
<p><b>Result.</b> The best transcoder recovers {best["halves_recovered"]} of the {int(computed.sum())}
halves the model computes, with FVU {best["fvu"]:.3f}. A low FVU does not imply the halves: on this
toy a BatchTopK transcoder reaches a lower FVU (0.01) while recovering almost none of them, with
latents that mix halves sharing neurons. Sparse latents along ±e_i are what a ReLU layer of features in
superposition computes when inputs rarely overlap; where two active features share neurons the layer is not
additive, which is the part of h no single latent explains.</p>
"""
    return Result("Transcoders on a toy ReLU layer (compute-abs)", explanation, summary, figures, highlights)


def _latent_order(W_enc: torch.Tensor) -> torch.Tensor:
    """Latents ordered by the half they read (feature, then sign)."""
    return _half_read(W_enc).argsort()


def _truth_for(order: torch.Tensor, W_enc: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
    """For each latent (in `order`), the unit output direction of the half it reads."""
    return F.normalize(dec[_half_read(W_enc)], dim=-1)[order]
