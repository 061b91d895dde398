"""Many SAEs in one table (`eval-sae SAE [SAE ...] --evals ...`): every SAE evaluated on the same
held-out tokens and the same probing data of its model, each evaluation cached by the SAE's content
and the evaluation's settings, one row per SAE in results.csv and summary.json, and the field's
plots (L0 against each metric with the Pareto frontier, bars per metric) in the report.

The evaluations are lm/evals.py's (core) and lm/saebench.py's (absorption, sparse_probing, tpp);
autointerp is the `autointerp` command's scorer, which the command layer passes in as a function.
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from superposition.atomic import write_json
from superposition.errors import SuperpositionError
from superposition.lm import saebench as sb
from superposition.lm.evals import evaluate_named
from superposition.lm.hooks import read_names
from superposition.lm.model import cache_dir
from superposition.lm.store import ActivationStore
from superposition.report.output import FigureSpec, Result
from superposition.runs.targets import LMRun

EVALS = ("core", "absorption", "sparse_probing", "tpp", "scr", "autointerp")
# (key, label, higher is better): what the report draws against L0 and as bars
PLOTTED = (
    ("ce_loss_recovered", "CE loss recovered", True),
    ("explained_variance", "explained variance", True),
    ("absorption_fraction", "absorption fraction (lower is better)", False),
    ("full_absorption", "full-absorption rate (lower is better)", False),
    ("sae_top_1_test_accuracy", "sparse probing: top-1 latent accuracy", True),
    ("sae_top_5_test_accuracy", "sparse probing: top-5 latent accuracy", True),
    ("tpp_20", "TPP (top 20 latents)", True),
    ("scr_20", "SCR (top 20 latents)", True),
    ("autointerp_detection", "autointerp detection (balanced accuracy)", True),
)


@dataclass
class Settings:
    """What every evaluation's numbers depend on besides the SAE (part of each cache key)."""

    sequences: int = 64
    absorption_words: int = 2000
    probing_per_class: int = 150
    probing_context: int = 128
    seed: int = 42
    autointerp_latents: int = 20


@dataclass
class Entry:
    """One SAE to evaluate: its name in the table, what it was given as, and the run it loads as."""

    name: str
    source: str
    run: LMRun
    details: dict = field(default_factory=dict)

    @property
    def transcoder(self) -> bool:
        return bool(self.run.sae.transcodes)


def sae_digest(sae) -> str:
    """sha256 of an SAE's tensors and configuration: the same SAE wherever its files are."""
    h = hashlib.sha256()
    b = sae.batched
    h.update(repr(b.cfg).encode())
    for key, t in sorted(b.state_dict().items()):
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


