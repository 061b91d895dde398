"""Toy-model training speed: this project's trainer against the plain notebook loop.

Main workload: the `geometry` experiment at 16 instances × 400 features × 30 hidden dimensions,
batch 1024, feature probabilities 1/(1−S) log-spaced from 1 to 100, Adam at lr 1e-3. Two more
shapes check that the speed-up is not a property of one shape: the `intro` experiment (10 × 5 × 2,
where per-step overhead dominates) and a wide one (8 × 1000 × 50). Both trainers start from the
same weights and are scored on the same held-out data.

The plain loop is the common way: a dense Bernoulli mask times dense uniform values, an einsum
forward pass, autograd, Adam. Target on the geometry workload: ≥ 5× faster at equal final loss
(within 5%).

It also prints where our trainer's time goes on the geometry workload, measured on one thread's
share of the work (half the instances): drawing the batch, the five matmuls of a step, and the
elementwise passes. The matmuls are most of it, which bounds what fusing elementwise work can gain.

    python benchmarks/bench_toy_trainer.py [--steps 600] [--shapes geometry,intro,wide]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import torch

from superposition.toy.data import FeatureDistribution
from superposition.toy.model import ToyModel
from superposition.toy.train import evaluate_losses, train_toy_model

BATCH, LR = 1024, 1e-3


@dataclass(frozen=True)
class Shape:
    n_inst: int
    n_feat: int
    d_hidden: int

    def __str__(self) -> str:
        return f"{self.n_inst} x {self.n_feat} x {self.d_hidden}"


SHAPES = {"geometry": Shape(16, 400, 30), "intro": Shape(10, 5, 2), "wide": Shape(8, 1000, 50)}


def matmul_peak_gflops() -> float:
    a = torch.randn(2048, 2048)
    a @ a
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    return 2 * 2048**3 / best / 1e9


def flops_per_step(s: Shape) -> float:
    # forward: h = W x and Wᵀh; backward: ∂W (decoder), ∂h, ∂W (encoder): 5 matmuls of 2·B·F·H
    return 5 * 2 * BATCH * s.n_feat * s.d_hidden * s.n_inst


def plain_loop(s: Shape, W0: torch.Tensor, p: torch.Tensor, steps: int, seed: int) -> ToyModel:
    torch.manual_seed(seed)
    W = torch.nn.Parameter(W0.clone())
    b = torch.nn.Parameter(torch.zeros(s.n_inst, s.n_feat))
    importance = torch.ones(s.n_inst, s.n_feat)
    opt = torch.optim.Adam([W, b], lr=LR)
    prob = p.unsqueeze(0)  # (1, inst, feat)
    for _ in range(steps):
        x = (torch.rand(BATCH, s.n_inst, s.n_feat) < prob) * torch.rand(BATCH, s.n_inst, s.n_feat)
        h = torch.einsum("bif,ihf->bih", x, W)
        out = torch.relu(torch.einsum("bih,ihf->bif", h, W) + b)
        loss = (importance * (x - out) ** 2).mean((0, 2)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model = ToyModel(s.n_inst, s.n_feat, s.d_hidden)
    with torch.no_grad():
        model.W.copy_(W)
        model.b.copy_(b)
    return model


def breakdown(s: Shape, data: FeatureDistribution, reps: int = 30) -> dict[str, float]:
    """Milliseconds per step of one worker thread's share (every other instance), on one thread."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        idx = list(range(0, s.n_inst, 2))
        sub = data.subset(idx)
        model = ToyModel(s.n_inst, s.n_feat, s.d_hidden)
        gen = torch.Generator().manual_seed(0)
        x = sub.sample(BATCH, gen)
        buf = x.transpose(0, 1)
        inst = torch.tensor(idx)
        W = model.W.detach()[inst]
        hT = torch.bmm(W, buf.transpose(1, 2))
        out = torch.empty_like(buf)
        g = torch.empty_like(W)

        def timed(fn) -> float:
            fn()
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            return 1e3 * (time.perf_counter() - t) / reps

        def matmuls():
            torch.bmm(W, buf.transpose(1, 2))  # encoder
            torch.bmm(hT.transpose(1, 2), W, out=out)  # decoder
            torch.bmm(hT, out, out=g)  # decoder gradient
            gh = torch.bmm(W, out.transpose(1, 2))  # gradient at h
            g.baddbmm_(gh, buf)  # encoder gradient

        sample = timed(lambda: sub.sample(BATCH, gen, out=buf))
        grads = timed(lambda: model.grads_for(x, inst, False))
        mm = timed(matmuls)
        return {"sample": sample, "grads": grads, "matmuls": mm, "elementwise": grads - mm}
    finally:
        torch.set_num_threads(saved)


