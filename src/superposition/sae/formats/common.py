"""What every format reader shares: turning (config values, tensors under our names) into a
loaded SAE, with one-line errors naming the file, what was expected and what was found."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from superposition.config import describe_validation_error
from superposition.errors import SuperpositionError
from superposition.sae import ARCHITECTURES, BatchedSAE, SAEConfig, make_sae


def read_json_object(path: Path) -> dict:
    """A config file's JSON object, or a one-line error naming the file."""
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SuperpositionError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError:
        raise SuperpositionError(f"{path}: not UTF-8 text") from None
    if not isinstance(raw, dict):
        raise SuperpositionError(f"{path}: expected a JSON object")
    return raw


def read_safetensors(path: Path) -> dict[str, Tensor]:
    """A weights file's tensors, or a one-line error naming the file."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise SuperpositionError(f"{path}: not a readable safetensors file ({err})") from None


def build_sae(
    values: dict[str, Any], tensors: dict[str, Tensor], path: Path, metadata: dict | None = None
) -> BatchedSAE:
    """An SAE of `values` (SAEConfig keys) holding `tensors` (our saved names, one instance).
    Weights are kept exactly as given (float32), including decoders that are not unit norm."""
    values = {k: v for k, v in values.items() if k in SAEConfig.model_fields and k != "n_instances"}
    try:
        cfg = SAEConfig.model_validate(values)
    except ValidationError as err:
        raise SuperpositionError(describe_validation_error(err, str(path), SAEConfig)) from None
    check_weights(tensors, path)
    _check_claims(cfg, tensors, path)  # before allocating what cfg.json claims
    sae = make_sae(cfg)
    tensors = {k: v.detach().to(torch.float32).cpu() for k, v in tensors.items()}
    need = sae.required_tensors()
    missing = [k for k in need if k not in tensors]
    if missing:
        raise SuperpositionError(
            f"{path}: missing tensor(s) {', '.join(missing)} for architecture {cfg.architecture}"
        )
    for name, shape in need.items():
        if tuple(tensors[name].shape) != shape:
            raise SuperpositionError(
                f"{path}: {name} has shape {list(tensors[name].shape)}, expected {list(shape)}"
            )
    sae.load_saved(tensors)
    # saved weights may be folded (not unit norm): keep them exactly as written
    sae.unit_norm_decoder = sae.unit_norm_decoder and bool(
        torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(1), atol=1e-4)
    )
    sae.metadata = {**(metadata or {}), "source": str(path)}
    return sae.eval()


FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_weights(tensors: dict[str, Tensor], path: Path) -> None:
    """Weights are finite floating-point numbers: an integer, boolean, complex or float8 tensor
    would be cast silently (losing its meaning or its imaginary part), and one NaN or infinity
    makes every output NaN. Either is a one-line refusal naming the tensor."""
    for name, t in tensors.items():
        if t.dtype not in FLOATS:
            raise SuperpositionError(
                f"{path}: {name} is {str(t.dtype).removeprefix('torch.')}; SAE weights must be float16, "
                "bfloat16, float32 or float64"
            )
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise SuperpositionError(f"{path}: {name} holds {bad} non-finite values (NaN or infinity)")


def _check_claims(cfg: SAEConfig, tensors: dict[str, Tensor], path: Path) -> None:
    """The widths cfg.json claims against the decoder's shape, before anything that size is made."""
    W = tensors.get("W_dec")
    if W is None or W.ndim != 2:
        return
    if W.shape[0] != cfg.d_sae:
        raise SuperpositionError(
            f"{path}: W_dec has shape {list(W.shape)}, but the config claims d_sae {cfg.d_sae}"
        )
    enc = tensors.get("W_enc")
    if enc is not None and enc.ndim == 2 and enc.shape[0] != cfg.d_in:
        raise SuperpositionError(
            f"{path}: W_enc has shape {list(enc.shape)}, but the config claims d_in {cfg.d_in}"
        )


def architecture_named(name: str | None) -> str | None:
    """Our architecture for a name in a cfg.json: ours, or another library's alias."""
    for arch, cls in ARCHITECTURES.items():
        if name == arch or name in cls.aliases:
            return arch
    return None


def fold_decoder_norms(t: dict[str, Tensor]) -> None:
    """In place, the SAE with unit decoder rows that computes the same outputs as one whose
    pre-activations are scaled by its decoder norms n (SAELens's rescale_acts_by_decoder_norm):
    W_enc ← W_enc n, b_enc ← b_enc n, W_dec ← W_dec / n. A threshold already applies to the scaled
    pre-activations, so it stays."""
    n = t["W_dec"].norm(dim=-1).clamp(min=1e-8)
    t["W_enc"] = t["W_enc"] * n
    t["b_enc"] = t["b_enc"] * n
    t["W_dec"] = t["W_dec"] / n.unsqueeze(-1)


def hook_from_module_path(path: str) -> str | None:
    """Our hook name for a model module path as sparsify and dictionary_learning name them
    ("layers.6" → blocks.6.hook_resid_post, "layers.6.mlp" → blocks.6.hook_mlp_out, ...)."""
    import re

    m = re.fullmatch(
        r"(?:model\.|transformer\.|gpt_neox\.)?(?:layers|h)\.(\d+)(?:\.(mlp|self_attn|attn|attention))?", path
    )
    if m:
        kind = {None: "hook_resid_post", "mlp": "hook_mlp_out"}.get(m.group(2), "hook_attn_out")
        return f"blocks.{m.group(1)}.{kind}"
    m = re.fullmatch(r"resid_post_layer_(\d+)", path)
    return f"blocks.{m.group(1)}.hook_resid_post" if m else None
