"""`train-sae --set architecture=crosscoder`: one crosscoder (sae/crosscoder.py) over several
activation sources read on the same tokens:

- two models at one hook: `--set model_name_b=OTHER` (e.g. a `finetune` folder) with one
  `hook_name`; the models must share the tokenizer and the hook's width;
- several hooks of one model: `hook_name` a list or pattern (blocks.{4,6,8}.hook_resid_post).

Pairing: each model has its own activation store built from the same config, so both run on the
same sequences, keep the same (non-special) positions and shuffle them with the same seeded
permutation: row i of one store is row i of the other (a test holds this bit for bit with a
model paired with itself).

Each source is scaled so that its median token norm is √d (normalize_activations uses the mean
squared norm; a median is not moved by a pattern on a few tokens, which would otherwise rescale
every other latent's decoder row and shift every relative norm); the relative decoder norms, bands
and latent scaling of the summary are measured in that space, and the scales are folded into the
weights before saving, so the saved crosscoder reads and writes raw activations (cfg.json keeps
`input_scales`). Adam with the run's lr, warm-up and decay. Outputs beside config.json and
log.jsonl:

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

A crosscoder run is not resumable yet: --resume is refused in one line.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from superposition.atomic import atomic_write_text, write_marker
from superposition.errors import SuperpositionError
from superposition.interp import diffing
from superposition.lm.data import special_mask
from superposition.lm.evals import _ce_and_kl, capture_into, ce_loss_recovered, spliced_ce
from superposition.lm.hooks import HookedModel, sae_inputs
from superposition.lm.model import load_model
from superposition.lm.store import ActivationStore, RankView, store_units
from superposition.lm.transfer import same_tokenizer
from superposition.memory import require_memory
from superposition.progress import tqdm
from superposition.report.output import FigureSpec, Result, write_result
from superposition.sae.crosscoder import Crosscoder
from superposition.schedules import adam_for_run
from superposition.seeding import derive_seed

HIST_BINS = 40


@dataclass
class Source:
    label: str  # model_a / model_b, or the hook name
    model_name: str
    hook: str
    lm: Any
    hooked: HookedModel


def open_sources(cfg) -> list[Source]:
    """The run's sources, checked: same tokenizer, the hook in every model, one width."""
    lm_a = load_model(cfg.model_name, cfg.device, cfg.dtype)
    hooked_a = HookedModel(lm_a.model)
    if cfg.model_name_b is not None:
        lm_b = load_model(cfg.model_name_b, cfg.device, cfg.dtype)
        same_tokenizer(
            lm_a.tokenizer, lm_b.tokenizer, cfg.model_name, cfg.model_name_b, "model_name_b",
            "a crosscoder reads both models on the same tokens",
        )  # fmt: skip
        sources = [
            Source("model_a", cfg.model_name, cfg.hook_name, lm_a, hooked_a),
            Source("model_b", cfg.model_name_b, cfg.hook_name, lm_b, HookedModel(lm_b.model)),
        ]
    else:
        units = store_units(cfg.hook_name, hooked_a)
        sources = [Source(h, cfg.model_name, h, lm_a, hooked_a) for h in units]
    widths = {}
    for s in sources:
        try:
            widths[s.label] = s.hooked.d_in(s.hook)
        except SuperpositionError:
            raise SuperpositionError(
                f"hook_name: {s.hook} is not a hook point of {s.model_name} (blocks.L.<kind>, L in "
                f"0..{s.hooked.n_layers - 1})"
            ) from None
    if len(set(widths.values())) > 1:
        got = ", ".join(f"{k} {v}" for k, v in widths.items())
        raise SuperpositionError(f"hook_name: a crosscoder's sources share one width; these differ ({got})")
    return sources


def _store(cfg, source: Source, sub: str | None, holdout: bool = False) -> ActivationStore:
    update = {"model_name": source.model_name}
    if cfg.activation_cache and sub:  # one cache folder per model: a cache holds one model's rows
        update["activation_cache"] = str(Path(cfg.activation_cache) / sub)
    return ActivationStore.for_run(cfg.model_copy(update=update), source.lm, source.hooked, holdout=holdout)


