"""`superposition dashboard RUN_DIR --out SITE_DIR`: gather what each latent means and write the
static site (report/dashboard.py).

- A `train-sae` run (language model): latent activations on held-out text, the top examples and
  examples from activation intervals with per-token activations, an activation histogram, the
  density, and the logit lens (top and bottom tokens) of each decoder direction.
- A crosscoder run (`train-sae --set architecture=crosscoder`): the same, with the latent's
  activation read from every source together, and on the same contexts each source's share of its
  pre-activation (x_s · W_enc[s]): what each model contributes; decoder norms per source, both
  relative norms, the band and latent scaling; the logit lens of each model's decoder row.
- An SAE experiment run with ground truth (`sae-toy`, `sae-synthetic`, ...): each latent beside
  its best-matching true feature (|cos|), its cosines with the closest features, and its response
  to each true feature presented alone.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import torch
from pydantic import Field
from safetensors.torch import load_file

from superposition.commands.base import LatentOptions, ModelOptions, PickSAE, SAEOptions, command
from superposition.errors import SuperpositionError
from superposition.interp.explain import read_explanations
from superposition.lm import analysis as an
from superposition.lm.store import ActivationStore
from superposition.report.dashboard import LatentPage, TokenSpan, render_site
from superposition.report.output import Result
from superposition.runs.targets import LMRun, experiment_sae, has_ground_truth, load_run, local_path
from superposition.sae.formats import load as load_sae
from superposition.sae.ground_truth import best_matches, cosine_matrix

TOP_K = 10  # top examples and logit-lens tokens per latent


class DashboardOptions(LatentOptions, PickSAE, ModelOptions, SAEOptions):
    """Options of `dashboard` (--latents: default all)."""

    sequences: int = Field(256, gt=0, description="held-out sequences to collect examples from")
    meta: str | None = Field(
        None, description="a meta-sae output folder of this SAE: show each latent's meta-latents"
    )
    explanations: str | None = Field(
        None,
        description="an autointerp output folder of this SAE: its explanations and scores "
        "(default: SAE/autointerp)",
    )


def _check(opts: DashboardOptions, out: Path) -> None:
    run = local_path(opts.sae)
    if run is not None and (out == run or run in out.parents and out.name in ("sae", "saes", "checkpoint")):
        raise SuperpositionError(f"out {out}: choose a folder outside the run's own files")


@command(
    "dashboard",
    "write a static, offline site of an SAE's latents",
    DashboardOptions,
    kind="dashboard",
    check=_check,
)
def run(opts: DashboardOptions, out: Path) -> Result:
    """SAE: an SAE experiment run (latents against the true features), or a train-sae run or any
    readable SAE on its language model (latents on held-out text; model/hook as for eval-sae).
    `meta`: a `meta-sae` output folder for this SAE; each latent then shows its meta-latents and the
    other latents sharing them. `explanations`: an `autointerp` output folder (or its
    explanations.jsonl); by default SAE/autointerp when it exists. Each latent then shows its
    explanation and scores, and the index is searchable by explanation and sortable by score."""
    meta_info = read_meta(opts.meta) if opts.meta is not None else None
    expl = read_explanations(opts.explanations) if opts.explanations is not None else None
    run_path = local_path(opts.sae)
    if run_path is not None:
        if not run_path.exists():
            raise SuperpositionError(f"SAE {run_path}: no such directory or file")
        if has_ground_truth(run_path):
            return _toy_dashboard(run_path, out, opts, meta_info)
        if (run_path / "crosscoder" / "cfg.json").is_file():
            return _crosscoder_dashboard(run_path, out, opts)
        if expl is None and (run_path / "autointerp" / "explanations.jsonl").is_file():
            expl = read_explanations(run_path / "autointerp")
    lm_run = load_run(opts.sae, opts.model, opts.hook, opts.device, opts.dtype)
    return _lm_dashboard(lm_run, out, opts, meta_info, expl)


def build_dashboard(sae: str | Path, out: str | Path, **options) -> Path:
    """The Python form of `superposition dashboard SAE --out OUT` (options as keywords)."""
    from superposition.commands.base import execute

    return execute("dashboard", DashboardOptions(sae=str(sae), **options), out)[0]


def _score(row: dict, scorer: str, metric: str = "balanced_accuracy"):
    """A score of an explanations row: a finite number, else blank (NaN when a class was missing,
    or whatever an edited or foreign file holds: the dashboard shows it, it does not fail on it)."""
    block = row.get(scorer)
    v = block.get(metric) if isinstance(block, dict) else None
    if isinstance(v, bool) or not isinstance(v, int | float) or v != v or v in (float("inf"), float("-inf")):
        return None
    return float(v)


def _add_explanations(expl: dict[int, dict] | None, columns: list, rows: list, pages: list) -> None:
    """Explanation (searchable text) and scores (sortable) per latent, and a table on its page.
    The text is untrusted: the dashboard escapes it like dataset text."""
    if expl is None:
        return
    columns += [
        {"key": "explanation", "label": "explanation", "type": "text"},
        {"key": "detection", "label": "detection", "type": "num"},
        {"key": "fuzzing", "label": "fuzzing", "type": "num"},
    ]
    for row, page in zip(rows, pages):
        r = expl.get(page.index)
        if r is None:
            row.update(explanation="", detection=None, fuzzing=None)
            continue
        row["explanation"] = r.get("explanation") or f"({r.get('error', 'no explanation')})"
        row["detection"], row["fuzzing"] = _score(r, "detection"), _score(r, "fuzzing")
        table = [["explanation", row["explanation"]]]
        for scorer, metric in (
            ("detection", "balanced_accuracy"),
            ("detection", "auc"),
            ("fuzzing", "balanced_accuracy"),
            ("fuzzing", "auc"),
            ("simulation", "pearson_r"),
        ):
            v = _score(r, scorer, metric)
            if v is not None:
                table.append([f"{scorer} {metric}", round(v, 3)])
        ctrl = (r.get("controls") or {}).get("shuffled")
        if ctrl and _score(ctrl, "detection") is not None:
            table.append(
                ["shuffled control: detection balanced_accuracy", round(_score(ctrl, "detection"), 3)]
            )
        page.tables.insert(0, ("Automated explanation (autointerp)", ["", ""], table))  # fmt: skip


def read_meta(folder: str | Path) -> dict:
    """A meta-sae folder's meta-latents per base latent and base latents per meta-latent."""
    folder = Path(folder).expanduser()
    try:
        summary = json.loads((folder / "summary.json").read_text())
        by_meta = json.loads((folder / "base_latents_by_meta_latent.json").read_text())
        with open(folder / "meta_latents.csv", newline="") as f:
            per_base = [
                list(zip(map(int, r["meta_latents"].split()), map(float, r["activations"].split())))
                for r in csv.DictReader(f)
            ]
    except (OSError, ValueError, KeyError) as err:
        raise SuperpositionError(
            f"meta {folder}: not a readable meta-sae output folder ({type(err).__name__}); "
            "make one with superposition meta-sae"
        ) from None
    return {"n_base": int(summary["n_base_latents"]), "per_base": per_base,
            "by_meta": {int(k): v for k, v in by_meta.items()}, "folder": str(folder)}  # fmt: skip


