"""`superposition eval-sae SAE [SAE ...]`: evaluate SAEs spliced into their language models.

One SAE and no `--evals`: the core metrics. A train-sae run is re-evaluated in place (its
summary.json, figures and report.html are replaced); any other SAE, or a run evaluated on another
model or hook, is written to `--out`. The evaluation itself is runs/evaluate.py's, which train-sae
runs at the end of training too.

Several SAEs, or `--evals core,absorption,sparse_probing,tpp,scr,autointerp`: SAEBench's evaluations
(runs/saebench.py), every SAE on the same held-out tokens and probing data of its model, one row per
SAE in `--out`/results.csv and summary.json, and the field's plots. A train-sae run of SAEs at several
hooks counts one SAE per hook. Each evaluation of each SAE is cached by the SAE's content and the
settings, so adding SAEs to a table costs only the new ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from superposition.atomic import refuse_links
from superposition.commands.base import ModelOptions, SAEOptions, command
from superposition.errors import SuperpositionError
from superposition.lm.evals import evaluate_sae
from superposition.lm.store import ActivationStore
from superposition.report.output import Result, write_output, write_result
from superposition.runs.evaluate import evaluate
from superposition.runs.targets import LMRun, load_run, local_path


class EvalOptions(ModelOptions, SAEOptions):
    """Options of `eval-sae`."""

    more: list[str] = Field(
        default_factory=list,
        description="more SAEs, evaluated beside the first into one table (needs --out)",
        json_schema_extra={"positional": True, "metavar": "SAE"},
    )
    evals: str | None = Field(
        None,
        description="comma-separated, of core, absorption, sparse_probing, tpp, scr, autointerp "
        "(default: core; any of them writes the table of SAEs)",
    )
    sequences: int | None = Field(
        None,
        gt=0,
        description="held-out sequences to evaluate on (default: the run's eval_sequences; 64 for a table)",
    )
    absorption_words: int = Field(
        2000, gt=25, le=200_000, description="vocabulary words for first-letter absorption"
    )
    probing_per_class: int = Field(
        150, ge=10, le=100_000, description="texts per class for sparse probing, TPP and SCR"
    )
    probing_context: int = Field(128, ge=8, le=8192, description="tokens per probing text")
    autointerp_latents: int = Field(
        20, gt=0, le=10_000, description="live latents autointerp scores per SAE (a seeded random sample)"
    )
    seed: int = Field(42, description="seed of word, text and latent sampling")
    cache: str | None = Field(
        None,
        description="the evaluation cache folder (default: the project cache, evals/); 'none' turns it off",
    )
    explainer: str = Field("local", description="autointerp's explainer: local or openai")
    explainer_model: str | None = Field(None, description="autointerp's explainer model")
    base_url: str | None = Field(None, description="autointerp's OpenAI-compatible server")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")

    @field_validator("evals")
    @classmethod
    def _evals(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from superposition.runs.saebench import EVALS

        names = [n.strip() for n in v.split(",") if n.strip()]
        bad = [n for n in names if n not in EVALS]
        if bad or not names:
            raise ValueError(
                f"evals: {', '.join(bad) or 'none given'}: use a comma-separated list of {', '.join(EVALS)}"
            )
        return ",".join(names)

    @field_validator("cache")
    @classmethod
    def _cache_folder(cls, v: str | None) -> str | None:
        if v is not None and v.lower() != "none":
            p = Path(v).expanduser()
            if p.exists() and not p.is_dir():
                raise ValueError(f"cache: {v} is not a folder; give a folder, or none")
        return v

    @model_validator(mode="after")
    def _one_hook_for_one_sae(self):
        if self.table and self.hook is not None and self.more:
            raise ValueError("hook: only with one SAE (each SAE of a table is read at its own hook)")
        return self

    @property
    def table(self) -> bool:
        return bool(self.more) or self.evals is not None

    def eval_list(self) -> list[str]:
        from superposition.runs.saebench import EVALS

        asked = (self.evals or "core").split(",")
        if "autointerp" in asked and "core" not in asked:
            asked.append("core")  # its sample of live latents is drawn from core's densities
        return [n for n in EVALS if n in asked]


@command(
    "eval-sae",
    "evaluate SAEs on their language model: L0, explained variance, CE loss recovered; with --evals, "
    "SAEBench's evaluations of many SAEs in one table",
    EvalOptions,
    kind="evaluation",
    in_place=True,
    out_required=False,
)
def run(opts: EvalOptions, out: Path | None) -> Result:
    """Into the train-sae run itself when `out` is None, else into the folder `out`."""
    if opts.table:
        if out is None:
            raise SuperpositionError("out: required for a table of SAEs or `evals`; give the folder to write")
        entries = _entries(opts)
        config = {"command": "eval-sae", **opts.model_dump()}
        return write_output(out, "evaluation", lambda tmp: _table(opts, entries, tmp), config)[1]
    where = local_path(opts.sae)
    if out is None and where is not None and where.is_dir():
        refuse_links(where, "SAE")  # written in place: never through a link planted in the run
    loaded = load_run(opts.sae, opts.model, opts.hook, opts.device, opts.dtype)
    if not loaded.is_run or out is not None:
        if out is None:
            raise SuperpositionError(
                f"out: {loaded.path} is not a train-sae run on its own model and hook; "
                "give `out` DIR for the evaluation"
            )
        config = {"command": "eval-sae", **opts.model_dump()}

        def produce(tmp):
            lm, hooked = loaded.load_model()  # once: the evaluation and the transfer table share it
            own = _own_model(opts, loaded, lm) if opts.model is not None else None  # checked before any work
            result = evaluate(loaded, tmp, lm, hooked, sequences=opts.sequences)
            if own is not None:
                _add_transfer(opts, loaded, lm, hooked, result, own)
            return result

        return write_output(out, "evaluation", produce, config)[1]
    result = evaluate(loaded, loaded.path, sequences=opts.sequences)
    write_result(loaded.path, result, None)  # the run keeps its own config.json
    result.folder = loaded.path
    return result


def _own_model(opts: EvalOptions, loaded: LMRun, lm_b):
    """For a transfer table (`model` other than the SAE's own): the SAE's own run and model, checked
    against the other model's tokenizer before anything is evaluated; None when there is nothing to
    compare (the same model, or a transcoder)."""
    from superposition.lm.transfer import same_tokenizer

    own = load_run(opts.sae, None, opts.hook, opts.device, opts.dtype)
    if own.cfg.model_name == loaded.cfg.model_name or loaded.sae.transcodes:
        return None
    lm_a, hooked_a = own.load_model()
    same_tokenizer(lm_a.tokenizer, lm_b.tokenizer, own.cfg.model_name, loaded.cfg.model_name)
    return own, lm_a, hooked_a


def _add_transfer(opts: EvalOptions, loaded: LMRun, lm_b, hooked_b, result: Result, own_model) -> None:
    """With `model` other than the SAE's own: Kissane et al.'s transfer table (lm/transfer.py) on the
    same held-out tokens of both models, and CE loss recovered on each, into summary["transfer"]
    (model b's is the evaluation's own, on the same sequences)."""
    from superposition.lm.transfer import transfer_table

    own, lm_a, hooked_a = own_model
    cfg = loaded.cfg
    seqs = ActivationStore.for_run(cfg, lm_b, hooked_b, holdout=True).first_sequences(
        opts.sequences or cfg.eval_sequences
    )
    print(
        f"transfer: {own.cfg.model_name} against {cfg.model_name} on the same {seqs.shape[0]} sequences",
        file=sys.stderr,
        flush=True,
    )
    table = transfer_table(
        {own.cfg.model_name: hooked_a, cfg.model_name: hooked_b},
        lm_a.tokenizer,
        loaded.sae,
        cfg.hook_name,
        seqs,
        cfg.model_batch_size,
        device=cfg.device,
    )
    own_eval = evaluate_sae(
        hooked_a,
        lm_a.tokenizer,
        loaded.sae,
        cfg.hook_name,
        seqs,
        batch_size=cfg.model_batch_size,
        device=cfg.device,
    )
    table[own.cfg.model_name]["ce_loss_recovered"] = own_eval["ce_loss_recovered"]
    table[cfg.model_name]["ce_loss_recovered"] = result.summary["ce_loss_recovered"]
    result.summary["transfer"] = table
    a, b = own.cfg.model_name, cfg.model_name
    result.message += (
        f"\ntransfer {a} -> {b}: CE loss recovered {table[a]['ce_loss_recovered']:.3f} -> "
        f"{table[b]['ce_loss_recovered']:.3f}, EV {table[a]['explained_variance']:.3f} -> "
        f"{table[b]['explained_variance']:.3f}, L0 {table[a]['l0']:.1f} -> {table[b]['l0']:.1f}; "
        "latent frequency "
        f"correlation {table['freq_correlation']:.3f}, max-activation correlation "
        f"{table['max_activation_correlation']:.3f} ({table['excluded_outlier_positions']} outlier positions "
        "left out)"
    )


def _entries(opts: EvalOptions):
    """Every SAE named, loaded (a run of SAEs at several hooks: one entry per hook), each with a
    name unique in the table; all checked before any model loads."""
    from superposition.runs.saebench import Entry
    from superposition.runs.targets import TRAIN_RUN, kind_of

    out: list[Entry] = []
    for source in [opts.sae, *opts.more]:
        where = local_path(source)
        if (
            where is not None
            and where.is_dir()
            and kind_of(where) == TRAIN_RUN
            and not (where / "sae").is_dir()
            and (where / "saes").is_dir()
        ):
            for sub in sorted(p for p in (where / "saes").iterdir() if p.is_dir()):
                run = load_run(sub, opts.model, None, opts.device, opts.dtype)
                out.append(Entry(f"{where.name}/{sub.name}", str(sub), run))
            continue
        run = load_run(source, opts.model, opts.hook, opts.device, opts.dtype)
        name = where.name if where is not None else str(source).rstrip("/").rsplit("/", 1)[-1]
        if name in ("sae", "") and where is not None:
            name = where.parent.name
        out.append(Entry(name, str(source), run))
    seen: dict[str, int] = {}
    for e in out:
        seen[e.name] = seen.get(e.name, 0) + 1
        if seen[e.name] > 1:
            e.name = f"{e.name}#{seen[e.name]}"
    return out


def _table(opts: EvalOptions, entries, folder: Path) -> Result:
    from superposition.runs import saebench as rs

    settings = rs.Settings(
        sequences=opts.sequences or rs.Settings.sequences,
        absorption_words=opts.absorption_words,
        probing_per_class=opts.probing_per_class,
        probing_context=opts.probing_context,
        seed=opts.seed,
        autointerp_latents=opts.autointerp_latents,
    )
    if (opts.cache or "").lower() == "none":
        root = None
    else:
        root = Path(opts.cache).expanduser() if opts.cache else rs.default_cache()
    cache = rs.Cache(root)
    evals = opts.eval_list()
    scorer = _autointerp_scorer(opts, folder) if "autointerp" in evals else None
    rows, shared = rs.evaluate_many(entries, evals, settings, cache, scorer)
    rs.write_tables(folder, rows, entries, shared)
    return rs.report(rows, entries, evals, shared, settings, cache)


def _autointerp_scorer(opts: EvalOptions, folder: Path):
    """autointerp for one SAE: the `autointerp` command (through the registry) on a seeded sample of
    its live latents, its folder kept under autointerp/<name>; the means of its scores."""
    import json
    import random

    from superposition.commands.base import COMMANDS, execute
    from superposition.runs.saebench import file_name

    def score(entry, live: list[int], seed: int) -> dict:
        picked = sorted(random.Random(seed).sample(live, min(opts.autointerp_latents, len(live))))
        if not picked:
            return {"skipped": "no live latents"}
        options = COMMANDS["autointerp"].options(
            sae=entry.source,
            model=opts.model,
            device=opts.device,
            dtype=opts.dtype,
            latent_ids=",".join(map(str, picked)),
            explainer=opts.explainer,
            explainer_model=opts.explainer_model,
            base_url=opts.base_url,
            api_key_env=opts.api_key_env,
            seed=seed,
            **({"sequences": opts.sequences} if opts.sequences else {}),  # else autointerp's own default
        )
        sub = folder / "autointerp" / file_name(entry.name)
        sub.parent.mkdir(exist_ok=True)
        execute("autointerp", options, sub)
        s = json.loads((sub / "summary.json").read_text())
        scores = s.get("scores", {})
        out = {"autointerp_latents": len(picked)}
        for metric, key in (
            ("detection.balanced_accuracy", "autointerp_detection"),
            ("fuzzing.balanced_accuracy", "autointerp_fuzzing"),
            ("simulation.pearson_r", "autointerp_simulation"),
        ):
            out[key] = (scores.get(metric) or {}).get("mean")
        return out

    return score
