"""autointerp speed with the local explainer: seconds per latent, the share spent in the model, and
what batching prompts through the model gains over one prompt at a time.

Explains and scores 20 latents of a train-sae run (default: a run with the default settings,
SmolLM2 blocks.6.hook_resid_post, trained here on 200k tokens unless --run names one) with the
offline SmolLM2-135M-Instruct, from an empty answer cache. Then replays 48 of the run's scoring
prompts through the local client in batches of 16 and one at a time.

    python benchmarks/bench_autointerp.py [--run DIR] [--latents 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from superposition.commands.autointerp import autointerp
from superposition.interp.clients import LocalClient
from superposition.interp.examples import LatentExamples, Window
from superposition.interp.explain import detection_requests, fuzzing_requests


def default_run(folder: Path) -> Path:
    from superposition.lm.config import make_lm_config
    from superposition.runs.train import train_lm_sae

    out = folder / "run"
    train_lm_sae(make_lm_config(None, ["training_tokens=200000"]), out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default=None, help="a train-sae run (default: train one here)")
    parser.add_argument("--latents", type=int, default=20)
    parser.add_argument("--sequences", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = Path(args.run) if args.run else default_run(tmp)
        t = time.perf_counter()
        out = autointerp(
            str(run), tmp / "ai", latents=args.latents, sequences=args.sequences, cache=tmp / "cache"
        )
        total = time.perf_counter() - t
        s = json.loads((out / "summary.json").read_text())
        rows = [json.loads(line) for line in (out / "explanations.jsonl").read_text().splitlines()]
        print(f"\n{s['explained']} of {s['latents']} latents explained and scored in {total:.0f} s")
        print(
            f"seconds per latent: {total / args.latents:.1f}; in the model: {s['model_seconds']:.0f} s "
            f"({100 * s['model_seconds'] / total:.0f}%); calls {s['calls']}, prompt tokens {s['prompt_tokens']:,}, "
            f"completion tokens {s['completion_tokens']:,}"
        )
        for key in ("detection.balanced_accuracy", "detection.auc", "fuzzing.balanced_accuracy", "fuzzing.auc",
                    "simulation.pearson_r"):  # fmt: skip
            cells = [s["scores"][key]] + [s["controls"][c][key] for c in ("shuffled", "top_tokens")]
            print(
                f"  {key:<28}"
                + "".join(
                    f"{name} {c['mean']:.3f} ± {c['sem']:.3f}   "
                    if c["mean"] is not None
                    else f"{name} n/a   "
                    for name, c in zip(("explanation", "shuffled", "top-tokens"), cells)
                )
            )
        # batching: the same prompts through the model 16 at a time and one at a time
        ok = next(r for r in rows if "error" not in r)
        w = [Window(**x) for x in ok["scoring_examples"]["activating"]]
        n = [Window(**x) for x in ok["scoring_examples"]["negative"]]
        ex = LatentExamples([], w, n)
        reqs = (detection_requests(ok["explanation"], ex)[0] + fuzzing_requests(ok["explanation"], ex)[0]) * 3
        reqs = reqs[:48]
        client = LocalClient(batch_size=16)
        client.complete(reqs[:2])
        t = time.perf_counter()
        client.complete(reqs)
        batched = time.perf_counter() - t
        client.batch_size = 1
        t = time.perf_counter()
        client.complete(reqs)
        single = time.perf_counter() - t
        print(
            f"{len(reqs)} scoring prompts: batched (16) {len(reqs) / batched:.1f} prompts/s, one at a time "
            f"{len(reqs) / single:.1f} prompts/s ({single / batched:.2f}x)"
        )


if __name__ == "__main__":
    main()
