"""Toy-model training speed: this project's trainer against the plain notebook loop.

Workload: the `geometry` experiment at 16 instances × 400 features × 30 hidden dimensions,
batch 1024, feature probabilities 1/(1−S) log-spaced from 1 to 100, Adam at lr 1e-3. Both
trainers start from the same weights and are scored on the same held-out data.

The plain loop is the common way: a dense Bernoulli mask times dense uniform values, an einsum
forward pass, autograd, Adam. Target: ≥ 3× faster at equal final loss (within 5%).

    python benchmarks/bench_toy_trainer.py [--steps 600]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from superposition.toy.data import FeatureDistribution
from superposition.toy.model import ToyModel
from superposition.toy.train import evaluate_losses, train_toy_model

N_INST, N_FEAT, D_HIDDEN, BATCH, LR = 16, 400, 30, 1024, 1e-3


def matmul_peak_gflops() -> float:
    a = torch.randn(2048, 2048)
    a @ a
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    return 2 * 2048**3 / best / 1e9


def flops_per_step() -> float:
    # forward: h = W x and Wᵀh; backward: ∂W (decoder), ∂h, ∂W (encoder): 5 matmuls of 2·B·F·H
    return 5 * 2 * BATCH * N_FEAT * D_HIDDEN * N_INST


def plain_loop(W0: torch.Tensor, p: torch.Tensor, steps: int, seed: int) -> ToyModel:
    torch.manual_seed(seed)
    W = torch.nn.Parameter(W0.clone())
    b = torch.nn.Parameter(torch.zeros(N_INST, N_FEAT))
    importance = torch.ones(N_INST, N_FEAT)
    opt = torch.optim.Adam([W, b], lr=LR)
    prob = p.unsqueeze(0)  # (1, inst, feat)
    for _ in range(steps):
        x = (torch.rand(BATCH, N_INST, N_FEAT) < prob) * torch.rand(BATCH, N_INST, N_FEAT)
        h = torch.einsum("bif,ihf->bih", x, W)
        out = torch.relu(torch.einsum("bih,ihf->bif", h, W) + b)
        loss = (importance * (x - out) ** 2).mean((0, 2)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model = ToyModel(N_INST, N_FEAT, D_HIDDEN)
    with torch.no_grad():
        model.W.copy_(W)
        model.b.copy_(b)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    inv_s = np.geomspace(1, 100, N_INST)
    p = torch.tensor(1 / inv_s, dtype=torch.float32).unsqueeze(1).expand(N_INST, N_FEAT).contiguous()
    data = FeatureDistribution(p)
    W0 = (
        ToyModel(N_INST, N_FEAT, D_HIDDEN, generator=torch.Generator().manual_seed(args.seed))
        .W.detach()
        .clone()
    )

    print(
        f"workload: {N_INST} instances x {N_FEAT} features x {D_HIDDEN} hidden, batch {BATCH}, {args.steps} "
        "steps, "
        f"{torch.get_num_threads()} threads"
    )
    peak = matmul_peak_gflops()
    print(f"matmul peak (2048^3 fp32): {peak:.1f} GFLOP/s")

    model = ToyModel(N_INST, N_FEAT, D_HIDDEN)
    with torch.no_grad():
        model.W.copy_(W0)
    t = time.perf_counter()
    train_toy_model(model, data, steps=args.steps, batch_size=BATCH, lr=LR, seed=args.seed, progress=False)
    ours = time.perf_counter() - t

    t = time.perf_counter()
    plain = plain_loop(W0, p, args.steps, args.seed)
    base = time.perf_counter() - t

    loss_ours = evaluate_losses(model, data, n_rows=32768).sum().item()
    loss_plain = evaluate_losses(plain, data, n_rows=32768).sum().item()
    fl = flops_per_step() * args.steps / 1e9
    speedup = base / ours
    rel = abs(loss_ours - loss_plain) / loss_plain

    print(f"{'trainer':<14}{'seconds':>9}{'ms/step':>9}{'GFLOP/s':>9}{'% peak':>8}{'final loss':>12}")
    for name, sec, loss in (("superposition", ours, loss_ours), ("plain loop", base, loss_plain)):
        print(
            f"{name:<14}{sec:>9.2f}{1e3 * sec / args.steps:>9.2f}{fl / sec:>9.1f}"
            f"{100 * fl / sec / peak:>7.1f}%{loss:>12.5f}"
        )
    print(f"speed-up: {speedup:.2f}x (target >= 3x); final losses differ by {100 * rel:.2f}% (target <= 5%)")
    ok = speedup >= 3 and rel <= 0.05
    print("PASS" if ok else "FAIL")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
