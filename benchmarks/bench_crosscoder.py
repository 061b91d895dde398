"""Crosscoder training throughput against two single-model SAEs of the same total width.

Workload: one training step (loss, backward, Adam) on activations of two sources of width d
(random, as the model's forward pass is the same for both: each token of each model is computed
once either way). Contenders, all BatchTopK and all with the same total number of latents D and
the same number of active latents per token pair (k):

  crosscoder          our Crosscoder, D latents reading both sources, k per token (the active-pair path)
  crosscoder, dense   the same loss with dense products (Crosscoder.loss_dense): the path the active
                      one replaced
  two SAEs            our BatchTopK SAE with two instances (one per model), D/2 latents and k/2 per
                      token each: what training one SAE per model costs, in one batched module

A crosscoder's encoder reads both sources (2·d·D multiply-adds per token against d·D for the two
SAEs), so about half the two SAEs' throughput is the architecture's own price; the figure to
watch is how close to it the implementation comes, on every shape, and the least favourable one.

    python benchmarks/bench_crosscoder.py [--steps 8] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

SHAPES = [  # (d, total latents D, k per token pair, batch tokens)
    (576, 4608, 32, 2048),
    (576, 9216, 64, 2048),
    (576, 4608, 32, 8192),
    (256, 2048, 16, 4096),
    (1024, 8192, 32, 1024),
]


def timed(step, steps: int) -> float:
    step()  # warm-up (allocations, first-call dispatch)
    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


def crosscoder_step(d: int, D: int, k: int, batch: int, dense: bool):
    from superposition.sae.crosscoder import Crosscoder

    cc = Crosscoder(2, d, D, "batchtopk", k=k, generator=torch.Generator().manual_seed(0)).train()
    opt = torch.optim.Adam(cc.parameters(), lr=1e-4)
    x = torch.randn(batch, 2, d)

    def step():
        loss = (cc.loss_dense(x) if dense else cc.loss(x))[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def two_saes_step(d: int, D: int, k: int, batch: int):
    from superposition.sae import make_sae
    from superposition.sae.base import StepState
    from superposition.sae.config import SAEConfig

    cfg = SAEConfig.build(
        {"architecture": "batchtopk", "d_in": d, "d_sae": D // 2, "k": k // 2, "n_instances": 2}
    )
    sae = make_sae(cfg).train()
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    x = torch.randn(batch, 2, d)
    state = StepState()

    def step():
        out = sae.loss(x, state)
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        opt.step()

    return step


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="the first two shapes only")
    args = ap.parse_args()
    torch.manual_seed(0)
    shapes = SHAPES[:2] if args.quick else SHAPES
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; tokens/s of one training step")
    head = f"{'d':>5} {'D':>6} {'k':>4} {'batch':>6} | {'crosscoder':>10} {'cc dense':>9} {'two SAEs':>9} | "
    print(head + "cc / two SAEs  cc / dense")
    ratios = []
    for d, D, k, batch in shapes:
        cc = batch / timed(crosscoder_step(d, D, k, batch, dense=False), args.steps)
        dense = batch / timed(crosscoder_step(d, D, k, batch, dense=True), args.steps)
        two = batch / timed(two_saes_step(d, D, k, batch), args.steps)
        ratios.append(((d, D, k, batch), cc / two, cc / dense))
        print(f"{d:>5} {D:>6} {k:>4} {batch:>6} | {cc:>10.0f} {dense:>9.0f} {two:>9.0f} | "
              f"{cc / two:>13.2f} {cc / dense:>11.2f}", flush=True)  # fmt: skip
    worst = min(ratios, key=lambda r: r[1])
    print(
        f"least favourable shape {worst[0]}: the crosscoder trains at {worst[1]:.2f}x the two SAEs' tokens/s "
        f"(architecture's price: about 0.5x); its active-pair path is {min(r[2] for r in ratios):.2f}x to "
        f"{max(r[2] for r in ratios):.2f}x the dense one"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
