"""`superposition autointerp RUN_DIR --out DIR`: explain latents with a language model and score the
explanations on held-out text, with controls (interp/).

Output: `explanations.jsonl` (one row per latent), `summary.json` (means and spread of every score,
for the explanations and for the controls; calls, tokens, seconds) and `report.html`. The folder is
written whole at the end; every model answer is cached on disk as it arrives, so an interrupted run
started again costs only what it had not yet asked.
"""

from __future__ import annotations

import html
import math
import sys
import time
from pathlib import Path

import numpy as np
from pydantic import Field, field_validator, model_validator

from superposition.atomic import write_jsonl
from superposition.commands.base import LatentOptions, ModelOptions, SAEOptions, command
from superposition.interp import explain as ex
from superposition.interp.clients import CachedClient, make_client
from superposition.interp.examples import LatentExamples, NoExamples, select_examples
from superposition.report.output import FigureSpec, Result
from superposition.runs.targets import load_run

KIND = "autointerp"
VARIANTS = ("explanation", "shuffled", "top_tokens")
METRICS = (
    ("detection", "balanced_accuracy"),
    ("detection", "f1"),
    ("detection", "auc"),
    ("fuzzing", "balanced_accuracy"),
    ("fuzzing", "f1"),
    ("fuzzing", "auc"),
    ("simulation", "pearson_r"),
)


def score_latent(
    client: CachedClient, explanations: dict[str, str], examples: LatentExamples, seed: int
) -> dict:
    """Every scorer for every variant's explanation, sent to the client as one batch."""
    plans = []  # (variant, scorer, requests, labels or truth)
    for variant, text in explanations.items():
        plans.append((variant, "detection", *ex.detection_requests(text, examples, seed)))
        plans.append((variant, "fuzzing", *ex.fuzzing_requests(text, examples, seed)))
        if client.supports_probes:
            plans.append((variant, "simulation", *ex.simulation_requests(text, examples, seed)))
    answers = client.complete([r for p in plans for r in p[2]])
    out: dict[str, dict] = {v: {} for v in explanations}
    k = 0
    for variant, scorer, reqs, target in plans:
        got = answers[k : k + len(reqs)]
        k += len(reqs)
        fn = ex.score_simulation if scorer == "simulation" else ex.score_binary
        out[variant][scorer] = fn(got, target)
    return out


def _stats(values: list[float]) -> dict:
    v = np.array([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return {"mean": None, "std": None, "sem": None, "n": 0}
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()), "std": std, "sem": std / math.sqrt(len(v)), "n": int(len(v))}