def _check_meta(meta: dict | None, d_sae: int) -> None:
    """The meta-SAE must be of an SAE this wide: checked before any latent is computed."""
    if meta is not None and meta["n_base"] != d_sae:
        raise SuperpositionError(
            f"meta {meta['folder']}: a meta-SAE of an SAE with {meta['n_base']} latents; this one has {d_sae}"
        )


def _add_meta(meta: dict | None, columns: list, rows: list, pages: list) -> None:
    """Each latent's meta-latents (column and table) and the other base latents sharing each."""
    if meta is None:
        return
    columns.append({"key": "meta", "label": "meta-latents", "type": "text"})
    for row, page in zip(rows, pages):
        pairs = meta["per_base"][page.index]
        row["meta"] = " ".join(str(j) for j, _ in pairs)
        shared = []
        for j, a in pairs:
            others = [b for b in meta["by_meta"].get(j, []) if b != page.index][:12]
            shared.append([j, a, " ".join(map(str, others))])
        page.tables.append(
            ("Meta-latents (the meta-SAE's decomposition of this decoder direction)",
             ["meta-latent", "activation", "other latents sharing it"], shared)
        )  # fmt: skip


def _spans(tokens: list[str], acts: list[float], focus: int, vmax: float) -> list[TokenSpan]:
    """Colour strength a / vmax in [0, 1] (a negative value, a crosscoder source's share, is uncoloured)."""
    return [
        TokenSpan(t, a, max(0.0, min(1.0, a / vmax)) if vmax > 0 else 0.0, i == focus)
        for i, (t, a) in enumerate(zip(tokens, acts))
    ]


