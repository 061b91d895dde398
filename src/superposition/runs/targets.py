"""What a command was pointed at: the one resolver.

Every folder this tool writes carries a marker (`.superposition-run.json`) naming its kind, so a
path resolves by reading it first and by content only for folders other tools wrote:

    experiment run   an SAE experiment (sae-toy, ...): saes/<name>/ and ground_truth.safetensors
    train-sae run    config.json + sae/ (one hook), or config.json + saes/<hook>/ (several)
    an SAE           any folder or file formats/ reads (SAELens, sparsify, Gemma Scope,
                     dictionary_learning, this project's own sae/ folders), or hf://owner/repo/path

`load_single_sae` gives one SAE from any of these; `load_run` gives an SAE with the language
model and hook it reads (`LMRun`), for the commands that run the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from superposition.atomic import read_marker
from superposition.errors import SuperpositionError
from superposition.lm.config import LMSAEConfig
from superposition.lm.hooks import HookedModel, pair_name
from superposition.lm.model import LoadedModel, load_model
from superposition.sae import SAE, BatchedSAE

EXPERIMENT_RUN = "experiment run"
TRAIN_RUN = "train-sae run"


class Address(str):
    """An hf:// or release:// address, kept as typed (a Path folds hf://owner to hf:/owner)."""

    def __truediv__(self, other: str) -> Address:
        return Address(f"{self.rstrip('/')}/{other}")

    def is_dir(self) -> bool:
        return False


def local_path(path: str | Path) -> Path | None:
    """The path on disk (made absolute), or None for an hf:// or release:// address."""
    return None if str(path).startswith(("hf://", "release://")) else Path(path).expanduser().absolute()


def kind_of(path: Path) -> str | None:
    """What a local folder is: its marker's kind, else (folders written before markers, or by
    hand) what its content says; None for anything else (an SAE folder or file, say)."""
    marker = read_marker(path) if path.is_dir() else None
    if marker is not None and marker.get("kind") in (EXPERIMENT_RUN, TRAIN_RUN):
        return marker["kind"]
    if not path.is_dir():
        return None
    if (path / "config.json").is_file() and ((path / "sae").is_dir() or (path / "saes").is_dir()):
        return TRAIN_RUN
    if (path / "saes").is_dir() and not (path / "cfg.json").exists():
        return EXPERIMENT_RUN
    return None


def experiment_saes(run: Path) -> list[str] | None:
    """The SAEs under an experiment run's saes/ (sae-toy, sae-synthetic, ...), or None when `run`
    is not an experiment run."""
    if kind_of(run) != EXPERIMENT_RUN:
        return None
    return sorted(p.name for p in (run / "saes").iterdir() if (p / "cfg.json").is_file())


def has_ground_truth(run: Path) -> bool:
    """An experiment run whose true features are saved beside its SAEs."""
    return kind_of(run) == EXPERIMENT_RUN and (run / "ground_truth.safetensors").is_file()


def experiment_sae(run: Path, sae_name: str | None) -> Path:
    """The folder of one SAE of an experiment run: `sae_name`, or the first by name."""
    names = experiment_saes(run) or []
    if not names:
        raise SuperpositionError(f"SAE {run}: saes/ holds no SAE")
    name = sae_name or names[0]
    if name not in names:
        raise SuperpositionError(f"sae_name {name!r}: not in this run; choose one of {', '.join(names)}")
    return run / "saes" / name


