"""Runs inside the separate SAELens environment (see bench_sae_topk.py): trains SAELens's TopK SAE
on the activations in a safetensors file and writes its time and decoder. Not part of the package."""

import json
import resource
import sys
import time

import torch
from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.training.sae_trainer import SAETrainer
from safetensors.torch import load_file, save_file

data_path, out_path, d_sae, k, batch, lr = (
    sys.argv[1],
    sys.argv[2],
    int(sys.argv[3]),
    int(sys.argv[4]),
    int(sys.argv[5]),
    float(sys.argv[6]),
)
dead_window_samples, aux_coefficient = int(sys.argv[7]), float(sys.argv[8])
seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 0
torch.manual_seed(seed)  # SAELens initialises from the global generator
x = load_file(data_path)["x"]
n, d_in = x.shape


class Batches:
    def __init__(self):
        self.pos = 0

    def __iter__(self):
        return self

    def __next__(self):
        b = x[self.pos : self.pos + batch]
        self.pos = (self.pos + batch) % n
        return b


sae = TopKTrainingSAE(
    TopKTrainingSAEConfig(
        d_in=d_in, d_sae=d_sae, k=k, dtype="float32", device="cpu", aux_loss_coefficient=aux_coefficient
    )
)
cfg = SAETrainerConfig(
    n_checkpoints=0,
    checkpoint_path=None,
    save_final_checkpoint=False,
    total_training_samples=n,
    device="cpu",
    autocast=False,
    lr=lr,
    lr_end=lr,
    lr_scheduler_name="constant",
    lr_warm_up_steps=0,
    adam_beta1=0.9,
    adam_beta2=0.999,
    lr_decay_steps=0,
    n_restart_cycles=1,
    train_batch_size_samples=batch,
    feature_sampling_window=2000,
    # a latent is dead after more than this many steps without firing: the same number of samples as ours
    dead_feature_window=dead_window_samples // batch,
    logger=LoggingConfig(log_to_wandb=False, eval_every_n_wandb_logs=2**31 - 1),
    n_batches_for_norm_estimate=10,
)
trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=Batches(), save_checkpoint_fn=lambda path: None)
start = time.perf_counter()
trainer.fit()
seconds = time.perf_counter() - start
save_file({"W_dec": sae.W_dec.detach().contiguous()}, out_path)
print(
    json.dumps(
        {
            "seconds": seconds,
            "samples": n,
            "threads": torch.get_num_threads(),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )
)
