"""Save and load SAEs: one folder per SAE with `cfg.json` and `sae_weights.safetensors`.

Tensor names follow the layout SAELens reads and writes: W_enc [d_in, d_sae], W_dec [d_sae, d_in],
b_enc [d_sae], b_dec [d_in], plus `threshold` [d_sae] for inference with a threshold (JumpReLU,
BatchTopK, Matryoshka) and b_gate, r_mag, b_mag for gated SAEs. Never pickle: safetensors + JSON.
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
from superposition.sae import ARCHITECTURES, make_sae
from superposition.sae.base import BatchedSAE, SAEConfig

WEIGHTS = "sae_weights.safetensors"
CONFIG = "cfg.json"


def sae_tensors(sae: BatchedSAE, i: int) -> dict[str, torch.Tensor]:
    """Instance i's weights under the SAELens names."""
    arch = sae.cfg.architecture
    t = {
        "W_enc": sae.encoder_weight()[i],
        "W_dec": sae.W_dec[i],
        "b_dec": sae.b_dec[i],
    }
    if arch == "gated":
        t.update(b_gate=sae.b_enc[i], r_mag=sae.r_mag[i], b_mag=sae.b_mag[i])
    else:
        t["b_enc"] = sae.b_enc[i]
    if arch == "jumprelu":
        t["threshold"] = sae.threshold[i]
    elif arch in ("batchtopk", "matryoshka"):
        t["threshold"] = sae.threshold[i].expand(sae.cfg.d_sae)
    return {k: v.detach().contiguous().clone() for k, v in t.items()}


def save_sae(sae: BatchedSAE, folder: str | Path, instance: int = 0, extra_cfg: dict | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = sae.cfg.model_dump()
    cfg["n_instances"] = 1
    for key in ("l1_coefficient", "l0_coefficient"):
        if isinstance(cfg[key], list):
            cfg[key] = cfg[key][instance]
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
    cfg = _config_from(raw, tensors, cfg_path)
    sae = make_sae(cfg)
    with torch.no_grad():
        _fill(sae, tensors, w_path)
    sae.eval()
    return sae


def _config_from(raw: dict, tensors: dict, path: Path) -> SAEConfig:
    """Our cfg.json, or SAELens's (which names the activation 'relu', 'topk', 'jumprelu', 'gated'
    and keeps k under activation_fn_kwargs)."""
    arch = raw.get("architecture")
    kwargs = raw.get("activation_fn_kwargs") or {}
    if arch is None or arch not in ARCHITECTURES:
        saelens = {
            "standard": "standard",
            "gated": "gated",
            "jumprelu": "jumprelu",
            "topk": "topk",
            "batchtopk": "batchtopk",
            "matryoshka_batchtopk": "matryoshka",
        }
        if arch in saelens:
            arch = saelens[arch]
        elif arch is None and raw.get("activation_fn_str") == "topk":
            arch = "topk"
        else:
            raise SuperpositionError(
                f"{path}: unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}"
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


def _fill(sae: BatchedSAE, t: dict, path: Path) -> None:
    arch = sae.cfg.architecture
    need = (
        ["W_dec", "b_dec"]
        + (["b_gate", "r_mag", "b_mag"] if arch == "gated" else ["b_enc"])
        + (["W_enc"] if not getattr(sae.cfg, "tied", False) else [])
    )
    if arch == "jumprelu":
        need.append("threshold")
    missing = [k for k in need if k not in t]
    if missing:
        raise SuperpositionError(f"{path}: missing tensor(s) {', '.join(missing)} for architecture {arch}")
    d_in, d_sae = sae.cfg.d_in, sae.cfg.d_sae
    if tuple(t["W_dec"].shape) != (d_sae, d_in):
        raise SuperpositionError(
            f"{path}: W_dec has shape {tuple(t['W_dec'].shape)}, cfg.json says [{d_sae}, {d_in}]"
        )
    sae.W_dec.copy_(t["W_dec"].unsqueeze(0))
    sae.b_dec.copy_(t["b_dec"].unsqueeze(0))
    if isinstance(getattr(sae, "W_enc", None), torch.nn.Parameter):
        sae.W_enc.copy_(t["W_enc"].unsqueeze(0))
    sae.b_enc.copy_((t["b_gate"] if arch == "gated" else t["b_enc"]).unsqueeze(0))
    if arch == "gated":
        sae.r_mag.copy_(t["r_mag"].unsqueeze(0))
        sae.b_mag.copy_(t["b_mag"].unsqueeze(0))
    if arch == "jumprelu":
        sae.log_threshold.copy_(t["threshold"].clamp(min=1e-12).log().unsqueeze(0))
    if arch in ("batchtopk", "matryoshka") and "threshold" in t:
        sae.threshold.copy_(t["threshold"].reshape(-1)[:1])
    # saved weights may be folded (not unit norm): keep them exactly as written
    sae.unit_norm_decoder = sae.unit_norm_decoder and bool(
        torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(1), atol=1e-4)
    )
