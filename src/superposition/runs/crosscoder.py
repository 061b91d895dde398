"""The train-sae job of a crosscoder (`--set architecture=crosscoder`, sae/crosscoder.py) over several
activation sources read on the same tokens (lm/sources.py), through the one trainer (runs/train.py):
it resumes exactly and trains under torchrun (parallel=data).

- two models at one hook: `--set model_name_b=OTHER` (e.g. a `finetune` folder) with one
  `hook_name`; the models must share the tokenizer and the hook's width;
- several hooks of one model: `hook_name` a list or pattern (blocks.{4,6,8}.hook_resid_post).

Each source is scaled so that its median token norm is √d while training (Crosscoder.prepare); the
relative decoder norms, bands and latent scaling of the summary are measured in that space, and the
scales are folded into the weights before saving, so the saved crosscoder reads and writes raw
activations (cfg.json keeps `input_scales`). Outputs beside config.json and log.jsonl:

- crosscoder/ (cfg.json, crosscoder.safetensors): the whole crosscoder;
- saes/<source>/: each source as a one-source SAE folder in SAELens's layout (model_a and model_b,
  or the hook names). Its decoder is the crosscoder's decoder for that source; its encoder is the
  source's block of the shared encoder, so alone it reads only that source's share of each
  latent's pre-activation (use the decoder; the crosscoder for the latents);
- latents.csv: per latent, both relative norms, the band, the decoder norms, the density, and for
  two models latent scaling (β_a, β_b, ν, flagged);
- summary.json and report.html: per source EV, CE loss recovered (its model with that hook
  replaced by the crosscoder's reconstruction) and KL; L0 and dead latents; for two models the
  relative-norm histogram in both definitions, the band counts and the latents latent scaling
  flags, over the latents that fire on the held-out text.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from superposition.atomic import atomic_write_text
from superposition.dist import Comm
from superposition.interp import diffing
from superposition.lm.config import LMSAEConfig
from superposition.lm.evals import evaluate_crosscoder
from superposition.lm.sources import Paired, Source, open_sources, source_store
from superposition.memory import require_memory
from superposition.report.output import FigureSpec, Result
from superposition.runs.train import Job
from superposition.sae.crosscoder import Crosscoder
from superposition.sae.io import save_sae
from superposition.seeding import derive_seed
from superposition.viz import dictionaries as figs


def crosscoder_job(cfg: LMSAEConfig, out: Path, comm: Comm) -> Job:
    if comm.distributed:
        cfg = cfg.model_copy(update={"device": comm.device})
    sources = open_sources(cfg)
    n, d = len(sources), sources[0].hooked.d_in(sources[0].hook)
    d_sae = cfg.d_sae or cfg.expansion_factor * d
    need = 4 * 4 * 2 * n * d * d_sae + 6 * cfg.batch_size_tokens * (n * d + d_sae) * 4
    require_memory(
        need, f"train-sae crosscoder ({n} sources, d_sae {d_sae})", "lower d_sae or expansion_factor"
    )
    paired = Paired(cfg, sources, comm)
    try:
        for store in paired.stores:
            store.first_sequences(1, quiet=True)
    except BaseException:
        paired.close()
        raise
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "sae-init"))
    cc = Crosscoder(
        n, d, d_sae, cfg.crosscoder_sparsity, cfg.l1_coefficient, cfg.k, gen,
        dead_tokens=cfg.dead_feature_window * cfg.batch_size_tokens, aux_k=cfg.aux_k,
        aux_coefficient=cfg.aux_coefficient,
    ).to(cfg.device)  # fmt: skip
    train_cfg = cfg.train_config()
    names = " and ".join(f"{s.label} ({s.model_name} {s.hook})" for s in sources) if n == 2 else cfg.hook_name
    describe = (
        f"training a {cfg.crosscoder_sparsity} crosscoder ({n} x {d} -> {d_sae}) over {names}: "
        f"{train_cfg.steps} steps of {cfg.batch_size_tokens} tokens"
    )

    def finish(trainer, training: dict) -> Result | None:
        cc.eval()
        if not comm.main:
            return None
        scales = cc.input_scale.clone()
        held = source_store(cfg, sources[0], None, holdout=True).first_sequences(cfg.eval_sequences)
        print(f"evaluating on {held.shape[0]} held-out sequences", file=sys.stderr, flush=True)
        sums = diffing.ScalingSums() if n == 2 else None
        ev = evaluate_crosscoder(cc, sources, held, cfg.model_batch_size, cfg.device, scales,
                                 on_batch=sums.add if sums is not None else None)  # fmt: skip
        W_scaled = cc.W_dec.detach().clone()  # the scaled space the norms are read in
        trainer.fold_normalization()
        meta = {
            "sources": [{"label": s.label, "model_name": s.model_name, "hook_name": s.hook} for s in sources],
            "input_scales": scales.tolist(),
            "model_name": cfg.model_name,
            "model_name_b": cfg.model_name_b,
            "hook_name": cfg.hook_name,
            "context_size": cfg.context_size,
            "prepend_bos": cfg.prepend_bos,
            "dataset_path": cfg.dataset_path,
        }
        cc.save(out / "crosscoder", meta)
        for s, src in enumerate(sources):
            _save_source(cc, s, src, out / "saes" / src.label, cfg)
        table = diffing.latent_table(W_scaled, ev["density"], sums)
        atomic_write_text(out / "latents.csv", diffing.latents_csv(table))
        summary = _summary(cfg, sources, ev, table, d_sae, training)
        return _result(sources, summary, table)

    return Job(
        dictionary=cc,
        source=paired,
        train_cfg=train_cfg,
        checkpoint_dir=out / "checkpoint",
        describe=describe,
        finish=finish,
        model_tokens=lambda: paired.model_tokens,
        close=paired.close,
        trainer_comm=comm,
        logs_here=comm.main,
        rank=comm.rank,
    )


def _save_source(cc: Crosscoder, s: int, src: Source, folder: Path, cfg) -> None:
    """Source s as a one-source SAE folder SAELens loads (formats/saelens.py)."""
    extra = {
        "model_name": src.model_name,
        "hook_name": src.hook,
        "context_size": cfg.context_size,
        "prepend_bos": cfg.prepend_bos,
        "dataset_path": cfg.dataset_path,
        "crosscoder_source": {"label": src.label, "index": s, "n_sources": cc.n_sources},
    }
    save_sae(cc.source_as_sae(s), folder, 0, extra)


def _summary(cfg, sources, ev, table, d_sae, training: dict) -> dict:
    live = table["density"] > 0
    s = {
        "model_name": cfg.model_name,
        "model_name_b": cfg.model_name_b,
        "hook_name": cfg.hook_name,
        "architecture": "crosscoder",
        "crosscoder_sparsity": cfg.crosscoder_sparsity,
        "n_sources": len(sources),
        "d_sae": d_sae,
        "k": cfg.k if cfg.crosscoder_sparsity == "batchtopk" else None,
        "l1_coefficient": cfg.l1_coefficient if cfg.crosscoder_sparsity == "l1" else None,
        **training,
        "eval_tokens": ev["eval_tokens"],
        "l0": ev["l0"],
        "frac_dead": float((~live).float().mean()),
        "sources": ev["sources"],
    }
    if len(sources) == 2:
        s.update(diffing.diffing_summary(table))
    return s


def _result(sources, summary: dict, table: dict) -> Result:
    src = summary["sources"]
    hi = {f"{k} EV": v["explained_variance"] for k, v in src.items()}
    hi |= {f"{k} CE recovered": v["ce_loss_recovered"] for k, v in src.items()}
    hi["L0"] = summary["l0"]
    figures = [
        FigureSpec(
            "fvu_per_source",
            "Fraction of each source's variance the crosscoder misses.",
            figs.fvu_per_source(src),
        )  # fmt: skip
    ]
    msg = f"crosscoder: L0 {summary['l0']:.1f}, " + ", ".join(
        f"{k} EV {v['explained_variance']:.3f} CE recovered {v['ce_loss_recovered']:.3f}"
        for k, v in src.items()
    )
    if len(sources) == 2:
        b = summary["bands"]
        hi |= {"a-only": b["a_only"], "b-only": b["b_only"], "shared": b["shared"],
               "flagged by latent scaling": summary["latent_scaling"]["flagged"]}  # fmt: skip
        figures.append(
            FigureSpec(
                "relative_norm",
                "Relative decoder norm of each live latent, in both definitions; 0: only model a decodes "
                "it, 1: only model b, ½: equal norms. Shaded: the a-only, shared and b-only bands (on "
                "Minder's Δ).",
                figs.relative_norms(summary["relative_norm"]),
            )
        )
        figures.append(
            FigureSpec(
                "latent_scaling",
                "Latent scaling of the model-only latents: ν = β_other / β_own against the relative norm. "
                "Above the line (ν > 0.05) the other model carries the latent too: the norms mislabel it.",
                figs.latent_scaling(table),
            )
        )
        msg += f"; bands a-only {b['a_only']}, b-only {b['b_only']}, shared {b['shared']}"
    return Result(
        title=f"Crosscoder over {', '.join(s.label for s in sources)}",
        explanation="One dictionary over every source's activations on the same tokens; each source has "
        "its own decoder. Model diffing reads which decoders a latent uses.",
        summary=summary,
        figures=figures,
        highlights=hi,
        message=msg,
    )