class Cache:
    """One JSON file per (SAE content, evaluation, settings, model, hook, data) under `root`."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.hits = 0

    def key(self, digest: str, name: str, context: dict) -> str:
        blob = json.dumps({"sae": digest, "eval": name, **context}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def has(self, key: str) -> bool:
        return self.root is not None and (self.root / f"{key}.json").is_file()

    def get(self, key: str) -> dict | None:
        if self.root is None:
            return None
        path = self.root / f"{key}.json"
        try:
            value = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if isinstance(value, dict):
            self.hits += 1
            return value
        return None

    def put(self, key: str, value: dict) -> None:
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            write_json(self.root / f"{key}.json", value)


def default_cache() -> Path:
    return cache_dir() / "evals"


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def evaluate_many(
    entries: list[Entry],
    evals: list[str],
    settings: Settings,
    cache: Cache,
    autointerp: Callable[[Entry, list[int], int], dict] | None = None,
) -> tuple[list[dict], dict]:
    """Every evaluation of `evals` for every entry; (one row per entry, what the run shared:
    per-model data records, timings). Entries on the same model share its load, its held-out tokens
    and its probing data (per hook)."""
    rows = []
    shared: dict = {"models": {}, "seconds": {}}
    groups: dict[tuple, list[Entry]] = {}
    for e in entries:
        groups.setdefault((e.run.cfg.model_name, e.run.cfg.device, e.run.cfg.dtype), []).append(e)
    for (model_name, _, _), group in groups.items():
        lm = hooked = None

        def model(first=group[0]):
            nonlocal lm, hooked
            if lm is None:
                lm, hooked = first.run.load_model()
            return lm, hooked

        data: dict = {}
        seq_cfg = group[0].run.cfg  # the held-out sequences of every SAE on this model: the first's data
        keys = {}  # (name, evaluation) -> cache key; an SAE's tensors are hashed once
        for e in group:
            digest = sae_digest(e.run.sae)
            where = {"model": model_name, "hook": e.run.cfg.hook_name}
            for name in evals:
                keys[(e.name, name)] = cache.key(
                    digest, name, {**where, **_settings_for(name, settings, seq_cfg)}
                )
        # every SAE whose core is not cached is evaluated in one pass over the tokens, each charged a share
        fresh_core, core_share = {}, 0.0
        uncached = [e for e in group if "core" in evals and not cache.has(keys[(e.name, "core")])]
        if uncached:
            t0 = time.perf_counter()
            fresh_core = _core(uncached, model, settings)
            core_share = (time.perf_counter() - t0) / len(uncached)
        for e in group:
            row = {
                "name": e.name,
                "sae": e.source,
                "model_name": model_name,
                "hook_name": e.run.cfg.hook_name,
                "architecture": e.run.sae.cfg.architecture,
                "d_sae": e.run.sae.cfg.d_sae,
            }
            for name in evals:
                t0 = time.perf_counter()
                key = keys[(e.name, name)]
                fresh = name == "core" and e.name in fresh_core
                got = fresh_core.pop(e.name) if fresh else cache.get(key)
                if fresh:
                    cache.put(key, got)
                elif got is not None:
                    _say(f"{e.name}: {name} from the cache")
                else:
                    if name == "autointerp":
                        if autointerp is None:
                            raise SuperpositionError("evals: autointerp needs an explainer")
                        got = autointerp(e, _live_latents(e), settings.seed)
                    elif e.transcoder:
                        got = {
                            "skipped": "a transcoder reads one hook and writes another: "
                            f"{name} needs an SAE that reconstructs its input"
                        }
                    else:
                        got = _probe_eval(name, e, model, data, settings)
                    cache.put(key, got)
                spent = core_share if fresh else time.perf_counter() - t0
                shared["seconds"].setdefault(name, []).append(spent)
                _merge(row, e, name, got)
            rows.append(row)
        shared["models"][model_name] = {k: v for k, v in data.items() if k.startswith("record:")}
    shared["seconds_each"] = shared["seconds"]
    shared["seconds"] = {k: sum(v) / len(v) for k, v in shared["seconds"].items()}
    return rows, shared


def _core(entries: list[Entry], model, s: Settings) -> dict[str, dict]:
    """lm/evals.py's metrics for several SAEs of one model, together, on its held-out sequences (the
    first SAE's data): one clean pass per batch, one zero-ablated pass per hook, and one spliced pass
    per SAE (3 passes for an SAE alone). {name: metrics}."""
    lm, hooked = model()
    cfg = entries[0].run.cfg
    seqs = ActivationStore.for_run(cfg, lm, hooked, holdout=True).first_sequences(s.sequences)
    what = entries[0].name if len(entries) == 1 else f"{len(entries)} SAEs"
    _say(f"{what}: core metrics on {seqs.shape[0]} held-out sequences ({seqs.numel()} tokens)")
    return evaluate_named(
        hooked, lm.tokenizer, [(e.name, e.run.cfg.hook_name, e.run.sae.batched) for e in entries], seqs,
        batch_size=cfg.model_batch_size, device=cfg.device,
    )  # fmt: skip


def _settings_for(name: str, s: Settings, cfg) -> dict:
    """The settings an evaluation's numbers depend on (its cache key)."""
    if name == "core":
        return {
            "sequences": s.sequences,
            "dataset": cfg.dataset_path,
            "context": cfg.context_size,
            "bos": cfg.prepend_bos,
            "v": 1,
        }
    if name == "absorption":
        return {"words": s.absorption_words, "seed": s.seed, "v": 3}
    if name in ("sparse_probing", "tpp", "scr"):
        return {"per_class": s.probing_per_class, "context": s.probing_context, "seed": s.seed, "v": 1}
    return {"latents": s.autointerp_latents, "seed": s.seed, "v": 1}


