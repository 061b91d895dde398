"""`superposition convert SRC --to saelens|sparsify|dictionary_learning|circuit-tracer --out DST`: any
readable SAE, written in SAELens's or sparsify's layout (sae/formats/); a crosscoder (a crosscoder
run or its crosscoder/ folder) in dictionary_learning's (`ae.pt`, the state dict its CrossCoder or
BatchTopKCrossCoder `from_pretrained` reads, and `config.json`); a JumpReLU or ReLU cross-layer
transcoder in circuit-tracer's (`W_enc_i`/`W_dec_i` files its `load_clt` reads; a TopK CLT is
refused: circuit-tracer would read it as a ReLU CLT)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from superposition.commands.base import command, positional
from superposition.config import Config
from superposition.report.output import Result


class ConvertOptions(Config):
    """Options of `convert`."""

    src: str = positional(
        "any SAE: a SAELens, sparsify, Gemma Scope or dictionary_learning folder or file, or hf://owner/repo/path",
        "SRC",
    )
    to: Literal["saelens", "sparsify", "dictionary_learning", "circuit-tracer"] = Field(
        description="the layout to write (dictionary_learning: crosscoders; circuit-tracer: JumpReLU or "
        "ReLU cross-layer transcoders)"
    )


def crosscoder_folder(src: str) -> Path | None:
    """The crosscoder folder of SRC (a crosscoder run, or the folder itself), or None."""
    p = Path(src).expanduser()
    for folder in (p / "crosscoder", p):
        if (folder / "cfg.json").is_file() and (folder / "crosscoder.safetensors").is_file():
            return folder
    return None


@command(
    "convert",
    "write any readable SAE in SAELens's or sparsify's layout",
    ConvertOptions,
    kind="converted SAE",
)
def run(opts: ConvertOptions, out: Path) -> Result:
    from superposition.sae.formats import load, save

    if opts.to == "circuit-tracer":
        return _clt(opts, out)
    folder = crosscoder_folder(opts.src)
    if folder is not None or opts.to == "dictionary_learning":
        return _crosscoder(opts, folder, out)
    sae = load(opts.src)
    save(sae, out, to=opts.to)
    cfg = sae.cfg
    shape = f"{cfg.architecture}, d_in {cfg.d_in}, d_sae {cfg.d_sae}"
    return Result(report=False, message=f"{opts.to} layout; {shape}")


def _crosscoder(opts: ConvertOptions, folder: Path | None, out: Path) -> Result:
    import io

    import torch

    from superposition.atomic import atomic_write_bytes
    from superposition.errors import SuperpositionError
    from superposition.sae.crosscoder import Crosscoder

    if folder is None:
        raise SuperpositionError(
            f"--to dictionary_learning: writes crosscoders; {opts.src} is not a crosscoder run or folder"
        )
    if opts.to != "dictionary_learning":
        raise SuperpositionError(
            f"--to {opts.to}: a crosscoder is written as dictionary_learning (--to dictionary_learning)"
        )
    cc = Crosscoder.load(folder)
    sd, cfg = cc.to_dictionary_learning()
    buf = io.BytesIO()
    torch.save(sd, buf)  # their loader reads torch.load(weights_only=True): tensors only
    atomic_write_bytes(out / "ae.pt", buf.getvalue())
    kind = cfg["trainer"]["dict_class"]
    return Result(
        report=False,
        config=cfg,  # config.json as dictionary_learning writes it beside ae.pt
        message=f"dictionary_learning {kind}: {cc.n_sources} sources, d {cc.d}, d_sae {cc.d_sae} "
        "(ae.pt, config.json)",
    )


def _clt(opts: ConvertOptions, out: Path) -> Result:
    """A CLT in circuit-tracer's layout, written only when circuit-tracer computes its latents: a
    JumpReLU (or ReLU) CLT; a TopK CLT is refused (circuit-tracer has no TopK and reads such files
    as a ReLU CLT, whose latents are others)."""
    from superposition.errors import SuperpositionError
    from superposition.sae.clt import CrossLayerTranscoder, find_folder

    folder = find_folder(Path(opts.src).expanduser())
    if folder is None:
        raise SuperpositionError(
            f"--to circuit-tracer: writes cross-layer transcoders; {opts.src} is not a CLT run or folder"
        )
    clt = CrossLayerTranscoder.load(folder)
    if clt.k is not None:
        raise SuperpositionError(
            f"--to circuit-tracer: {opts.src} is a TopK CLT (k {clt.k}); circuit-tracer has no TopK and "
            "would read its files as a ReLU CLT with other latents; train one with clt_sparsity=jumprelu"
        )
    clt.save(out, {k: v for k, v in clt.metadata.items() if k in ("model_name", "model_id", "hook_name")})
    kind = "JumpReLU" if bool((clt.thresholds() != 0).any()) else "ReLU"
    return Result(
        report=False,
        message=f"circuit-tracer {kind} CLT: {clt.n_layers} layers, d_model {clt.d_model}, d_sae {clt.d_sae} "
        "(load_clt reads the folder)",
    )
