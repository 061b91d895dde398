"""Language-model SAE training, end to end: this project against SAELens, same model, hook, text
and token budget, in the same run.

Workload: SmolLM2-135M-Instruct (the offline default, de-quantised to float32) at
blocks.6.hook_resid_post, the `python-docs` corpus written to one JSONL file that both read,
context 128 with BOS, batch 2048 tokens, a TopK SAE with 4608 latents and k = 32, Adam at lr 1e-3
with 20 warm-up steps. Each side runs in its own process; SAELens (not a dependency) in its own
environment (.bench-envs/saelens, made by peers.py).

Printed: tokens/s end to end, tokens/s of activation generation (model forward passes only) and of
SAE training (the rest), peak RSS, and both SAEs evaluated by the same code on the same held-out
sequences (explained variance, L0, CE loss recovered). Target: faster end to end, with equal or
better explained variance at equal L0.

    python benchmarks/bench_lm_sae.py [--tokens 300000] [--skip-saelens]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sae_topk import run_worker  # noqa: E402
from measure import peak_rss_mib  # noqa: E402
from peers import python_of  # noqa: E402

HOOK = "blocks.6.hook_resid_post"


def ours_worker(docs: str, out_dir: str, tokens: int) -> None:
    import torch

    from superposition.cpu import tune_allocator
    from superposition.lm.config import LMSAEConfig
    from superposition.lm.hooks import HookedModel
    from superposition.lm.model import load_model
    from superposition.lm.store import ActivationStore
    from superposition.sae import make_sae
    from superposition.sae.io import save_sae
    from superposition.sae.train import SAETrainer
    from superposition.seeding import derive_seed

    tune_allocator()
    cfg = LMSAEConfig(hook_name=HOOK, dataset_path=docs, training_tokens=tokens, tensorboard=False)
    lm = load_model(cfg.model_name)
    hooked = HookedModel(lm.model)
    store = ActivationStore.for_run(cfg, lm, hooked)
    model_seconds = [0.0]
    original = store.activations

    def timed(ids):
        t = time.perf_counter()
        try:
            return original(ids)
        finally:
            model_seconds[0] += time.perf_counter() - t

    store.activations = timed
    sae = make_sae(cfg.sae_config(576), torch.Generator().manual_seed(derive_seed(cfg.seed, "sae-init")))
    trainer = SAETrainer(sae, store, cfg.train_config())
    start = time.perf_counter()
    trainer.train(progress=False)
    seconds = time.perf_counter() - start
    trainer.fold_normalization()
    save_sae(sae, out_dir)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "model_seconds": model_seconds[0],
                "tokens": trainer.step * cfg.batch_size_tokens,
                "threads": torch.get_num_threads(),
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    )


def evaluate(folder: Path, docs: str, n_seq: int) -> dict:
    from superposition.lm.config import LMSAEConfig
    from superposition.lm.evals import evaluate_sae
    from superposition.lm.hooks import HookedModel
    from superposition.lm.model import load_model
    from superposition.lm.store import ActivationStore
    from superposition.sae.io import load_sae

    cfg = LMSAEConfig(hook_name=HOOK, dataset_path=docs)
    lm = load_model(cfg.model_name)
    hooked = HookedModel(lm.model)
    seqs = ActivationStore.for_run(cfg, lm, hooked, holdout=True).first_sequences(n_seq)
    return evaluate_sae(hooked, lm.tokenizer, load_sae(folder), HOOK, seqs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=300_000)
    parser.add_argument("--eval-sequences", type=int, default=64)
    parser.add_argument("--skip-saelens", action="store_true")
    parser.add_argument("--worker", choices=["ours"], help=argparse.SUPPRESS)
    parser.add_argument("--docs", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "ours":
        ours_worker(args.docs, args.out, args.tokens)
        return

    from superposition.lm.data import python_docs
    from superposition.lm.model import DEFAULT_MODEL, resolve

    model_dir = resolve(DEFAULT_MODEL)  # fetched and de-quantised once, shared by both sides
    with tempfile.TemporaryDirectory() as tmp:
        docs = str(Path(tmp) / "python-docs.jsonl")
        with open(docs, "w") as f:
            for text in python_docs():
                f.write(json.dumps({"text": text}) + "\n")
        print(
            f"workload: SmolLM2-135M {HOOK}, python-docs, {args.tokens:,} tokens, context 128, batch 2048, "
            "TopK 4608 k=32"
        )
        rows = {
            "superposition": run_worker(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    "ours",
                    "--docs",
                    docs,
                    "--out",
                    str(Path(tmp) / "ours"),
                    "--tokens",
                    str(args.tokens),
                ]
            )
        }
        rows["superposition"]["folder"] = Path(tmp) / "ours"
        if not args.skip_saelens:
            python = python_of("saelens")
            worker = str(Path(__file__).with_name("saelens_lm_worker.py"))
            rows["SAELens"] = run_worker(
                [str(python), worker, model_dir, docs, str(Path(tmp) / "saelens"), str(args.tokens)]
            )
            rows["SAELens"]["folder"] = Path(tmp) / "saelens"
        for r in rows.values():
            r.update(evaluate(r["folder"], docs, args.eval_sequences))
    print(
        f"{'trainer':<15}{'seconds':>8}{'tok/s':>8}{'act tok/s':>10}{'SAE tok/s':>10}"
        f"{'RSS MiB':>9}{'L0':>7}{'EV':>7}{'CE rec.':>9}"
    )
    for name, r in rows.items():
        sae_s = max(r["seconds"] - r["model_seconds"], 1e-9)
        print(
            f"{name:<15}{r['seconds']:>8.1f}{r['tokens'] / r['seconds']:>8,.0f}"
            f"{r['tokens'] / max(r['model_seconds'], 1e-9):>10,.0f}{r['tokens'] / sae_s:>10,.0f}"
            f"{r['peak_rss_mib']:>9,.0f}{r['l0']:>7.1f}{r['explained_variance']:>7.3f}{r['ce_loss_recovered']:>9.3f}"
        )
    if "SAELens" in rows:
        ours, theirs = rows["superposition"], rows["SAELens"]
        speedup = (ours["tokens"] / ours["seconds"]) / (theirs["tokens"] / theirs["seconds"])
        ok = (
            speedup > 1
            and ours["explained_variance"] >= theirs["explained_variance"] - 1e-3
            and abs(ours["l0"] - theirs["l0"]) < 1
        )
        print(
            f"speed-up end to end: {speedup:.2f}x (target > 1x); explained variance "
            f"{ours['explained_variance']:.3f} vs "
            f"{theirs['explained_variance']:.3f} at L0 {ours['l0']:.1f} vs {theirs['l0']:.1f} (target: at "
            "least equal)"
        )
        print("PASS" if ok else "FAIL")
        raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
