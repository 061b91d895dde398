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
from safetensors.torch import load_file

from grid_common import BATCH, DEAD_WINDOW_STEPS, LR, held_out_fvu_l0, report_run
from saelens_common import make_trainer

data, out, arch, d_sae, k, steps, seeds = sys.argv[1:8]
d_sae, k, steps = int(d_sae), int(k), int(steps)
coefficient = float(sys.argv[8]) if len(sys.argv) > 8 else 1.0
tensors = load_file(data)
x, held_out = tensors["train"], tensors["eval"]
d_in = x.shape[1]


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
    trainer = make_trainer(sae, x, steps * BATCH, BATCH, LR, DEAD_WINDOW_STEPS, feature_sampling_window=10**9)
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
