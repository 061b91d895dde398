"""The train-sae job of SAEs and transcoders (runs/train.py runs it): one hook (sae/), or one SAE per
hook of several (saes/<hook>/, side by side from the same forward passes, or shared over torchrun
ranks with parallel=hooks), with a local or an end-to-end loss (lm/e2e.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from superposition.dist import Comm
from superposition.errors import SuperpositionError
from superposition.lm.config import LMSAEConfig
from superposition.lm.e2e import EndToEndObjective, SequenceSource
from superposition.lm.hooks import HookedModel, hook_meaning, read_names
from superposition.lm.model import load_model
from superposition.lm.store import ActivationStore, RankView, store_units
from superposition.memory import require_memory
from superposition.runs.evaluate import evaluate, evaluate_multi
from superposition.runs.targets import LMRun
from superposition.runs.train import Job
from superposition.sae import SAE, make_sae
from superposition.sae.base import training_bytes
from superposition.sae.formats import load as load_sae
from superposition.sae.io import save_sae
from superposition.seeding import derive_seed


@dataclass
class Plan:
    """Which SAEs this process trains: the run's hooks, this rank's share of them (hook-parallel:
    every world-th hook; otherwise all), and where its checkpoint lives."""

    hooks: list[str]  # every hook of the run, in forward order
    mine: list[int]  # indices into hooks trained here (one SAE instance each)
    multi: bool  # saes/<hook>/ layout
    hook_parallel: bool
    checkpoint_dir: Path


def plan_for(cfg: LMSAEConfig, hooked: HookedModel, comm: Comm, out: Path) -> Plan:
    hooks = store_units(cfg.hook_name, hooked)
    multi = cfg.multi_hook
    if multi:
        widths = {h: tuple(hooked.widths(h)) for h in hooks}
        if len(set(widths.values())) > 1:
            shown = ", ".join(f"{h} {'->'.join(map(str, w))}" for h, w in widths.items())
            raise SuperpositionError(
                f"hook_name: the hooks of one run train side by side and must share a width ({shown}); "
                "train hooks of other widths in another run"
            )
    hook_parallel = cfg.parallel == "hooks" and comm.distributed
    if hook_parallel:  # one hook, a loss other than local: runs/train.check_ranks
        if len(hooks) < comm.world:
            raise SuperpositionError(
                f"parallel: hooks gives every rank at least one hook: {len(hooks)} hooks for {comm.world} "
                "ranks (fewer ranks, more hooks, or parallel=data)"
            )
    mine = [i for i in range(len(hooks)) if not hook_parallel or i % comm.world == comm.rank]
    ckpt = out / "checkpoint"
    if hook_parallel:
        ckpt = ckpt / f"rank{comm.rank}-of-{comm.world}"
    return Plan(hooks, mine, multi, hook_parallel, ckpt)


def make_saes(cfg: LMSAEConfig, plan: Plan, sae_cfg):
    """The SAE (one instance per hook trained here). Each hook's SAE starts from its own seed, so
    hook-parallel ranks start exactly where one process does; a single-hook run keeps its seed."""
    if not plan.multi:
        return make_sae(sae_cfg, torch.Generator().manual_seed(derive_seed(cfg.seed, "sae-init")))
    parts = [
        make_sae(sae_cfg, torch.Generator().manual_seed(derive_seed(cfg.seed, f"sae-init-{plan.hooks[i]}")))
        for i in plan.mine
    ]
    sae = make_sae(sae_cfg.model_copy(update={"n_instances": len(parts)}))
    with torch.no_grad():
        for key, value in sae.state_dict().items():
            value.copy_(torch.cat([p.state_dict()[key] for p in parts]))
    return sae


def sae_job(cfg: LMSAEConfig, out: Path, comm: Comm) -> Job:
    lm = load_model(cfg.model_name, comm.device if comm.distributed else cfg.device, cfg.dtype)
    if comm.distributed:
        cfg = cfg.model_copy(update={"device": comm.device})
    hooked = HookedModel(lm.model)
    plan = plan_for(cfg, hooked, comm, out)
    widths = hooked.widths(plan.hooks[0])  # [d_in], or a transcoder's [d_in, d_out]
    d_in = widths[0]
    store = ActivationStore.for_run(cfg, lm, hooked, comm=comm)
    try:
        store.first_sequences(1, quiet=True)  # unreadable or too little text: say so before writing anything
        sae_cfg, train_cfg = cfg.sae_config(*widths), cfg.train_config()
        buffer = (
            2 * store.buffer_sequences * cfg.context_size * store.d_in * 4
        )  # a buffer and its shuffled copy
        need = training_bytes(len(plan.mine), d_in, sae_cfg.d_sae, cfg.batch_size_tokens) + buffer
        require_memory(need, f"train-sae (d_in {d_in}, d_sae {sae_cfg.d_sae}, batch {cfg.batch_size_tokens})",
                       "lower d_sae, expansion_factor, batch_size_tokens or n_batches_in_buffer")  # fmt: skip
    except BaseException:
        store.close()
        raise
    sae = make_saes(cfg, plan, sae_cfg).to(cfg.device)
    source, objective = RankView(store, None if plan.hook_parallel else comm, plan.mine), None
    if cfg.loss != "local":  # end-to-end: whole sequences, and the KL through the rest of the model
        source = SequenceSource(store, hooked, lm.tokenizer, cfg.hook_name, cfg.downstream_hooks)
        objective = EndToEndObjective(source, cfg.kl_coefficient, cfg.downstream_coefficient)
    describe = (
        f"training {len(plan.hooks) if plan.multi else 'a'} {cfg.architecture}"
        f"{'' if cfg.loss == 'local' else f' ({cfg.loss} loss)'} "
        f"({sae.cfg.d_in} -> {sae.cfg.d_sae}{f' -> {sae.d_out}' if sae.transcodes else ''}) "
        f"on {cfg.model_name} "
        f"{', '.join(plan.hooks) if plan.multi else cfg.hook_name}: {cfg.steps} steps of "
        f"{cfg.batch_size_tokens} tokens"
    )

    def finish(trainer, training: dict):
        trainer.fold_normalization()
        meta = {
            "context_size": cfg.context_size,
            "prepend_bos": cfg.prepend_bos,
            "dataset_path": cfg.dataset_path,
            **lm.identity,
            "hook_meaning": hook_meaning(cfg.hook_name) if not plan.multi else None,
        }
        if not plan.multi:
            if comm.main:
                save_sae(sae, out / "sae", 0, meta)
        elif comm.main or plan.hook_parallel:
            for j, i in enumerate(plan.mine):
                hook = plan.hooks[i]
                names = read_names(hook)
                own = {"hook_name": names[0], "hook_meaning": hook_meaning(hook)}
                if sae.transcodes:
                    own["hook_name_out"] = names[-1]
                save_sae(sae, out / "saes" / hook, j, {**meta, **own})
        comm.barrier("waiting for every rank's SAEs to be saved")
        if not comm.main:
            return None  # rank 0 evaluates and writes the summary
        if plan.multi:
            return evaluate_multi(out, cfg, plan.hooks, lm, hooked, training)
        run = LMRun(out, cfg, SAE.frozen(load_sae(out / "sae"), cfg.device))
        return evaluate(run, out, lm, hooked, training)

    return Job(
        dictionary=sae,
        source=source,
        train_cfg=train_cfg,
        checkpoint_dir=plan.checkpoint_dir,
        describe=describe,
        finish=finish,
        model_tokens=lambda: store.model_tokens,
        close=store.close,
        objective=objective,
        trainer_comm=None if plan.hook_parallel else comm,
        log_hooks=[plan.hooks[i] for i in plan.mine] if plan.multi else None,
        logs_here=comm.main or plan.hook_parallel,
        rank=comm.rank,
    )
