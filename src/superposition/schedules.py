"""The one learning-rate schedule of both trainers (toy models and SAEs).

factor(step) = warm-up(step) · decay(step)
warm-up: (step + 1) / warmup for the first `warmup` steps, else 1
decay over the last `decay_steps` steps (default: every step after the warm-up), with
    t = (step − start) / decay_steps the fraction done:
    constant: 1     linear: (total − step) / decay_steps     cosine: ½ (1 + cos(π t))
"""

from __future__ import annotations

import math
from typing import Literal

Schedule = Literal["constant", "linear", "cosine"]


def lr_factor(
    step: int, total: int, schedule: Schedule = "constant", warmup: int = 0, decay_steps: int | None = None
) -> float:
    """Multiplier of the base learning rate at `step` (0-based) of `total`."""
    factor = (step + 1) / warmup if step < warmup else 1.0
    n = max(1, total - warmup) if decay_steps is None else decay_steps
    start = total - n
    if schedule == "constant" or n <= 0 or step < start or step < warmup and decay_steps is None:
        return factor
    if schedule == "linear":
        return factor * ((total - step) / n)
    if schedule == "cosine":
        return factor * 0.5 * (1.0 + math.cos(math.pi * (step - start) / n))
    raise ValueError(f"unknown schedule {schedule!r}")


def adam_for_run(params, cfg):
    """Adam at a train-sae run's `lr` with its schedule (warm-up `lr_warm_up_steps`, linear decay over
    `lr_decay_steps` when set): (optimiser, scheduler, steps), steps = training_tokens //
    batch_size_tokens. For the trainers outside the SAE trainer (cross-layer transcoders,
    crosscoders)."""
    import torch

    opt = torch.optim.Adam(params, lr=cfg.lr)
    steps = cfg.training_tokens // cfg.batch_size_tokens
    schedule = "linear" if cfg.lr_decay_steps else "constant"
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, steps, schedule, cfg.lr_warm_up_steps, cfg.lr_decay_steps)
    )
    return opt, sched, steps