class Paired:
    """Batches (n, n_sources, d) from the sources' stores: one store per model (the same rows of the
    same sequences), or one store over several hooks (viewed per hook)."""

    def __init__(self, cfg, sources: list[Source]) -> None:
        if cfg.model_name_b is not None:
            self.stores = [_store(cfg, s, s.label) for s in sources]
            self.view = None
        else:
            self.stores = [_store(cfg, sources[0], None)]
            self.view = RankView(self.stores[0])

    def sample(self, n: int) -> Tensor:
        if self.view is not None:
            return self.view.sample(n)
        return torch.stack([s.sample(n) for s in self.stores], 1)

    def close(self) -> None:
        for s in self.stores:
            s.close()


def train_crosscoder_run(cfg, out: Path, resume: bool, kind: str) -> Path:
    if resume:
        raise SuperpositionError(
            "resume: a crosscoder run cannot be resumed yet; start it again in a new folder"
        )
    torch.manual_seed(derive_seed(cfg.seed, "lm-run"))
    sources = open_sources(cfg)
    n, d = len(sources), sources[0].hooked.d_in(sources[0].hook)
    d_sae = cfg.d_sae or cfg.expansion_factor * d
    require_memory(
        4 * 4 * 2 * n * d * d_sae + 6 * cfg.batch_size_tokens * (n * d + d_sae) * 4,
        f"train-sae crosscoder ({n} sources, d_sae {d_sae})",
        "lower d_sae or expansion_factor",
    )
    paired = Paired(cfg, sources)
    try:
        for store in paired.stores:
            store.first_sequences(1, quiet=True)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(cfg.model_dump(), indent=1))
        write_marker(out, kind)
        try:
            return _train(cfg, out, sources, paired, d, d_sae)
        except BaseException:
            import shutil

            shutil.rmtree(out, ignore_errors=True)  # nothing to resume: leave nothing
            raise
    finally:
        paired.close()


