"""eval-sae's SAEBench evaluations: seconds per SAE of each, on SmolLM2-135M-Instruct (float32, CPU).

Workload: TopK SAEs at blocks.6.hook_resid_post, 4608 latents (k = 32) and 18,432 latents (k = 32),
trained on 40,960 tokens (made once, kept in .bench-cache/evals/); the evaluations at eval-sae's
defaults (64 held-out sequences of 128 tokens; 2000 first-letter words; 150 texts per class of 128
tokens for sparse probing and TPP). Three SAEs in one table, the cache off: the 4608-latent SAE
first (it pays for what every SAE at the hook shares: the held-out tokens, the first-letter prompts
and probes, the probing texts' activations and the model's own probes), then the 18,432-latent SAE,
then the 4608-latent SAE again (what one more SAE of that shape costs). autointerp is timed by
bench_autointerp.py (it is the `autointerp` command's scorer).

Printed: a table of seconds per evaluation for each of the three, the total per SAE, and the least
favourable (largest) marginal cost. The target: the whole suite on one SAE in minutes, not hours.

    python benchmarks/bench_evals.py [--evals core,absorption,sparse_probing,tpp] [--words 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".bench-cache" / "evals"


def train(d_sae: int) -> Path:
    from superposition.cli import main as cli

    run = CACHE / f"topk-{d_sae}"
    if (run / "sae").is_dir():
        return run
    sets = ["training_tokens=40960", "eval_sequences=4", "tensorboard=false", "architecture=topk", "k=32",
            f"d_sae={d_sae}"]  # fmt: skip
    if cli(["train-sae", "--out", str(run), *[a for s in sets for a in ("--set", s)]]) != 0:
        raise SystemExit("bench_evals: could not train the SAE")
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evals", default="core,absorption,sparse_probing,tpp,scr")
    ap.add_argument("--words", type=int, default=2000)
    ap.add_argument("--per-class", type=int, default=150)
    args = ap.parse_args()
    import torch

    from superposition.runs import saebench as rs
    from superposition.runs.targets import load_run

    small, wide = train(4608), train(18432)
    entries = [rs.Entry("4608", str(small), load_run(small)), rs.Entry("18432", str(wide), load_run(wide)),
               rs.Entry("4608 again", str(small), load_run(small))]  # fmt: skip
    evals = args.evals.split(",")
    settings = rs.Settings(absorption_words=args.words, probing_per_class=args.per_class)
    t0 = time.perf_counter()
    _, shared = rs.evaluate_many(entries, evals, settings, rs.Cache(None))
    total = time.perf_counter() - t0
    each = shared["seconds_each"]
    print(f"\nSmolLM2-135M-Instruct, {torch.get_num_threads()} threads; seconds per SAE (cache off)\n")
    print("| evaluation | 4608 latents, first (with shared data) | 18,432 latents | 4608 latents, again |")
    print("|---|---:|---:|---:|")
    for name in evals:
        print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in each[name]) + " |")
    sums = [sum(each[n][i] for n in evals) for i in range(3)]
    print("| **all** | " + " | ".join(f"**{v:.1f}**" for v in sums) + " |")
    print(f"\nwhole table: {total:.0f} s; least favourable further SAE: {max(sums[1:]):.0f} s "
          f"({'18,432' if sums[1] >= sums[2] else '4608'} latents); first SAE with the shared data: {sums[0]:.0f} s")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
