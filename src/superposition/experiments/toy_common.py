"""The config keys and the train-and-record step shared by the toy-model experiments (not the SAE ones:
see sae_common.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from superposition.config import Config
from superposition.memory import FLOAT
from superposition.seeding import derive_seed
from superposition.toy import geometry
from superposition.toy.data import FeatureDistribution, Group
from superposition.toy.model import ComputationModel, ToyModel
from superposition.toy.train import TrainResult, evaluate_losses, train_toy_model

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]


class ToyConfig(Config):
    """Keys every toy experiment understands (`--set key=value`).

    feature_probability: null for the experiment's own sweep across instances, one number for
        every instance, or a list with one probability per instance.
    importance: a number r gives feature i importance r**i (1 = all equal); a list gives each
        feature's importance.
    """

    n_instances: int = Field(8, gt=0, description="models trained side by side, one per setting of the sweep")
    n_features: int = Field(5, gt=0, description="input features")
    d_hidden: int = Field(2, gt=0, description="hidden dimensions (neurons, for the ReLU-hidden models)")
    steps: int = Field(10_000, gt=0, description="Adam steps")
    batch_size: int = Field(1024, gt=0, description="fresh samples per step")
    lr: PositiveFloat = Field(1e-3, description="Adam learning rate")
    schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="learning-rate decay after the warm-up"
    )
    warmup_steps: int = Field(0, ge=0, description="linear learning-rate warm-up steps")
    feature_probability: Probability | list[Probability] | None = Field(
        None,
        description="null: the experiment's sweep; a number for every instance; or a list, one per instance",
    )
    importance: PositiveFloat | list[PositiveFloat] = Field(
        1.0, description="r gives feature i importance r**i (1: all equal); a list gives each feature's"
    )
    replicas: int = Field(
        1, ge=1, description="train each setting from this many initialisations and keep the lowest-loss one"
    )
    seed: int = Field(0, description="seeds initialisation and data (each purpose its own stream)")

    @model_validator(mode="after")
    def _lengths(self):
        if isinstance(self.feature_probability, list) and len(self.feature_probability) != self.n_instances:
            raise ValueError(
                f"feature_probability: a list needs one value per instance (n_instances={self.n_instances}), "
                f"got {len(self.feature_probability)}"
            )
        if isinstance(self.importance, list) and len(self.importance) != self.n_features:
            raise ValueError(
                f"importance: a list needs one value per feature (n_features={self.n_features}), got "
                f"{len(self.importance)}"
            )
        return self

    def memory_needed(self) -> int:
        """Bytes to train: per instance, the sampled batch, the trainer's two scratch buffers and
        the sampler's float64 draws (about six float32 copies of (batch, features)), plus weights."""
        n = self.n_instances * self.replicas
        return FLOAT * n * (6 * self.batch_size * self.n_features + 6 * self.d_hidden * self.n_features)

    def probabilities(self, default_sweep: Sequence[float] | np.ndarray) -> torch.Tensor:
        """Per-instance feature probability, Float[Tensor, "inst"]: the config's if set, else
        the experiment's default sweep."""
        p = self.feature_probability
        if p is None:
            p = list(default_sweep)
        elif not isinstance(p, list):
            p = [p] * self.n_instances
        return torch.tensor(p, dtype=torch.float64)

    def importance_vector(self) -> torch.Tensor:
        """Float[Tensor, "feat"]."""
        if isinstance(self.importance, list):
            return torch.tensor(self.importance, dtype=torch.float32)
        return self.importance ** torch.arange(self.n_features, dtype=torch.float32)


def log_sweep(hi: float, lo: float, n: int) -> np.ndarray:
    """`n` values from `hi` down to `lo`, evenly spaced on a log scale."""
    return np.geomspace(hi, lo, n) if n > 1 else np.array([hi])


@dataclass
class TrainedToy:
    """A trained batch of `n_settings × replicas` instances and the best replica of each setting."""

    model: ToyModel | ComputationModel
    data: FeatureDistribution
    history: TrainResult
    all_losses: torch.Tensor  # (inst,) final loss of every instance on fresh data
    keep: list[int]  # per setting, the instance kept
    # with track_active: the logged steps and, per step and instance, the share of hidden neurons
    # active (> 0) on an example, averaged over a fixed batch
    active: tuple[list[int], np.ndarray] | None = None

    @property
    def W(self) -> torch.Tensor:
        """Float[Tensor, "setting hidden feat"] of the kept instances (W_in for the computation model)."""
        return _input_weights(self.model)[self.keep]

    @property
    def final_loss(self) -> torch.Tensor:
        return self.all_losses[self.keep]

    @property
    def replicas(self) -> int:
        return self.model.n_instances // len(self.keep)

    def loss_curves(self) -> tuple[list[int], np.ndarray]:
        """Steps and training losses (step, setting) of the kept instances."""
        return self.history.steps, np.array(self.history.losses)[:, self.keep]


