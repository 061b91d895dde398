"""EleutherAI sparsify's layout: a folder with `cfg.json` and `sae.safetensors`, or a checkpoint
with one such folder per hook point (named by the model's module path, e.g. `layers.6`).

    encoder.weight [d_sae, d_in], encoder.bias [d_sae], W_dec [d_sae, d_in], b_dec [d_in]
    z = TopK(ReLU((x − b_dec) W_encᵀ + b_enc)),  x̂ = z W_dec + b_dec

Transcoders (`transcode: true`) read an MLP's input and predict its output; their input is not
centred, and a skip transcoder (`skip_connection: true`) adds x W_skipᵀ, W_skip [d_in, d_in]:

    z = TopK(ReLU(x W_encᵀ + b_enc)),  ŷ = z W_dec + b_dec (+ x W_skipᵀ)

They are our `transcoder` / `skip_transcoder` with TopK sparsity; a checkpoint folder `layers.L.mlp`
reads the MLP of block L (blocks.L.ln2.hook_normalized to blocks.L.hook_mlp_out).

Only the TopK activation is readable (not `groupmax`). Writing takes a TopK SAE or transcoder; an
SAE that does not subtract b_dec from its input is folded into the encoder bias (b ← b + b_dec W_enc)
so that sparsify, which always subtracts it for an SAE, computes the same latents.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from superposition.atomic import atomic_save_tensors, atomic_write_text
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
    transcoder = bool(raw.get("transcode"))
    if raw.get("skip_connection") and not transcoder:
        raise SuperpositionError(
            f"{cfg_path}: a sparsify SAE with a skip connection; only transcoders with one are readable"
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
    if transcoder:
        skip = bool(raw.get("skip_connection"))
        if skip and "W_skip" not in t:
            raise SuperpositionError(f"{w_path}: a skip transcoder without its W_skip tensor")
        layer = re.fullmatch(r"(?:.*\.)?(?:layers|h)\.(\d+)\.mlp", folder.name)
        values.update(
            architecture="skip_transcoder" if skip else "transcoder",
            sparsity="topk",
            apply_b_dec_to_input=False,
            d_out=t["W_dec"].shape[-1],
            hook_name=ours.get("hook_name")
            or (f"blocks.{layer.group(1)}.ln2.hook_normalized" if layer else None),
            hook_name_out=ours.get("hook_name_out")
            or (f"blocks.{layer.group(1)}.hook_mlp_out" if layer else None),
        )
        if skip:
            tensors["W_skip"] = t["W_skip"]
    return build_sae(values, tensors, folder, {"format": "sparsify"})


def write(sae: BatchedSAE, folder: Path, instance: int = 0) -> Path:
    cfg = sae.cfg
    transcoder = sae.transcodes
    if (cfg.sparsity if transcoder else cfg.architecture) != "topk":
        kind = f"{cfg.architecture} with {cfg.sparsity} latents" if transcoder else cfg.architecture
        raise SuperpositionError(
            f"to sparsify: sparsify stores TopK SAEs{' and transcoders' if transcoder else ''}; this one is "
            f"{kind} (write it to saelens)"
        )
    if transcoder and sae.d_out != cfg.d_in:
        raise SuperpositionError(
            f"to sparsify: a sparsify transcoder writes as wide as it reads; this one maps {cfg.d_in} -> "
            f"{sae.d_out}"
        )
    if cfg.input_normalization != "none":
        raise SuperpositionError(
            f"to sparsify: sparsify has no input normalisation ({cfg.input_normalization})"
        )
    t = {k: v.detach().float() for k, v in sae.saved_tensors(instance).items()}
    centred = cfg.apply_b_dec_to_input and not transcoder  # sparsify centres SAEs, never transcoders
    bias = t["b_enc"] if centred or transcoder else t["b_enc"] + t["b_dec"] @ t["W_enc"]
    tensors = {"encoder.weight": t["W_enc"].T.contiguous(), "encoder.bias": bias.contiguous(),
               "W_dec": t["W_dec"].contiguous(), "b_dec": t["b_dec"].contiguous()}  # fmt: skip
    if "W_skip" in t:
        tensors["W_skip"] = t["W_skip"].contiguous()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(folder / WEIGHTS, tensors)
    unit = bool(torch.allclose(t["W_dec"].norm(dim=-1), torch.ones(1), atol=1e-4))
    raw = {
        "activation": "topk", "expansion_factor": max(1, cfg.d_sae // cfg.d_in), "normalize_decoder": unit,
        "num_latents": cfg.d_sae, "k": cfg.k, "multi_topk": False, "skip_connection": "W_skip" in t,
        "transcode": transcoder, "d_in": cfg.d_in,
        "superposition": {"model_name": cfg.model_name, "hook_name": cfg.hook_name,
                          **({"hook_name_out": cfg.hook_name_out} if transcoder else {})},
    }  # fmt: skip
    atomic_write_text(folder / CONFIG, json.dumps(raw, indent=1))
    return folder
