"""The SAE trainer's thread policy: one thread for small steps, torch's own for large ones.

For each shape (d_in, d_sae, k, batch) it trains the same TopK SAE on synthetic data for a fixed
number of steps three ways, each in its own process so nothing is shared:
    torch     torch's default threads (one per core): what SAETrainer did before the policy
    policy    SAETrainer as it is now (cpu.threads_for on the step's size, SUPERPOSITION_THREADS unset)
    one       one thread, forced
and a fourth time under load ("busy": another process keeps one core busy with matrix products,
as a notebook's kernel, a browser or a second run does), torch's threads against the policy.
It prints seconds per step and the policy's speed-up over torch's default; the least favourable
shape is printed last.

    python benchmarks/bench_threads.py [--steps 60] [--shapes small,readme,mid,lm]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SHAPES = {
    "small": (16, 64, 4, 256),
    "readme": (64, 512, 4, 1024),  # the README's synthetic-dictionary snippet
    "mid": (128, 2048, 8, 1024),
    "lm": (576, 4608, 32, 2048),  # an SAE on SmolLM2's residual stream
}

WORKER = r"""
import json, os, sys, time, torch
from superposition.sae import SAE, SAEConfig
from superposition.sae.sources import SyntheticDictionary
from superposition.sae.train import SAETrainConfig, SAETrainer
d, m, k, b, steps, mode = map(lambda v: int(v) if v.isdigit() else v, sys.argv[1:7])
if mode == "one":
    os.environ["SUPERPOSITION_THREADS"] = "1"
elif mode == "torch":
    os.environ["SUPERPOSITION_THREADS"] = str(torch.get_num_threads())
src = SyntheticDictionary(n_features=2 * m, d=d, mean_l0=k, seed=0)
sae = SAE(SAEConfig(architecture="topk", d_in=d, d_sae=m, k=k), torch.Generator().manual_seed(0))
tr = SAETrainer(sae, src, SAETrainConfig(steps=steps, batch_size=b, lr=1e-3, b_dec_init="zeros",
                                         fit_encoder_scale=False))
tr.initialise()
warm = SAETrainer(SAE(SAEConfig(architecture="topk", d_in=d, d_sae=m, k=k)), src,
                  SAETrainConfig(steps=5, batch_size=b, b_dec_init="zeros", fit_encoder_scale=False))
warm.train(progress=False)
t = time.perf_counter()
tr.train(progress=False)
print(json.dumps({"s_per_step": (time.perf_counter() - t) / steps}))
"""

HOG = "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nwhile True:\n    a @ a\n"


def one(shape, steps: int, mode: str) -> float:
    env = {k: v for k, v in os.environ.items() if k != "SUPERPOSITION_THREADS"}
    args = [sys.executable, "-c", WORKER, *map(str, shape), str(steps), mode]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"bench_threads: worker failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["s_per_step"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--shapes", default=",".join(SHAPES))
    args = p.parse_args()
    print(f"{'shape (d_in, d_sae, k, batch)':<32}{'torch':>9}{'policy':>9}{'one':>9}{'speed-up':>10}"
          f"{'busy: torch':>13}{'busy: policy':>14}{'busy: one':>13}{'speed-up':>10}")  # fmt: skip
    rows = []
    for name in args.shapes.split(","):
        shape = SHAPES[name]
        steps = max(10, args.steps // (4 if name == "lm" else 1))
        t, pol, o = (one(shape, steps, mode) for mode in ("torch", "policy", "one"))
        hog = subprocess.Popen([sys.executable, "-c", HOG])
        try:
            time.sleep(1.0)
            bt, bp, bo = one(shape, steps, "torch"), one(shape, steps, "policy"), one(shape, steps, "one")
        finally:
            hog.kill()
            hog.wait()
        rows.append((name, shape, t, pol, o, bt, bp, bo))
        print(f"{name + ' ' + str(shape):<32}{t * 1e3:>7.1f}ms{pol * 1e3:>7.1f}ms{o * 1e3:>7.1f}ms{t / pol:>9.2f}x"
              f"{bt * 1e3:>11.1f}ms{bp * 1e3:>12.1f}ms{bo * 1e3:>11.1f}ms{bt / bp:>9.2f}x", flush=True)  # fmt: skip
    worst = min(rows, key=lambda r: min(r[2] / r[3], r[5] / r[6]))
    print(
        f"least favourable: {worst[0]} {worst[1]}: policy {worst[2] / worst[3]:.2f}x idle, "
        f"{worst[5] / worst[6]:.2f}x busy against torch's default"
    )


if __name__ == "__main__":
    main()
