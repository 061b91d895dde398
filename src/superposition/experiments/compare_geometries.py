"""`compare-geometries`: for one n, d, feature probability and importance, the expected loss of
candidate configurations (regular polygons and polytopes on the most important features, antipodal
pairs, the orthogonal subset, the trained solution, a user's own W and b), each with its best bias,
ranked with standard errors small enough to tell them apart (toy/compare.py)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from superposition.errors import SuperpositionError
from superposition.experiments.base import Result, register
from superposition.experiments.toy_common import PositiveFloat, ToyConfig, train_toy
from superposition.report.html import FigureSpec
from superposition.seeding import derive_seed
from superposition.toy import compare, geometry
from superposition.toy.data import FeatureDistribution
from superposition.toy.model import ToyModel
from superposition.toy.train import train_toy_model
from superposition.viz import toy as viz


class CompareGeometriesConfig(ToyConfig):
    n_instances: int = Field(1, ge=1, le=1, description="one setting (the trained solution's)")
    n_features: int = Field(5, gt=0)
    d_hidden: int = Field(2, gt=0)
    feature_probability: float = Field(0.05, gt=0.0, le=1.0, description="probability a feature is present")
    importance: PositiveFloat | list[PositiveFloat] = 1.0
    replicas: int = Field(4, ge=1, description="trained solution: initialisations, lowest loss kept")
    lr: PositiveFloat = 1e-2
    schedule: Literal["constant", "linear", "cosine"] = "cosine"
    weights: str | None = Field(
        None,
        description="your own configuration: a .npy file with W (d_hidden × n_features), or a .json file "
        'with "W" and optionally "b" (n_features)',
    )
    notebook: bool = Field(
        False,
        description="also train the typical notebook setup (randn initial W, batch 64, Adam at 1e-3, "
        "notebook_steps steps) and show its loss gap to the lowest candidate and its angle error by step",
    )
    notebook_steps: int = Field(2000, gt=0, description="notebook setup: steps")
    notebook_batch_size: int = Field(64, gt=0, description="notebook setup: batch size")
    notebook_lr: PositiveFloat = Field(1e-3, description="notebook setup: Adam learning rate")
    eval_samples: int = Field(400_000, gt=0, description="samples the losses are estimated on")
    fit_samples: int = Field(100_000, gt=0, description="samples each bias (and scale) is fitted on")


def load_weights(path: str, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """W (d, n) and b (n,) or None, from a .npy (no pickle) or .json file; a one-line error if not."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise SuperpositionError(f"weights: no file at {p}")
    try:
        if p.suffix == ".npy":
            W, b = np.load(p, allow_pickle=False), None
        elif p.suffix == ".json":
            data = json.loads(p.read_text())
            if not isinstance(data, dict) or "W" not in data:
                raise ValueError('expected an object with "W" (and optionally "b")')
            W, b = np.asarray(data["W"], dtype=np.float64), data.get("b")
            b = None if b is None else np.asarray(b, dtype=np.float64)
        else:
            raise ValueError("expected a .npy or .json file")
    except (ValueError, OSError, TypeError) as err:
        raise SuperpositionError(f"weights: {p}: {str(err).splitlines()[0]}") from None
    if W.shape != (d, n) or not np.isfinite(W).all():
        raise SuperpositionError(
            f"weights: W must be finite with shape [{d}, {n}] (d_hidden, n_features), got {list(W.shape)}"
        )
    if b is not None and (b.shape != (n,) or not np.isfinite(b).all()):
        raise SuperpositionError(f"weights: b must be finite with shape [{n}], got {list(b.shape)}")
    return torch.tensor(W, dtype=torch.float64), None if b is None else torch.tensor(b, dtype=torch.float64)


