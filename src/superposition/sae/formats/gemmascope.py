"""Gemma Scope's `params.npz` (Lieberum et al. 2024): a JumpReLU SAE whose input is not centred.

    W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc [d_sae], b_dec [d_in], threshold [d_sae]
    pre = x W_enc + b_enc,  z = pre · 1[pre > threshold],  x̂ = z W_dec + b_dec

Read with numpy without pickle. The hook point follows from the file's place in the Gemma Scope
repositories when it is there (`…-res/layer_12/…` → blocks.12.hook_resid_post, `-mlp` → hook_mlp_out,
`-att` → attn.hook_z); otherwise name it with --hook.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from superposition.errors import SuperpositionError
from superposition.sae import BatchedSAE
from superposition.sae.formats.common import build_sae

PARAMS = "params.npz"
NEEDED = ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")


def npz_path(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".npz":
        return path
    return path / PARAMS if (path / PARAMS).is_file() else None


def read(path: Path) -> BatchedSAE:
    file = npz_path(path)
    try:
        with np.load(file, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise SuperpositionError(
            f"{file}: not a readable .npz of arrays ({str(err).splitlines()[0]})"
        ) from None
    missing = [k for k in NEEDED if k not in arrays]
    if missing:
        raise SuperpositionError(
            f"{file}: missing {', '.join(missing)} (Gemma Scope params hold {', '.join(NEEDED)})"
        )
    for k in NEEDED:  # build_sae checks the kind of number; text or objects are no weights at all
        if arrays[k].dtype.kind not in "fiucb":
            raise SuperpositionError(f"{file}: {k} holds {arrays[k].dtype} values, not numbers")
    t = {k: torch.from_numpy(np.ascontiguousarray(arrays[k])) for k in NEEDED}
    if t["W_enc"].ndim != 2:
        raise SuperpositionError(f"{file}: W_enc has shape {list(t['W_enc'].shape)}, expected [d_in, d_sae]")
    d_in, d_sae = t["W_enc"].shape
    values = {"architecture": "jumprelu", "d_in": d_in, "d_sae": d_sae, "apply_b_dec_to_input": False,
              "hook_name": _hook(file)}  # fmt: skip
    return build_sae(values, t, file, {"format": "gemma-scope"})


def _hook(file: Path) -> str | None:
    text = file.as_posix()
    layer = re.search(r"layer_(\d+)", text)
    if not layer:
        return None
    kind = (
        "attn.hook_z" if re.search(r"-att", text) else "hook_mlp_out" if "-mlp" in text else "hook_resid_post"
    )
    return f"blocks.{layer.group(1)}.{kind}" if re.search(r"gemma-scope", text) else None
