"""Llama Scope's layout (He et al. 2024, fnlp/Llama3_1-8B-Base-LX*): a folder with
`hyperparams.json` and `checkpoints/final.safetensors`.

    encoder.weight [d_sae, d_in], encoder.bias [d_sae], decoder.weight [d_in, d_sae], decoder.bias [d_in]
    hyperparams: d_model, d_sae, hook_point_in, jump_relu_threshold (one for every latent),
    dataset_average_activation_norm.in

The SAE was trained on inputs scaled by s = √d_model / dataset_average_activation_norm.in. It is
read as SAELens reads it: s folded into the weights (W_enc·s, W_dec/s, b_dec/s), the threshold
θ·s for every latent, the input not centred. So a Llama Scope SAE gives here the latents and
reconstructions SAELens gives for the same release.
"""

from __future__ import annotations

from pathlib import Path

import torch

from superposition.errors import SuperpositionError
from superposition.sae import BatchedSAE
from superposition.sae.formats.common import build_sae, read_json_object, read_safetensors

CONFIG = "hyperparams.json"
WEIGHTS = "checkpoints/final.safetensors"


def is_folder(path: Path) -> bool:
    return (path / CONFIG).is_file() and (path / WEIGHTS).is_file()


def read(folder: Path) -> BatchedSAE:
    raw, t = read_json_object(folder / CONFIG), read_safetensors(folder / WEIGHTS)
    need = ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias")
    missing = [k for k in need if k not in t]
    if missing:
        raise SuperpositionError(f"{folder / WEIGHTS}: missing tensor(s) {', '.join(missing)}")
    d_sae, d_in = t["encoder.weight"].shape
    try:
        norm = float(raw["dataset_average_activation_norm"]["in"])
        theta = float(raw["jump_relu_threshold"])
    except (KeyError, TypeError, ValueError):
        raise SuperpositionError(
            f"{folder / CONFIG}: needs jump_relu_threshold and dataset_average_activation_norm.in (numbers)"
        ) from None
    if not (norm > 0 and theta >= 0):
        raise SuperpositionError(
            f"{folder / CONFIG}: the average activation norm must be > 0, the threshold ≥ 0"
        )
    s = d_in**0.5 / norm
    tensors = {
        "W_enc": t["encoder.weight"].float().T * s,
        "b_enc": t["encoder.bias"].float(),
        "W_dec": t["decoder.weight"].float().T / s,
        "b_dec": t["decoder.bias"].float() / s,
        "threshold": torch.full((d_sae,), theta * s),
    }
    values = {
        "architecture": "jumprelu",
        "d_in": d_in,
        "d_sae": d_sae,
        "apply_b_dec_to_input": False,
        "hook_name": raw.get("hook_point_in") if isinstance(raw.get("hook_point_in"), str) else None,
    }
    return build_sae(values, tensors, folder, {"format": "llama-scope"})