def load_single_sae(
    path: str | Path, label: str, sae_name: str | None = None, first_of_experiment: bool = False
) -> tuple[BatchedSAE, str]:
    """One SAE and where it came from: a train-sae run's sae/, one of an experiment run's saes/
    (`sae_name`, or with `first_of_experiment` the first; otherwise the run is refused as
    ambiguous), or any readable SAE folder or file."""
    from superposition.sae.formats import load

    p = local_path(path)
    if p is not None and not p.exists():
        raise SuperpositionError(f"{label} {p}: no such file or folder")
    names = experiment_saes(p) if p is not None else None
    if names is not None:
        if sae_name is None and not first_of_experiment:
            raise SuperpositionError(
                f"{label} {p}: an experiment run holds several SAEs; give one folder, "
                f"e.g. {p / 'saes' / names[0]}"
                if names
                else f"{label} {p}: saes/ holds no SAE"
            )
        p = experiment_sae(p, sae_name)
    elif sae_name is not None:
        raise SuperpositionError("sae_name: only for an experiment run (a folder with saes/)")
    if p is not None and (p / "sae" / "cfg.json").is_file():
        p = p / "sae"
    try:
        sae = load(p if p is not None else path)
    except SuperpositionError as err:
        raise SuperpositionError(f"{label}: {err}") from None
    if sae.n_instances != 1:
        raise SuperpositionError(f"{label} {path}: holds {sae.n_instances} SAEs; give one")
    return sae, str(p if p is not None else path)


@dataclass
class LMRun:
    """An SAE on a language model, ready to evaluate or analyse: a `train-sae` run directory, or an
    SAE in any readable format (formats/) with the model and hook it reads (`is_run` False)."""

    path: Path
    cfg: LMSAEConfig
    sae: SAE | None  # SAELens's interface (`sae.batched`: the form the library computes with); None: several
    is_run: bool = True

    @property
    def saes(self) -> dict[str, SAE]:
        """Every SAE of the run by hook (a one-hook run: its SAE under its hook name; a run of
        SAEs at several hooks: saes/<hook>/, loaded on each call)."""
        if self.sae is not None:
            return {str(self.cfg.hook_name): self.sae}
        from superposition.sae.formats import load

        folder = self.path / "saes"
        hooks = sorted(p for p in folder.iterdir() if (p / "cfg.json").is_file()) if folder.is_dir() else []
        return {p.name: SAE.frozen(load(p), self.cfg.device) for p in hooks}

    @property
    def dictionary(self):
        """The run's dictionary over several sources, loaded: a CLT run's CrossLayerTranscoder
        (clt/) or a crosscoder run's Crosscoder (crosscoder/); None for a run of SAEs."""
        if (self.path / "clt").is_dir():
            from superposition.sae.clt import CrossLayerTranscoder

            return CrossLayerTranscoder.load(self.path / "clt").to(self.cfg.device)
        if (self.path / "crosscoder").is_dir():
            from superposition.sae.crosscoder import Crosscoder

            return Crosscoder.load(self.path / "crosscoder").to(self.cfg.device)
        return None

    @property
    def summary(self) -> dict:
        """The run's summary.json (its evaluation), or {} before it is written."""
        path = self.path / "summary.json"
        return read_json(path) if path.is_file() else {}

    def load_model(self) -> tuple[LoadedModel, HookedModel]:
        """The run's language model, checked against the SAE: the hook's width must be its d_in."""
        lm = load_model(self.cfg.model_name, self.cfg.device, self.cfg.dtype)
        hooked = HookedModel(lm.model)
        widths = hooked.widths(self.cfg.hook_name)  # one hook, or a transcoder's MLP input and output
        where = self.path / "sae" if self.is_run or (self.path / "sae").is_dir() else self.path
        if len(widths) != (2 if self.sae.transcodes else 1):
            raise SuperpositionError(
                f"{where}: a {self.sae.cfg.architecture} cannot read hook {self.cfg.hook_name}; "
                + (
                    "transcoders read blocks.L.mlp"
                    if self.sae.transcodes
                    else "blocks.L.mlp is for transcoders"
                )
            )
        for what, have, want in (
            ("d_in", self.sae.cfg.d_in, widths[0]),
            ("d_out", self.sae.d_out, widths[-1]),
        ):
            if have != want:
                raise SuperpositionError(
                    f"{where}: the SAE's {what} is {have}, but {self.cfg.hook_name} of "
                    f"{self.cfg.model_name} has width {want}"
                )
        return lm, hooked


