"""Toy-model training speed: this project's trainer against the plain notebook loop.

Workload: the `geometry` experiment at 16 instances × 400 features × 30 hidden dimensions,
batch 1024, feature probabilities 1/(1−S) log-spaced from 1 to 100, Adam at lr 1e-3. Both
trainers start from the same weights and are scored on the same held-out data.

The plain loop is the common way: a dense Bernoulli mask times dense uniform values, an einsum
forward pass, autograd, Adam. Target: ≥ 5× faster at equal final loss (within 5%).

It also prints where our trainer's time goes, measured on one thread's share of the work (half
the instances): drawing the batch, the five matmuls of a step, and the elementwise passes. The
matmuls are most of it, which bounds what fusing elementwise work can gain.

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


def breakdown(data: FeatureDistribution, reps: int = 30) -> dict[str, float]:
    """Milliseconds per step of one worker thread's share (every other instance), on one thread."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        idx = list(range(0, N_INST, 2))
        sub = data.subset(idx)
        model = ToyModel(N_INST, N_FEAT, D_HIDDEN)
        gen = torch.Generator().manual_seed(0)
        x = sub.sample(BATCH, gen)
        buf = x.transpose(0, 1)
        inst = torch.tensor(idx)
        W = model.W.detach()[inst]
        xi = buf
        hT = torch.bmm(W, xi.transpose(1, 2))
        out = torch.empty_like(xi)
        g = torch.empty_like(W)

        def timed(fn) -> float:
            fn()
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            return 1e3 * (time.perf_counter() - t) / reps

        def matmuls():
            torch.bmm(W, xi.transpose(1, 2))  # encoder
            torch.bmm(hT.transpose(1, 2), W, out=out)  # decoder
            torch.bmm(hT, out, out=g)  # decoder gradient
            gh = torch.bmm(W, out.transpose(1, 2))  # gradient at h
            g.baddbmm_(gh, xi)  # encoder gradient

        sample = timed(lambda: sub.sample(BATCH, gen, out=buf))
        grads = timed(lambda: model.grads_for(x, inst, False))
        mm = timed(matmuls)
        return {"sample": sample, "grads": grads, "matmuls": mm, "elementwise": grads - mm}
    finally:
        torch.set_num_threads(saved)


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

    # The first optimiser of a process imports torch._dynamo (about 1.5 s); pay it before timing
    # either trainer, or the one that runs first carries it.
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])

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
    print(f"speed-up: {speedup:.2f}x (target >= 5x); final losses differ by {100 * rel:.2f}% (target <= 5%)")
    parts = breakdown(data)
    share = parts["matmuls"] / (parts["sample"] + parts["grads"])
    print(
        "one thread's share of a step (8 of 16 instances, 1 thread): "
        + ", ".join(f"{k} {v:.2f} ms" for k, v in parts.items())
        + f"; matmuls are {100 * share:.0f}% of it"
    )
    floor = parts["sample"] + parts["matmuls"]
    print(
        f"with every elementwise pass free, a step would still take {floor:.1f} ms per thread: at most "
        f"{1e3 * base / args.steps / floor:.1f}x the plain loop"
    )
    ok = speedup >= 5 and rel <= 0.05
    print("PASS" if ok else "FAIL")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