def _token_text(tokenizer):
    """Token id -> its text as a dashboard shows it (newlines as ↵), decoded once per id."""
    from functools import cache

    @cache
    def tok(i: int) -> str:
        return tokenizer.decode([i]).replace("\n", "↵")

    return tok


def _example_spans(e, tok, vmax: float) -> list[TokenSpan]:
    """An example's window (lm/analysis.Example) as coloured token spans."""
    return _spans([tok(t) for t in e.token_ids], e.acts, e.focus, vmax)


def _lm_dashboard(
    run: LMRun, out: Path, opts: DashboardOptions, meta: dict | None, expl: dict[int, dict] | None
) -> Result:
    cfg, sae = run.cfg, run.sae.batched
    _check_meta(meta, sae.cfg.d_sae)
    latents = opts.chosen(sae.cfg.d_sae, default=None)
    top_k = TOP_K
    lm, hooked = run.load_model()
    seqs = ActivationStore.for_run(cfg, lm, hooked, holdout=True).first_sequences(opts.sequences)
    print(
        f"dashboard: latent activations on {seqs.shape[0]} held-out sequences ({seqs.numel()} tokens)",
        file=sys.stderr,
        flush=True,
    )
    la = an.latent_activations(
        hooked, lm.tokenizer, sae, cfg.hook_name, seqs, cfg.model_batch_size, cfg.device, progress=True
    )
    density, vmax = la.density(), la.max_activation()
    top_ids, top_vals, bot_ids, bot_vals = an.logit_lens(hooked, sae, cfg.hook_name, latents, k=top_k)
    tok = _token_text(lm.tokenizer)
    rows, pages = [], []
    for n, j in enumerate(latents):
        tops = [tok(int(t)) for t in top_ids[n]]
        rows.append(
            {
                "id": j,
                "density": float(density[j]),
                "max_act": float(vmax[j]),
                "top_logits": " ".join(repr(t)[1:-1] for t in tops[:5]),
            }
        )
        counts, edges = an.activation_histogram(la, j)
        page = LatentPage(
            j,
            {
                "density": f"{density[j]:.3g}",
                "max activation": f"{vmax[j]:.3g}",
                "tokens analysed": f"{la.n_tokens:,}",
            },
            histogram=(counts.tolist(), edges.tolist()) if density[j] > 0 else None,
        )

        def ex(e, j=j):
            return _example_spans(e, tok, float(vmax[j]))

        page.top = [ex(e) for e in an.top_examples(la, j, n=top_k)]
        page.quantiles = [(label, [ex(e) for e in exs]) for label, exs in an.quantile_examples(la, j)]
        page.tables = [
            (
                "Logit lens: top tokens",
                ["token", "logit"],
                [[tops[i], float(top_vals[n, i])] for i in range(len(tops))],
            ),
            (
                "Logit lens: bottom tokens",
                ["token", "logit"],
                [[tok(int(t)), float(v)] for t, v in zip(bot_ids[n], bot_vals[n])],
            ),
        ]
        pages.append(page)
    columns = [
        {"key": "id", "label": "latent", "type": "num"},
        {"key": "density", "label": "density", "type": "num"},
        {"key": "max_act", "label": "max activation", "type": "num"},
        {"key": "top_logits", "label": "top logit-lens tokens", "type": "text"},
    ]
    _add_meta(meta, columns, rows, pages)
    _add_explanations(expl, columns, rows, pages)
    subtitle = (
        f"{sae.cfg.architecture} SAE, {sae.cfg.d_sae} latents, on {cfg.model_name} at {cfg.hook_name}; "
        f"{la.n_tokens:,} held-out tokens from {cfg.dataset_path}"
    )
    render_site(out, f"SAE latents: {cfg.hook_name}", subtitle, columns, rows, pages)
    return Result(title=subtitle, summary=_summary(rows, cfg.model_name, cfg.hook_name), report=False)


