"""SAELens side of check_cache_saelens.py (runs in SAELens's own environment, not a dependency).

    python cache_saelens_worker.py read CACHE HOOK D_IN CONTEXT OUT.safetensors
        SAELens's ActivationsStore reads a cache made by superposition and SAELens's SAETrainer trains a
        TopK SAE on it; the first raw batch it read and the MSE curve are written out.
    python cache_saelens_worker.py write MODEL_DIR DOCS_JSONL CACHE CONTEXT TOKENS
        SAELens's CacheActivationsRunner writes a cache of model.layers.0 (the residual stream after
        block 0, HookedProxyLM's name) for a transformers model.
Prints one JSON line.
"""

import json
import sys

import datasets
import torch
from safetensors.torch import save_file

mode = sys.argv[1]
if mode == "read":
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.activations_store import ActivationsStore

    from saelens_common import make_trainer

    cache, hook, d_in, ctx, out = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
    store = ActivationsStore(
        model=None, dataset=None, streaming=False, hook_name=hook, hook_head_index=None, context_size=ctx,
        d_in=d_in, n_batches_in_buffer=2, total_training_tokens=10**6, store_batch_size_prompts=4,
        train_batch_size_tokens=128, prepend_bos=True, normalize_activations="none", device=torch.device("cpu"),
        dtype="float32", cached_activations_path=cache,
    )  # fmt: skip
    acts, ids = store._load_raw_llm_batch_from_cached(raise_on_epoch_end=False)
    save_file({"acts": acts.contiguous(), "token_ids": ids.contiguous()}, out)
    store.current_row_idx = 0
    rows = []
    for _ in range(6):
        a, _ = store._load_raw_llm_batch_from_cached(raise_on_epoch_end=False)
        rows.append(a)
    x = torch.cat(rows)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=4 * d_in, k=16))
    trainer = make_trainer(sae, x, samples=128 * 60, batch=128, lr=1e-3, dead_feature_window=1000,
                           feature_sampling_window=1000)  # fmt: skip
    trainer.fit()
    with torch.no_grad():
        fvu = float((sae(x) - x).square().sum() / (x - x.mean(0)).square().sum())
    print(json.dumps({"rows_read": int(x.shape[0]), "columns": store.cached_activation_dataset.column_names,
                      "fvu_after_training": fvu}))  # fmt: skip
else:
    from sae_lens import CacheActivationsRunner, CacheActivationsRunnerConfig

    model_dir, docs, cache, ctx, tokens = (
        sys.argv[2],
        sys.argv[3],
        sys.argv[4],
        int(sys.argv[5]),
        int(sys.argv[6]),
    )
    cfg = CacheActivationsRunnerConfig(
        dataset_path="json", model_name=model_dir, model_class_name="AutoModelForCausalLM", model_batch_size=4,
        hook_name="model.layers.0", d_in=576, training_tokens=tokens, context_size=ctx, prepend_bos=True,
        new_cached_activations_path=cache, shuffle=False, device="cpu", dtype="float32", buffer_size_gb=0.002,
    )  # fmt: skip
    dataset = datasets.load_dataset("json", data_files=docs, split="train")
    ds = CacheActivationsRunner(cfg, override_dataset=dataset).run()
    print(json.dumps({"rows": len(ds), "columns": ds.column_names}))
