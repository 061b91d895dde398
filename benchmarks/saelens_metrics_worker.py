"""SAELens side of check_lm_metrics.py: SAELens's own evaluation of an SAE on given token batches.
Runs in SAELens's environment (not a dependency).

    python saelens_metrics_worker.py MODEL_DIR SAE_DIR TOKENS_FILE

Loads the model with SAELens's AutoModelForCausalLM path (HookedProxyLM), the SAE with
SAE.load_from_disk, and calls sae_lens.evals.get_sparsity_and_variance_metrics and
get_downstream_reconstruction_metrics (what run_evals calls) on exactly the sequences in
TOKENS_FILE, excluding special tokens as run_evals does by default. Prints one JSON line.
"""

import json
import sys

import torch
from sae_lens import SAE
from sae_lens.evals import get_downstream_reconstruction_metrics, get_sparsity_and_variance_metrics
from sae_lens.load_model import load_model
from sae_lens.training.activation_scaler import ActivationScaler
from sae_lens.util import get_special_token_ids
from safetensors.torch import load_file

model_dir, sae_dir, tokens_file = sys.argv[1:4]
tokens = load_file(tokens_file)["tokens"]
BATCH = 8


class FixedBatches:
    """The activation store evals.py asks for batches: here, the given sequences in order."""

    def __init__(self):
        self.pos = 0

    def get_batch_tokens(self, n: int):
        batch = tokens[self.pos : self.pos + n]
        self.pos += n
        return batch


model = load_model("AutoModelForCausalLM", model_dir, device="cpu")
sae = SAE.load_from_disk(sae_dir)
ignore = list(get_special_token_ids(model.tokenizer))
n_batches = tokens.shape[0] // BATCH
with torch.no_grad():
    sparsity, _ = get_sparsity_and_variance_metrics(
        sae, model, FixedBatches(), ActivationScaler(), compute_l2_norms=False, compute_sparsity_metrics=True,
        compute_variance_metrics=True, compute_featurewise_density_statistics=False, n_batches=n_batches,
        eval_batch_size_prompts=BATCH, ignore_tokens=ignore, model_kwargs={},
    )  # fmt: skip
    recons = get_downstream_reconstruction_metrics(
        sae, model, FixedBatches(), ActivationScaler(), compute_kl=True, compute_ce_loss=True, n_batches=n_batches,
        eval_batch_size_prompts=BATCH, ignore_tokens=ignore,
    )  # fmt: skip
print(json.dumps({**sparsity, **recons, "hook_name": sae.cfg.metadata.hook_name}))