@register(
    "compare-geometries",
    "is the geometry I found the optimum? exact expected losses of polygons, polytopes, antipodal pairs, "
    "the orthogonal subset, the trained solution and your own W (--set weights=W.npy), ranked with errors",
    CompareGeometriesConfig,
    quick={"steps": 3000, "eval_samples": 100_000, "fit_samples": 30_000},
)
def run(cfg: CompareGeometriesConfig, out: Path) -> Result:
    n, d, p = cfg.n_features, cfg.d_hidden, cfg.feature_probability
    importance = cfg.importance_vector().double()
    user = load_weights(cfg.weights, n, d) if cfg.weights else None  # before any training
    cands = compare.candidates(n, d)
    trained = train_toy(cfg, cfg.probabilities([]), cfg.importance_vector(), desc="trained solution")
    W_t, b_t = trained.W[0].double(), trained.model.b.detach()[trained.keep[0]].double()
    cands.append(compare.Candidate("trained (b as trained)", W_t, b_t, fit_scale=False))
    cands.append(compare.Candidate("trained (best b)", W_t, None, fit_scale=False))
    if user is not None:
        W_u, b_u = user
        if b_u is not None:
            cands.append(compare.Candidate("yours (your b)", W_u, b_u, fit_scale=False))
        cands.append(compare.Candidate("yours (best b)", W_u, None, fit_scale=False))
    ranked = compare.evaluate(cands, importance, p, cfg.fit_samples, cfg.eval_samples, cfg.seed)
    best = ranked[0]
    rows = []
    for e in ranked:
        gap, gap_se = compare.paired_gap(best, e)
        rows.append(
            {
                "candidate": e.name, "loss": e.loss, "stderr": e.stderr, "exact": e.exact,
                "gap_to_best": gap, "gap_stderr": gap_se, "norm_scale": float(e.W.norm(dim=0).max()),
                "W": e.W.tolist(), "b": e.b.tolist(),
            }
        )  # fmt: skip
    verdict = describe(rows)
    summary = {
        "n_features": n, "d_hidden": d, "feature_probability": p, "importance": importance.tolist(),
        "eval_samples": cfg.eval_samples, "lowest": best.name, "verdict": verdict, "ranked": rows,
    }  # fmt: skip
    figures = [
        FigureSpec(
            "losses",
            "Expected loss of each candidate (± 2 standard errors), lowest first.",
            viz.ranked_losses(
                [r["candidate"] for r in rows], [r["loss"] for r in rows], [r["stderr"] for r in rows]
            ),
        )
    ]
    if d == 2:
        shown = rows[: min(len(rows), 12)]
        figures.append(
            FigureSpec(
                "geometries",
                "The candidates' feature directions (columns of W, with their fitted scale), lowest loss "
                "first.",
                viz.feature_directions_2d(
                    torch.tensor([r["W"] for r in shown], dtype=torch.float32),
                    [f"{r['candidate']}\n{r['loss']:.5f}" for r in shown],
                    importance.float(),
                ),
            )
        )
    table = "".join(
        f"<tr><td>{html.escape(r['candidate'])}</td><td>{r['loss']:.6f}</td><td>{r['stderr']:.1e}</td>"
        f"<td>{_maybe(r['exact'])}</td><td>{r['gap_to_best']:.2e} ± {r['gap_stderr']:.1e}</td></tr>"
        for r in rows
    )
    explanation = f"""
<p>{n} features in {d} dimensions, each present with probability {p} (value uniform in [0, 1]),
importance {html.escape(str([round(v, 3) for v in importance.tolist()]))}. Each candidate places the
most important features first and leaves the rest unrepresented; its bias, and for the constructed
geometries one overall scale, is fitted on {cfg.fit_samples:,} samples, and its expected loss estimated
on {cfg.eval_samples:,} other samples, the same for every candidate, so the differences are known far
more precisely than each loss. Where the features do not interact (orthogonal or no features), the
exact loss is shown beside the estimate.</p>
<p><b>{html.escape(verdict)}.</b></p>
<table><tr><th>candidate</th><th>loss</th><th>std. error</th><th>exact</th><th>above the lowest</th></tr>
{table}</table>
"""
    highlights = {"lowest": best.name, "verdict": verdict}
    if cfg.notebook:
        nb = notebook_run(cfg, importance, best, W_t, b_t)
        summary["notebook"] = nb
        figures.append(
            FigureSpec(
                "notebook",
                "The typical notebook setup (randn initial W, small batch, low learning rate) against "
                "the lowest candidate: its loss gap and, in 2-D, how far its angles between neighbouring "
                "features are from a regular polygon's, by step. The default training's final values are "
                "the dashed lines.",
                viz.convergence(nb["steps"], nb["loss_gap"], nb["angle_error_deg"], nb["default_gap"],
                                nb["default_angle_error_deg"]),
            )
        )  # fmt: skip
        highlights["notebook setup"] = nb["verdict"]
        explanation += f"<p><b>The notebook setup.</b> {html.escape(nb['verdict'])}.</p>"
    return Result("Which geometry has lower loss?", explanation, summary, figures, highlights)


