"""What a command is: a typed options object and `run(opts, out) -> Result`, registered by name.

    @command("meta-sae", "a BatchTopK meta-SAE on an SAE's decoder directions", MetaOptions, kind="meta-sae")
    def run(opts: MetaOptions, out: Path) -> Result: ...

The CLI builds each command's flags, `--help` and `--help-config` from its options' fields (a field
is a flag `--name-with-dashes`, or a positional argument when marked `positional`); the Python API
is the same options object (`execute`). Every command that writes a folder writes it through the
one writer (report/output.py): staged, with config.json, summary.json, figures, report.html and
the marker. Errors raised here name option *keys* (`latent_ids: ...`); the CLI shows them as flags.

Shared option groups (`SAEOptions`, `ModelOptions`, `LatentOptions`) are composed into the commands
that take them, so a flag means the same thing in every command: `--model` is always the language
model the SAE reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from superposition.config import Config
from superposition.errors import SuperpositionError
from superposition.report.output import Result, write_output


def positional(description: str, metavar: str) -> Any:
    """A required positional argument of the command line."""
    return Field(description=description, json_schema_extra={"positional": True, "metavar": metavar})


def flag(default: Any, description: str, name: str | None = None, **kw: Any) -> Any:
    """An option; `name` replaces the flag the key would give (`--sae` for `sae_name`)."""
    extra = {"flag": name} if name else None
    return Field(default, description=description, json_schema_extra=extra, **kw)


def flag_name(key: str, info) -> str:
    """How the command line spells option `key` (`latent_ids` -> `--latent-ids`, or its `flag`)."""
    extra = info.json_schema_extra or {}
    return extra.get("flag") or "--" + key.replace("_", "-")


def is_positional(info) -> bool:
    return bool((info.json_schema_extra or {}).get("positional"))


SAE_HELP = (
    "a train-sae run, an SAE experiment run, or any SAE: a SAELens, sparsify, Gemma Scope or "
    "dictionary_learning folder or file, or hf://owner/repo/path"
)


class SAEOptions(Config):
    """The SAE a command reads."""

    sae: str = positional(SAE_HELP, "SAE")


class ModelOptions(Config):
    """The language model and hook an SAE is read at, and where the model runs."""

    model: str | None = flag(None, "the language model the SAE reads (default: the one the run or SAE names)")
    hook: str | None = flag(None, "the hook point, e.g. blocks.6.hook_resid_post (default: the SAE's)")
    device: str | None = flag(
        None, "where the model runs: cpu, cuda, cuda:1, ... (default: the run's, or cpu)"
    )
    dtype: Literal["float32", "bfloat16", "float16"] | None = flag(
        None, "the language model's dtype (default: the run's, or float32)"
    )


class RunModelOptions(Config):
    """Where the model of a train-sae run runs, for the commands that read a whole run (attribute,
    intervene, circuit): the run names its model, and `model` replaces it."""

    model: str | None = flag(None, "the language model (default: the one the run was trained on)")
    device: str | None = flag(None, "where the model runs: cpu, cuda, ... (default: the run's)")
    dtype: Literal["float32", "bfloat16", "float16"] | None = flag(
        None, "the model's dtype (default: the run's)"
    )


TRANSCODERS_HELP = (
    "a train-sae run of transcoders: one per layer (--set architecture=transcoder --set "
    "'hook_name=blocks.*.mlp'), or a single transcoder's run, or a folder of sparsify transcoders "
    "(layers.L.mlp/, with --model); MLPs without one are error nodes; or a cross-layer transcoder (a CLT "
    "run, or a folder in circuit-tracer's CLT layout, with --model unless its cfg.json names one)"
)


class TranscoderOptions(RunModelOptions):
    """A run of transcoders and where the model they replace the MLPs of runs (attribute, intervene)."""

    run: str = positional(TRANSCODERS_HELP, "RUN_DIR")

    def load(self):
        from superposition.runs.targets import load_transcoders

        return load_transcoders(self.run, self.model, self.device, self.dtype)


class PickSAE(Config):
    """Which SAE of an experiment run (its saes/ folder holds several)."""

    sae_name: str | None = flag(
        None, "experiment runs: which SAE under saes/ (default: the first)", name="--sae"
    )


class LatentOptions(Config):
    """Which latents: the first N, or a list."""

    latents: int | None = flag(None, "the first N latents", gt=0)
    latent_ids: str | None = flag(None, "these latents, comma-separated (e.g. 3,17)")

    @field_validator("latent_ids")
    @classmethod
    def _ids(cls, v: str | None) -> str | None:
        if v is not None:
            parse_latent_ids(v)
        return v

    @model_validator(mode="after")
    def _one(self):
        if self.latents is not None and self.latent_ids is not None:
            raise ValueError("latents and latent_ids: give one of them")
        return self

    def chosen(self, d_sae: int, default: int | None) -> list[int]:
        """The latents asked for, checked against the SAE's width; `default`: how many when
        neither key is given (None: all)."""
        if self.latent_ids is not None:
            ids = parse_latent_ids(self.latent_ids)
            bad = [i for i in ids if i >= d_sae]
            if bad:
                raise SuperpositionError(
                    f"latent_ids: {bad} out of range; the SAE has latents 0..{d_sae - 1}"
                )
            return ids
        n = self.latents if self.latents is not None else default
        return list(range(d_sae if n is None else min(n, d_sae)))


def parse_latent_ids(text: str, key: str = "latent_ids") -> list[int]:
    """'3,17' -> [3, 17] (repeats dropped); errors name option `key`."""
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise SuperpositionError(f"{key} {text!r}: comma-separated latent numbers, e.g. 3,17") from None
    if not ids or any(i < 0 for i in ids):
        raise SuperpositionError(f"{key} {text!r}: comma-separated non-negative latent numbers")
    return list(dict.fromkeys(ids))


@dataclass
class Command:
    """A registered command. `kind`: the kind of folder it writes (its marker), or None for a
    command that writes nothing (it prints); `out_default`: a default for `--out` (else required)."""

    name: str
    help: str
    options: type[Config]
    run: Callable[..., Result]
    kind: str | None
    out_default: str | None = None
    help_config: Callable[[Config], str] | None = None  # what --help-config prints, if not the options
    in_place: bool = False  # writes its own folder (a resumable train-sae run), not through write_output
    out_required: bool = True  # False: without --out it writes into what it was pointed at (eval-sae)
    check: Callable[[Config, Path], None] | None = None  # a check of the options against --out, first


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, options: type[Config], kind: str | None, **kw: Any):
    """Decorator: register `run(opts, out) -> Result` as command `name`."""

    def wrap(fn: Callable[..., Result]):
        if name in COMMANDS:
            raise ValueError(f"command {name!r} is registered twice")
        COMMANDS[name] = Command(name, help, options, fn, kind, **kw)
        return fn

    return wrap


def execute(
    name: str, opts: Config, out: str | Path | None = None, **extra: Any
) -> tuple[Path | None, Result]:
    """Run command `name` with validated options; a command that writes a folder writes `out`
    (report.output.write_output: whole or not at all, with config.json). Returns (folder, result)."""
    cmd = COMMANDS[name]
    if out is not None and cmd.check is not None:
        from superposition.atomic import resolve_out

        cmd.check(opts, resolve_out(out))
    if cmd.kind is None or cmd.in_place:
        return (None if out is None else Path(out)), cmd.run(opts, out, **extra)
    if out is None:
        raise SuperpositionError("out: required; give the folder to write")
    config = {"command": name, **opts.model_dump()}
    return write_output(out, cmd.kind, lambda tmp: cmd.run(opts, tmp, **extra), config)


__all__ = [
    "COMMANDS",
    "Command",
    "LatentOptions",
    "ModelOptions",
    "PickSAE",
    "Result",
    "SAEOptions",
    "command",
    "execute",
    "flag",
    "positional",
]