def _train(cfg, out: Path, sources: list[Source], paired: Paired, d: int, d_sae: int) -> Path:
    n = len(sources)
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "sae-init"))
    cc = Crosscoder(
        n, d, d_sae, cfg.crosscoder_sparsity, cfg.l1_coefficient, cfg.k, gen,
        dead_tokens=cfg.dead_feature_window * cfg.batch_size_tokens, aux_k=cfg.aux_k,
        aux_coefficient=cfg.aux_coefficient,
    ).to(cfg.device)  # fmt: skip
    first = paired.sample(cfg.batch_size_tokens).to(cfg.device)  # (batch, n, d)
    # each source scaled so its median token norm is √d: a median, so that a pattern on a few
    # tokens (what a fine-tune plants) does not rescale every other latent's decoder row
    scales = d**0.5 / first.norm(dim=-1).median(0).values.clamp(min=1e-12)  # (n,)
    with torch.no_grad():
        cc.b_dec.copy_((first * scales.view(1, -1, 1)).mean(0))
    opt, sched, steps = adam_for_run(cc.parameters(), cfg)
    log_every = cfg.log_every or max(1, steps // 100)
    names = " and ".join(f"{s.label} ({s.model_name} {s.hook})" for s in sources) if n == 2 else cfg.hook_name
    print(
        f"training a {cfg.crosscoder_sparsity} crosscoder ({n} x {d} -> {d_sae}) over {names}: {steps} steps "
        f"of {cfg.batch_size_tokens} tokens",
        file=sys.stderr,
        flush=True,
    )
    started = time.time()
    cc.train()
    with open(out / "log.jsonl", "w", buffering=1) as log:
        bar = tqdm(range(steps), desc="crosscoder", unit="step")
        for step in bar:
            batch = first if step == 0 else paired.sample(cfg.batch_size_tokens).to(cfg.device)
            x = batch * scales.view(1, -1, 1)
            loss, terms = cc.loss(x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % log_every == 0 or step == steps - 1:
                var = (x - x.mean(0)).square().sum(-1).sum(-1).mean().clamp(min=1e-12)
                row = {
                    "step": step,
                    "loss": float(loss.detach()),
                    "fvu": float(terms["mse"] / var),
                    "l0": float(terms["l0"]),
                    **({"dead": int(terms["dead"])} if "dead" in terms else {}),
                    "tokens": (step + 1) * cfg.batch_size_tokens,
                }
                log.write(json.dumps(row) + "\n")
                bar.set_postfix(fvu=f"{row['fvu']:.3f}", l0=f"{row['l0']:.1f}")
    elapsed = time.time() - started
    cc.eval()
    held = _store(cfg, sources[0], None, holdout=True).first_sequences(cfg.eval_sequences)
    print(f"evaluating on {held.shape[0]} held-out sequences", file=sys.stderr, flush=True)
    ev = evaluate_crosscoder(cc, sources, scales, held, cfg.model_batch_size, cfg.device)
    W_scaled = cc.W_dec.detach().clone()  # the scaled space the norms are read in
    cc.fold_scales(scales)
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
    table = latent_table(W_scaled, ev, n == 2)
    atomic_write_text(out / "latents.csv", _csv(table))
    summary = _summary(cfg, sources, ev, table, d_sae, steps, elapsed)
    write_result(out, _result(cfg, sources, summary, table), None)
    write_marker(out, "train-sae run")
    return out


def _save_source(cc: Crosscoder, s: int, src: Source, folder: Path, cfg) -> None:
    """Source s as a one-source SAE folder SAELens loads (formats/saelens.py)."""
    from superposition.sae.io import save_sae

    sae = cc.source_as_sae(s)
    extra = {
        "model_name": src.model_name,
        "hook_name": src.hook,
        "context_size": cfg.context_size,
        "prepend_bos": cfg.prepend_bos,
        "dataset_path": cfg.dataset_path,
        "crosscoder_source": {"label": src.label, "index": s, "n_sources": cc.n_sources},
    }
    save_sae(sae, folder, 0, extra)


# ---------------------------------------------------------------------- evaluation
def source_activations(
    sources: list[Source], ids: Tensor, device: str, logits: bool = True
) -> tuple[Tensor, dict[str, Tensor]]:
    """Every source's activations on sequences ids (b, ctx): (b, ctx, n_sources, d), one forward pass
    per model; and (with `logits`) the clean logits per model name."""
    per_model: dict[int, list[Source]] = {}
    for s in sources:
        per_model.setdefault(id(s.hooked), []).append(s)
    acts, out = {}, {}
    for group in per_model.values():
        seen: dict[str, Tensor] = {}
        if logits:
            hooks = {s.hook: capture_into(seen, s.hook) for s in group}
            out[group[0].model_name] = group[0].hooked.logits(ids.to(device), hooks)
        else:
            seen = group[0].hooked.run_with_cache(ids.to(device), [s.hook for s in group])
        for s in group:
            acts[s.label] = sae_inputs(seen[s.hook]).float()
    return torch.stack([acts[s.label] for s in sources], 2), out


@torch.no_grad()
def evaluate_crosscoder(
    cc: Crosscoder, sources: list[Source], scales: Tensor, seqs: Tensor, batch_size: int, device: str
) -> dict:
    """Per source: explained variance, MSE, CE loss with its hook replaced by the reconstruction
    (and zero-ablated) and KL; L0, latent densities, and the latent-scaling sums (two sources)."""
    n = len(sources)
    tok = sources[0].lm.tokenizer
    sq_err, sum_x, sum_x2 = torch.zeros(n), torch.zeros(n, cc.d), torch.zeros(n)
    fires = torch.zeros(cc.d_sae)
    ce = {s.label: {"sae": 0.0, "zero": 0.0, "kl": 0.0} for s in sources}
    clean = {s.model_name: 0.0 for s in sources}
    sums = diffing.ScalingSums()
    tokens, n_pred, l0 = 0, 0, 0.0
    for ids in tqdm(seqs.split(batch_size), desc="evaluating", leave=False):
        ids = ids.to(device)
        keep = ~special_mask(tok, ids.cpu()).to(device)
        acts, logits = source_activations(sources, ids, device)
        x = acts[keep] * scales.view(1, -1, 1)  # (tokens, n, d)
        z = cc.encode(x)
        x_hat = cc.decode(z)
        sq_err += (x - x_hat).square().sum(-1).sum(0).cpu()
        sum_x += x.sum(0).cpu()
        sum_x2 += x.square().sum(-1).sum(0).cpu()
        fires += (z > 0).sum(0).cpu()
        l0 += float((z > 0).sum())
        tokens += x.shape[0]
        if n == 2:
            sums.add(z.cpu(), x.cpu(), x_hat.cpu())
        logp = {}
        for name, lg in logits.items():
            clean[name] += _ce_and_kl(lg, ids, None)[0]
            logp[name] = torch.log_softmax(lg[:, :-1].float(), -1)
        del logits
        raw_hat = x_hat / scales.view(1, -1, 1)
        for s, src in enumerate(sources):
            c, k, c0 = spliced_ce(src.hooked, ids, src.hook, keep, raw_hat[:, s], logp[src.model_name])
            ce[src.label]["sae"] += c
            ce[src.label]["kl"] += k
            ce[src.label]["zero"] += c0
        n_pred += ids[:, 1:].numel()
    var = sum_x2 - sum_x.square().sum(-1) / max(tokens, 1)
    per_source = {}
    for s, src in enumerate(sources):
        c0 = clean[src.model_name] / n_pred
        cs, cz = ce[src.label]["sae"] / n_pred, ce[src.label]["zero"] / n_pred
        per_source[src.label] = {
            "model_name": src.model_name,
            "hook_name": src.hook,
            "explained_variance": float(1 - sq_err[s] / var[s].clamp(min=1e-12)),
            "mse": float(sq_err[s] / max(tokens, 1)),
            "ce_loss_clean": c0,
            "ce_loss_with_sae": cs,
            "ce_loss_zero_ablation": cz,
            "ce_loss_recovered": ce_loss_recovered(c0, cs, cz),
            "kl_div": ce[src.label]["kl"] / n_pred,
        }
    return {
        "sources": per_source,
        "l0": l0 / max(tokens, 1),
        "density": fires / max(tokens, 1),
        "eval_tokens": tokens,
        "sums": sums if n == 2 else None,
    }


def latent_table(W_dec: Tensor, ev: dict, two: bool) -> dict[str, Tensor]:
    """Per latent: decoder norms per source, density, and for two sources both relative norms, the
    band and latent scaling."""
    norms = W_dec.norm(dim=-1).cpu()
    table = {"norms": norms, "density": ev["density"]}
    if two:
        flags = diffing.flag_from_sums(W_dec.cpu(), ev["sums"])
        table.update(flags)
        table["lindsey"] = diffing.relative_norm(norms, "lindsey")
    return table


def band_of(table: dict, j: int) -> str:
    for name in ("a_only", "b_only", "shared"):
        if bool(table[name][j]):
            return name
    return "other"


def _csv(table: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    n_sources = table["norms"].shape[1]
    two = "relative_norm" in table
    head = ["latent", "density", *[f"decoder_norm_{s}" for s in range(n_sources)]]
    if two:
        head += ["relative_norm", "relative_norm_lindsey", "band", "beta_a", "beta_b", "nu", "flagged"]
    w.writerow(head)
    for j in range(table["norms"].shape[0]):
        row = [j, f"{float(table['density'][j]):.6g}", *[f"{float(v):.6g}" for v in table["norms"][j]]]
        if two:
            row += [f"{float(table['relative_norm'][j]):.6g}", f"{float(table['lindsey'][j]):.6g}",
                    band_of(table, j), f"{float(table['beta_a'][j]):.6g}", f"{float(table['beta_b'][j]):.6g}",
                    f"{float(table['nu'][j]):.6g}", int(table["flagged"][j])]  # fmt: skip
        w.writerow(row)
    return buf.getvalue()


def _summary(cfg, sources, ev, table, d_sae, steps, elapsed) -> dict:
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
        "train_seconds": round(elapsed, 1),
        "train_steps": steps,
        "training_tokens": steps * cfg.batch_size_tokens,
        "eval_tokens": ev["eval_tokens"],
        "l0": ev["l0"],
        "frac_dead": float((~live).float().mean()),
        "sources": ev["sources"],
    }
    if len(sources) == 2:
        edges = torch.linspace(0, 1, HIST_BINS + 1)
        hist = {
            name: torch.histogram(table[key][live].float(), bins=edges).hist.int().tolist()
            for name, key in (("minder", "relative_norm"), ("lindsey", "lindsey"))
        }
        counts = {b: int((table[b] & live).sum()) for b in ("a_only", "b_only", "shared")}
        counts["other"] = int(live.sum()) - sum(counts.values())
        flagged = torch.nonzero(table["flagged"] & live).flatten().tolist()
        s["relative_norm"] = {
            "definitions": {
                "minder": "½((‖d_b‖ − ‖d_a‖) / max(‖d_a‖, ‖d_b‖) + 1) (Minder et al. 2025); the bands use it",
                "lindsey": "‖d_b‖ / (‖d_a‖ + ‖d_b‖) (Lindsey et al. 2024)",
            },
            "over": "latents that fire on the held-out text, decoder norms in the scaled space",
            "edges": edges.tolist(),
            **hist,
        }
        s["bands"] = {
            "thresholds": {"a_only": "< 0.1", "b_only": "> 0.9", "shared": "0.4 to 0.6"},
            **counts,
        }
        s["latent_scaling"] = {
            "nu_threshold": 0.05,
            "flagged": len(flagged),
            "latents": [
                {
                    "latent": j,
                    "band": band_of(table, j),
                    "relative_norm": float(table["relative_norm"][j]),
                    "beta_a": float(table["beta_a"][j]),
                    "beta_b": float(table["beta_b"][j]),
                    "nu": float(table["nu"][j]),
                }  # fmt: skip
                for j in flagged[:200]
            ],
        }
        for band in ("a_only", "b_only"):
            idx = torch.nonzero(table[band] & live).flatten()
            order = table["density"][idx].argsort(descending=True)
            s[f"{band}_latents"] = idx[order][:50].tolist()
    return s


def _result(cfg, sources, summary: dict, table: dict) -> Result:
    src = summary["sources"]
    hi = {f"{k} EV": v["explained_variance"] for k, v in src.items()}
    hi |= {f"{k} CE recovered": v["ce_loss_recovered"] for k, v in src.items()}
    hi["L0"] = summary["l0"]
    figs = [
        FigureSpec(
            "fvu_per_source", "Fraction of each source's variance the crosscoder misses.", _fvu_fig(src)
        )
    ]
    msg = f"crosscoder: L0 {summary['l0']:.1f}, " + ", ".join(
        f"{k} EV {v['explained_variance']:.3f} CE recovered {v['ce_loss_recovered']:.3f}"
        for k, v in src.items()
    )
    if len(sources) == 2:
        b = summary["bands"]
        hi |= {"a-only": b["a_only"], "b-only": b["b_only"], "shared": b["shared"],
               "flagged by latent scaling": summary["latent_scaling"]["flagged"]}  # fmt: skip
        figs.append(
            FigureSpec(
                "relative_norm",
                "Relative decoder norm of each live latent, in both definitions; 0: only model a decodes "
                "it, 1: only model b, ½: equal norms. Shaded: the a-only, shared and b-only bands (on "
                "Minder's Δ).",
                _rel_fig(summary["relative_norm"]),
            )
        )
        figs.append(
            FigureSpec(
                "latent_scaling",
                "Latent scaling of the model-only latents: ν = β_other / β_own against the relative norm. "
                "Above the line (ν > 0.05) the other model carries the latent too: the norms mislabel it.",
                _nu_fig(table),
            )
        )
        msg += f"; bands a-only {b['a_only']}, b-only {b['b_only']}, shared {b['shared']}"
    return Result(
        title=f"Crosscoder over {', '.join(s.label for s in sources)}",
        explanation="One dictionary over every source's activations on the same tokens; each source has "
        "its own decoder. Model diffing reads which decoders a latent uses.",
        summary=summary,
        figures=figs,
        highlights=hi,
        message=msg,
    )


def _fvu_fig(src: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(list(src), [1 - v["explained_variance"] for v in src.values()])
    ax.set_ylabel("FVU")
    ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    return fig


def _rel_fig(rel: dict):
    import matplotlib.pyplot as plt

    edges = rel["edges"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
    for ax, name in zip(axes, ("minder", "lindsey"), strict=True):
        ax.stairs(rel[name], edges, fill=True, alpha=0.8)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_xlabel(f"relative decoder norm ({name})")
        for lo, hi, c in ((0, 0.1, "tab:red"), (0.4, 0.6, "tab:gray"), (0.9, 1.0, "tab:green")):
            ax.axvspan(lo, hi, color=c, alpha=0.12) if name == "minder" else None
    axes[0].set_ylabel("latents")
    fig.tight_layout()
    return fig


def _nu_fig(table: dict):
    import matplotlib.pyplot as plt

    m = (table["a_only"] | table["b_only"]) & (table["density"] > 0)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.scatter(table["relative_norm"][m], table["nu"][m].clamp(-0.5, 2), s=8)
    ax.axhline(0.05, color="k", lw=0.8, ls="--")
    ax.set_xlabel("relative decoder norm (Minder)")
    ax.set_ylabel("ν = β_other / β_own")
    fig.tight_layout()
    return fig
