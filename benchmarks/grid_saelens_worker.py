"""SAELens side of bench_sae_grid.py: trains one SAE with SAELens's own SAETrainer on the
activations in a safetensors file and prints one JSON line (seconds, samples, peak RSS, L0 and FVU
on the held-out rows). Runs in SAELens's environment (not a dependency).

    python grid_saelens_worker.py DATA OUT ARCH D_SAE K STEPS SEEDS [COEFFICIENT]

SEEDS is a comma-separated list: one run per seed in this process (one JSON line each, the
decoder of seed s written to OUT.s).
"""

import sys
import time

import torch
from sae_lens import (
    BatchTopKTrainingSAE,
    BatchTopKTrainingSAEConfig,
    JumpReLUTrainingSAE,
    JumpReLUTrainingSAEConfig,
    StandardTrainingSAE,
    StandardTrainingSAEConfig,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
)
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.training.sae_trainer import SAETrainer
from safetensors.torch import load_file

from grid_common import BATCH, DEAD_WINDOW_STEPS, LR, held_out_fvu_l0, report_run

data, out, arch, d_sae, k, steps, seeds = sys.argv[1:8]
d_sae, k, steps = int(d_sae), int(k), int(steps)
coefficient = float(sys.argv[8]) if len(sys.argv) > 8 else 1.0
tensors = load_file(data)
x, held_out = tensors["train"], tensors["eval"]
d_in = x.shape[1]


class Batches:
    def __init__(self):
        self.pos = 0

    def __iter__(self):
        return self

    def __next__(self):
        b = x[self.pos : self.pos + BATCH]
        self.pos = (self.pos + BATCH) % (x.shape[0] - BATCH + 1)
        return b


def run(seed: int) -> None:
    torch.manual_seed(seed)
    common = dict(d_in=d_in, d_sae=d_sae, dtype="float32", device="cpu")
    if arch == "topk":
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(**common, k=k, aux_loss_coefficient=1 / 32))
    elif arch == "batchtopk":
        sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(**common, k=k, aux_loss_coefficient=1 / 32))
    elif arch == "standard":
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(**common, l1_coefficient=coefficient))
    else:
        sae = JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(**common, l0_coefficient=coefficient))
    cfg = SAETrainerConfig(
        n_checkpoints=0, checkpoint_path=None, save_final_checkpoint=False, total_training_samples=steps * BATCH,
        device="cpu", autocast=False, lr=LR, lr_end=LR, lr_scheduler_name="constant", lr_warm_up_steps=0,
        adam_beta1=0.9, adam_beta2=0.999, lr_decay_steps=0, n_restart_cycles=1, train_batch_size_samples=BATCH,
        feature_sampling_window=10**9, dead_feature_window=DEAD_WINDOW_STEPS,
        logger=LoggingConfig(log_to_wandb=False, eval_every_n_wandb_logs=2**31 - 1), n_batches_for_norm_estimate=10,
    )  # fmt: skip
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=Batches(), save_checkpoint_fn=lambda path: None)
    start = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - start
    sae.eval()
    with torch.no_grad():
        if arch == "batchtopk":  # evaluate as SAELens serves it: the JumpReLU form
            sae.save_inference_model(f"{out}.{seed}.inference")
            from sae_lens import SAE

            served = SAE.load_from_disk(f"{out}.{seed}.inference")
        else:
            served = sae

        def reconstruct(rows):
            z = served.encode(rows)
            return served.decode(z), (z != 0).sum()

        fvu, l0 = held_out_fvu_l0(reconstruct, held_out)
    report_run(f"{out}.{seed}", sae.W_dec, seconds, steps * BATCH, fvu, l0)


for seed in seeds.split(","):
    run(int(seed))