def load_run(
    path: str | Path,
    model: str | None = None,
    hook: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> LMRun:
    """A train-sae run directory (config.json + sae/), or any SAE `load_sae` reads (a SAELens,
    sparsify, Gemma Scope or dictionary_learning folder or file, an hf:// path). `model` and `hook`
    replace the ones the run or the SAE names (so an SAE can be evaluated on another model of the
    same width); an SAE that names none needs them. `device` and `dtype` say where the model runs.
    A one-line error says what is missing."""
    from superposition.sae.formats import load as load_sae

    where = local_path(path) or Address(str(path))
    overrides = {k: v for k, v in (("model_name", model), ("hook_name", hook)) if v is not None}
    placement = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
    if local_path(path) is not None and kind_of(where) == TRAIN_RUN:
        cfg = _run_config(where)  # a CLT or crosscoder run: refused with what to give instead
        if (where / "saes").is_dir() and not (where / "sae").is_dir():
            hooks = sorted(p.name for p in (where / "saes").iterdir())
            raise SuperpositionError(
                f"{where}: a run of SAEs at {len(hooks)} hooks; give one of them, {where / 'saes'}/<hook> "
                f"({', '.join(hooks[:3])}{', ...' if len(hooks) > 3 else ''})"
            )
        cfg = LMSAEConfig.build({**cfg.model_dump(), **overrides, **placement}, "model/hook")
        return LMRun(where, cfg, SAE.frozen(load_sae(where / "sae"), cfg.device), is_run=not overrides)
    try:
        sae = load_sae(path)
    except SuperpositionError as err:
        raise SuperpositionError(
            f"{where}: not a train-sae run directory (config.json + sae/), nor an SAE: {err}"
        ) from None
    hook_name = pair_name(sae.cfg.hook_name) if sae.transcodes else sae.cfg.hook_name
    values = {"model_name": sae.cfg.model_name, "hook_name": hook_name, **overrides}
    for key, option in (("model_name", "model"), ("hook_name", "hook")):
        if not values[key]:
            raise SuperpositionError(
                f"{option}: {where} does not name the {option} it reads; give `{option}`"
            )
    for key in ("context_size", "prepend_bos"):
        if key in sae.metadata:
            values[key] = sae.metadata[key]
    cfg = LMSAEConfig.build(
        {**values, **placement, "architecture": sae.cfg.architecture, "d_sae": sae.cfg.d_sae}, str(where)
    )
    return LMRun(where, cfg, SAE.frozen(sae, cfg.device), is_run=False)


def _run_config(where: Path) -> LMSAEConfig:
    """A train-sae run's config; a cross-layer transcoder run is refused (no command but train-sae
    reads one yet: its evaluation is in its summary.json, its weights in clt/)."""
    cfg = LMSAEConfig.build(read_json(where / "config.json"), str(where / "config.json"))
    if cfg.architecture == "clt":
        raise SuperpositionError(
            f"{where}: a cross-layer transcoder run; this command reads per-layer SAEs or transcoders "
            "(a CLT's evaluation is in its summary.json, its weights in clt/: "
            "sae.clt.CrossLayerTranscoder.load)"
        )
    if cfg.architecture == "crosscoder":
        raise SuperpositionError(
            f"{where}: a crosscoder run; give one source's folder ({where}/saes/<source>, a one-source SAE "
            "with that source's decoder), or read its summary.json and latents.csv"
        )
    return cfg


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SuperpositionError(f"{path}: not readable JSON ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise SuperpositionError(f"{path}: expected a JSON object")
    return data


@dataclass
class TranscoderRun:
    """Transcoders at some MLPs of a language model, ready to replace them (interp/replacement.py)."""

    path: Path
    lm: LoadedModel
    hooked: HookedModel
    transcoders: dict[int, BatchedSAE]  # layer -> its transcoder ({} for a CLT)
    prepend_bos: bool
    clt: object | None = None  # a CrossLayerTranscoder replacing every MLP (sae/clt.py)

    @property
    def replaces(self):
        """What interp.replacement.ReplacementModel takes: the CLT, or the transcoders by layer."""
        return self.clt if self.clt is not None else self.transcoders

    @property
    def layers(self) -> list[int]:
        """The layers whose MLPs have latents."""
        return list(range(self.clt.n_layers)) if self.clt is not None else list(self.transcoders)

    def encode(self, prompt: str, what: str = "prompt"):
        """A prompt's token ids (1, P): BOS first when the run's SAEs were trained so; empty or
        longer than the model's context is a one-line error."""
        import torch

        tok = self.lm.tokenizer
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids
        if self.prepend_bos and tok.bos_token_id is not None:
            ids = torch.cat([torch.tensor([[tok.bos_token_id]]), ids], 1)
        n_text = ids.shape[1] - int(self.prepend_bos and tok.bos_token_id is not None)
        if n_text < 1:
            raise SuperpositionError(f"{what}: empty; give some text")
        if ids.shape[1] > self.lm.n_ctx:
            raise SuperpositionError(
                f"{what}: {ids.shape[1]} tokens; {self.lm.name} reads at most {self.lm.n_ctx}"
            )
        return ids


def load_hook_saes(
    path: str | Path,
    model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    transcoders_only: bool = False,
) -> tuple[LMSAEConfig, LoadedModel, HookedModel, dict[str, BatchedSAE]]:
    """The SAEs of a train-sae run by hook (several: saes/<hook>/; one: sae/), with the model they
    were trained on (or `model`), each checked against the model's hooks and widths."""
    from superposition.lm.hooks import MLP_PAIR
    from superposition.sae.formats import load as load_sae

    where = local_path(path)
    loaded: dict[str, BatchedSAE] = {}
    if where is not None and kind_of(where) != TRAIN_RUN and where.is_dir():
        cfg, folders, loaded = _foreign_hook_saes(where, model)
    elif where is None or kind_of(where) != TRAIN_RUN:
        raise SuperpositionError(
            f"{path}: not a train-sae run; give a run of SAEs or transcoders at the hooks to study"
            + (
                " (train-sae --set architecture=transcoder --set 'hook_name=blocks.*.mlp'), or a folder of "
                "them by hook (a sparsify checkpoint with layers.L.mlp/)"
                if transcoders_only
                else ""
            )
        )
    else:
        cfg = _run_config(where)
        if (where / "saes").is_dir():
            folders = {p.name: p for p in sorted((where / "saes").iterdir()) if p.is_dir()}
        else:
            folders = {cfg.hook_name if isinstance(cfg.hook_name, str) else "": where / "sae"}
    if transcoders_only:
        chosen = {name: p for name, p in folders.items() if MLP_PAIR.match(name)}
        if not chosen:
            raise SuperpositionError(
                f"{where}: holds no transcoders (its SAEs read {', '.join(folders)[:120]}); attribution "
                "needs "
                "transcoders at blocks.L.mlp"
            )
        folders = chosen
    lm = load_model(model or cfg.model_name, device or cfg.device, dtype or cfg.dtype)
    hooked = HookedModel(lm.model)
    saes = {}
    for name, folder in folders.items():
        m = MLP_PAIR.match(name)
        if m and int(m.group(1)) >= hooked.n_layers:
            raise SuperpositionError(
                f"{folder}: a transcoder for layer {m.group(1)}, but {lm.name} has layers "
                f"0..{hooked.n_layers - 1}"
            )
        want = hooked.widths(name)
        sae = loaded.get(name) or load_sae(folder)
        if sae.transcodes != (len(want) == 2):
            raise SuperpositionError(f"{folder}: a {sae.cfg.architecture} cannot read {name}")
        if [sae.cfg.d_in, sae.d_out][: len(want)] != want:
            raise SuperpositionError(
                f"{folder}: reads {sae.cfg.d_in} and writes {sae.d_out}, but {name} of {lm.name} is "
                f"{' -> '.join(map(str, want))}"
            )
        saes[name] = sae.to(lm.model.device).eval()
    return cfg, lm, hooked, saes


def _clt_run(where: Path, folder: Path, model: str | None, device: str | None, dtype: str | None):
    """A cross-layer transcoder with the model it was trained on (its cfg.json's `model_name`, or
    `model`), ready to replace every MLP."""
    from superposition.sae.clt import CrossLayerTranscoder

    clt = CrossLayerTranscoder.load(folder)
    run_cfg = read_json(where / "config.json") if (where / "config.json").is_file() else {}
    name = model or clt.metadata.get("model_name") or run_cfg.get("model_name")
    if not name:
        raise SuperpositionError(f"model: {folder} does not name the model its CLT reads; give --model")
    lm = load_model(
        name, device or run_cfg.get("device") or "cpu", dtype or run_cfg.get("dtype") or "float32"
    )
    hooked = HookedModel(lm.model)
    width = hooked.widths("blocks.0.hook_resid_mid")[0]
    if clt.n_layers != hooked.n_layers or clt.d_model != width:
        raise SuperpositionError(
            f"{folder}: a CLT over {clt.n_layers} layers of width {clt.d_model}, but {lm.name} has "
            f"{hooked.n_layers} of width {width}"
        )
    clt = clt.to(lm.model.device).eval().requires_grad_(False)
    return TranscoderRun(where, lm, hooked, {}, bool(clt.metadata.get("prepend_bos", True)), clt=clt)


def _foreign_hook_saes(where: Path, model: str | None) -> tuple[LMSAEConfig, dict[str, Path], dict]:
    """A folder of SAEs or transcoders by hook that another library wrote (a sparsify checkpoint:
    layers.L/, layers.L.mlp/; or SAE folders side by side): its {hook: folder}, the SAEs read, and
    a config naming the model (`model`, else the one the SAEs name)."""
    from superposition.lm.hooks import pair_name
    from superposition.sae.formats import load as load_sae
    from superposition.sae.formats.saelens import is_folder
    from superposition.sae.formats.sparsify import hook_folders

    found = hook_folders(where) or sorted(q for q in where.iterdir() if q.is_dir() and is_folder(q))
    if not found:
        raise SuperpositionError(
            f"{where}: not a train-sae run, nor a folder of SAEs by hook (a sparsify checkpoint with "
            "layers.L/ or layers.L.mlp/ folders)"
        )
    folders, loaded = {}, {}
    for q in found:
        sae = load_sae(q)
        name = pair_name(sae.cfg.hook_name) if sae.transcodes else sae.cfg.hook_name
        if not name:
            raise SuperpositionError(f"{q}: names no hook point")
        folders[name], loaded[name] = q, sae
    named = {s.cfg.model_name for s in loaded.values() if s.cfg.model_name}
    model_name = model or (named.pop() if len(named) == 1 else None)
    if model_name is None:
        raise SuperpositionError(f"model: {where} does not name the model its SAEs read; give `model`")
    first = next(iter(loaded.values()))
    arch = "transcoder" if first.transcodes else "topk"
    values = {"model_name": model_name, "hook_name": next(iter(folders)), "architecture": arch}
    cfg = LMSAEConfig.build(values, str(where))
    return cfg, folders, loaded


def load_transcoders(
    path: str | Path, model: str | None = None, device: str | None = None, dtype: str | None = None
) -> TranscoderRun:
    """The transcoders of a train-sae run: one per layer (`hook_name=blocks.*.mlp`, saes/blocks.L.mlp/)
    or the one of a single-transcoder run, with the model they were trained on (or `model`); or a
    cross-layer transcoder (a CLT run, or a folder in circuit-tracer's CLT layout)."""
    from superposition.lm.hooks import MLP_PAIR
    from superposition.sae.clt import find_folder

    where = local_path(path)
    clt_folder = find_folder(where) if where is not None else None
    if clt_folder is not None:
        return _clt_run(where, clt_folder, model, device, dtype)

    cfg, lm, hooked, saes = load_hook_saes(path, model, device, dtype, transcoders_only=True)
    transcoders = {int(MLP_PAIR.match(h).group(1)): sae for h, sae in saes.items()}
    return TranscoderRun(Path(path), lm, hooked, transcoders, cfg.prepend_bos)
