"""Exact answers to "which geometry has lower loss?" for the toy model x' = ReLU(WᵀW x + b).

For n features (present with probability p, value uniform in [0, 1], importance I_i) and d hidden
dimensions, the expected loss of a configuration W (d, n) with bias b is

    L(W, b) = E[ (1/n) Σ_i I_i (x_i − ReLU(WᵀW x + b)_i)² ],

estimated on a large sample with its standard error; every candidate is evaluated on the same
sample (common random numbers), so the differences between candidates are known much more
precisely than each loss. The bias (and, for the constructed geometries, one overall scale of W) is
optimised on a separate sample first, so the estimate is not fitted to its own noise.

Closed form where the features do not interact: when WᵀW is diagonal with entries 0 or 1 and
b = 0 on the represented features, those are reconstructed exactly, and an unrepresented feature
with its best constant output c = E[x] = p/2 costs I_i (E[x²] − E[x]²) = I_i (p/3 − p²/4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

SHAPES = {1: "monogon", 2: "digon", 3: "triangle", 4: "square", 5: "pentagon", 6: "hexagon",
          7: "heptagon", 8: "octagon", 9: "nonagon", 10: "decagon"}  # fmt: skip


@dataclass
class Candidate:
    name: str
    W: Tensor  # (d, n): column i is feature i's direction
    b: Tensor | None = None  # (n,), or None: optimise it
    fit_scale: bool = True  # optimise one overall scale of W (constructed geometries)


@dataclass
class Evaluated:
    name: str
    loss: float
    stderr: float
    exact: float | None  # the closed form, where there is one
    W: Tensor
    b: Tensor
    per_sample: Tensor  # (N,) losses on the evaluation sample, for paired differences


def _embed(V: Tensor, n: int, d: int) -> Tensor:
    """Columns V (k, m) placed in the first k of d dimensions, for the first m of n features."""
    W = torch.zeros(d, n, dtype=torch.float64)
    W[: V.shape[0], : V.shape[1]] = V
    return W


def polygon(m: int) -> Tensor:
    """A regular m-gon in the plane, (2, m)."""
    a = 2 * math.pi * torch.arange(m, dtype=torch.float64) / m
    return torch.stack([a.cos(), a.sin()])


def simplex(m: int) -> Tensor:
    """A regular simplex of m unit vectors in m − 1 dimensions, (m − 1, m)."""
    centred = torch.eye(m, dtype=torch.float64) - 1.0 / m
    q, _ = torch.linalg.qr(centred)  # an orthonormal basis of the m − 1 dimensional span, and one more
    V = q[:, : m - 1].T @ centred
    return V / V.norm(dim=0, keepdim=True)


def antipodal(m: int) -> Tensor:
    """m features as antipodal pairs ±e_j (the cross-polytope's vertices), (ceil(m/2), m)."""
    k = (m + 1) // 2
    V = torch.zeros(k, m, dtype=torch.float64)
    for i in range(m):
        V[i // 2, i] = 1.0 if i % 2 == 0 else -1.0
    return V


def candidates(n: int, d: int) -> list[Candidate]:
    """The geometries to compare for n features in d dimensions, each on the most important
    features first and the rest unrepresented: none, the orthogonal subset, antipodal pairs, regular
    polygons of every size in a plane (d ≥ 2), and the regular simplex of d + 1 features (d ≥ 3)."""
    out = [Candidate("none represented", torch.zeros(d, n, dtype=torch.float64))]
    m = min(n, d)
    out.append(
        Candidate(f"orthogonal ({m} features)", _embed(torch.eye(d, dtype=torch.float64)[:, :m], n, d))
    )
    m = min(n, 2 * d)
    if m > min(n, d):
        out.append(Candidate(f"antipodal pairs ({m} features)", _embed(antipodal(m), n, d)))
    if d >= 2:
        for m in range(3, n + 1):
            out.append(
                Candidate(f"{SHAPES.get(m, f'{m}-gon')} ({m} features in a plane)", _embed(polygon(m), n, d))
            )
    if d >= 3 and n >= d + 1:
        name = {4: "tetrahedron"}.get(d + 1, f"{d}-simplex")
        out.append(Candidate(f"{name} ({d + 1} features)", _embed(simplex(d + 1), n, d)))
    return out


def sample(n: int, p: float, count: int, generator: torch.Generator) -> Tensor:
    """(count, n) features: each present with probability p, uniform in [0, 1] when present."""
    present = torch.rand(count, n, generator=generator, dtype=torch.float64) < p
    return present * torch.rand(count, n, generator=generator, dtype=torch.float64)


def per_sample_loss(W: Tensor, b: Tensor, importance: Tensor, x: Tensor) -> Tensor:
    """(N,): (1/n) Σ_i I_i (x_i − ReLU(x WᵀW + b)_i)² for each sample."""
    out = torch.relu(x @ (W.T @ W) + b)
    return ((x - out).square() * importance).mean(-1)


def fit(c: Candidate, importance: Tensor, x: Tensor, steps: int = 60) -> tuple[Tensor, Tensor]:
    """(W, b) with b (and W's overall scale, if c.fit_scale) minimising the loss on x (L-BFGS)."""
    n = c.W.shape[1]
    # b starts just above 0: ReLU has no gradient at exactly 0, where an unrepresented feature's
    # output would stay stuck
    b = torch.full((n,), 1e-3, dtype=torch.float64, requires_grad=True) if c.b is None else c.b.clone()
    log_s = torch.zeros((), dtype=torch.float64, requires_grad=c.fit_scale)
    params = [t for t in (b, log_s) if t.requires_grad]
    if params:
        opt = torch.optim.LBFGS(params, max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = per_sample_loss(c.W * log_s.exp(), b, importance, x).mean()
            loss.backward()
            return loss

        opt.step(closure)
    return (c.W * log_s.exp()).detach(), b.detach()


def closed_form(W: Tensor, b: Tensor, importance: Tensor, p: float, tol: float = 1e-3) -> float | None:
    """The exact expected loss when WᵀW is diagonal with entries 0 or 1 (module docstring), given
    b = 0 on the represented features; None otherwise."""
    G = W.T @ W
    diag = G.diagonal()
    zero_or_one = ((diag - 1).abs() < tol) | (diag.abs() < tol)
    if (G - torch.diag(diag)).abs().max() > tol or not bool(zero_or_one.all()):
        return None
    represented = diag > 0.5
    if bool((b[represented].abs() > 1e-3).any()):
        return None
    return float((importance[~represented] * (p / 3 - p * p / 4)).sum() / W.shape[1])


def evaluate(
    cands: list[Candidate], importance: Tensor, p: float, fit_samples: int, eval_samples: int, seed: int = 0
) -> list[Evaluated]:
    """Every candidate fitted on one sample and evaluated on another (the same for all), sorted by
    estimated loss."""
    g = torch.Generator().manual_seed(seed)
    n = importance.numel()
    x_fit, x_eval = sample(n, p, fit_samples, g), sample(n, p, eval_samples, g)
    out = []
    for c in cands:
        W, b = fit(c, importance, x_fit)
        ls = per_sample_loss(W, b, importance, x_eval)
        se = float(ls.std() / math.sqrt(ls.numel()))
        out.append(Evaluated(c.name, float(ls.mean()), se, closed_form(W, b, importance, p), W, b, ls))
    return sorted(out, key=lambda e: e.loss)


def paired_gap(a: Evaluated, b: Evaluated) -> tuple[float, float]:
    """(loss of b − loss of a, its standard error) from the per-sample differences."""
    diff = b.per_sample - a.per_sample
    return float(diff.mean()), float(diff.std() / math.sqrt(diff.numel()))
