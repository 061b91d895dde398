"""The names a notebook needs, importable from the package itself (`import superposition as sp`):

    sp.load_sae(path_or_release, sae_id=None)   an SAE with SAELens's tensor interface (sae/single.py)
    sp.load_model(name)                         a language model with SAEs spliced in (lm/hooked_sae.py)
    sp.load_run(dir)                            a train-sae run: .sae, .cfg, .load_model()
    sp.train_sae(out=..., **keys)               train-sae from Python; returns the run as load_run does
    sp.execute(command, out=..., **options)     any command, as its flags; returns its Result
    sp.evaluate_saes([a, b], out, evals=...)    SAEBench's evaluations, one row per SAE (eval-sae)
    sp.push_to_hub(run_or_sae, "hf://owner/repo[/path]")
    sp.SAE, sp.Intervention, sp.HookedSAEModel

This module sits at the top of the layers (beside the CLI): it is glue over the library.
`superposition/__init__.py` forwards these names lazily, so `import superposition` stays light.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from superposition.config import Config
from superposition.errors import SuperpositionError
from superposition.lm.hooked_sae import HookedSAEModel, Intervention
from superposition.lm.model import DEFAULT_MODEL
from superposition.sae.single import SAE

if TYPE_CHECKING:  # the commands (and their plotting) load on first use, not with `import superposition`
    from superposition.report.output import Result
    from superposition.runs.targets import LMRun


def load_sae(
    path: str | Path, sae_id: str | None = None, device: str = "cpu", dtype: str | torch.dtype | None = None
) -> SAE:
    """An SAE: a folder or file of any format (ours, SAELens, sparsify, Gemma Scope, Llama Scope,
    dictionary_learning), an hf://owner/repo/path or release://RELEASE/SAE_ID address, a train-sae
    run (its sae/), or with `sae_id` SAELens's (release, sae_id). In eval mode, without gradients."""
    from superposition.runs.targets import TRAIN_RUN, kind_of, local_path

    p = local_path(path) if sae_id is None else None
    if p is not None and kind_of(p) == TRAIN_RUN and (p / "sae").is_dir():
        path = p / "sae"
    return SAE.from_pretrained(str(path), sae_id, device, dtype)


def load_model(name: str = DEFAULT_MODEL, device: str = "cpu", dtype: str = "float32") -> HookedSAEModel:
    """A causal language model (alias, hub id, local folder or .gguf file) with TransformerLens's
    hook names, `run_with_saes`, `run_with_cache_with_saes` and `generate` with interventions."""
    from superposition.lm.hooked_sae import load_hooked_model

    return load_hooked_model(name, device, dtype)


def load_run(
    path: str | Path,
    model: str | None = None,
    hook: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> LMRun:
    """A train-sae run (or any SAE naming its model and hook): `.sae` (an SAE), `.cfg` (every
    setting), `.load_model()` (the language model and its hook points)."""
    from superposition.runs.targets import load_run as _load_run

    return _load_run(path, model, hook, device, dtype)


def train_sae(cfg: Any = None, out: str | Path | None = None, resume: bool = False, **keys: Any) -> LMRun:
    """`superposition train-sae` from Python, for every dictionary (SAEs, transcoders, SAEs at several
    hooks, `architecture="clt"`, `architecture="crosscoder"`): `cfg` an LMSAEConfig, a dict or a
    YAML/JSON file of its keys, `keys` more of them (`k=32, hook_name="blocks.6.hook_resid_post"`);
    `out` the run folder. Returns the trained run: `.sae` for one SAE (as `load_run(out)` gives it),
    `.saes` for several, `.dictionary` for a CLT or a crosscoder, `.summary` its evaluation."""
    from superposition.lm.config import LMSAEConfig, make_lm_config
    from superposition.runs.train import train_lm_sae

    if out is None:
        raise SuperpositionError("out: required; give the run folder")
    if resume:
        if cfg is not None or keys:
            raise SuperpositionError("resume: continues with the run's saved config; give only `out`")
        folder = train_lm_sae(None, out, resume=True)
        return _trained(folder, LMSAEConfig.build(json.loads((folder / "config.json").read_text()), "config"))
    if isinstance(cfg, LMSAEConfig):
        settings = cfg.model_copy(update=keys) if keys else cfg
        settings = LMSAEConfig.build(settings.model_dump(), "cfg")
    elif isinstance(cfg, dict) or cfg is None:
        settings = LMSAEConfig.build({**make_lm_config(None, []).model_dump(), **(cfg or {}), **keys}, "cfg")
    else:
        base = make_lm_config(str(cfg), [])
        settings = LMSAEConfig.build({**base.model_dump(), **keys}, "cfg")
    return _trained(train_lm_sae(settings, out), settings)


def _trained(folder: Path, settings) -> LMRun:
    from superposition.runs.targets import LMRun

    if settings.architecture in ("clt", "crosscoder") or settings.multi_hook:
        return LMRun(Path(folder), settings, None)  # several dictionaries: run.saes, run.summary
    return load_run(folder)


def execute(
    command: str, opts: Config | None = None, out: str | Path | None = None, **options: Any
) -> Result:
    """Run command `command` (`superposition COMMAND`) with `opts` (its options object) or the
    options as keywords, the same keys as its flags (`sae="runs/l6", sequences=8`); returns its
    Result (`result.folder` is where it wrote, `result.summary` its numbers)."""
    from superposition.commands import COMMANDS
    from superposition.commands import execute as run_command

    if command not in COMMANDS:
        raise SuperpositionError(f"command {command!r}: one of {', '.join(sorted(COMMANDS))}")
    cmd = COMMANDS[command]
    if opts is None:
        opts = cmd.options.build(options, command)
    elif options:
        raise SuperpositionError("options: give an options object or keywords, not both")
    folder, result = run_command(command, opts, out)
    if result.folder is None:
        result.folder = folder
    return result


def evaluate_saes(saes: list[str | Path], out: str | Path, evals: str = "core", **options: Any) -> Result:
    """SAEBench's evaluations of several SAEs into one table: `superposition eval-sae SAE [SAE ...]
    --evals EVALS --out OUT` from Python. `evals`: comma-separated, of core, absorption,
    sparse_probing, tpp, scr, autointerp; other options as the command's flags
    (`absorption_words=500`). `result.summary["saes"]` holds one row per SAE (OUT/results.csv)."""
    if not saes:
        raise SuperpositionError("saes: give at least one SAE")
    names = [str(s) for s in saes]
    return execute("eval-sae", out=out, sae=names[0], more=names[1:], evals=evals, **options)


def push_to_hub(what: str | Path, address: str, **kw: Any) -> str:
    """Upload an SAE folder or a train-sae run (one SAE per hook) to `hf://owner/repo[/path]` in
    SAELens's layout with a model card; the token comes from HF_TOKEN (never written anywhere).
    Returns the repository's URL."""
    from superposition.commands.push import push

    return push(what, address, **kw)


__all__ = [
    "SAE",
    "HookedSAEModel",
    "Intervention",
    "execute",
    "load_model",
    "load_run",
    "load_sae",
    "push_to_hub",
    "train_sae",
]
