"""What every bench_sae_grid.py worker shares (this project's and each peer's, in its own
environment): held-out evaluation in batches, peak memory, and the one JSON line a run reports.
Only torch and safetensors, which every environment has."""

import json

import torch
from safetensors.torch import save_file

from measure import peak_rss_mib

BATCH, LR, DEAD_WINDOW_STEPS = 1024, 5e-4, 20


def our_train_config(steps: int, seed: int):
    """This project's trainer with the settings every peer comparison shares (imported only on
    this project's side: the peers' environments do not have the package)."""
    from superposition.sae.train import SAETrainConfig

    return SAETrainConfig(
        steps=steps,
        batch_size=BATCH,
        lr=LR,
        dead_feature_window=DEAD_WINDOW_STEPS,
        b_dec_init="mean",
        seed=seed,
    )


@torch.no_grad()
def held_out_fvu_l0(reconstruct, held_out: torch.Tensor) -> tuple[float, float]:
    """FVU and mean L0 over the held-out rows, a batch at a time (evaluation is not what peak RSS
    measures); `reconstruct(rows)` returns (x̂, number of active latents)."""
    err = nnz = 0.0
    for chunk in held_out.split(BATCH):
        x_hat, active = reconstruct(chunk)
        err += (chunk - x_hat).square().sum().item()
        nnz += float(active)
    return err / (held_out - held_out.mean(0)).square().sum().item(), nnz / held_out.shape[0]


def report_run(out: str, W_dec: torch.Tensor, seconds: float, samples: int, fvu: float, l0: float) -> None:
    """Save the decoder (for the MCC) and print the run's JSON line."""
    save_file({"W_dec": W_dec.detach().contiguous()}, out)
    line = {"seconds": seconds, "samples": samples, "fvu": fvu, "l0": l0, "peak_rss_mib": peak_rss_mib()}
    print(json.dumps(line), flush=True)
