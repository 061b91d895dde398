"""`train-sae --set architecture=clt --set 'hook_name=blocks.*.mlp'`: a cross-layer transcoder
(sae/clt.py) over every layer, trained from one forward pass per batch of sequences.

Rows are every layer's (resid_mid, mlp_out) from the activation store. Inputs and targets are
scaled per layer so that their mean squared norm is d_model (as normalize_activations does for an
SAE), and the scales are folded into the weights before saving, so the saved CLT reads raw
activations. Adam with the run's lr, warm-up and decay; the loss is the sum over layers of the
squared error. The run folder is a train-sae run: config.json, log.jsonl, clt/ (circuit-tracer's
layout) and, from the end-of-run evaluation on held-out text with every MLP replaced at once,
summary.json and report.html. A CLT run is not resumable yet: --resume is refused in one line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from superposition.atomic import atomic_write_text, write_marker
from superposition.errors import SuperpositionError
from superposition.lm.evals import CLTReplacement, evaluate_substitution
from superposition.lm.hooks import HookedModel
from superposition.lm.model import load_model
from superposition.lm.store import ActivationStore, RankView
from superposition.memory import require_memory
from superposition.progress import tqdm
from superposition.report.output import FigureSpec, Result, write_result
from superposition.sae.clt import CrossLayerTranscoder
from superposition.schedules import adam_for_run
from superposition.seeding import derive_seed


def _hooks(n_layers: int) -> list[str]:
    return [f"blocks.{L}.{k}" for L in range(n_layers) for k in ("hook_resid_mid", "hook_mlp_out")]


def train_clt(cfg, out: Path, resume: bool, kind: str) -> Path:
    if resume:
        raise SuperpositionError("resume: a clt run cannot be resumed yet; start it again in a new folder")
    torch.manual_seed(derive_seed(cfg.seed, "lm-run"))
    lm = load_model(cfg.model_name, cfg.device, cfg.dtype)
    hooked = HookedModel(lm.model)
    n, d = hooked.n_layers, hooked.d_model
    d_sae = cfg.d_sae or cfg.expansion_factor * d
    params = n * d * d_sae + n * (n + 1) // 2 * d_sae * d
    require_memory(
        4 * 4 * params + 8 * cfg.batch_size_tokens * n * (d + d_sae) * 4,
        f"train-sae clt ({n} layers, d_sae {d_sae})",
        "lower d_sae or expansion_factor",
    )
    hooks = _hooks(n)
    store = ActivationStore.for_run(cfg.model_copy(update={"hook_name": hooks}), lm, hooked)
    store.first_sequences(1, quiet=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(cfg.model_dump(), indent=1))
    write_marker(out, kind)
    try:
        return _train(cfg, out, lm, hooked, store, n, d, d_sae)
    except BaseException:
        import shutil

        shutil.rmtree(out, ignore_errors=True)  # nothing to resume: leave nothing
        raise
    finally:
        store.close()


def _train(cfg, out: Path, lm, hooked, store, n: int, d: int, d_sae: int) -> Path:
    view = RankView(store)
    clt = CrossLayerTranscoder(
        n, d, d_sae, cfg.k, torch.Generator().manual_seed(derive_seed(cfg.seed, "sae-init"))
    )
    clt.to(cfg.device)
    first = view.sample(cfg.batch_size_tokens).to(cfg.device)  # (batch, 2n, d): mid_0, out_0, mid_1, ...
    s_in = (d / first[:, 0::2].square().sum(-1).mean(0).clamp(min=1e-12)).sqrt()
    s_out = (d / first[:, 1::2].square().sum(-1).mean(0).clamp(min=1e-12)).sqrt()
    with torch.no_grad():  # the first batch's mean target per layer
        clt.b_dec.copy_((first[:, 1::2] * s_out.view(1, -1, 1)).mean(0))
    opt, sched, steps = adam_for_run(clt.parameters(), cfg)
    log_every = cfg.log_every or max(1, steps // 100)
    print(
        f"training a clt ({n} layers, {d} -> {d_sae} per layer, k {cfg.k}) on {cfg.model_name}: "
        f"{steps} steps "
        f"of {cfg.batch_size_tokens} tokens",
        file=sys.stderr,
        flush=True,
    )
    started = time.time()
    rows = []
    with open(out / "log.jsonl", "w", buffering=1) as log:
        bar = tqdm(range(steps), desc="CLT", unit="step")
        for step in bar:
            batch = first if step == 0 else view.sample(cfg.batch_size_tokens).to(cfg.device)
            x = batch[:, 0::2] * s_in.view(1, -1, 1)
            y = batch[:, 1::2] * s_out.view(1, -1, 1)
            loss, terms = clt.loss(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % log_every == 0 or step == steps - 1:
                row = {
                    "step": step,
                    "loss": float(loss.detach()),
                    "fvu": float(terms["fvu"].detach().mean()),
                    "l0": float(terms["l0"].mean()),
                    "tokens": (step + 1) * cfg.batch_size_tokens,
                }
                rows.append(row)
                log.write(json.dumps(row) + "\n")
                bar.set_postfix(fvu=f"{row['fvu']:.3f}", l0=f"{row['l0']:.1f}")
    elapsed = time.time() - started
    clt.fold_scales(s_in, s_out)
    clt.eval()
    meta = {
        "model_name": cfg.model_name,
        **lm.identity,
        "context_size": cfg.context_size,
        "prepend_bos": cfg.prepend_bos,
        "dataset_path": cfg.dataset_path,
    }
    clt.save(out / "clt", meta)
    seqs = ActivationStore.for_run(
        cfg.model_copy(update={"hook_name": "blocks.0.hook_resid_mid"}), lm, hooked, holdout=True
    ).first_sequences(cfg.eval_sequences)
    print(f"evaluating: every MLP replaced at once, on {seqs.shape[0]} held-out sequences", file=sys.stderr)
    m = evaluate_substitution(
        hooked, lm.tokenizer, CLTReplacement(clt), list(range(n)), seqs, cfg.model_batch_size, cfg.device
    )
    summary = {
        "model_name": cfg.model_name,
        **lm.identity,
        "architecture": "clt",
        "n_layers": n,
        "d_sae": d_sae,
        "k": cfg.k,
        "train_seconds": round(elapsed, 1),
        "train_steps": steps,
        "training_tokens": steps * cfg.batch_size_tokens,
        **m,
        "mean_fvu": sum(m["fvu_per_layer"].values()) / n,
    }
    result = Result(
        title=f"Cross-layer transcoder on {cfg.model_name}",
        explanation="Every MLP replaced at once by the CLT's prediction from the residual streams that "
        "reach it.",
        summary=summary,
        figures=[
            FigureSpec(
                "fvu_per_layer",
                "Fraction of each MLP output's variance the CLT misses (clean inputs).",
                _fvu_figure(m["fvu_per_layer"]),
            )
        ],
        highlights={
            "ce_loss_recovered": m["ce_loss_recovered"],
            "kl_div": m["kl_div"],
            "mean FVU": summary["mean_fvu"],
        },
        message=(
            f"clt: CE loss recovered {m['ce_loss_recovered']:.3f} with every MLP replaced, "
            f"KL {m['kl_div']:.4f}, "
            f"mean FVU {summary['mean_fvu']:.3f}"
        ),
    )
    write_result(out, result, None)
    write_marker(out, "train-sae run")
    return out


def _fvu_figure(fvu: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(list(fvu), list(fvu.values()))
    ax.set_xlabel("layer")
    ax.set_ylabel("FVU of the MLP output")
    return fig