def _crosscoder_dashboard(run: Path, out: Path, opts: DashboardOptions) -> Result:
    import numpy as np

    from superposition.lm.config import LMSAEConfig
    from superposition.lm.data import special_mask
    from superposition.lm.sources import open_sources, source_activations
    from superposition.progress import tqdm
    from superposition.runs.targets import read_json
    from superposition.sae.crosscoder import Crosscoder

    cfg = LMSAEConfig.build(read_json(run / "config.json"), str(run / "config.json"))
    cfg = cfg.model_copy(update={k: v for k, v in (("device", opts.device), ("dtype", opts.dtype)) if v})
    cc = Crosscoder.load(run / "crosscoder").to(cfg.device)
    latents = opts.chosen(cc.d_sae, default=None)
    table = _read_latents_csv(run / "latents.csv", cc.d_sae)
    sources = open_sources(cfg)
    labels = [s.label for s in sources]
    seqs = ActivationStore.for_run(cfg, sources[0].lm, sources[0].hooked, holdout=True).first_sequences(
        opts.sequences
    )
    print(f"dashboard: crosscoder latents on {seqs.shape[0]} held-out sequences", file=sys.stderr, flush=True)
    toks, lats, vals, shares, n_tokens, offset = [], [], [], [[] for _ in sources], 0, 0
    with torch.no_grad():
        for ids in tqdm(seqs.split(cfg.model_batch_size), desc="latent activations", leave=False):
            acts, _ = source_activations(sources, ids, cfg.device, logits=False)
            x = acts.flatten(0, 1)  # (tokens, n_sources, d)
            contrib = torch.einsum("nsd,sdf->nsf", x, cc.W_enc)  # each source's share of the pre-activation
            z = cc.encode(x).cpu()
            keep = ~special_mask(sources[0].lm.tokenizer, ids).reshape(-1)
            z[~keep] = 0
            t, j = z.nonzero(as_tuple=True)
            toks.append((t + offset).numpy()), lats.append(j.numpy()), vals.append(z[t, j].numpy())
            for s in range(len(sources)):
                shares[s].append(contrib[t, s, j].cpu().numpy())
            n_tokens += int(keep.sum())
            offset += ids.numel()
    cat = np.concatenate
    toks, lats = cat(toks).astype(np.int64), cat(lats).astype(np.int64)
    la = an.LatentActivations(seqs, toks, lats, cat(vals).astype(np.float32), cc.d_sae, n_tokens)
    la_s = [
        an.LatentActivations(seqs, toks, lats, cat(v).astype(np.float32), cc.d_sae, n_tokens) for v in shares
    ]
    density, vmax = la.density(), la.max_activation()
    lens = []
    for src in sources:  # each model's decoder row read through that model's unembedding
        sae = load_sae(run / "saes" / src.label)
        lens.append(an.logit_lens(src.hooked, sae, src.hook, latents, k=TOP_K))
    tok = _token_text(sources[0].lm.tokenizer)

    two = "relative_norm" in table
    rows, pages = [], []
    for n, j in enumerate(latents):
        t = table["rows"][j]
        row = {"id": j, "density": float(density[j]), "max_act": float(vmax[j])}
        stats = {"density": f"{density[j]:.3g}", "max activation": f"{vmax[j]:.3g}",
                 "tokens analysed": f"{la.n_tokens:,}"}  # fmt: skip
        if two:
            row.update(relative_norm=t["relative_norm"], band=t["band"], flagged=t["flagged"])
            stats.update({"relative norm (Minder Δ)": f"{t['relative_norm']:.3f}",
                          "relative norm (Lindsey)": f"{t['relative_norm_lindsey']:.3f}", "band": t["band"],
                          "latent scaling β_a, β_b, ν":
                              f"{t['beta_a']:.3g}, {t['beta_b']:.3g}, {t['nu']:.3g}",
                          "flagged (ν > 0.05)": "yes" if t["flagged"] else "no"})  # fmt: skip
        rows.append(row)
        counts, edges = an.activation_histogram(la, j)
        page = LatentPage(j, stats, histogram=(counts.tolist(), edges.tolist()) if density[j] > 0 else None)
        top = an.top_examples(la, j, n=TOP_K)
        page.top = [_example_spans(e, tok, float(vmax[j])) for e in top]
        ctx = seqs.shape[1]
        page.quantiles_title = "The same contexts: each source's share of the pre-activation"
        page.quantiles = [
            (
                f"{label}'s share of the pre-activation (x_{label} · W_enc[{label}]) on the same contexts",
                [
                    _example_spans(
                        an.example_at(la_s[s], j, e.seq * ctx + e.pos, e.value, 12, 4), tok, float(vmax[j])
                    )
                    for e in top
                ],
            )  # fmt: skip
            for s, label in enumerate(labels)
        ]
        page.bars = [
            ("Decoder norm per source (raw activations)", labels, [t["norms"][s] for s in range(len(labels))])
        ]
        for s, label in enumerate(labels):
            top_ids, top_vals, _, _ = lens[s]
            page.tables.append(
                (f"Logit lens of {label}'s decoder row ({sources[s].model_name})", ["token", "logit"],
                 [[tok(int(i)), float(v)] for i, v in zip(top_ids[n], top_vals[n])])
            )  # fmt: skip
        pages.append(page)
    columns = [
        {"key": "id", "label": "latent", "type": "num"},
        {"key": "density", "label": "density", "type": "num"},
        {"key": "max_act", "label": "max activation", "type": "num"},
    ]
    if two:
        columns += [
            {"key": "relative_norm", "label": "relative norm (Δ)", "type": "num"},
            {"key": "band", "label": "band", "type": "text"},
            {"key": "flagged", "label": "flagged by latent scaling", "type": "num"},
        ]
    over = ", ".join(f"{s.label} ({s.model_name} {s.hook})" for s in sources)
    subtitle = (
        f"crosscoder, {cc.d_sae} latents, over {over}; "
        f"{la.n_tokens:,} held-out tokens from {cfg.dataset_path}"
    )
    render_site(out, "Crosscoder latents", subtitle, columns, rows, pages)
    return Result(title=subtitle, summary=_summary(rows, cfg.model_name, cfg.hook_name), report=False)


