"""Training loop for batched toy models: Adam(W), learning-rate schedule, seeded, progress bar."""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor, nn

from superposition.cpu import threads_for
from superposition.errors import TrainingDiverged
from superposition.progress import tqdm
from superposition.schedules import Schedule, lr_factor
from superposition.seeding import derive_seed


class Source(Protocol):
    """Anything that draws training batches: ``sample(batch, generator, out=None)`` returning a
    (batch, inst, feat) tensor, reusing the (inst, batch, feat) buffer `out` when given."""

    def sample(
        self, batch: int, generator: torch.Generator | None = None, out: Tensor | None = None
    ) -> Tensor: ...


STREAMS = (
    2  # instance groups sampled with their own generators; fixed, so results don't depend on the machine
)
# Below this many batch entries per step (instances × batch × features), the thread hand-off costs
# more than the second core gains: measured on 2 cores, 10 × 1024 × 5 takes 1.6 ms/step in
# parallel and 0.8 ms on one thread, 16 × 1024 × 100 takes 5.5 ms against 5.9 ms.
PARALLEL_MIN_ENTRIES = 2**20
# Below this many, a step runs on one thread: on 2 idle cores that costs `intro` (10 × 1024 × 5)
# 5% (30.1 s against 28.6 s) and saves it 3.5x when the cores are busy (45.8 s against 158.3 s);
# mid-sized steps (polytopes, double descent) still gain 20-35% from a second thread on idle cores.
ONE_THREAD_BELOW = 2**17


