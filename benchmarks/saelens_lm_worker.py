"""SAELens side of bench_lm_sae.py: runs in SAELens's own environment (not a dependency).

    python saelens_lm_worker.py MODEL_DIR DOCS_JSONL OUT_DIR TOKENS [LAYER (default 6)]

Trains a TopK SAE through SAELens's own runner on the same model folder, hook (the output of
decoder layer 6 = blocks.6.hook_resid_post), documents and token budget, and prints one JSON line:
total seconds, seconds spent running the model for activations, tokens.
"""

import json
import sys
import time

import datasets
import torch
from sae_lens import (
    LanguageModelSAERunnerConfig,
    LanguageModelSAETrainingRunner,
    LoggingConfig,
    TopKTrainingSAEConfig,
)
from sae_lens.training.activations_store import ActivationsStore

from measure import peak_rss_mib

model_dir, docs, out_dir, tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
layer = int(sys.argv[5]) if len(sys.argv) > 5 else 6  # the residual stream after this block
torch.manual_seed(0)

model_seconds = [0.0]
original = ActivationsStore.get_activations


def timed(self, batch_tokens):
    t = time.perf_counter()
    try:
        return original(self, batch_tokens)
    finally:
        model_seconds[0] += time.perf_counter() - t


ActivationsStore.get_activations = timed

cfg = LanguageModelSAERunnerConfig(
    sae=TopKTrainingSAEConfig(d_in=576, d_sae=4608, k=32),
    model_name=model_dir,
    model_class_name="AutoModelForCausalLM",
    hook_name=f"model.layers.{layer}",
    dataset_path="json",
    is_dataset_tokenized=False,
    streaming=False,
    context_size=128,
    prepend_bos=True,
    exclude_special_tokens=True,
    store_batch_size_prompts=16,
    # SAELens sizes its mixing buffer as n_batches_in_buffer x context_size tokens: 16384, as ours
    n_batches_in_buffer=128,
    train_batch_size_tokens=2048,
    training_tokens=tokens,
    lr=1e-3,
    lr_warm_up_steps=20,
    device="cpu",
    dtype="float32",
    logger=LoggingConfig(log_to_wandb=False),
    n_checkpoints=0,
    save_final_checkpoint=False,
    output_path=out_dir,
    verbose=False,
    n_batches_for_norm_estimate=10,
)
dataset = datasets.load_dataset("json", data_files=docs, split="train")
start = time.perf_counter()
sae = LanguageModelSAETrainingRunner(cfg, override_dataset=dataset).run()
seconds = time.perf_counter() - start
sae.save_model(out_dir)
print(
    json.dumps(
        {
            "seconds": seconds,
            "model_seconds": model_seconds[0],
            "tokens": tokens,
            "threads": torch.get_num_threads(),
            "peak_rss_mib": peak_rss_mib(),
        }
    )
)
