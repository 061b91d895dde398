"""EleutherAI sparsify's layout: a folder with `cfg.json` and `sae.safetensors`, or a checkpoint
with one such folder per hook point (named by the model's module path, e.g. `layers.6`).

    encoder.weight [d_sae, d_in], encoder.bias [d_sae], W_dec [d_sae, d_in], b_dec [d_in]
    z = TopK(ReLU((x − b_dec) W_encᵀ + b_enc)),  x̂ = z W_dec + b_dec

Only the TopK activation is readable (not `groupmax`). Writing takes a TopK SAE; one that does not
subtract b_dec from its input is folded into the encoder bias (b ← b + b_dec W_enc) so that
sparsify, which always subtracts it for an SAE, computes the same latents.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from superposition.errors import SuperpositionError
from superposition.sae import BatchedSAE
from superposition.sae.formats.common import (
    build_sae,
    hook_from_module_path,
    read_json_object,
    read_safetensors,
)

WEIGHTS = "sae.safetensors"
CONFIG = "cfg.json"


def is_folder(path: Path) -> bool:
    return (path / CONFIG).is_file() and (path / WEIGHTS).is_file()


def hook_folders(path: Path) -> list[Path]:
    """The per-hook-point folders of a sparsify checkpoint (none if `path` is not one)."""
    return sorted(p for p in path.iterdir() if p.is_dir() and is_folder(p)) if path.is_dir() else []


def read(folder: Path) -> BatchedSAE:
    cfg_path, w_path = folder / CONFIG, folder / WEIGHTS
    raw, t = read_json_object(cfg_path), read_safetensors(w_path)
    if raw.get("activation", "topk") != "topk":
        raise SuperpositionError(f"{cfg_path}: activation {raw.get('activation')!r}: only topk is supported")
    if raw.get("transcode") or raw.get("skip_connection"):
        raise SuperpositionError(
            f"{cfg_path}: a sparsify transcoder; transcoders are not supported by this version"
        )
    missing = [k for k in ("encoder.weight", "encoder.bias", "W_dec", "b_dec") if k not in t]
    if missing:
        raise SuperpositionError(
            f"{w_path}: missing tensor(s) {', '.join(missing)} (a sparsify SAE has encoder.weight, ...)"
        )
    d_sae, d_in = t["encoder.weight"].shape
    if raw.get("d_in") not in (None, d_in):
        raise SuperpositionError(
            f"{w_path}: encoder.weight is {[d_sae, d_in]}, but cfg.json says d_in {raw['d_in']}"
        )
    ours = raw.get("superposition") or {}
    values = {
        "architecture": "topk",
        "d_in": d_in,
        "d_sae": d_sae,
        "k": raw.get("k", 32),
        "apply_b_dec_to_input": True,
        "model_name": ours.get("model_name"),
        "hook_name": ours.get("hook_name") or hook_from_module_path(folder.name),
    }
    tensors = {
        "W_enc": t["encoder.weight"].T,
        "b_enc": t["encoder.bias"],
        "W_dec": t["W_dec"],
        "b_dec": t["b_dec"],
    }
    return build_sae(values, tensors, folder, {"format": "sparsify"})


def write(sae: BatchedSAE, folder: Path, instance: int = 0) -> Path:
    cfg = sae.cfg
    if cfg.architecture != "topk":
        raise SuperpositionError(
            f"to sparsify: sparsify stores TopK SAEs; this one is {cfg.architecture} (write it to saelens)"
        )
    if cfg.input_normalization != "none":
        raise SuperpositionError(
            f"to sparsify: sparsify has no input normalisation ({cfg.input_normalization})"
        )
    t = {k: v.detach().float() for k, v in sae.saved_tensors(instance).items()}
    bias = t["b_enc"] if cfg.apply_b_dec_to_input else t["b_enc"] + t["b_dec"] @ t["W_enc"]
    tensors = {"encoder.weight": t["W_enc"].T.contiguous(), "encoder.bias": bias.contiguous(),
               "W_dec": t["W_dec"].contiguous(), "b_dec": t["b_dec"].contiguous()}  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / WEIGHTS))
    unit = bool(torch.allclose(t["W_dec"].norm(dim=-1), torch.ones(1), atol=1e-4))
    raw = {
        "activation": "topk", "expansion_factor": max(1, cfg.d_sae // cfg.d_in), "normalize_decoder": unit,
        "num_latents": cfg.d_sae, "k": cfg.k, "multi_topk": False, "skip_connection": False,
        "transcode": False, "d_in": cfg.d_in,
        "superposition": {"model_name": cfg.model_name, "hook_name": cfg.hook_name},
    }  # fmt: skip
    (folder / CONFIG).write_text(json.dumps(raw, indent=1))
    return folder
