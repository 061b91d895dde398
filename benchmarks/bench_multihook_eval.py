"""The end-of-run evaluation of a multi-hook train-sae run: time and peak memory, per hook.

Workload: SmolLM2-135M-Instruct (float32), TopK SAEs of 4608 latents (k = 32) at
blocks.{0,6}.hook_resid_post trained on 30,720 tokens (made once, kept in .bench-cache/), evaluated
on 64 held-out sequences of 128 tokens in model batches of 16, as train-sae's defaults do. Each way
runs in its own process, so its peak RSS is its own:

  per-hook   the baseline: for each hook, `evaluate_sae` (a clean, a spliced and a zero-ablated
             forward pass per batch) then `depth_characteristics` (its own truncated forward pass),
             as train-sae evaluated before;
  shared     `evaluate_saes`: one clean forward pass per batch captures every hook, then each hook
             costs its spliced and its zero-ablated pass; the depth statistics reuse the latents.

Printed: seconds (and seconds per hook), peak RSS in MiB, and the largest difference between the
two ways' metrics. The target: a hook costs about one single-hook evaluation.

    python benchmarks/bench_multihook_eval.py [--hooks 0,6] [--sequences 64] [--worker per-hook|shared]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import peak_rss_mib  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".bench-cache" / "multihook-eval"


def train(layers: list[int]) -> Path:
    run = CACHE / f"run-{'-'.join(map(str, layers))}"
    if (run / "saes").is_dir():
        return run
    hooks = "[" + ",".join(f"blocks.{L}.hook_resid_post" for L in layers) + "]"
    cmd = [sys.executable, "-m", "superposition", "train-sae", "--out", str(run), "--set", f"hook_name={hooks}",
           "--set", "training_tokens=30720", "--set", "eval_sequences=4"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    return run


def worker(way: str, run: Path, layers: list[int], sequences: int) -> dict:
    import torch

    from superposition.lm.config import LMSAEConfig
    from superposition.lm.hooks import HookedModel
    from superposition.lm.model import load_model
    from superposition.lm.store import ActivationStore
    from superposition.sae.io import load_sae

    torch.manual_seed(0)
    cfg = LMSAEConfig.build(json.loads((run / "config.json").read_text()))
    lm = load_model(cfg.model_name)
    hooked = HookedModel(lm.model)
    seqs = ActivationStore.for_run(cfg, lm, hooked, holdout=True).first_sequences(sequences)
    hooks = [f"blocks.{L}.hook_resid_post" for L in layers]
    saes = {h: load_sae(run / "saes" / h) for h in hooks}
    rss0 = peak_rss_mib()
    t0 = time.perf_counter()
    if way == "per-hook":
        from superposition.lm.analysis import depth_characteristics
        from superposition.lm.evals import evaluate_sae

        out = {}
        for h, sae in saes.items():
            out[h] = evaluate_sae(hooked, lm.tokenizer, sae, h, seqs, batch_size=cfg.model_batch_size)
            out[h].update(depth_characteristics(hooked, lm.tokenizer, sae, h, seqs, cfg.model_batch_size))
    else:
        from superposition.lm.evals import evaluate_saes

        out = evaluate_saes(hooked, lm.tokenizer, saes, seqs, batch_size=cfg.model_batch_size, depth=True)
    seconds = time.perf_counter() - t0
    keys = ("l0", "explained_variance", "ce_loss_clean", "ce_loss_with_sae", "ce_loss_zero_ablation", "kl_div",
            "token_likeness", "mean_abs_dla")  # fmt: skip
    return {"seconds": seconds, "peak_rss_mib": peak_rss_mib(), "rss_before_mib": rss0,
            "metrics": {h: {k: out[h][k] for k in keys} for h in hooks}}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hooks", default="0,6")
    ap.add_argument("--sequences", type=int, default=64)
    ap.add_argument("--worker", default=None)
    ap.add_argument("--run", default=None)
    args = ap.parse_args()
    layers = [int(x) for x in args.hooks.split(",")]
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.run), layers, args.sequences)))
        return
    run = train(layers)
    results = {}
    for way in ("per-hook", "shared"):
        cmd = [sys.executable, __file__, "--worker", way, "--run", str(run), "--hooks", args.hooks,
               "--sequences", str(args.sequences)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[way] = json.loads(done.stdout.strip().splitlines()[-1])
    n = len(layers)
    print(f"{n} hooks, {args.sequences} held-out sequences of 128 tokens, SmolLM2-135M, TopK 4608 / k 32")
    print(f"{'way':<10} {'seconds':>9} {'s/hook':>8} {'peak RSS MiB':>13} {'model+data MiB':>15}")
    for way, r in results.items():
        print(f"{way:<10} {r['seconds']:>9.1f} {r['seconds'] / n:>8.1f} {r['peak_rss_mib']:>13.0f} "
              f"{r['rss_before_mib']:>15.0f}")  # fmt: skip
    a, b = results["per-hook"], results["shared"]
    print(f"shared is {a['seconds'] / b['seconds']:.2f}x as fast as per-hook; peak RSS "
          f"{b['peak_rss_mib']:.0f} against {a['peak_rss_mib']:.0f} MiB")  # fmt: skip
    worst = max(
        abs(a["metrics"][h][k] - b["metrics"][h][k]) / max(abs(a["metrics"][h][k]), 1e-9)
        for h in a["metrics"]
        for k in a["metrics"][h]
    )
    print(f"largest relative difference between the two ways' metrics: {worst:.2e}")


if __name__ == "__main__":
    main()
