"""SAELens's layout, which is also ours: a folder with `cfg.json` and `sae_weights.safetensors`.

Writing: the cfg.json is a SAELens 6 config (architecture, d_in, d_sae, dtype, device,
apply_b_dec_to_input, normalize_activations, reshape_activations, metadata with model and hook)
that `sae_lens.SAE.load_from_disk` loads, plus our own keys, which SAELens ignores and we read
back. BatchTopK and Matryoshka SAEs are written as SAELens writes them for inference: JumpReLU
SAEs with one threshold per latent (θ repeated), so SAELens computes what we compute; our key
`superposition_architecture` keeps what they are.

Reading, a SAELens 6 config or an older one: every field that changes the forward pass is
honoured. apply_b_dec_to_input; normalize_activations (layer_norm and constant_norm_rescale per
example; expected_average_only_in and covariance_whitening are identity at inference, as in SAELens,
which folds them into the weights at the end of training); reshape_activations hook_z (the SAE
reads flattened heads, as ours do); TopK's rescale_acts_by_decoder_norm (folded into the weights);
training checkpoints of BatchTopK and Matryoshka (`topk_threshold`). Anything else that would change
the outputs (a single head's index, a finetuning scaling factor, an architecture we do not have) is
refused with one line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from torch import Tensor

from superposition.atomic import atomic_save_tensors, atomic_write_text
from superposition.errors import SuperpositionError
from superposition.sae import ARCHITECTURES, BatchedSAE, SAEConfig
from superposition.sae.formats.common import (
    architecture_named,
    build_sae,
    fold_decoder_norms,
    hook_from_module_path,
    read_json_object,
    read_safetensors,
)

WEIGHTS = "sae_weights.safetensors"
CONFIG = "cfg.json"
FORMAT_VERSION = "6.0.0"  # the SAELens config format written (its 6.x layout), not a SAELens install
# SAELens names for its inference architectures, where they differ from ours.
SAELENS_NAMES = {"batchtopk": "jumprelu", "matryoshka": "jumprelu"}
# SAELens's transcoders are ReLU ("transcoder", our `standard` sparsity) and JumpReLU
# ("jumprelu_transcoder"), with or without a skip. Ours are named the same way from their sparsity's
# SAELens name, so BatchTopK and Matryoshka ones (JumpReLU to SAELens) load there too, and a TopK one
# keeps a name SAELens refuses ("topk_transcoder") rather than misreads.
FROM_SAELENS_TRANSCODERS = {
    "transcoder": ("transcoder", "standard"),
    "skip_transcoder": ("skip_transcoder", "standard"),
    "jumprelu_transcoder": ("transcoder", "jumprelu"),
    "jumprelu_skip_transcoder": ("skip_transcoder", "jumprelu"),
}


def saelens_name(cfg: dict) -> str:
    """The `architecture` SAELens reads for an SAE of ours (cfg: our SAEConfig values)."""
    arch = cfg["architecture"]
    if ARCHITECTURES[arch].transcodes:
        base = SAELENS_NAMES.get(cfg["sparsity"], cfg["sparsity"])
        return arch if base == "standard" else f"{base}_{arch}"
    return SAELENS_NAMES.get(arch, arch)


# what a run records about the SAE's data and model, under cfg.json's "metadata" (SAELens keeps its
# context_size, prepend_bos and dataset_path there too)
METADATA_KEYS = ("context_size", "prepend_bos", "dataset_path", "model_id", "model_source", "model_revision",
                 "model_sha256", "hook_meaning")  # fmt: skip

IDENTITY_NORMALIZATIONS = ("none", "expected_average_only_in", "covariance_whitening")


def is_folder(path: Path) -> bool:
    return (path / CONFIG).is_file() and (path / WEIGHTS).is_file()


# ---------------------------------------------------------------------- writing
def write(sae: BatchedSAE, folder: Path, instance: int = 0, extra: dict | None = None) -> Path:
    """Instance `instance` of `sae` as a folder SAELens 6 loads and computes the same outputs from."""
    folder.mkdir(parents=True, exist_ok=True)
    ours = sae.cfg.model_dump()
    ours["n_instances"] = 1
    for key, value in ours.items():
        if isinstance(value, list) and (SAEConfig.model_fields[key].json_schema_extra or {}).get(
            "per_instance"
        ):
            ours[key] = value[instance]
    extra = dict(extra or {})
    if extra.get("hook_name"):  # one of a multi-hook run's SAEs: the hook this instance reads
        ours["hook_name"] = extra.pop("hook_name")
    hook = ours.get("hook_name") or ""
    metadata = {
        "sae_lens_version": FORMAT_VERSION,
        "sae_lens_training_version": FORMAT_VERSION,
        "model_name": ours.get("model_name"),
        "hook_name": ours.get("hook_name"),
        "hook_head_index": None,
        **{k: extra.pop(k) for k in METADATA_KEYS if k in extra},
    }
    cfg = {
        **ours,
        "architecture": saelens_name(ours),
        "superposition_architecture": sae.cfg.architecture,
        "dtype": "float32",
        "device": "cpu",
        "normalize_activations": ours["input_normalization"],
        "reshape_activations": "hook_z" if hook.endswith("hook_z") else "none",
        "rescale_acts_by_decoder_norm": False,
        "metadata": metadata,
        **extra,
    }
    tensors = {k: v.detach().contiguous().clone().float() for k, v in sae.saved_tensors(instance).items()}
    atomic_save_tensors(folder / WEIGHTS, tensors)
    atomic_write_text(folder / CONFIG, json.dumps(cfg, indent=1))
    return folder


# ---------------------------------------------------------------------- reading
def read(folder: Path) -> BatchedSAE:
    cfg_path, w_path = folder / CONFIG, folder / WEIGHTS
    raw, tensors = read_json_object(cfg_path), read_safetensors(w_path)
    values, tensors, metadata = _translate(raw, tensors, cfg_path)
    return build_sae(values, tensors, folder, metadata)


def _translate(raw: dict, t: dict[str, Tensor], path: Path) -> tuple[dict, dict[str, Tensor], dict]:
    """(our config values, our tensors, metadata) for a cfg.json of ours or of SAELens."""
    meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}

    def get(key: str, *old_names: str):
        for k in (key, *old_names):
            if k in raw:
                return raw[k]
            if k in meta:
                return meta[k]
        return None

    arch = raw.get("superposition_architecture")
    if arch in ARCHITECTURES and raw.get("architecture") != saelens_name(
        {"sparsity": "topk", **raw, "architecture": arch}
    ):
        arch = None  # edited since we wrote it: SAELens's key is the one SAELens reads
    ours = arch is not None
    transcoder = None if ours else FROM_SAELENS_TRANSCODERS.get(raw.get("architecture"))
    if transcoder is not None:  # a SAELens transcoder
        arch = transcoder[0]
    elif arch is None:  # a SAELens file
        saelens_arch = raw.get("architecture")
        if saelens_arch is None and (get("activation_fn", "activation_fn_str") == "topk"):
            saelens_arch = "topk"
        arch = architecture_named(saelens_arch or "standard")
        if arch is None:
            raise SuperpositionError(
                f"{path}: unknown architecture {saelens_arch!r} (not one superposition can compute); "
                f"readable: {', '.join(sorted({*ARCHITECTURES, 'matryoshka_batchtopk'}))}"
            )
    values = {k: v for k, v in raw.items() if k in SAEConfig.model_fields}
    hook = get("hook_name", "hook_point")
    if isinstance(hook, str) and not hook.startswith("blocks."):  # SAELens on an HF model names module paths
        hook = hook_from_module_path(hook) or hook
    if ours and ARCHITECTURES[arch].transcodes and isinstance(hook, str):
        # written before hook names took TransformerLens's meanings: our blocks.L.hook_mlp_in was
        # the MLP's input after its norm, TransformerLens's blocks.L.ln2.hook_normalized
        hook = re.sub(r"^(blocks\.\d+)\.hook_mlp_in$", r"\1.ln2.hook_normalized", hook)
    values.update(architecture=arch, model_name=get("model_name"), hook_name=hook)
    if transcoder is not None:
        values.update(sparsity=transcoder[1], apply_b_dec_to_input=False, d_out=raw.get("d_out"))
        values["hook_name_out"] = get("hook_name_out")
    if "k" not in values or values["k"] is None:
        values["k"] = (raw.get("activation_fn_kwargs") or {}).get("k")
    if isinstance(values.get("k"), float) and values["k"].is_integer():
        values["k"] = int(values["k"])  # SAELens's BatchTopK keeps k as a float
    if "W_enc" in t and "d_in" not in values:
        values["d_in"], values["d_sae"] = t["W_enc"].shape
    if arch == "matryoshka" and raw.get("matryoshka_widths"):
        values["prefixes"] = list(raw["matryoshka_widths"])
    values["apply_b_dec_to_input"] = bool(raw.get("apply_b_dec_to_input", True))
    norm = raw.get("normalize_activations", "none")
    norm = {True: "expected_average_only_in", False: "none", None: "none"}.get(norm, norm)
    if norm not in (*IDENTITY_NORMALIZATIONS, "layer_norm", "constant_norm_rescale"):
        raise SuperpositionError(f"{path}: normalize_activations {norm!r} is not one SAELens defines")
    values["input_normalization"] = "none" if norm in IDENTITY_NORMALIZATIONS else norm
    if get("hook_head_index") is not None:
        raise SuperpositionError(
            f"{path}: hook_head_index {get('hook_head_index')}: SAEs of one attention head are not supported"
        )
    if "scaling_factor" in t:
        if not bool((t["scaling_factor"] == 1).all()):
            raise SuperpositionError(f"{path}: a finetuning scaling_factor other than 1 is not supported")
        t = {k: v for k, v in t.items() if k != "scaling_factor"}
    if "topk_threshold" in t:  # a BatchTopK / Matryoshka training checkpoint of SAELens
        t = {
            **t,
            "threshold": t["topk_threshold"].reshape(1).expand(values.get("d_sae") or t["b_enc"].numel()),
        }
    if raw.get("rescale_acts_by_decoder_norm") and not ours:
        t = dict(t)
        fold_decoder_norms(t)
    metadata = {"format": "superposition" if ours else "saelens"}
    for key in METADATA_KEYS:
        if get(key) is not None:
            metadata[key] = get(key)
    return values, t, metadata
