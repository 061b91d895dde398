"""Save and load SAEs: one folder per SAE with `cfg.json` and `sae_weights.safetensors`.

Tensor names follow the layout SAELens reads and writes (W_enc [d_in, d_sae], W_dec [d_sae, d_in],
b_enc [d_sae], b_dec [d_in], plus what an architecture adds, such as `threshold`); each
architecture says which in its `saved_tensors`. Never pickle: safetensors + JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from superposition.config import describe_validation_error
from superposition.errors import SuperpositionError
from superposition.sae import ARCHITECTURES, BatchedSAE, SAEConfig, make_sae

WEIGHTS = "sae_weights.safetensors"
CONFIG = "cfg.json"


def sae_tensors(sae: BatchedSAE, i: int) -> dict[str, torch.Tensor]:
    """Instance i's weights under the SAELens names, as contiguous copies."""
    return {k: v.detach().contiguous().clone() for k, v in sae.saved_tensors(i).items()}


def save_sae(sae: BatchedSAE, folder: str | Path, instance: int = 0, extra_cfg: dict | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = sae.cfg.model_dump()
    cfg["n_instances"] = 1
    for key, value in cfg.items():
        if isinstance(value, list) and (SAEConfig.model_fields[key].json_schema_extra or {}).get(
            "per_instance"
        ):
            cfg[key] = value[instance]
    cfg.update(extra_cfg or {})
    save_file(sae_tensors(sae, instance), str(folder / WEIGHTS))
    (folder / CONFIG).write_text(json.dumps(cfg, indent=1))
    return folder


def save_instances(
    sae: BatchedSAE, parent: str | Path, names: list[str], extra_cfg: list[dict] | None = None
) -> list[Path]:
    """One folder per instance: parent/<name>/."""
    return [
        save_sae(sae, Path(parent) / n, i, (extra_cfg or [{}] * len(names))[i]) for i, n in enumerate(names)
    ]


def load_sae(folder: str | Path) -> BatchedSAE:
    """Load one SAE written by `save_sae` or by SAELens (cfg.json + sae_weights.safetensors)."""
    folder = Path(folder)
    cfg_path, w_path = folder / CONFIG, folder / WEIGHTS
    if not cfg_path.is_file():
        raise SuperpositionError(f"{cfg_path}: missing (an SAE folder holds {CONFIG} and {WEIGHTS})")
    if not w_path.is_file():
        raise SuperpositionError(f"{w_path}: missing (an SAE folder holds {CONFIG} and {WEIGHTS})")
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise SuperpositionError(f"{cfg_path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    try:
        tensors = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise SuperpositionError(f"{w_path}: not a readable safetensors file ({err})") from None
    sae = make_sae(_config_from(raw, tensors, cfg_path))
    _check_tensors(sae, tensors, w_path)
    sae.load_saved(tensors)
    # saved weights may be folded (not unit norm): keep them exactly as written
    sae.unit_norm_decoder = sae.unit_norm_decoder and bool(
        torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(1), atol=1e-4)
    )
    sae.eval()
    return sae


def architecture_named(name: str | None) -> str | None:
    """Our architecture for a name in a cfg.json: ours, or another library's alias."""
    for arch, cls in ARCHITECTURES.items():
        if name == arch or name in cls.aliases:
            return arch
    return None


def _config_from(raw: dict, tensors: dict, path: Path) -> SAEConfig:
    """Our cfg.json, or SAELens's (which keeps k under activation_fn_kwargs in older versions)."""
    arch = architecture_named(raw.get("architecture"))
    kwargs = raw.get("activation_fn_kwargs") or {}
    if arch is None and raw.get("architecture") is None and raw.get("activation_fn_str") == "topk":
        arch = "topk"
    if arch is None:
        raise SuperpositionError(
            f"{path}: unknown architecture {raw.get('architecture')!r}; known: {', '.join(ARCHITECTURES)}"
        )
    W_enc = tensors.get("W_enc")
    values = {
        "architecture": arch,
        "d_in": raw.get("d_in", W_enc.shape[0] if W_enc is not None else None),
        "d_sae": raw.get("d_sae", W_enc.shape[1] if W_enc is not None else None),
        "k": raw.get("k", kwargs.get("k")),
    }
    for key in SAEConfig.model_fields:
        if key in raw and key not in values and key != "n_instances":
            values[key] = raw[key]
    try:
        return SAEConfig.model_validate(values)
    except ValidationError as err:
        raise SuperpositionError(describe_validation_error(err, str(path), SAEConfig)) from None


def _check_tensors(sae: BatchedSAE, t: dict, path: Path) -> None:
    need = sae.required_tensors()
    missing = [k for k in need if k not in t]
    if missing:
        raise SuperpositionError(
            f"{path}: missing tensor(s) {', '.join(missing)} for architecture {sae.cfg.architecture}"
        )
    for name, shape in need.items():
        if tuple(t[name].shape) != shape:
            raise SuperpositionError(
                f"{path}: {name} has shape {list(t[name].shape)}, cfg.json says {list(shape)}"
            )