def _read_latents_csv(path: Path, d_sae: int) -> dict:
    """A crosscoder run's latents.csv: per latent its norms, and for two models relative norms,
    band and latent scaling."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            raw = list(csv.DictReader(f))
        rows = []
        for r in raw:
            row = {"norms": [float(v) for k, v in r.items() if k.startswith("decoder_norm_")]}
            for k in ("relative_norm", "relative_norm_lindsey", "beta_a", "beta_b", "nu"):
                if k in r:
                    row[k] = float(r[k])
            if "band" in r:
                row["band"], row["flagged"] = r["band"], int(r["flagged"])
            rows.append(row)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SuperpositionError(
            f"{path}: not a readable crosscoder latents table ({type(err).__name__})"
        ) from None
    if len(rows) != d_sae:
        raise SuperpositionError(f"{path}: {len(rows)} rows for a crosscoder of {d_sae} latents")
    out = {"rows": rows}
    if rows and "relative_norm" in rows[0]:
        out["relative_norm"] = True
    return out


def _toy_dashboard(run: Path, out: Path, opts: DashboardOptions, meta: dict | None) -> Result:
    folder = experiment_sae(run, opts.sae_name)
    name = folder.name
    sae = load_sae(folder)
    _check_meta(meta, sae.cfg.d_sae)
    F = load_file(str(run / "ground_truth.safetensors"))["features"]
    if F.ndim == 3:  # one feature set per toy-model instance: use the SAE's own
        F = F[int(json.loads((run / "saes" / name / "cfg.json").read_text()).get("instance", 0))]
    W_dec = sae.W_dec[0].detach()
    cos = cosine_matrix(W_dec, F)
    feat, best = best_matches(W_dec, F)
    with torch.no_grad():  # each true feature alone, at unit magnitude
        response = sae.encode(F.unsqueeze(1))[:, 0]  # (n_features, d_sae)
    latents = opts.chosen(sae.cfg.d_sae, default=None)
    rows, pages = [], []
    for j in latents:
        fires = int((response[:, j] > 0).sum())
        rows.append(
            {
                "id": j,
                "feature": int(feat[j]),
                "cos": float(best[j]),
                "fires_on": fires,
                "max_response": float(response[:, j].max()),
            }
        )
        order = cos[j].abs().argsort(descending=True)[:8]
        resp_order = response[:, j].argsort(descending=True)[:8]
        page = LatentPage(
            j,
            {
                "best-matching feature": int(feat[j]),
                "|cos| with it": f"{best[j]:.3f}",
                "true features it fires on (each alone, value 1)": fires,
            },
        )
        page.bars = [
            (
                "Cosine with the closest true features",
                [f"feature {int(i)}" for i in order],
                [float(cos[j, i]) for i in order],
            ),
            (
                "Activation when each true feature is present alone (value 1)",
                [f"feature {int(i)}" for i in resp_order],
                [float(response[i, j]) for i in resp_order],
            ),
        ]
        d = W_dec.shape[1]
        if d <= 16:
            f = F[feat[j]]
            page.tables = [
                (
                    "Decoder direction beside its feature",
                    ["dim", "latent", "feature"],
                    [[f"{k}", float(W_dec[j, k]), float(f[k])] for k in range(d)],
                )
            ]
        pages.append(page)
    columns = [
        {"key": "id", "label": "latent", "type": "num"},
        {"key": "feature", "label": "best feature", "type": "num"},
        {"key": "cos", "label": "|cos|", "type": "num"},
        {"key": "fires_on", "label": "features it fires on", "type": "num"},
        {"key": "max_response", "label": "max response", "type": "num"},
    ]
    _add_meta(meta, columns, rows, pages)
    subtitle = (
        f"{name}: {sae.cfg.architecture} SAE, {sae.cfg.d_sae} latents, "
        f"against {F.shape[0]} true features in {F.shape[1]} dimensions"
    )
    render_site(out, f"SAE latents: {run.name}/{name}", subtitle, columns, rows, pages)
    return Result(title=subtitle, summary=_summary(rows, None, None), report=False)


def _summary(rows: list[dict], model: str | None, hook: str | None) -> dict:
    """What the site shows, in numbers: the latents it has a page for."""
    return {"latents": len(rows), "model_name": model, "hook_name": hook}
