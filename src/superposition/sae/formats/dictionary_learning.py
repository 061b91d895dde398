"""dictionary_learning's layout (Marks, Karvonen et al.): a folder with `ae.pt` (a state dict) and
`config.json`, whose `trainer.dict_class` says how to read it.

    AutoEncoder              encoder.weight [d_sae, d_in], encoder.bias, decoder.weight [d_in, d_sae],
                             bias [d_in]; z = ReLU((x − bias) W_encᵀ + b)           → standard
    GatedAutoEncoder         encoder.weight, gate_bias, mag_bias, r_mag, decoder.weight, decoder_bias  → gated
    AutoEncoderTopK          encoder.weight, encoder.bias, decoder.weight, b_dec, k  → topk
    BatchTopKSAE             as TopK, plus a scalar threshold: z = ReLU(pre)·1[ReLU(pre) > θ]  → batchtopk
    MatryoshkaBatchTopKSAE   W_enc [d_in, d_sae], b_enc, W_dec, b_dec, k, threshold, group_sizes → matryoshka
    JumpReluAutoEncoder      W_enc, b_enc, W_dec, b_dec, threshold; input not centred  → jumprelu

`ae.pt` is opened with torch.load(weights_only=True) and must hold tensors only: a file that needs
to run code to be unpickled is refused, never executed.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch
from torch import Tensor

from superposition.errors import SuperpositionError
from superposition.sae import BatchedSAE
from superposition.sae.formats.common import (
    build_sae,
    hook_from_module_path,
    read_json_object,
)

WEIGHTS = "ae.pt"
CONFIG = "config.json"


def is_folder(path: Path) -> bool:
    return (path / WEIGHTS).is_file() and (path / CONFIG).is_file()


def read(folder: Path) -> BatchedSAE:
    cfg_path, w_path = folder / CONFIG, folder / WEIGHTS
    trainer = read_json_object(cfg_path).get("trainer")
    if not isinstance(trainer, dict) or "dict_class" not in trainer:
        raise SuperpositionError(f"{cfg_path}: no trainer.dict_class (dictionary_learning's config names it)")
    sd = _state_dict(w_path)
    dict_class = trainer["dict_class"]
    if dict_class not in READERS:
        raise SuperpositionError(
            f"{cfg_path}: dict_class {dict_class!r} is not supported; supported: {', '.join(READERS)}"
        )
    try:
        arch, tensors, extra = READERS[dict_class](sd, trainer)
    except KeyError as err:
        raise SuperpositionError(
            f"{w_path}: missing tensor {err.args[0]} for dict_class {dict_class}"
        ) from None
    W_enc = tensors["W_enc"]
    values = {"architecture": arch, "d_in": W_enc.shape[0], "d_sae": W_enc.shape[1], **extra,
              "model_name": trainer.get("lm_name"), "hook_name": _hook(trainer)}  # fmt: skip
    return build_sae(values, tensors, folder, {"format": "dictionary_learning"})


def _state_dict(path: Path) -> dict[str, Tensor]:
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": we refuse such files anyway
            warnings.simplefilter("ignore")
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise SuperpositionError(
            f"{path}: holds pickled objects, not only tensors; refusing to load it"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise SuperpositionError(
            f"{path}: not a readable torch state dict ({str(err).splitlines()[0]})"
        ) from None
    if not isinstance(sd, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in sd.items()
    ):
        raise SuperpositionError(
            f"{path}: expected a dict of tensors (a state dict), found {type(sd).__name__}"
        )
    return sd


def _k(sd: dict, trainer: dict) -> int:
    return int(trainer.get("k") or sd["k"].item())


def _relu(sd: dict, trainer: dict):
    t = {
        "W_enc": sd["encoder.weight"].T,
        "b_enc": sd["encoder.bias"],
        "W_dec": sd["decoder.weight"].T,
        "b_dec": sd["bias"],
    }
    return "standard", t, {}


def _gated(sd: dict, trainer: dict):
    t = {"W_enc": sd["encoder.weight"].T, "b_gate": sd["gate_bias"], "r_mag": sd["r_mag"],
         "b_mag": sd["mag_bias"], "W_dec": sd["decoder.weight"].T, "b_dec": sd["decoder_bias"]}  # fmt: skip
    return "gated", t, {}


def _topk(sd: dict, trainer: dict):
    t = {
        "W_enc": sd["encoder.weight"].T,
        "b_enc": sd["encoder.bias"],
        "W_dec": sd["decoder.weight"].T,
        "b_dec": sd["b_dec"],
    }
    return "topk", t, {"k": _k(sd, trainer)}


def _threshold(sd: dict, d_sae: int) -> Tensor:
    # ReLU(pre)·1[ReLU(pre) > θ] equals pre·1[pre > max(θ, 0)]; θ = -1 means "never set": plain ReLU
    return sd["threshold"].reshape(1).clamp(min=0).expand(d_sae)


def _batchtopk(sd: dict, trainer: dict):
    arch, t, extra = _topk(sd, trainer)
    return "batchtopk", {**t, "threshold": _threshold(sd, t["W_enc"].shape[1])}, extra


def _matryoshka(sd: dict, trainer: dict):
    t = {"W_enc": sd["W_enc"], "b_enc": sd["b_enc"], "W_dec": sd["W_dec"], "b_dec": sd["b_dec"]}
    t["threshold"] = _threshold(sd, t["W_enc"].shape[1])
    prefixes = torch.cumsum(sd["group_sizes"], 0).tolist()
    return "matryoshka", t, {"k": _k(sd, trainer), "prefixes": [int(p) for p in prefixes]}


def _jumprelu(sd: dict, trainer: dict):
    t = {
        "W_enc": sd["W_enc"],
        "b_enc": sd["b_enc"],
        "W_dec": sd["W_dec"],
        "b_dec": sd["b_dec"],
        "threshold": sd["threshold"],
    }
    return "jumprelu", t, {"apply_b_dec_to_input": False}


READERS = {
    "AutoEncoder": _relu,
    "GatedAutoEncoder": _gated,
    "AutoEncoderTopK": _topk,
    "BatchTopKSAE": _batchtopk,
    "MatryoshkaBatchTopKSAE": _matryoshka,
    "JumpReluAutoEncoder": _jumprelu,
}


def _hook(trainer: dict) -> str | None:
    sub = trainer.get("submodule_name")
    if isinstance(sub, str) and hook_from_module_path(sub):
        return hook_from_module_path(sub)
    layer = trainer.get("layer")
    return (
        f"blocks.{layer}.hook_resid_post" if isinstance(layer, int) and sub in (None, "resid_post") else None
    )
