"""Linear probes for the SAEBench evaluations (lm/saebench.py): logistic regression as scikit-learn's
`LogisticRegression` fits it, without scikit-learn.

`fit_logistic` minimises  C · Σ_i s_i · log(1 + exp(−y_i (w·x_i + b)))  +  ½‖w‖²  (y ∈ {−1, +1}; the
intercept is not penalised), the objective of scikit-learn's default L2 solver, with per-sample weights
s_i = 1, or n / (2 n_class) for `balanced` (its `class_weight="balanced"`). The objective is strictly
convex, so any solver that converges finds the same w: here L-BFGS in float64 with a strong-Wolfe
line search. `l1_probe_weights` is the L1-penalised multi-label probe SAEBench's absorption uses to
rank SAE latents (Adam on BCE with positive weights plus λ·mean_c Σ_j |w_cj|).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Probe:
    """A fitted binary probe: score(x) = x·w + b, positive for the class."""

    w: Tensor  # (d,)
    b: float

    def score(self, x: Tensor) -> Tensor:
        return x.double() @ self.w + self.b

    def predict(self, x: Tensor) -> Tensor:
        return self.score(x) > 0


def fit_logistic(x: Tensor, y: Tensor, c: float = 1.0, balanced: bool = False, max_iter: int = 1000) -> Probe:
    """L2-penalised logistic regression of y (bool or 0/1, (n,)) on x (n, d), as scikit-learn's
    LogisticRegression(C=c, class_weight="balanced" if balanced else None) with lbfgs."""
    x = x.double()
    t = y.bool()
    n, d = x.shape
    sign = t.double() * 2 - 1
    if balanced:
        pos = int(t.sum())
        weight = torch.where(t, n / (2 * max(pos, 1)), n / (2 * max(n - pos, 1))).double()
    else:
        weight = torch.ones(n, dtype=torch.float64)
    params = torch.zeros(d + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [params],
        lr=1,
        max_iter=max_iter,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        margin = sign * (x @ params[:d] + params[d])
        loss = c * (weight * F.softplus(-margin)).sum() + 0.5 * params[:d].square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    p = params.detach()
    return Probe(p[:d].clone(), float(p[d]))


def accuracy(pred: Tensor, y: Tensor) -> float:
    return (pred.bool() == y.bool()).double().mean().item()


def f1(pred: Tensor, y: Tensor) -> float:
    """F1 of the positive class; 0 when nothing is predicted or present (scikit-learn's zero_division=0)."""
    pred, y = pred.bool(), y.bool()
    tp = (pred & y).sum().item()
    denom = pred.sum().item() + y.sum().item()
    return 2 * tp / denom if denom else 0.0


def roc_auc(score: Tensor, y: Tensor) -> float:
    """Area under the ROC curve (ties count one half): P(a positive outscores a negative)."""
    from scipy.stats import rankdata

    y = y.bool()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score.double().numpy())
    return float((ranks[y.numpy()].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def l1_probe_weights(
    z: Tensor,
    labels: Tensor,
    classes: int,
    l1: float = 0.01,
    epochs: int = 50,
    batch: int = 256,
    lr: float = 0.01,
    end_lr: float = 1e-5,
    weight_decay: float = 1e-6,
    seed: int = 0,
) -> Tensor:
    """(classes, d) weights of a one-vs-rest probe on z (n, d) for integer labels (n,), trained as
    SAEBench's k-sparse probing trains it: BCE-with-logits with positive weights n_neg / n_pos per
    class, plus l1 · mean over classes of Σ_j |w_cj|, Adam with weight decay, the learning rate decayed
    exponentially from lr to end_lr over the epochs. Its largest weights name the latents of a class.
    One difference: the weights start at zero (SAEBench's start at torch's random init, which on a few
    thousand words leaves the ranking partly to chance)."""
    g = torch.Generator().manual_seed(seed)
    z = z.float()
    y = F.one_hot(labels.long(), classes).float()
    pos = y.sum(0)
    pos_weight = (len(y) - pos) / pos.clamp(min=1)
    layer = torch.nn.Linear(z.shape[1], classes)
    with (
        torch.no_grad()
    ):  # from zero, not torch's random start: a latent that never helps ranks at 0, not by chance
        layer.weight.zero_()
        layer.bias.zero_()
    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=math.exp(math.log(end_lr / lr) / epochs))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    with torch.enable_grad():
        for _ in range(epochs):
            for idx in torch.randperm(len(z), generator=g).split(batch):
                opt.zero_grad()
                loss = loss_fn(layer(z[idx]), y[idx]) + l1 * layer.weight.abs().sum(-1).mean()
                loss.backward()
                opt.step()
            sched.step()
    return layer.weight.detach()
