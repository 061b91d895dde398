"""How the benchmarks drive SAELens's own trainer on given activations (imported by the workers
that run in SAELens's environment): batches in order, cycling, and a trainer configured like ours
(constant learning rate, Adam betas 0.9/0.999, no checkpoints, no logging)."""

from collections.abc import Iterator

import torch
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.training.sae_trainer import SAETrainer


def cycling_batches(x: torch.Tensor, batch: int) -> Iterator[torch.Tensor]:
    """Consecutive batches of rows of x, starting over when fewer than `batch` rows are left."""
    pos = 0
    while True:
        yield x[pos : pos + batch]
        pos = (pos + batch) % (x.shape[0] - batch + 1)


def make_trainer(sae, x: torch.Tensor, samples: int, batch: int, lr: float, dead_feature_window: int,
                 feature_sampling_window: int) -> SAETrainer:  # fmt: skip
    """SAELens's SAETrainer for `sae` on `samples` rows of x (its `fit()` trains);
    `dead_feature_window` in steps (a latent is dead after more than this many without firing)."""
    cfg = SAETrainerConfig(
        n_checkpoints=0, checkpoint_path=None, save_final_checkpoint=False, total_training_samples=samples,
        device="cpu", autocast=False, lr=lr, lr_end=lr, lr_scheduler_name="constant", lr_warm_up_steps=0,
        adam_beta1=0.9, adam_beta2=0.999, lr_decay_steps=0, n_restart_cycles=1, train_batch_size_samples=batch,
        feature_sampling_window=feature_sampling_window, dead_feature_window=dead_feature_window,
        logger=LoggingConfig(log_to_wandb=False, eval_every_n_wandb_logs=2**31 - 1), n_batches_for_norm_estimate=10,
    )  # fmt: skip
    data = cycling_batches(x, batch)
    return SAETrainer(cfg=cfg, sae=sae, data_provider=data, save_checkpoint_fn=lambda path: None)
