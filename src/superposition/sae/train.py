"""The one SAE trainer: every architecture, batched over instances, from any activation source.

Adam; learning rate with linear warm-up and linear decay over the last `lr_decay_steps`; the
sparsity coefficient warmed up linearly; b_dec started at the geometric median (or mean) of a
sample; optional activation normalisation (inputs scaled so E‖x‖² = d_in, folded back into the
weights at the end); dead latents tracked over a window of examples and optionally resampled;
checkpoints that resume exactly; a progress bar. Non-finite losses stop training with the step and
the term, keeping the last good checkpoint.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from superposition.config import Config
from superposition.cpu import LoadWatch, retune, threads_for
from superposition.dist import Comm
from superposition.errors import SuperpositionError, TrainingDiverged
from superposition.progress import tqdm
from superposition.sae import checkpoint
from superposition.sae.base import BatchedSAE, LossOut, StepState
from superposition.sae.dictionary import SourceDictionary
from superposition.sae.single import SAE, as_batched
from superposition.schedules import lr_factor
from superposition.seeding import derive_seed

# Steps whose (batch × instances × d_sae) latents are fewer than this run on one thread
# (benchmarks/bench_threads.py measures where a second thread starts to pay on 2 cores).
SAE_ONE_THREAD_BELOW = 1 << 19


class SAETrainConfig(Config):
    """How an SAE is trained. Key names follow SAELens where it has them."""

    steps: int = Field(2000, gt=0, description="optimiser steps")
    batch_size: int = Field(1024, gt=0, description="activations per step")
    lr: float = Field(1e-3, gt=0.0, description="Adam learning rate")
    lr_warm_up_steps: int = Field(
        0, ge=0, description="linear warm-up of the learning rate from lr/steps to lr"
    )
    lr_decay_steps: int = Field(0, ge=0, description="linear decay to 0 over the last this many steps")
    sparsity_warm_up_steps: int = Field(0, ge=0, description="linear warm-up of the sparsity coefficient")
    fit_encoder_scale: bool = Field(
        True,
        description="scale W_enc at the start so the first reconstruction has the least squared error "
        "(architectures whose latents scale with W_enc: the TopK family)",
    )
    b_dec_init: Literal["geometric_median", "mean", "zeros"] = Field(
        "geometric_median", description="b_dec starts at this statistic of a sample of activations"
    )
    normalize_activations: bool = Field(
        False, description="scale inputs so E‖x‖² = d_in; folded back into the weights at the end"
    )
    dead_feature_window: int = Field(
        98,
        gt=0,
        description="steps without firing after which a latent counts as dead (for AuxK and resampling)",
    )
    resample: Literal["none", "simple", "anthropic"] = Field("none", description="re-initialise dead latents")
    feature_sampling_window: int = Field(1000, gt=0, description="steps between resamplings")
    checkpoint_every: int = Field(
        0, ge=0, description="steps; 0: only at the end (when a checkpoint directory is given)"
    )
    log_every: int = Field(0, ge=0, description="steps between logged metrics; 0: about 100 times per run")
    seed: int = Field(
        0, description="seeds the data order and resampling (the SAE's initialisation is seeded by its maker)"
    )


@dataclass
class SAEHistory:
    steps: list[int] = field(default_factory=list)
    terms: dict[str, list[list[float]]] = field(default_factory=dict)  # term -> per logged step, per instance
    resampled: list[int] = field(default_factory=list)  # latents resampled at each resampling
    # per logged step, per instance: mean active latents per example, and the share of latents dead
    # (not fired for dead_feature_window steps), so a report can draw both over training
    l0: list[list[float]] = field(default_factory=list)
    frac_dead: list[list[float]] = field(default_factory=list)


def lr_at(step: int, cfg: SAETrainConfig) -> float:
    """Warm-up, then constant, then linear decay to 0 over the last `lr_decay_steps` steps."""
    schedule = "linear" if cfg.lr_decay_steps else "constant"
    return cfg.lr * lr_factor(step, cfg.steps, schedule, cfg.lr_warm_up_steps, cfg.lr_decay_steps)


def geometric_median(x: Tensor, iters: int = 50, eps: float = 1e-6) -> Tensor:
    """Weiszfeld's algorithm on x (n, inst, d): the point minimising Σ‖x_i − y‖, per instance."""
    y = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - y).norm(dim=-1).clamp(min=eps)  # (n, inst)
        y_new = (w.unsqueeze(-1) * x).sum(0) / w.sum(0).unsqueeze(-1)
        if (y_new - y).norm() < eps:
            return y_new
        y = y_new
    return y


