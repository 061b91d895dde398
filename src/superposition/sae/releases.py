"""Released SAEs by name, as SAELens users ask for them: `load_sae(release, sae_id)`, or the address
`release://RELEASE/SAE_ID` wherever a path is accepted (`superposition eval-sae
release://gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical`).

The table is data (releases.json beside this file): per release its hub repository, how an sae_id
maps to a folder there (a pattern whose named groups fill `path`, or an explicit list), the format,
and the model and hook for files that do not name them (Gemma Scope's params.npz, Llama Scope's).
The folder is fetched through hub.py (huggingface_hub's cache; `HF_ENDPOINT` picks the server) and
read by content like any other path, so a release's files need nothing the loader would not read
from a local folder.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from superposition.errors import SuperpositionError

PREFIX = "release://"
TABLE = Path(__file__).with_name("releases.json")


@functools.cache
def releases() -> dict[str, dict]:
    """Release name -> its entry (repo_id, model, format, ids, path, hook_name, layer)."""
    return json.loads(TABLE.read_text())["releases"]


def _entry(release: str) -> dict:
    table = releases()
    if release not in table:
        close = [r for r in table if release.lower() in r.lower() or r.lower() in release.lower()][:4]
        hint = (
            f"; did you mean {', '.join(close)}" if close else f"; known: {', '.join(list(table)[:8])}, ..."
        )
        raise SuperpositionError(f"release {release!r}: not in the release table (sae/releases.json){hint}")
    return table[release]


def locate(release: str, sae_id: str) -> tuple[str, dict]:
    """(hf:// address of the SAE's folder, {model_name, hook_name} for files that lack them)."""
    e = _entry(release)
    ids = e["ids"]
    if isinstance(ids, dict):
        if sae_id not in ids:
            shown = ", ".join(list(ids)[:4])
            raise SuperpositionError(f"sae_id {sae_id!r}: not in release {release}; e.g. {shown}")
        path = ids[sae_id]
        m = re.search(e.get("layer", r"(?P<layer>\d+)"), sae_id)
        groups = m.groupdict() if m else {}
    else:
        m = re.fullmatch(ids, sae_id)
        if m is None:
            raise SuperpositionError(f"sae_id {sae_id!r}: release {release} names its SAEs like {ids!r}")
        groups = {k: v for k, v in m.groupdict().items() if v is not None}
        path = e["path"].format(sae_id=sae_id, **groups)
    hook = e.get("hook_name")
    known = {
        "model_name": e.get("model"),
        "hook_name": hook.format(sae_id=sae_id, **groups) if hook else None,
    }
    return f"hf://{e['repo_id']}/{path}", known


def split_address(text: str) -> tuple[str, str]:
    """`release://RELEASE/SAE_ID` -> (RELEASE, SAE_ID)."""
    rest = text[len(PREFIX) :]
    release, _, sae_id = rest.partition("/")
    if not release or not sae_id:
        raise SuperpositionError(
            f"{text}: expected release://RELEASE/SAE_ID "
            f"(e.g. {PREFIX}gpt2-small-res-jb/blocks.8.hook_resid_pre)"
        )
    return release, sae_id


def resolve_sae(release: str, sae_id: str | None = None) -> str:
    """What `formats.load` reads for (release, sae_id): the release:// address; with no sae_id,
    `release` itself (a path, an hf:// or a release:// address)."""
    if sae_id is None:
        return str(release)
    _entry(release)
    return f"{PREFIX}{release}/{sae_id}"


def load(text: str):
    """The BatchedSAE a release:// address names, with the model and hook the table gives where
    its files name none."""
    from superposition.sae.formats import load as load_path

    release, sae_id = split_address(text)
    where, known = locate(release, sae_id)
    sae = load_path(where)
    updates = {k: v for k, v in known.items() if v and not getattr(sae.cfg, k)}
    if updates:
        sae.cfg = sae.cfg.model_copy(update=updates)
    sae.metadata = {**sae.metadata, "release": release, "sae_id": sae_id}
    return sae