def _probe_eval(name: str, e: Entry, model, data: dict, s: Settings) -> dict:
    """absorption, sparse_probing or tpp for one SAE; the model's data for its hook made on first use."""
    hook = read_names(e.run.cfg.hook_name)[0]
    dev = e.run.cfg.device
    if name == "absorption":
        if f"letters:{hook}" not in data:
            lm, hooked = model()
            fl = sb.first_letter_data(
                hooked, lm.tokenizer, hook, words=s.absorption_words, seed=s.seed, device=dev
            )
            data[f"letters:{hook}"] = (fl, sb.letter_probes(fl))
            data[f"record:first_letter:{hook}"] = {
                "words": len(fl.words),
                "train": int(fl.train.sum()),
                "test": int(fl.test.sum()),
                "probe_f1": dict(zip(sb.LETTERS, data[f"letters:{hook}"][1].f1)),
            }
        fl, probes = data[f"letters:{hook}"]
        _say(f"{e.name}: first-letter absorption on {len(fl.words)} words")
        return sb.absorption(e.run.sae, fl, probes)
    if name == "scr":
        if f"scr:{hook}" not in data:
            lm, hooked = model()
            texts = sb.scr_texts(s.probing_per_class, s.seed)
            pd = sb.probing_data(hooked, lm.tokenizer, hook, texts, context=s.probing_context, device=dev)
            data[f"scr:{hook}"] = pd["scr"]
            data[f"record:scr:{hook}"] = _splits(texts)["scr"]
        _say(f"{e.name}: spurious correlation removal (asyncio/email × code/docstring)")
        return sb.scr(e.run.sae, data[f"scr:{hook}"])
    if f"probing:{hook}" not in data:
        lm, hooked = model()
        tasks = sb.probing_tasks(s.probing_per_class, s.seed)
        pd = sb.probing_data(hooked, lm.tokenizer, hook, tasks, context=s.probing_context, device=dev)
        data[f"probing:{hook}"] = (pd, sb.model_probing(pd, seed=s.seed))
        data[f"record:probing:{hook}"] = _splits(tasks)
    pd, llm = data[f"probing:{hook}"]
    n = len(pd) if name == "sparse_probing" else sum(len(t.classes) >= 3 for t in pd.values())
    _say(f"{e.name}: {name.replace('_', ' ')} on {n} tasks")
    if name == "sparse_probing":
        return sb.sparse_probing(e.run.sae, pd, llm, seed=s.seed)
    return sb.tpp(e.run.sae, pd, seed=s.seed)


def _splits(tasks: dict) -> dict:
    """{task: {class: {"train": ids, "test": ids}}}: which texts each task used, and how they split."""
    return {
        t: {
            c: {sp: [d["id"] for d in texts if d["split"] == sp] for sp in ("train", "test")}
            for c, texts in by.items()
        }
        for t, by in tasks.items()
    }


def _live_latents(e: Entry) -> list[int]:
    density = e.details.get("density")
    if density is None:
        return list(range(e.run.sae.cfg.d_sae))
    return [j for j, d in enumerate(density) if d > 0]


def _merge(row: dict, e: Entry, name: str, got: dict) -> None:
    """An evaluation's scalars into the table row; its lists and per-part records into the details."""
    if "skipped" in got:
        e.details[f"{name}_skipped"] = got["skipped"]
        return
    for k, v in got.items():
        if isinstance(v, bool | int | float | str) or v is None:
            row[k] = v
        elif name == "core" and k == "density":
            e.details["density"] = v
        else:
            e.details.setdefault(name, {})[k] = v