def _per_instance(x: Tensor, n_instances: int) -> Tensor:
    """Rows (n, d) shared by every instance as (n, inst, d); (n, inst, d) as it is."""
    return x.unsqueeze(1).expand(-1, n_instances, -1) if x.ndim == 2 else x


def _batch(source, n: int, gen: torch.Generator, n_instances: int) -> Tensor:
    return _per_instance(source.sample(n, gen), n_instances)


class SAETrainer:
    def __init__(
        self,
        sae: BatchedSAE | SAE | SourceDictionary,
        source,
        cfg: SAETrainConfig,
        checkpoint_dir: str | Path | None = None,
        on_log: Callable[[int, Tensor, LossOut], dict | None] | None = None,
        objective: Callable[[LossOut, Tensor], LossOut] | None = None,
        comm: Comm | None = None,
    ) -> None:
        """`source` has sample(n, generator); if it also has state_dict/load_state_dict (a
        streaming store), its position goes into checkpoints. `on_log(step, y, out)` is called at
        logged steps with the batch's reconstruction target y (x for an SAE) and may return numbers
        for the progress bar. `objective(out, scale)`, if given, turns the SAE's own loss on the batch
        into the one optimised (the end-to-end loss of lm/e2e.py; scale: the normalisation factor).

        `comm` (data-parallel, dist.py): `source` gives this rank its share of each batch of
        cfg.batch_size rows; gradients are summed over ranks weighted by share (so a step equals
        one process's step on the whole batch), initialisation statistics come from every rank's
        rows, fired latents are MAX-reduced, and only rank 0 writes checkpoints."""
        if isinstance(sae, SourceDictionary):  # a CLT or a crosscoder (sae/dictionary.py)
            if cfg.resample != "none":
                raise SuperpositionError(f"resample: {cfg.resample!r} is for SAEs and transcoders; use none")
        else:
            sae = as_batched(sae)  # an SAE trains as its one-instance batched form (the same parameters)
        if isinstance(sae, BatchedSAE) and sae.cfg.input_normalization != "none":
            raise SuperpositionError(
                f"input_normalization {sae.cfg.input_normalization!r}: SAEs that normalise each input can be "
                "evaluated here, not trained (train with none, or with normalize_activations)"
            )
        self.sae, self.source, self.cfg, self.on_log, self.objective = sae, source, cfg, on_log, objective
        self.comm = comm or Comm.single()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        # fused: one kernel per parameter instead of a dozen elementwise passes (same update)
        self.opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, fused=True)
        self.gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "sae-data"))
        n_inst, m = sae.n_instances, sae.n_latents
        self.device = next(sae.parameters()).device
        # since_fired counts examples; a latent is dead after dead_feature_window steps' worth
        self.dead_examples = cfg.dead_feature_window * cfg.batch_size
        self.since_fired = torch.zeros(n_inst, m, device=self.device)  # examples since each latent last fired
        self.scale = torch.ones(n_inst, 1, device=self.device)  # activation normalisation factor per instance
        self.out_scale = self.scale.clone()  # a transcoder's target's (an SAE's is its input's)
        self._source_at_step = None
        self._in_step = False  # True between a step's start and its end: Ctrl-C there rolls it back
        self._updating = False  # True once a step has started changing the weights
        self.step = 0
        self.history = SAEHistory()
        self._initialised = False

    # ------------------------------------------------------------------ set-up
    @torch.no_grad()
    def initialise(self) -> None:
        cfg, sae = self.cfg, self.sae
        if not isinstance(sae, BatchedSAE):  # a dictionary of several sources keeps its own scales
            sae.prepare(self.comm.gather_rows(self.source.sample(cfg.batch_size, self.gen)).to(self.device))
            self._initialised = True
            return
        x = self.comm.gather_rows(_batch(self.source, max(4096, cfg.batch_size), self.gen, sae.n_instances))
        if cfg.normalize_activations:  # a transcoder's input and target each on its own
            x_in, y = sae.split(x)
            self.scale = (x_in.shape[-1] / x_in.square().sum(-1).mean(0)).sqrt().unsqueeze(-1)  # (inst, 1)
            self.out_scale = (y.shape[-1] / y.square().sum(-1).mean(0)).sqrt().unsqueeze(-1)
            x = self._scaled(x)
        target = sae.split(x)[1]
        if cfg.b_dec_init == "geometric_median":
            sae.b_dec.copy_(geometric_median(target))
        elif cfg.b_dec_init == "mean":
            sae.b_dec.copy_(target.mean(0))
        if cfg.fit_encoder_scale:
            self._fit_encoder_scale(x)
        self._initialised = True

    def _scaled(self, batch: Tensor, instances: slice = slice(None)) -> Tensor:
        """A batch (of `instances` only, if given) in normalised units: × scale (a transcoder's
        target × out_scale); a dictionary of several sources scales them itself."""
        if not isinstance(self.sae, BatchedSAE):
            return self.sae.scaled(batch)
        scale = self.scale[instances]
        if not self.sae.transcodes:
            return batch * scale
        d_in = self.sae.cfg.d_in
        return torch.cat([batch[..., :d_in] * scale, batch[..., d_in:] * self.out_scale[instances]], -1)

    @torch.no_grad()
    def _fit_encoder_scale(self, x: Tensor) -> None:
        """Scale W_enc (per instance) so that the first reconstruction has the least squared error:
        with unit-norm decoder rows and W_enc = W_decᵀ, k latents of an overcomplete dictionary
        add up to several times ‖x‖ (FVU 10 and more at d_sae = 32·d_in, k = 128), which costs
        the first hundreds of steps. For latents f linear in W_enc's scale, the best scale is
        c = Σ⟨y − b_dec, f W_dec⟩ / Σ‖f W_dec‖² over the initialisation batch (y = x for an SAE)."""
        sae = self.sae
        weight = sae.encoder_param()
        if weight is None:  # tied to the decoder
            return
        num = den = 0.0
        for chunk in x.split(self.cfg.batch_size):  # (rows, d_sae) at a time: no more than a step's memory
            x_in, y = sae.split(chunk)
            z = sae.initial_latents(x_in)
            if z is None:  # latents that do not scale with W_enc: leave it as initialised
                return
            r = torch.bmm(z.transpose(0, 1), sae.W_dec)  # (inst, rows, d_out)
            target = (sae._normalize(y) - sae.b_dec).transpose(0, 1)
            num = num + (target * r).sum((1, 2))
            den = den + r.square().sum((1, 2))
        c = torch.where((den > 0) & (num > 0), num / den.clamp(min=1e-30), torch.ones_like(num))
        weight.mul_(c.view(-1, 1, 1))

    # ------------------------------------------------------------------ training
    def train(self, progress: bool | None = None) -> SAEHistory:
        if not self._initialised:
            self.initialise()
        cfg, sae = self.cfg, self.sae
        bar = tqdm(
            range(self.step, cfg.steps),
            initial=self.step,
            total=cfg.steps,
            desc=f"SAE ({sae.cfg.architecture})" if isinstance(sae, BatchedSAE) else sae.label,
            disable=(not progress) if progress is not None else None,
            leave=False,
        )
        log_every = cfg.log_every or max(1, cfg.steps // 100)
        asked = []

        def on_sigint(signum, frame):
            # First Ctrl-C: stop at the end of this step. Second: now, unless the step has begun
            # changing the weights (then at its end, a moment later), so a checkpoint is never
            # taken half-way through an update.
            if asked and not self._updating:
                raise KeyboardInterrupt
            asked.append(signum)

        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, on_sigint) if in_main else None
        # the toy trainer's thread policy (cpu.threads_for): a step whose largest tensor is small
        # runs on one thread, where a second costs more in hand-off than it gains
        # (an objective through a language model, lm/e2e.py, is large work whatever the SAE's size)
        size = cfg.batch_size * sae.n_instances * sae.n_latents if self.objective is None else 1 << 62
        watch, looked = LoadWatch(), time.monotonic()
        try:
            with threads_for(size, SAE_ONE_THREAD_BELOW):
                for step in bar:
                    if time.monotonic() - looked > 20:  # the machine's load changes: choose again
                        retune(size, SAE_ONE_THREAD_BELOW, watch)
                        looked = time.monotonic()
                    self._step(step, bar, log_every)
                    if self.comm.any(bool(asked)):  # every rank stops after the same step
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            if self.checkpoint_dir is not None:
                if self._in_step:  # roll back the unfinished step, so the checkpoint resumes at its start
                    self.step = self._step_started
                    self.gen.set_state(self._rng_at_step)
                    if self._source_at_step is not None:
                        self.source.load_state_dict(self._source_at_step)
                self.save_checkpoint()
            raise
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)
        if self.checkpoint_dir is not None:
            self.save_checkpoint()
        return self.history

    def _step(self, step: int, bar, log_every: int) -> None:
        cfg, sae = self.cfg, self.sae
        self._step_started = self.step = step
        self._rng_at_step = self.gen.get_state()
        if hasattr(self.source, "state_dict"):
            self._source_at_step = self.source.state_dict()
        self._in_step = True
        for group in self.opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        x = self._scaled(_batch(self.source, cfg.batch_size, self.gen, sae.n_instances))
        state = StepState(
            sparsity_scale=min(1.0, (step + 1) / cfg.sparsity_warm_up_steps)
            if cfg.sparsity_warm_up_steps
            else 1.0,
            dead=self.since_fired >= self.dead_examples,
        )
        out = sae.train_loss(x, state)
        if self.objective is not None:
            out = self.objective(out, self.scale)
        self._check_finite(out, step)
        self.opt.zero_grad(set_to_none=True)
        out.total.backward()
        if self.comm.distributed:
            self._reduce_gradients(x.shape[0])
        sae.remove_parallel_grad()
        self._updating = True  # from here to the end of the step, an interrupt waits for the step to finish
        self.opt.step()
        sae.normalize_decoder()
        with torch.no_grad():
            fired = out.fired if out.fired is not None else (out.z != 0).any(0)  # (inst, d_sae)
            if self.comm.distributed:  # fired on any rank's rows
                fired = self.comm.max_(fired.to(torch.uint8)).bool()
            self.since_fired += cfg.batch_size if self.comm.distributed else x.shape[0]
            self.since_fired[fired] = 0
        if cfg.resample != "none" and (step + 1) % cfg.feature_sampling_window == 0 and step + 1 < cfg.steps:
            self.resample()
        if step % log_every == 0 or step == cfg.steps - 1:
            self.history.steps.append(step)
            for k, v in out.terms.items():
                self.history.terms.setdefault(k, []).append(v.detach().tolist())
            with torch.no_grad():
                if out.l0 is not None:
                    l0 = out.l0.tolist()
                elif out.z is not None:
                    l0 = (out.z != 0).sum(-1).float().mean(0).tolist()
                else:
                    l0 = [float("nan")] * self.since_fired.shape[0]
                self.history.l0.append(l0)
                dead = (self.since_fired >= self.dead_examples).float().mean(-1)
                self.history.frac_dead.append(dead.tolist())
            target = sae.split(x)[1] if isinstance(sae, BatchedSAE) else sae.target(x)
            shown = self.on_log(step, target, out) if self.on_log else None
            bar.set_postfix(shown or {"mse": f"{out.terms['mse'].mean().item():.4g}"}, refresh=False)
        self.step = step + 1
        self._in_step = self._updating = False
        if self.checkpoint_dir is not None and cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
            self.save_checkpoint()

    def _reduce_gradients(self, rows: int) -> None:
        """Σ over ranks of (rows / batch) × gradient: the gradient of the whole batch's loss,
        whose terms are means over rows. One all-reduce for every parameter."""
        params = [p for p in self.sae.parameters() if p.grad is not None]
        flat = torch.cat([p.grad.reshape(-1) for p in params]) * (rows / self.cfg.batch_size)
        self.comm.sum_(flat)
        start = 0
        for p in params:
            p.grad.copy_(flat[start : start + p.numel()].view_as(p.grad))
            start += p.numel()

    def _candidates(self, n: int) -> Tensor:
        """Inputs dead-latent resampling draws from: the source's `random_rows` (the current
        buffer, the same on every rank, the stream left where it is) or its next n rows."""
        if hasattr(self.source, "random_rows"):
            return _per_instance(self.source.random_rows(n, self.gen), self.sae.n_instances)
        return self.comm.gather_rows(_batch(self.source, n, self.gen, self.sae.n_instances))

    def _check_finite(self, out, step: int) -> None:
        for name, value in out.terms.items():
            if not bool(torch.isfinite(value).all()):
                bad = (~torch.isfinite(value)).nonzero().squeeze(1).tolist()
                kept = (
                    f"; the last good checkpoint is in {self.checkpoint_dir}" if self.checkpoint_dir else ""
                )
                raise TrainingDiverged(
                    f"training diverged at step {step}: loss term '{name}' is not finite for instance(s) "
                    f"{bad}{kept}"
                )

    # ------------------------------------------------------------------ resampling
    @torch.no_grad()
    def resample(self) -> None:
        """Re-initialise dead latents.

        simple: a random unit decoder direction, the encoder column along it.
        anthropic: decoder directions from inputs the SAE reconstructs worst (sampled with
        probability ∝ squared error), encoder columns along them scaled to 0.2 × the mean norm of
        the alive encoder columns, encoder bias 0, and the Adam state of those entries reset.
        """
        sae, dead = self.sae, self.since_fired >= self.dead_examples
        n_dead = int(dead.sum())
        self.history.resampled.append(n_dead)
        if n_dead == 0:
            return
        W_enc = sae.encoder_weight()
        for i in range(sae.n_instances):
            idx = dead[i].nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            if self.cfg.resample == "anthropic":
                one = slice(i, i + 1)
                x = self._candidates(max(8192, 4 * idx.numel()))[:, one]
                x = self._scaled(x, one)
                x_in, y = sae.split(x)
                sae.eval()
                err = self._recon(x_in, i).sub(y).square().sum(-1).squeeze(1)
                sae.train()
                pick = torch.multinomial(
                    err.square().cpu() + 1e-12,
                    idx.numel(),
                    replacement=err.numel() < idx.numel(),
                    generator=self.gen,
                )
                dirs = y[pick, 0] - sae.b_dec[i]
                enc_dirs = x_in[pick, 0] if sae.transcodes else dirs
            else:
                dirs = torch.randn(idx.numel(), sae.d_out, generator=self.gen).to(self.device)
                enc_dirs = (
                    torch.randn(idx.numel(), sae.cfg.d_in, generator=self.gen).to(self.device)
                    if sae.transcodes
                    else dirs
                )
            dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp(min=1e-8)
            enc_dirs = enc_dirs / enc_dirs.norm(dim=-1, keepdim=True).clamp(min=1e-8)
            alive = ~dead[i]
            enc_norm = (
                W_enc[i][:, alive].norm(dim=0).mean()
                if bool(alive.any())
                else torch.tensor(1.0, device=self.device)
            )
            sae.W_dec[i, idx] = dirs
            if (W_enc_param := sae.encoder_param()) is not None:  # a tied encoder follows W_dec
                W_enc_param[i][:, idx] = enc_dirs.T * (
                    0.2 * enc_norm if self.cfg.resample == "anthropic" else enc_norm
                )
            sae.b_enc[i, idx] = 0.0
            self._reset_adam(i, idx)
            self.since_fired[i, idx] = 0

    def _recon(self, x: Tensor, i: int) -> Tensor:
        """Reconstruction (of the target) from instance i's inputs x (batch, 1, d_in) by instance i."""
        sae = self.sae
        z = sae.encode(x.expand(-1, sae.n_instances, -1))
        return sae.decode(z, x.expand(-1, sae.n_instances, -1))[:, i : i + 1]

    def _reset_adam(self, i: int, idx: Tensor) -> None:
        sae = self.sae
        slices = {"W_dec": (i, idx), "b_enc": (i, idx)}
        if sae.encoder_param() is not None:
            slices["W_enc"] = (i, slice(None), idx)
        for name, sl in slices.items():
            state = self.opt.state.get(getattr(sae, name), {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][sl] = 0.0

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path | None:
        """Write the model, Adam state, counters, RNG state and the source's position as one
        checkpoint (sae/checkpoint.py); resuming from it continues exactly. Data-parallel ranks
        hold the same state: rank 0 writes it."""
        if not self.comm.main:
            return None
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.sae.state_dict().items()}
        names = {p: n for n, p in self.sae.named_parameters()}
        for p, st in self.opt.state.items():
            for key, v in st.items():
                tensors[f"adam.{names[p]}.{key}"] = torch.as_tensor(v).cpu().contiguous()
        tensors["since_fired"] = self.since_fired.cpu()
        tensors["scale"] = self.scale.cpu()
        tensors["out_scale"] = self.out_scale.cpu()
        tensors["rng"] = self.gen.get_state()
        meta = {
            "source": self.source.state_dict() if hasattr(self.source, "state_dict") else None,
            "sae_cfg": self.sae.cfg.model_dump() if isinstance(self.sae, BatchedSAE) else self.sae.record(),
            "train_cfg": self.cfg.model_dump(),
            "history": {
                "steps": self.history.steps,
                "terms": self.history.terms,
                "resampled": self.history.resampled,
                "l0": self.history.l0,
                "frac_dead": self.history.frac_dead,
            },
        }
        return checkpoint.save(self.checkpoint_dir, self.step, tensors, meta)

    def load_checkpoint(self) -> None:
        d = self.checkpoint_dir
        if d is None or not checkpoint.exists(d):
            raise SuperpositionError(f"resume: no checkpoint in {d}")
        tensors, meta = checkpoint.load(d)
        self.sae.load_state_dict(
            {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        )
        params = dict(self.sae.named_parameters())
        for name, p in params.items():
            st = {key.split(".")[-1]: v for key, v in tensors.items() if key.startswith(f"adam.{name}.")}
            if st:  # moments laid out as the parameter (the fused step pairs their memory element by element)
                self.opt.state[p] = {
                    k: (v if k == "step" else torch.empty_like(p).copy_(v)) for k, v in st.items()
                }
        self.since_fired = tensors["since_fired"].to(self.device)
        self.scale = tensors["scale"].to(self.device)
        self.out_scale = tensors.get("out_scale", tensors["scale"]).to(self.device)
        if meta.get("source") is not None:
            self.source.load_state_dict(meta["source"])
        self.gen.set_state(tensors["rng"])
        self.step = meta["step"]
        h = meta["history"]
        self.history = SAEHistory(
            h["steps"], h["terms"], h["resampled"], h.get("l0", []), h.get("frac_dead", [])
        )
        self._initialised = True

    # ------------------------------------------------------------------ finishing
    @torch.no_grad()
    def fold_normalization(self) -> None:
        """Rewrite the weights so the SAE takes raw (unnormalised) activations (see
        BatchedSAE.fold_input_scale); a dictionary of several sources folds its own scales."""
        if not isinstance(self.sae, BatchedSAE):
            self.sae.finish()
            return
        if not self.cfg.normalize_activations:
            return
        self.sae.fold_input_scale(self.scale, self.out_scale)
        self.scale, self.out_scale = torch.ones_like(self.scale), torch.ones_like(self.out_scale)