def _maybe(v: float | None) -> str:
    return "" if v is None else f"{v:.6f}"


def describe(rows: list[dict]) -> str:
    """One sentence: the lowest candidate, by how much the next is above it, and whether that gap
    is larger than its noise (2 standard errors of the paired difference)."""
    best = rows[0]
    text = f"{best['candidate']} is lowest: {best['loss']:.6f} ± {best['stderr']:.1e}"
    if len(rows) == 1:
        return text
    nxt = rows[1]
    z = nxt["gap_to_best"] / max(nxt["gap_stderr"], 1e-300)
    tell = "a real difference" if z >= 2 else "within the noise: more eval_samples would tell them apart"
    return (
        f"{text}; next, {nxt['candidate']}, is {nxt['gap_to_best']:.2e} ± {nxt['gap_stderr']:.1e} higher "
        f"({z:.1f} standard errors, {tell})"
    )


def _angle_error(W: torch.Tensor) -> float | None:
    """2-D only: mean |gap − 360/m| (degrees) between neighbouring represented features, m of them."""
    if W.shape[0] != 2:
        return None
    gaps = geometry.polar_angle_gaps(W.float())
    return float((gaps - 360.0 / gaps.numel()).abs().mean()) if gaps.numel() >= 2 else None


def notebook_run(cfg, importance: torch.Tensor, best, W_t: torch.Tensor, b_t: torch.Tensor) -> dict:
    """Train the notebook setup and measure, every 1/20 of its steps, its exact loss gap to the lowest
    candidate (with the bias it has) and its angle error."""
    n, d, p = cfg.n_features, cfg.d_hidden, cfg.feature_probability
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, "notebook"))
    model = ToyModel(1, n, d, importance.float().unsqueeze(0))
    with torch.no_grad():
        model.W.normal_(0.0, 1.0, generator=g)  # torch.randn, as notebooks start
    x_eval = compare.sample(n, p, cfg.eval_samples, torch.Generator().manual_seed(cfg.seed))
    best_loss = compare.per_sample_loss(best.W, best.b, importance, x_eval).mean().item()
    steps, gaps, angles = [], [], []

    def record(step: int, m) -> None:
        W, b = m.W.detach()[0].double(), m.b.detach()[0].double()
        steps.append(step)
        gaps.append(compare.per_sample_loss(W, b, importance, x_eval).mean().item() - best_loss)
        angles.append(_angle_error(W))

    data = FeatureDistribution(torch.full((1, n), p))
    train_toy_model(
        model, data, steps=cfg.notebook_steps, batch_size=cfg.notebook_batch_size, lr=cfg.notebook_lr,
        seed=cfg.seed, callback=record, callback_every=max(1, cfg.notebook_steps // 20),
        desc="notebook setup",
    )  # fmt: skip
    default_gap = compare.per_sample_loss(W_t, b_t, importance, x_eval).mean().item() - best_loss
    verdict = (
        f"after {steps[-1] + 1} steps of batch {cfg.notebook_batch_size} at lr {cfg.notebook_lr} from a "
        f"randn start, the loss is {gaps[-1]:.2e} above the lowest candidate ({best.name})"
        + ("" if angles[-1] is None else f" and the angles are {angles[-1]:.1f}° off a regular polygon's")
        + (
            "; still falling over its last half, i.e. unconverged rather than at a different optimum"
            if gaps[-1] < 0.9 * gaps[len(gaps) // 2]
            else "; flat over its last half"
        )
        + f"; the default training ends {default_gap:.2e} above it"
    )
    return {"steps": steps, "loss_gap": gaps, "angle_error_deg": angles, "default_gap": default_gap,
            "default_angle_error_deg": _angle_error(W_t), "verdict": verdict}  # fmt: skip
