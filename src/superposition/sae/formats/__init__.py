"""SAEs in every popular format, recognised by their content, and written for other libraries.

    read                                                  written by
    cfg.json + sae_weights.safetensors                    superposition, SAELens        saelens.py
    cfg.json + sae.safetensors (or one folder per hook)   EleutherAI sparsify           sparsify.py
    params.npz                                            Gemma Scope                   gemmascope.py
    hyperparams.json + checkpoints/final.safetensors      Llama Scope                   llamascope.py
    ae.pt + config.json                                   dictionary_learning           dictionary_learning.py

`load` takes a folder, a file inside one, an hf://owner/repo/path (hub.py), or a released SAE's
release://RELEASE/SAE_ID (sae/releases.py). `save` writes the
SAELens layout (which SAELens 6 loads) or sparsify's.
"""

from __future__ import annotations

from pathlib import Path

from superposition.errors import SuperpositionError
from superposition.sae import BatchedSAE
from superposition.sae.formats import dictionary_learning, gemmascope, hub, llamascope, saelens, sparsify

WRITERS = {"saelens": saelens.write, "sparsify": sparsify.write}
KNOWN = (
    "cfg.json + sae_weights.safetensors (superposition, SAELens), cfg.json + sae.safetensors (sparsify), "
    "params.npz (Gemma Scope), hyperparams.json + checkpoints/ (Llama Scope) or ae.pt + config.json "
    "(dictionary_learning)"
)


def load(path: str | Path) -> BatchedSAE:
    """The SAE at `path`, in whichever known format it is; a one-line error otherwise."""
    from superposition.sae import releases

    if str(path).startswith(releases.PREFIX):
        return releases.load(str(path))
    p = hub.resolve(path)
    if not p.exists():
        raise SuperpositionError(f"{p}: no such file or folder")
    if p.is_file():
        if p.suffix == ".npz":
            return gemmascope.read(p)
        p = p.parent  # a file inside an SAE folder names the folder
    if saelens.is_folder(p):
        return saelens.read(p)
    if sparsify.is_folder(p):
        return sparsify.read(p)
    if gemmascope.npz_path(p):
        return gemmascope.read(p)
    if dictionary_learning.is_folder(p):
        return dictionary_learning.read(p)
    if llamascope.is_folder(p):
        return llamascope.read(p)
    hooks = sparsify.hook_folders(p) or sorted(q for q in p.iterdir() if q.is_dir() and saelens.is_folder(q))
    if hooks:
        names = ", ".join(q.name for q in hooks[:6]) + (" ..." if len(hooks) > 6 else "")
        raise SuperpositionError(
            f"{p}: holds SAEs for {len(hooks)} hook points ({names}); give one of them, e.g. {hooks[0]}"
        )
    pairs = [(saelens.CONFIG, saelens.WEIGHTS)]
    if (p / dictionary_learning.WEIGHTS).is_file() or _mentions(p / dictionary_learning.CONFIG, '"trainer"'):
        pairs.append(
            (dictionary_learning.CONFIG, dictionary_learning.WEIGHTS)
        )  # config.json alone is too common
    for config, weights in pairs:
        if (p / config).is_file() != (p / weights).is_file():  # half of a known pair
            missing = weights if (p / config).is_file() else config
            raise SuperpositionError(f"{p / missing}: missing (an SAE folder holds {config} and {weights})")
    raise SuperpositionError(f"{p}: no SAE in a known format here; expected {KNOWN}")


def _mentions(path: Path, text: str) -> bool:
    try:
        return path.is_file() and text in path.read_text(errors="replace")[:100_000]
    except OSError:
        return False


def save(
    sae: BatchedSAE, folder: str | Path, to: str = "saelens", instance: int = 0, extra: dict | None = None
) -> Path:
    """Write instance `instance` of `sae` as `to` ("saelens" or "sparsify") into `folder`."""
    if to not in WRITERS:
        raise SuperpositionError(f"to {to!r}: one of {', '.join(WRITERS)}")
    if to == "saelens":
        return saelens.write(sae, Path(folder), instance, extra)
    return sparsify.write(sae, Path(folder), instance)