class _InstanceParallel:
    """Samples and differentiates interleaved groups of instances on their own threads.

    Instances are independent, so each group gets its own generator, data buffer and gradient
    computation, with torch's intra-op threads split between the groups. On 2 cores this is
    about 1.3x faster than running every op on 2 threads: the random numbers (numpy, one thread
    per call) are drawn in parallel too, and no OpenMP pool spins while Python code runs.
    Results depend only on the seed, not on thread timing.
    """

    def __init__(self, model: nn.Module, data, seed: int) -> None:
        n = model.n_instances
        self.model = model
        self.groups = [torch.arange(k, n, STREAMS) for k in range(STREAMS)]
        self.sources = [data.subset(g.tolist()) for g in self.groups]
        self.gens = [
            torch.Generator().manual_seed(derive_seed(seed, f"train-stream-{k}")) for k in range(STREAMS)
        ]
        self.buffers: list[Tensor | None] = [None] * STREAMS
        self.saved_threads = torch.get_num_threads()
        self.threads = max(1, self.saved_threads // STREAMS)
        self.pool = ThreadPoolExecutor(STREAMS - 1, thread_name_prefix="superposition-train")
        torch.set_num_threads(self.threads)

    def _work(self, k: int, batch: int, want_loss: bool):
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        x = self.sources[k].sample(batch, self.gens[k], out=self.buffers[k])
        self.buffers[k] = x.transpose(0, 1)
        return self.model.grads_for(x, self.groups[k], want_loss)

    def step(self, batch: int, want_loss: bool) -> Tensor | None:
        """Set the model's .grad for a fresh batch; return per-instance losses if asked."""
        others = [self.pool.submit(self._work, k, batch, want_loss) for k in range(1, STREAMS)]
        results = [self._work(0, batch, want_loss)] + [f.result() for f in others]
        W, b = self.model.W, self.model.b
        grad_W, grad_b = torch.empty_like(W), torch.empty_like(b)
        losses = torch.empty(W.shape[0]) if want_loss else None
        for g, (gw, gb, loss) in zip(self.groups, results):
            grad_W[g], grad_b[g] = gw, gb
            if losses is not None:
                losses[g] = loss
        W.grad, b.grad = grad_W, grad_b
        return losses

    def close(self) -> None:
        self.pool.shutdown()
        torch.set_num_threads(self.saved_threads)


@dataclass
class TrainResult:
    steps: list[int] = field(default_factory=list)
    losses: list[list[float]] = field(default_factory=list)  # per logged step, per instance


def train_toy_model(
    model: nn.Module,
    data: Source,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    schedule: Schedule = "constant",
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    seed: int = 0,
    log_every: int = 100,
    callback: Callable[[int, nn.Module], None] | None = None,
    callback_every: int = 0,
    progress: bool | None = None,
    desc: str = "training",
) -> TrainResult:
    """Train `model` (anything with `instance_losses(x)`) on batches from `data`.

    Models that define ``accumulate_grads(x, want_loss)`` (hand-derived gradients into
    persistent buffers) are trained through it instead of autograd; with ``grads_for`` and a
    source that has ``subset``, groups of instances are sampled and differentiated in parallel when a
    step is large enough to pay for the threads (PARALLEL_MIN_ENTRIES).

    The data generator is seeded from `seed`, so a run is reproducible given the model's initial
    weights. `callback(step, model)` runs every `callback_every` steps and after the last step.
    `progress=None` shows a bar only on a terminal.
    """
    gen = torch.Generator().manual_seed(derive_seed(seed, "train"))
    opt = (torch.optim.AdamW if weight_decay else torch.optim.Adam)(
        model.parameters(), lr=lr, weight_decay=weight_decay
    )
    result = TrainResult()
    manual = hasattr(model, "accumulate_grads")
    entries = model.n_instances * batch_size * getattr(data, "n_features", 0)
    parallel = (
        _InstanceParallel(model, data, seed)
        if (
            hasattr(model, "grads_for")
            and hasattr(data, "subset")
            and model.n_instances >= STREAMS
            and entries >= PARALLEL_MIN_ENTRIES
        )
        else None
    )
    buffer = None
    bar = tqdm(range(steps), desc=desc, disable=(not progress) if progress is not None else None, leave=False)
    # small steps run on one thread (cpu.threads_for); large ones split instances over two (above)
    with threads_for(entries if parallel is None else ONE_THREAD_BELOW, ONE_THREAD_BELOW):
        try:
            for step in bar:
                factor = lr_factor(step, steps, schedule, warmup_steps)
                for group in opt.param_groups:
                    group["lr"] = lr * factor
                log_now = step % log_every == 0 or step == steps - 1
                if parallel is not None:
                    losses = parallel.step(batch_size, want_loss=log_now)
                else:
                    x = data.sample(batch_size, gen, out=buffer)
                    buffer = x.transpose(0, 1)
                    if manual:
                        losses = model.accumulate_grads(x, want_loss=log_now)
                    else:
                        opt.zero_grad(set_to_none=True)
                        losses = model.instance_losses(x)
                        losses.sum().backward()
                opt.step()
                if log_now:
                    per = losses.detach().tolist()
                    result.steps.append(step)
                    result.losses.append(per)
                    bar.set_postfix(loss=f"{sum(per) / len(per):.4g}", refresh=False)
                if (
                    callback is not None
                    and callback_every
                    and (step % callback_every == 0 or step == steps - 1)
                ):
                    callback(step, model)
        finally:
            if parallel is not None:
                parallel.close()
    if not torch.isfinite(torch.tensor(result.losses[-1])).all():
        bad = [i for i, v in enumerate(result.losses[-1]) if not math.isfinite(v)]
        raise TrainingDiverged(
            f"{desc}: the loss is not finite at the end of training for instance(s) {bad}; lower lr (was "
            f"{lr})"
        )
    return result


@torch.no_grad()
def evaluate_losses(
    model: nn.Module, data: Source, n_rows: int = 16384, seed: int = 12345, batch: int = 4096
) -> Tensor:
    """Per-instance loss on `n_rows` fresh rows from a fixed seed: Float[Tensor, "inst"]."""
    gen = torch.Generator().manual_seed(derive_seed(seed, "evaluate"))
    total = None
    done = 0
    while done < n_rows:
        b = min(batch, n_rows - done)
        part = model.instance_losses(data.sample(b, gen)) * b
        total = part if total is None else total + part
        done += b
    return total / n_rows