def train_toy(
    cfg: ToyConfig,
    probability: torch.Tensor,
    importance: torch.Tensor,
    groups: Sequence[Group] | Sequence[Sequence[Group]] = (),
    hidden_relu: bool = False,
    computation: bool = False,
    desc: str = "training",
    callback=None,
    callback_every: int = 0,
    log_every: int = 100,
    track_active: bool = False,
) -> TrainedToy:
    """Train a batched toy model over `cfg.n_instances` settings × `cfg.replicas` initialisations.

    `probability` is (setting,) or (setting, feat); `importance` (feat,) or (setting, feat);
    `groups` one list for all or one list per setting. `hidden_relu` gives the neuron model;
    `computation` the |x| model on signed features. `track_active` (ReLU-hidden and computation
    models) records the share of neurons active per example every `log_every` steps.
    """
    reps = cfg.replicas
    n_inst, n_feat = cfg.n_instances * reps, cfg.n_features
    if probability.ndim == 1:
        probability = probability.unsqueeze(1).expand(-1, n_feat)
    probability = probability.repeat_interleave(reps, dim=0)
    if importance.ndim == 2:
        importance = importance.repeat_interleave(reps, dim=0)
    if groups and not isinstance(groups[0], Group):
        groups = [g for g in groups for _ in range(reps)]
    data = FeatureDistribution(probability, groups, value_range=(-1.0, 1.0) if computation else (0.0, 1.0))
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "toy-init"))
    imp = importance.expand(n_inst, n_feat)
    if computation:
        model = ComputationModel(n_inst, n_feat, cfg.d_hidden, imp, generator=gen)
    else:
        model = ToyModel(n_inst, n_feat, cfg.d_hidden, imp, hidden_relu=hidden_relu, generator=gen)
    active_steps: list[int] = []
    active: list[torch.Tensor] = []
    if track_active:
        if not (computation or hidden_relu):
            raise ValueError("track_active needs neurons: hidden_relu or computation")
        probe = data.sample(2048, torch.Generator().manual_seed(derive_seed(cfg.seed, "toy-active")))
        user_callback, user_every = callback, callback_every

        def record(step: int, m) -> None:
            if step % log_every == 0 or step == cfg.steps - 1:
                with torch.no_grad():
                    h = m.neurons(probe) if computation else m.hidden(probe)  # (batch, inst, hidden)
                active_steps.append(step)
                active.append((h > 0).float().mean((0, 2)))
            if user_callback is not None and user_every and (step % user_every == 0 or step == cfg.steps - 1):
                user_callback(step, m)

        callback, callback_every = (
            record,
            math.gcd(log_every, callback_every) if callback_every else log_every,
        )
    history = train_toy_model(
        model,
        data,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        schedule=cfg.schedule,
        warmup_steps=cfg.warmup_steps,
        seed=cfg.seed,
        desc=desc,
        callback=callback,
        callback_every=callback_every,
        log_every=log_every,
    )
    final = evaluate_losses(model, data, seed=cfg.seed)
    keep = best_of_replicas(final, reps)
    trace = (active_steps, torch.stack(active)[:, keep].numpy()) if track_active else None
    return TrainedToy(model, data, history, final, keep, trace)


def best_of_replicas(losses: torch.Tensor, replicas: int) -> list[int]:
    """Instances laid out setting-major (setting s, replica r at s·replicas + r): the index of the
    lowest-loss replica of each setting. Training from several initialisations and keeping the
    best avoids reading a local minimum as the answer."""
    per = losses.reshape(-1, replicas)
    return [s * replicas + int(r) for s, r in enumerate(per.argmin(1).tolist())]


def instance_records(
    trained: TrainedToy, extra: Sequence[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The per-instance part of summary.json, one record per setting (its kept replica):
    settings, final loss, geometry, and W, b. `extra[k]` is merged into the k-th record."""
    model = trained.model
    W = _input_weights(model)
    p = trained.data.probability
    records = []
    norms = geometry.feature_norms(W)
    dims = geometry.feature_dimensionality(W)
    interf = geometry.interference(W)
    rep = geometry.represented(W)
    sup = geometry.in_superposition(W)
    dpf = geometry.dimensions_per_feature(W)
    reps = trained.replicas
    for k, i in enumerate(trained.keep):
        probs = p[i]
        rec: dict[str, Any] = {
            "instance": k,
            "feature_probability": probs[0].item() if bool((probs == probs[0]).all()) else probs.tolist(),
            "importance": model.importance[i].tolist(),
            "final_loss": trained.all_losses[i].item(),
            "n_represented": int(rep[i].sum()),
            "n_in_superposition": int(sup[i].sum()),
            "dimensions_per_feature": dpf[i].item(),
            "feature_norms": norms[i],
            "feature_dimensionality": dims[i],
            "interference": interf[i],
        }
        if reps > 1:
            rec["replica_losses"] = trained.all_losses[k * reps : (k + 1) * reps].tolist()
            rec["kept_replica"] = i - k * reps
        if extra is not None:
            rec.update(extra[k])
        if isinstance(model, ComputationModel):
            rec["W_in"] = W[i]  # [d_hidden][n_features]
            rec["W_out"] = model.W_out.detach()[i]  # [n_features][d_hidden]
        else:
            rec["W"] = W[i]  # [d_hidden][n_features]: column f is feature f's direction
        rec["b"] = model.b.detach()[i]
        records.append(rec)
    return records


def _input_weights(model: ToyModel | ComputationModel) -> torch.Tensor:
    return (model.W_in if isinstance(model, ComputationModel) else model.W).detach()


def loss_history(trained: TrainedToy) -> dict[str, Any]:
    steps, losses = trained.loss_curves()
    return {"steps": steps, "loss": losses}
