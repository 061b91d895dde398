"""The train-sae job of a cross-layer transcoder (`--set architecture=clt --set 'hook_name=blocks.*.mlp'`,
sae/clt.py) over every layer, through the one trainer (runs/train.py): rows are every layer's
(resid_mid, mlp_out) from one forward pass per batch of sequences (lm/sources.layer_rows), scaled per
layer while training and folded in before saving, so the saved CLT reads raw activations. It resumes
exactly and trains under torchrun (parallel=data). The run folder holds clt/ (circuit-tracer's
layout) and, from the end-of-run evaluation on held-out text with every MLP replaced at once,
summary.json and report.html."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from superposition.dist import Comm
from superposition.lm.config import LMSAEConfig
from superposition.lm.evals import CLTReplacement, evaluate_substitution
from superposition.lm.hooks import HookedModel
from superposition.lm.model import load_model
from superposition.lm.sources import layer_rows
from superposition.lm.store import ActivationStore
from superposition.memory import require_memory
from superposition.report.output import FigureSpec, Result
from superposition.runs.train import Job
from superposition.sae.clt import CrossLayerTranscoder
from superposition.seeding import derive_seed
from superposition.viz.dictionaries import fvu_per_layer


def clt_job(cfg: LMSAEConfig, out: Path, comm: Comm) -> Job:
    lm = load_model(cfg.model_name, comm.device if comm.distributed else cfg.device, cfg.dtype)
    if comm.distributed:
        cfg = cfg.model_copy(update={"device": comm.device})
    hooked = HookedModel(lm.model)
    n, d = hooked.n_layers, hooked.d_model
    d_sae = cfg.d_sae or cfg.expansion_factor * d
    params = n * d * d_sae + n * (n + 1) // 2 * d_sae * d
    need = 4 * 4 * params + 8 * cfg.batch_size_tokens * n * (d + d_sae) * 4
    require_memory(need, f"train-sae clt ({n} layers, d_sae {d_sae})", "lower d_sae or expansion_factor")
    store, view = layer_rows(cfg, lm, hooked, comm)
    try:
        store.first_sequences(1, quiet=True)
    except BaseException:
        store.close()
        raise
    clt = CrossLayerTranscoder(
        n, d, d_sae, cfg.k, torch.Generator().manual_seed(derive_seed(cfg.seed, "sae-init")),
        sparsity=cfg.clt_sparsity, init_threshold=cfg.init_threshold, bandwidth=cfg.bandwidth,
        sparsity_coefficient=cfg.clt_sparsity_coefficient, tanh_scale=cfg.clt_tanh_scale,
        preact_coefficient=cfg.clt_preact_coefficient,
    )  # fmt: skip
    clt.to(cfg.device)
    train_cfg = cfg.train_config()

    def finish(trainer, training: dict) -> Result | None:
        trainer.fold_normalization()
        clt.eval()
        if not comm.main:
            return None
        meta = {"model_name": cfg.model_name, **lm.identity, "context_size": cfg.context_size,
                "prepend_bos": cfg.prepend_bos, "dataset_path": cfg.dataset_path}  # fmt: skip
        clt.save(out / "clt", meta)
        seqs = ActivationStore.for_run(
            cfg.model_copy(update={"hook_name": "blocks.0.hook_resid_mid"}), lm, hooked, holdout=True
        ).first_sequences(cfg.eval_sequences)
        print(
            f"evaluating: every MLP replaced at once, on {seqs.shape[0]} held-out sequences", file=sys.stderr
        )
        m = evaluate_substitution(hooked, lm.tokenizer, CLTReplacement(clt), list(range(n)), seqs,
                                  cfg.model_batch_size, cfg.device)  # fmt: skip
        summary = {"model_name": cfg.model_name, **lm.identity, "architecture": "clt", "n_layers": n,
                   "d_sae": d_sae, "k": cfg.k, **training, **m,
                   "mean_fvu": sum(m["fvu_per_layer"].values()) / n}  # fmt: skip
        return Result(
            title=f"Cross-layer transcoder on {cfg.model_name}",
            explanation="Every MLP replaced at once by the CLT's prediction from the residual streams that "
            "reach it.",
            summary=summary,
            figures=[
                FigureSpec(
                    "fvu_per_layer",
                    "Fraction of each MLP output's variance the CLT misses (clean inputs).",
                    fvu_per_layer(m["fvu_per_layer"]),
                )
            ],  # fmt: skip
            highlights={
                "ce_loss_recovered": m["ce_loss_recovered"],
                "kl_div": m["kl_div"],
                "mean FVU": summary["mean_fvu"],
            },  # fmt: skip
            message=(
                f"clt: CE loss recovered {m['ce_loss_recovered']:.3f} with every MLP replaced, "
                f"KL {m['kl_div']:.4f}, mean FVU {summary['mean_fvu']:.3f}"
            ),
        )

    return Job(
        dictionary=clt,
        source=view,
        train_cfg=train_cfg,
        checkpoint_dir=out / "checkpoint",
        describe=f"training a clt ({n} layers, {d} -> {d_sae} per layer, "
        f"{'jumprelu' if cfg.clt_sparsity == 'jumprelu' else f'k {cfg.k}'}) on {cfg.model_name}: "
        f"{train_cfg.steps} steps of {cfg.batch_size_tokens} tokens",
        finish=finish,
        model_tokens=lambda: store.model_tokens,
        close=store.close,
        trainer_comm=comm,
        logs_here=comm.main,
        rank=comm.rank,
    )