class AutointerpOptions(LatentOptions, ModelOptions, SAEOptions):
    """Options of `autointerp` (--latents: default 20). `model` is the SAE's language model, as in
    every command; the explaining model is `explainer_model`."""

    explainer: str = Field("local", description="local (in-process, default) or openai (HTTP)")
    explainer_model: str | None = Field(
        None, description="explainer model: local folder or hub name, or the server's model name"
    )
    base_url: str | None = Field(None, description="OpenAI-compatible server, e.g. http://localhost:8000/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    concurrency: int = Field(8, gt=0, description="parallel HTTP requests")
    timeout: float = Field(60.0, gt=0, description="seconds per HTTP request")
    sequences: int = Field(256, gt=0, description="held-out sequences")
    cache: str | None = Field(None, description="answer cache folder (default: the project cache)")
    seed: int = Field(0, description="random seed of example selection and sampling")

    @field_validator("explainer")
    @classmethod
    def _explainer(cls, v: str) -> str:
        if v not in ("local", "openai"):
            raise ValueError(f"explainer {v!r}: use local or openai")
        return v

    @model_validator(mode="after")
    def _url(self):
        if self.base_url is not None and self.explainer != "openai":
            raise ValueError("base_url: only with `explainer` openai")
        return self


@command("autointerp", "explain latents with a language model and score the explanations", AutointerpOptions,
         kind=KIND)  # fmt: skip
def run(
    opts: AutointerpOptions, out: Path, client: CachedClient | None = None, progress: bool | None = None
) -> Result:
    """Explain and score latents of SAE (a train-sae run or any readable SAE on its model).
    `client`: an explainer to use instead of the one the options name (tests, dry runs)."""
    from superposition.lm import analysis as an
    from superposition.lm.store import ActivationStore
    from superposition.progress import tqdm

    t0 = time.perf_counter()
    seed, sequences = opts.seed, opts.sequences
    run = load_run(opts.sae, opts.model, opts.hook, opts.device, opts.dtype)
    chosen = opts.chosen(run.sae.cfg.d_sae, default=20)
    if client is None:  # before the held-out pass: a missing key or model fails in a second, not minutes
        o = opts
        client = make_client(
            o.explainer, o.explainer_model, o.base_url, o.cache, o.api_key_env, o.concurrency, o.timeout
        )
        if hasattr(client.client, "check"):  # a server: reachable, key accepted, model known?
            client.client.check()
    lm, hooked = run.load_model()
    seqs = ActivationStore.for_run(run.cfg, lm, hooked, holdout=True).first_sequences(sequences)
    print(
        f"autointerp: latent activations on {seqs.shape[0]} held-out sequences", file=sys.stderr, flush=True
    )
    la = an.latent_activations(
        hooked, lm.tokenizer, run.sae, run.cfg.hook_name, seqs, run.cfg.model_batch_size, run.cfg.device
    )
    special = set(lm.tokenizer.all_special_ids)
    vocab: dict[int, str] = {}

    def decode(i: int) -> str:
        if i not in vocab:
            vocab[i] = "" if i in special else lm.tokenizer.decode([i])
        return vocab[i]

    rows: dict[int, dict] = {}
    examples: dict[int, LatentExamples] = {}
    for j in chosen:
        try:
            examples[j] = select_examples(la, j, decode, seed=seed)
        except NoExamples as err:
            rows[j] = {"latent": j, "error": str(err)}
    # explanations, all latents in one batch
    live = [j for j in chosen if j in examples]
    answers = client.complete([ex.explain_request(examples[j].explanation, seed) for j in live])
    explained = []
    for j, a in zip(live, answers):
        text = None if a.error else ex.parse_explanation(a.text)
        e = examples[j]
        rows[j] = {
            "latent": j,
            "explanation": text,
            "explanation_examples": [w.to_json() for w in e.explanation],
            "scoring_examples": {
                "activating": [w.to_json() for w in e.scoring],
                "negative": [w.to_json() for w in e.negatives],
            },
        }
        if text is None:
            rows[j]["error"] = f"explainer: {a.error or f'no explanation in its answer {a.text[:80]!r}'}"
        else:
            explained.append(j)
    # controls: another latent's explanation (a cyclic shift, so never its own) and the top tokens
    bar = tqdm(explained, desc="scoring latents", disable=(not progress) if progress is not None else None)
    for n, j in enumerate(bar):
        variants = {"explanation": rows[j]["explanation"]}
        if len(explained) > 1:
            other = explained[(n + 1) % len(explained)]
            variants["shuffled"] = rows[other]["explanation"]
            rows[j]["shuffled_from"] = other
        variants["top_tokens"] = ex.top_tokens_explanation(examples[j].explanation)
        rows[j]["top_tokens_explanation"] = variants["top_tokens"]
        scores = score_latent(client, variants, examples[j], seed)
        for scorer in ("detection", "fuzzing", "simulation"):
            if scorer in scores["explanation"]:
                rows[j][scorer] = scores["explanation"][scorer]
        rows[j]["controls"] = {v: scores[v] for v in variants if v != "explanation"}

    ordered = [rows[j] for j in chosen]
    summary = _summary(ordered, client, time.perf_counter() - t0, run, seqs.shape[0])
    write_jsonl(out / "explanations.jsonl", ordered)  # NaN scores (one class missing) as null
    result = _report(ordered, summary)
    s = summary

    def mean(block: dict, key: str) -> str:
        m = block[key]["mean"]
        return "n/a" if m is None else f"{m:.3f}"

    result.message = (
        f"{s['explained']} of {s['latents']} latents explained; detection balanced accuracy "
        f"{mean(s['scores'], 'detection.balanced_accuracy')} (shuffled "
        f"{mean(s['controls']['shuffled'], 'detection.balanced_accuracy')}, top tokens "
        f"{mean(s['controls']['top_tokens'], 'detection.balanced_accuracy')}); {s['calls']} calls, "
        f"{s['cached_calls']} cached, {s['seconds']:.0f} s"
    )
    return result


def autointerp(
    sae: str | Path,
    out: str | Path,
    client: CachedClient | None = None,
    progress: bool | None = None,
    **options,
) -> Path:
    """The Python form of `superposition autointerp SAE --out OUT` (options as keywords)."""
    from superposition.commands.base import execute

    return execute("autointerp", AutointerpOptions(sae=str(sae), **options), out, client=client,
                   progress=progress)[0]  # fmt: skip


def _value(row: dict, variant: str, scorer: str, metric: str):
    block = (
        row.get(scorer) if variant == "explanation" else row.get("controls", {}).get(variant, {}).get(scorer)
    )
    return None if not block else block.get(metric)


def _summary(rows: list[dict], client: CachedClient, seconds: float, run, n_seq: int) -> dict:
    scores = {
        v: {f"{s}.{m}": _stats([_value(r, v, s, m) for r in rows]) for s, m in METRICS} for v in VARIANTS
    }
    u = client.usage
    return {
        "sae": str(run.path),
        "model_name": run.cfg.model_name,
        "hook_name": run.cfg.hook_name,
        "explainer": client.key,
        "held_out_sequences": n_seq,
        "latents": len(rows),
        "explained": sum(1 for r in rows if "error" not in r),
        "failed_latents": {str(r["latent"]): r["error"] for r in rows if "error" in r},
        "scores": scores["explanation"],
        "controls": {"shuffled": scores["shuffled"], "top_tokens": scores["top_tokens"]},
        "calls": u.calls,
        "cached_calls": u.cached,
        "failed_calls": u.failed,
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "seconds": seconds,
        "model_seconds": u.seconds,
    }


def _fmt(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def _report(rows: list[dict], summary: dict) -> Result:
    import matplotlib.pyplot as plt

    keys = [
        "detection.balanced_accuracy",
        "fuzzing.balanced_accuracy",
        "detection.auc",
        "simulation.pearson_r",
    ]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.27
    blocks = [("explanation", summary["scores"]), *summary["controls"].items()]
    for b, (name, block) in enumerate(blocks):
        means = [block[k]["mean"] if block[k]["mean"] is not None else np.nan for k in keys]
        errs = [block[k]["sem"] or 0 for k in keys]
        ax.bar(np.arange(len(keys)) + (b - 1) * width, means, width, yerr=errs, label=name, capsize=3)
    ax.axhline(0.5, color="0.5", ls=":", lw=1)
    ax.set_xticks(range(len(keys)), [k.replace(".", "\n") for k in keys], fontsize=8)
    ax.set_ylabel("mean over latents (± s.e.)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    figures = [FigureSpec("scores", "Mean scores of the explanations and of the two controls "
                          "(dotted: chance for balanced accuracy and AUC).", fig)]  # fmt: skip
    head = "<tr><th>latent</th><th>explanation</th><th>detection</th><th>fuzzing</th><th>simulation r</th>" \
           "<th>shuffled det.</th><th>top tokens det.</th></tr>"  # fmt: skip
    body = []
    for r in rows:
        if "error" in r:
            body.append(f"<tr><td>{r['latent']}</td><td colspan=6><i>{html.escape(r['error'])}</i></td></tr>")
            continue
        cells = [
            _fmt(_value(r, "explanation", "detection", "balanced_accuracy")),
            _fmt(_value(r, "explanation", "fuzzing", "balanced_accuracy")),
            _fmt(_value(r, "explanation", "simulation", "pearson_r")),
            _fmt(_value(r, "shuffled", "detection", "balanced_accuracy")),
            _fmt(_value(r, "top_tokens", "detection", "balanced_accuracy")),
        ]
        body.append(
            f"<tr><td>{r['latent']}</td><td>{html.escape(r['explanation'])}</td>"
            + "".join(f"<td>{c}</td>" for c in cells)
            + "</tr>"
        )
    s = summary
    text = (
        f"<p>{s['explained']} of {s['latents']} latents of {html.escape(s['sae'])} explained by "
        f"{html.escape(s['explainer'])} and scored on {s['held_out_sequences']} held-out sequences. "
        "Scoring examples come from other sequences than the explanation examples. Balanced accuracy is "
        "0.5 for a scorer that cannot tell; the shuffled control gives each latent another latent's "
        "explanation, the top-tokens control a list of the tokens it fires on most.</p>"
        f"<table>{head}{''.join(body)}</table>"
    )
    highlights = {
        "detection balanced accuracy": _fmt(s["scores"]["detection.balanced_accuracy"]["mean"]),
        "shuffled control": _fmt(s["controls"]["shuffled"]["detection.balanced_accuracy"]["mean"]),
        "top-tokens baseline": _fmt(s["controls"]["top_tokens"]["detection.balanced_accuracy"]["mean"]),
        "calls (cached)": f"{s['calls']} ({s['cached_calls']})",
        "seconds (in the model)": f"{s['seconds']:.0f} ({s['model_seconds']:.0f})",
    }
    return Result(
        title="autointerp", explanation=text, summary=summary, figures=figures, highlights=highlights
    )
