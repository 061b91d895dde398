"""Transcoder training against EleutherAI's sparsify (eai-sparsify 1.3.3, its eager CPU path) on the
same activations: SmolLM2-135M-Instruct's blocks.6 MLP input (after its norm) and output, written
once by this project's activation store; TopK transcoders of the same width and k, Adam at the same
learning rate and batch (1024 rows), the same number of steps, AuxK on latents dead for 20 steps.

Each trainer runs in its own process (sparsify in its own environment, made by peers.py), the order
alternating, best of --repeats. Printed: training rows/s, held-out FVU of the MLP output, L0 and
peak RSS, for every (d_sae, k) shape; and the least favourable shape. Target: faster than
sparsify at equal or better FVU.

    python benchmarks/bench_transcoder.py [--steps 200] [--repeats 2] [--shapes 512x8,2304x16,4608x32,9216x64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from grid_common import BATCH, LR, our_train_config  # noqa: E402
from measure import peak_rss_mib  # noqa: E402
from peers import python_of  # noqa: E402

HOOK = "blocks.6.mlp"


def make_data(path: Path, rows: int, eval_rows: int) -> None:
    from superposition.lm.hooks import HookedModel
    from superposition.lm.model import load_model
    from superposition.lm.store import ActivationStore

    lm = load_model()
    hooked = HookedModel(lm.model)
    store = ActivationStore(
        lm, hooked, HOOK, dataset_path="python-docs", context_size=128, prepend_bos=True,
        buffer_sequences=64, model_batch_size=16,
    )  # fmt: skip
    train = store.sample(rows)
    held = ActivationStore(
        lm, hooked, HOOK, dataset_path="python-docs", context_size=128, prepend_bos=True,
        buffer_sequences=64, model_batch_size=16, holdout=True,
    ).sample(eval_rows)  # fmt: skip
    d = hooked.d_model
    held = {"eval_x": held[:, :d].contiguous(), "eval_y": held[:, d:].contiguous()}
    # each trainer reads the layout it trains on, so neither holds a second copy: sparsify x and y,
    # ours the rows [x | y]
    save_file({"train_x": train[:, :d].contiguous(), "train_y": train[:, d:].contiguous(), **held}, str(path))
    save_file({"train_rows": train, **held}, str(rows_file(path)))


def rows_file(path: Path) -> Path:
    return path.with_name(path.stem + "_rows.safetensors")


def ours_worker(data: str, d_sae: int, k: int, steps: int, seed: int) -> None:
    from superposition.cpu import tune_allocator
    from superposition.sae import SAEConfig, make_sae
    from superposition.sae.sources import TensorSource
    from superposition.sae.train import SAETrainer

    tune_allocator()
    t = load_file(str(rows_file(Path(data))))
    rows = t["train_rows"]
    d = t["eval_x"].shape[1]
    sae = make_sae(
        SAEConfig(architecture="transcoder", d_in=d, d_sae=d_sae, k=k), torch.Generator().manual_seed(seed)
    )
    # built before the clock starts, as sparsify's worker builds its optimiser (the first Adam of a
    # process imports torch._dynamo, about 1.5 s); initialisation and training are timed
    trainer = SAETrainer(sae, TensorSource(rows), our_train_config(steps, seed))
    start = time.perf_counter()
    trainer.train(progress=False)
    seconds = time.perf_counter() - start
    sae.eval()
    err = nnz = 0.0
    with torch.no_grad():
        for xs, ys in zip(t["eval_x"].split(BATCH), t["eval_y"].split(BATCH)):
            z = sae.encode(xs.unsqueeze(1))
            err += (ys - sae.decode(z, xs.unsqueeze(1))[:, 0]).square().sum().item()
            nnz += float((z != 0).sum())
    ey = t["eval_y"]
    fvu = err / (ey - ey.mean(0)).square().sum().item()
    line = {"seconds": seconds, "samples": steps * BATCH, "fvu": fvu, "l0": nnz / ey.shape[0],
            "peak_rss_mib": peak_rss_mib()}  # fmt: skip
    print(json.dumps(line), flush=True)


def run(cmd: list[str], who: str) -> dict:
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"benchmark: {who} failed: {last}")
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--shapes", default="512x8,2304x16,4608x32,9216x64", help="d_sae x k, comma-separated"
    )
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        data, d_sae, k, steps, seed = args.worker
        return ours_worker(data, int(d_sae), int(k), int(steps), int(seed))
    shapes = [tuple(map(int, s.split("x"))) for s in args.shapes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "mlp.safetensors"
        print(
            f"activations: {args.steps * BATCH} training rows of SmolLM2 {HOOK} (in and out) ...", flush=True
        )
        make_data(data, args.steps * BATCH, 8192)
        trainers = {
            "superposition": [sys.executable, str(HERE / "bench_transcoder.py"), "--worker"],
            "sparsify": [str(python_of("sparsify")), str(HERE / "transcoder_sparsify_worker.py")],
        }
        results = []
        for n, (d_sae, k) in enumerate(shapes):
            best: dict[str, dict] = {}
            order = list(trainers) if n % 2 == 0 else list(trainers)[::-1]
            for rep in range(args.repeats):
                for who in order if rep % 2 == 0 else order[::-1]:
                    r = run([*trainers[who], str(data), str(d_sae), str(k), str(args.steps), str(rep)], who)
                    if who not in best or r["seconds"] < best[who]["seconds"]:
                        best[who] = r
            results.append((d_sae, k, best))
    print(f"\n{args.steps} steps of {BATCH} rows, d_in 576 -> d_out 576, lr {LR}, best of {args.repeats}")
    print(f"{'d_sae':>6}{'k':>4} {'trainer':<15}{'rows/s':>10}{'FVU':>8}{'L0':>7}{'peak MiB':>10}")
    speedups = []
    for d_sae, k, best in results:
        for who, r in best.items():
            print(f"{d_sae:>6}{k:>4} {who:<15}{r['samples'] / r['seconds']:>10,.0f}{r['fvu']:>8.4f}{r['l0']:>7.1f}"
                  f"{r['peak_rss_mib']:>10,.0f}")  # fmt: skip
        s = best["sparsify"]["seconds"] / best["superposition"]["seconds"]
        speedups.append((s, d_sae, k, best["superposition"]["fvu"] <= best["sparsify"]["fvu"]))
        print(f"{'':>11}speed-up {s:.2f}x, FVU {'equal or better' if speedups[-1][3] else 'WORSE'}")
    worst = min(speedups)
    print(f"\nleast favourable shape: d_sae {worst[1]}, k {worst[2]}: {worst[0]:.2f}x")
    print(f"this process peak RSS {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
