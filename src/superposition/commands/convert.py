"""`superposition convert SRC --to saelens|sparsify --out DST`: any readable SAE, written in
SAELens's or sparsify's layout (sae/formats/)."""

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
    to: Literal["saelens", "sparsify"] = Field(description="the layout to write")


@command(
    "convert",
    "write any readable SAE in SAELens's or sparsify's layout",
    ConvertOptions,
    kind="converted SAE",
)
def run(opts: ConvertOptions, out: Path) -> Result:
    from superposition.sae.formats import load, save

    sae = load(opts.src)
    save(sae, out, to=opts.to)
    cfg = sae.cfg
    shape = f"{cfg.architecture}, d_in {cfg.d_in}, d_sae {cfg.d_sae}"
    return Result(report=False, message=f"{opts.to} layout; {shape}")
