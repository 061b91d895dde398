"""Activation caches travel both ways between superposition and SAELens 6.54 (its own code, in its
own environment .bench-envs/saelens made by peers.py):

1. superposition writes a cache (SmolLM2, blocks.0.hook_resid_post, context 32); SAELens's
   ActivationsStore reads it and SAELens's SAETrainer trains a TopK SAE on it. Checked: the
   activations SAELens reads equal ours for the same token ids, and its SAE learns (FVU falls).
2. SAELens's CacheActivationsRunner writes a cache of the same model (model.layers.0, its name for
   that residual stream); `train-sae` trains from it without running the model on the training
   data. Checked: the rows we read equal our own forward pass on their token ids.

    python benchmarks/check_cache_saelens.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import python_of  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    import torch
    from safetensors.torch import load_file

    from superposition.cli import main as cli
    from superposition.lm.data import texts
    from superposition.lm.hooks import HookedModel
    from superposition.lm.model import load_model, resolve
    from superposition.lm.store import ActivationStore

    saelens = python_of("saelens")
    lm = load_model()
    hooked = HookedModel(lm.model)
    hook = "blocks.0.hook_resid_post"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # 1. ours -> SAELens
        store = ActivationStore(lm, hooked, hook, dataset_path="python-docs", context_size=32, prepend_bos=True,
                                buffer_sequences=24, model_batch_size=8, cache=tmp / "ours")  # fmt: skip
        store.sample(2000)
        store.close()
        done = subprocess.run([saelens, str(HERE / "cache_saelens_worker.py"), "read", str(tmp / "ours"), hook,
                               "576", "32", str(tmp / "read.safetensors")],
                              capture_output=True, text=True, cwd=HERE)  # fmt: skip
        if done.returncode:
            sys.exit(done.stderr[-3000:])
        info = json.loads(done.stdout.strip().splitlines()[-1])
        got = load_file(str(tmp / "read.safetensors"))
        ids = got["token_ids"].view(-1, 32).long()
        want = store.forward(ids).reshape(-1, 576)
        rel = float((got["acts"] - want).norm() / want.norm())
        print(f"ours -> SAELens: SAELens read {info['rows_read']} activations (columns {info['columns']}); "
              f"they differ from our forward pass on the same tokens by {rel:.2e} (relative norm); "
              f"SAELens's TopK SAE trained on them reaches FVU {info['fvu_after_training']:.3f}")  # fmt: skip
        assert rel < 1e-6 and info["fvu_after_training"] < 0.9
        # 2. SAELens -> ours
        docs = tmp / "docs.jsonl"
        docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in list(texts("python-docs"))[:400]))
        done = subprocess.run([saelens, str(HERE / "cache_saelens_worker.py"), "write", resolve(lm.name), str(docs),
                               str(tmp / "theirs"), "32", "8192"], capture_output=True, text=True, cwd=HERE)  # fmt: skip
        if done.returncode:
            sys.exit(done.stderr[-3000:])
        info = json.loads(done.stdout.strip().splitlines()[-1])
        theirs = ActivationStore(lm, hooked, hook, dataset_path="python-docs", context_size=32, prepend_bos=True,
                                 buffer_sequences=16, model_batch_size=8, cache=tmp / "theirs")  # fmt: skip
        acts, ids = theirs.cache.read(0, 16)
        rel = float((acts - theirs.forward(ids)).norm() / acts.norm())
        theirs.close()
        out = tmp / "run"
        code = cli(["train-sae", "--out", str(out), "--set", f"hook_name={hook}", "--set", "context_size=32",
                    "--set", "batch_size_tokens=256", "--set", "training_tokens=12800", "--set", "k=16",
                    "--set", f"activation_cache={tmp / 'theirs'}", "--set", "eval_sequences=8",
                    "--set", "tensorboard=false"])  # fmt: skip
        s = json.loads((out / "summary.json").read_text())
        print(f"SAELens -> ours: SAELens cached {info['rows']} sequences (columns {info['columns']}); our reading "
              f"of them differs from our forward pass by {rel:.2e}; train-sae on that cache ran the model on "
              f"{s['model_tokens_run']} training tokens (0: all from the cache) and reached EV "
              f"{s['explained_variance']:.3f}, CE loss recovered {s['ce_loss_recovered']:.3f}")  # fmt: skip
        assert code == 0 and rel < 1e-5 and s["model_tokens_run"] == 0
        del torch


if __name__ == "__main__":
    main()