def write_tables(folder: Path, rows: list[dict], entries: list[Entry], shared: dict) -> None:
    """results.csv (one row per SAE, every scalar), saes/<name>.json (each SAE's details) and
    data.json (the probing texts' ids and splits, the first-letter words' counts and probe F1)."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(folder / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow(["" if r.get(c) is None else _cell(r.get(c)) for c in columns])
    (folder / "saes").mkdir(exist_ok=True)
    for e in entries:
        write_json(folder / "saes" / f"{file_name(e.name)}.json", {"name": e.name, **e.details})
    write_json(folder / "data.json", shared["models"])


def _cell(v):
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return v


def file_name(name: str) -> str:
    """A table name (`run/blocks.3.hook_resid_post`) as one file or folder name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def report(
    rows: list[dict], entries: list[Entry], evals: list[str], shared: dict, settings: Settings, cache: Cache
) -> Result:
    from superposition.viz.sae import density_histogram
    from superposition.viz.saebench import l0_against, metric_bars

    figures = []
    for key, label, better in PLOTTED:
        if sum(isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool) for r in rows) == 0:
            continue
        figures.append(
            FigureSpec(
                f"l0_vs_{key}",
                f"L0 against {label}",
                lambda k=key, lb=label, b=better: l0_against(rows, k, lb, b),
            )
        )
        figures.append(FigureSpec(f"bars_{key}", label, lambda k=key, lb=label: metric_bars(rows, k, lb)))
    dens = {e.name: e.details["density"] for e in entries if "density" in e.details}
    if dens:
        figures.append(FigureSpec("density", "latent density histograms", lambda: density_histogram(dens)))
    summary = {
        "evals": evals,
        "settings": asdict(settings),
        "saes": rows,
        "seconds_per_sae": shared["seconds"],
        "cache_hits": cache.hits,
    }
    return Result(
        title="eval-sae: SAEs side by side",
        explanation=_explanation(rows, evals),
        summary=summary,
        figures=figures,
        highlights={r["name"]: _headline(r) for r in rows},
        message="\n".join(f"{r['name']}: {_headline(r)}" for r in rows)
        + (f"\n({cache.hits} evaluations from the cache)" if cache.hits else ""),
    )


def _headline(r: dict) -> str:
    parts = []
    for key, label in (
        ("l0", "L0"),
        ("ce_loss_recovered", "CE rec"),
        ("explained_variance", "EV"),
        ("absorption_fraction", "absorption"),
        ("sae_top_1_test_accuracy", "top-1 probe"),
        ("tpp_20", "TPP@20"),
        ("scr_20", "SCR@20"),
        ("autointerp_detection", "detection"),
    ):
        v = r.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            parts.append(f"{label} {v:.3f}" if key != "l0" else f"{label} {v:.1f}")
    return ", ".join(parts)


def _explanation(rows: list[dict], evals: list[str]) -> str:
    text = (
        f"{len(rows)} SAE{'s' if len(rows) != 1 else ''} evaluated with {', '.join(evals)} on the same "
        "held-out tokens and probing data of each model. results.csv has one row per SAE; "
        "saes/&lt;name&gt;.json each SAE's details (per letter, per task, latent densities); "
        "data.json the probing texts and splits. "
        "docs/evaluation.md says what each number means and when it is meaningful."
    )
    weak = [r["name"] for r in rows if r.get("absorption_meaningful") is False]
    if weak:
        text += (
            " Absorption is not meaningful for " + html.escape(", ".join(weak)) + ": too few letters have a "
            "first-letter probe with F1 above 0.6 at the SAE's hook (absorption_letters in the table)."
        )
    vague = [
        r["name"] for r in rows if isinstance(r.get("main_latents_f1"), float) and r["main_latents_f1"] < 0.5
    ]
    if vague:
        text += (
            " For " + html.escape(", ".join(vague)) + " the main first-letter latents barely tell the letter "
            "(main_latents_f1 below 0.5): there is little letter latent to absorb, so a low absorption there "
            "does not mean the letter features are whole."
        )
    return text
