"""What the one trainer (sae/train.py) asks of a dictionary that is not a BatchedSAE: a cross-layer
transcoder or a crosscoder reads several sources at once, keeps its own per-source scales, and
states its loss; the trainer does the rest (the optimiser and its schedule, dead-latent counts and
AuxK's mask, logging, checkpoints that resume exactly, data parallelism).

    n_instances        1 (one dictionary)
    n_latents          how many latents the dead-latent counts track
    prepare(batch)     statistics of a first raw batch: the per-source scales (buffers, so they are
                       checkpointed), b_dec
    scaled(batch)      a raw batch in training units
    target(batch)      what the dictionary reconstructs, in the units of `scaled`
    target_scale()     each target source's scale (the log reports mse in the model's units)
    train_loss(batch, state) -> LossOut   on a scaled batch; `fired` (1, n_latents), `l0` (1,),
                       every term of shape (1,); state.dead is the trainer's dead-latent mask
    finish()           fold the scales into the weights, so the saved dictionary reads raw activations
    record()           its settings, for the checkpoint
"""

from __future__ import annotations

from torch import Tensor, nn

from superposition.sae.base import LossOut, StepState


class SourceDictionary(nn.Module):
    n_instances = 1
    label = "dictionary"  # what the progress bar calls it

    @property
    def n_latents(self) -> int:  # pragma: no cover - each dictionary says
        raise NotImplementedError

    def prepare(self, batch: Tensor) -> None:  # pragma: no cover
        raise NotImplementedError

    def scaled(self, batch: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def target(self, batch: Tensor) -> Tensor:
        return batch

    def target_scale(self) -> Tensor:  # pragma: no cover
        """Each source's scale of the target while training (n_sources,): what undoes it."""
        raise NotImplementedError

    def train_loss(self, batch: Tensor, state: StepState) -> LossOut:  # pragma: no cover
        raise NotImplementedError

    def finish(self) -> None:  # pragma: no cover
        raise NotImplementedError

    def record(self) -> dict:
        return {"class": type(self).__name__}

    def remove_parallel_grad(self) -> None:
        """Decoders here are free (no unit-norm constraint)."""

    def normalize_decoder(self) -> None:
        """Decoders here are free (no unit-norm constraint)."""