def run_shape(name: str, s: Shape, steps: int, seed: int, peak: float) -> dict:
    inv_s = np.geomspace(1, 100, s.n_inst)
    p = torch.tensor(1 / inv_s, dtype=torch.float32).unsqueeze(1).expand(s.n_inst, s.n_feat).contiguous()
    data = FeatureDistribution(p)
    W0 = ToyModel(s.n_inst, s.n_feat, s.d_hidden, generator=torch.Generator().manual_seed(seed)).W.detach()

    model = ToyModel(s.n_inst, s.n_feat, s.d_hidden)
    with torch.no_grad():
        model.W.copy_(W0)
    t = time.perf_counter()
    train_toy_model(model, data, steps=steps, batch_size=BATCH, lr=LR, seed=seed, progress=False)
    ours = time.perf_counter() - t

    t = time.perf_counter()
    plain = plain_loop(s, W0.clone(), p, steps, seed)
    base = time.perf_counter() - t

    loss_ours = evaluate_losses(model, data, n_rows=32768).sum().item()
    loss_plain = evaluate_losses(plain, data, n_rows=32768).sum().item()
    fl = flops_per_step(s) * steps / 1e9
    print(f"\n{name}: {s} (instances x features x hidden), batch {BATCH}, {steps} steps")
    print(f"{'trainer':<14}{'seconds':>9}{'ms/step':>9}{'GFLOP/s':>9}{'% peak':>8}{'final loss':>12}")
    for label, sec, loss in (("superposition", ours, loss_ours), ("plain loop", base, loss_plain)):
        print(
            f"{label:<14}{sec:>9.2f}{1e3 * sec / steps:>9.2f}{fl / sec:>9.1f}"
            f"{100 * fl / sec / peak:>7.1f}%{loss:>12.5f}"
        )
    speedup, rel = base / ours, abs(loss_ours - loss_plain) / loss_plain
    print(f"speed-up {speedup:.2f}x; final losses differ by {100 * rel:.2f}%")
    out = {"speedup": speedup, "rel": rel, "plain_ms": 1e3 * base / steps}
    if name == "geometry":
        parts = breakdown(s, data)
        share = parts["matmuls"] / (parts["sample"] + parts["grads"])
        print(
            "one thread's share of a step (half the instances, 1 thread): "
            + ", ".join(f"{k} {v:.2f} ms" for k, v in parts.items())
            + f"; matmuls are {100 * share:.0f}% of it"
        )
        floor = parts["sample"] + parts["matmuls"]
        print(
            f"with every elementwise pass free, a step would still take {floor:.1f} ms per thread: at most "
            f"{out['plain_ms'] / floor:.1f}x the plain loop"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shapes", default="geometry,intro,wide", help=f"comma-separated, of {list(SHAPES)}")
    args = parser.parse_args()
    names = args.shapes.split(",")
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        raise SystemExit(f"--shapes: unknown {unknown}; allowed: {', '.join(SHAPES)}")

    print(f"{torch.get_num_threads()} threads")
    peak = matmul_peak_gflops()
    print(f"matmul peak (2048^3 fp32): {peak:.1f} GFLOP/s")
    # The first optimiser of a process imports torch._dynamo (about 1.5 s); pay it before timing
    # either trainer, or the one that runs first carries it.
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    results = {n: run_shape(n, SHAPES[n], args.steps, args.seed, peak) for n in names}

    print()
    worst = min(results, key=lambda n: results[n]["speedup"])
    print(
        "speed-ups: "
        + ", ".join(f"{n} {r['speedup']:.2f}x" for n, r in results.items())
        + f"; least favourable: {worst}"
    )
    ok = all(r["rel"] <= 0.05 for r in results.values())
    if "geometry" in results:
        g = results["geometry"]
        print(
            f"geometry: {g['speedup']:.2f}x (target >= 5x), final losses within {100 * g['rel']:.2f}% (<= 5%)"
        )
        ok = ok and g["speedup"] >= 5
    print("PASS" if ok else "FAIL")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
