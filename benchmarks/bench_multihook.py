"""Throughput of activation generation and training at several hooks from one forward pass, against
the floor (a bare forward pass to the deepest hooked block) and against SAELens.

Workload: SmolLM2-135M-Instruct (float32), the python-docs corpus, context 128 with BOS, model
batches of 16 sequences; hooks blocks.{0,2,4,6}.hook_resid_post (deepest: block 6); TopK SAEs
with 4608 latents, k = 32, batch 2048 tokens.

Printed, in tokens/s:
  (a) a bare forward pass stopped after block 6 (nothing kept);
  (b) our activation generation (forward + capture + special tokens left out + float32 copy) for
      1 hook (block 6) and for the 4 hooks;
  (c) end-to-end `train-sae` with 1 hook and with the 4 hooks (one forward feeds four SAEs);
  (d) SAELens 6.54 end-to-end on the same work, one hook per run, run once per hook (its only way
      to train four SAEs); the four runs' total time is what a 4-hook run competes with.
Targets: (b) within 1.2x of (a); (c, 4 hooks) at least 3x the tokens/s of SAELens's four runs.

    python benchmarks/bench_multihook.py [--tokens 40960] [--skip-saelens]
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
from peers import python_of  # noqa: E402

LAYERS = (0, 2, 4, 6)
HOOKS = [f"blocks.{L}.hook_resid_post" for L in LAYERS]


def generation(lm, hooked, seqs, repeats: int = 3) -> dict:
    import torch

    from superposition.lm.hooks import _Stop
    from superposition.lm.store import ActivationStore

    deepest = HOOKS[-1]
    L = hooked.parse(deepest)[0]

    def bare():
        def stop(module, args, output):
            raise _Stop

        handle = hooked.blocks[L].register_forward_hook(stop)
        try:
            with torch.no_grad():
                for chunk in seqs.split(16):
                    try:
                        lm.model(input_ids=chunk, use_cache=False)
                    except _Stop:
                        pass
        finally:
            handle.remove()

    def ours(hooks):
        store = ActivationStore(lm, hooked, hooks, dataset_path="python-docs", context_size=128,
                                prepend_bos=True, buffer_sequences=16, model_batch_size=16)  # fmt: skip
        return lambda: store.activations(seqs)

    rows = {}
    for name, fn in (("(a) bare forward to block 6", bare), ("(b) ours, 1 hook", ours([deepest])),
                     ("(b) ours, 4 hooks", ours(HOOKS))):  # fmt: skip
        fn()  # warm
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        rows[name] = seqs.numel() / best
    return rows


def ours_end_to_end(hooks, tokens: int, out: Path) -> float:
    from superposition.cli import main

    sets = [f"hook_name={json.dumps(hooks) if len(hooks) > 1 else hooks[0]}", "context_size=128",
            "batch_size_tokens=2048", f"training_tokens={tokens}", "k=32", "expansion_factor=8",
            "eval_sequences=8", "tensorboard=false", "lr=1e-3"]  # fmt: skip
    t = time.perf_counter()
    assert main(["train-sae", "--out", str(out), *[a for s in sets for a in ("--set", s)]]) == 0
    total = time.perf_counter() - t
    train = json.loads((out / "summary.json").read_text())["train_seconds"]
    return tokens / train, tokens / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=40960)
    parser.add_argument("--skip-saelens", action="store_true")
    args = parser.parse_args()
    from superposition.lm.data import python_docs
    from superposition.lm.hooks import HookedModel
    from superposition.lm.model import load_model, resolve
    from superposition.lm.store import ActivationStore

    lm = load_model()
    hooked = HookedModel(lm.model)
    store = ActivationStore(lm, hooked, HOOKS[-1], dataset_path="python-docs", context_size=128, prepend_bos=True,
                            buffer_sequences=16, model_batch_size=16)  # fmt: skip
    seqs = store.sequences(0, 32)
    print(f"SmolLM2-135M float32, {seqs.numel()} tokens per pass, 2 cores; hooks {', '.join(HOOKS)}")
    gen = generation(lm, hooked, seqs)
    floor = gen["(a) bare forward to block 6"]
    for name, rate in gen.items():
        print(f"  {name:<32} {rate:>9,.0f} tokens/s   {floor / rate:.2f}x the floor's time")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one = ours_end_to_end([HOOKS[-1]], args.tokens, tmp / "one")
        four = ours_end_to_end(HOOKS, args.tokens, tmp / "four")
        print(
            f"  (c) ours end to end, 1 hook        {one[0]:>9,.0f} tokens/s training ({one[1]:,.0f} with load+eval)"
        )
        print(
            f"  (c) ours end to end, 4 hooks       {four[0]:>9,.0f} tokens/s training ({four[1]:,.0f} with load+eval)"
        )
        if args.skip_saelens:
            return
        docs = tmp / "docs.jsonl"
        with open(docs, "w") as f:
            for text in python_docs():
                f.write(json.dumps({"text": text}) + "\n")
        worker = str(Path(__file__).resolve().parent / "saelens_lm_worker.py")
        seconds = []
        for L in LAYERS:
            r = run_worker([str(python_of("saelens")), worker, resolve(lm.name), str(docs), str(tmp / f"sl{L}"),
                            str(args.tokens), str(L)])  # fmt: skip
            seconds.append(r["seconds"])
            print(f"  (d) SAELens end to end, model.layers.{L}  {args.tokens / r['seconds']:>9,.0f} tokens/s")
        sl4 = args.tokens / sum(seconds)
        print(f"  (d) SAELens, four separate runs    {sl4:>9,.0f} tokens/s of the 4-hook work")
        print(
            f"ours with 4 hooks against SAELens's four runs: {four[0] / sl4:.2f}x (target >= 3x); "
            f"activation generation, 4 hooks: {floor / gen['(b) ours, 4 hooks']:.2f}x the bare forward's time "
            "(target <= 1.2x)"
        )


if __name__ == "__main__":
    main()
