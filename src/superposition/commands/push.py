"""`superposition push WHAT hf://owner/repo[/path]`: share an SAE on the Hugging Face hub.

WHAT is an SAE folder or file of any readable format, or a train-sae run (its sae/, or one SAE per
hook under saes/). Every SAE is uploaded in SAELens's layout (cfg.json + sae_weights.safetensors,
which `SAE.from_pretrained(repo, path)` and `load_sae("hf://owner/repo/path")` read), under
`path/<hook_name>/` for a run, or `path/` for one SAE; a model card (README.md at `path`) lists the
model, hook, architecture, width, L0, explained variance, CE loss recovered and tokens trained of
each. The token is huggingface_hub's (HF_TOKEN or `huggingface-cli login`); it is never written to
any file. HF_ENDPOINT points the upload at another server.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from pydantic import Field

from superposition.commands.base import command, positional
from superposition.config import Config
from superposition.errors import SuperpositionError
from superposition.report.output import Result

CARD_KEYS = (("l0", "L0"), ("explained_variance", "EV"), ("ce_loss_recovered", "CE recovered"))


class PushOptions(Config):
    """Options of `push`."""

    what: str = positional("an SAE folder or file (any readable format), or a train-sae run", "WHAT")
    to: str = positional("where: hf://owner/repo or hf://owner/repo/path", "HF_ADDRESS")
    private: bool = Field(False, description="create the repository private (when it does not exist yet)")
    message: str | None = Field(None, description="the commit message (default: what was uploaded)")


def _saes(what: str) -> list[tuple[str, Path | str, dict]]:
    """(folder name in the upload, where the SAE is, its evaluation) for every SAE to upload."""
    from superposition.runs.targets import TRAIN_RUN, kind_of, local_path

    p = local_path(what)
    if p is not None and not p.exists():
        raise SuperpositionError(f"what {p}: no such file or folder")
    if p is not None and kind_of(p) == TRAIN_RUN:
        summary = _summary(p / "summary.json")
        if (p / "sae").is_dir():
            cfg = json.loads((p / "sae" / "cfg.json").read_text())
            hook = cfg.get("hook_name") or (cfg.get("metadata") or {}).get("hook_name") or "sae"
            return [(hook, p / "sae", summary)]
        if (p / "saes").is_dir():
            per_hook = summary.get("hooks") or summary.get("sources") or {}
            found = sorted(q for q in (p / "saes").iterdir() if (q / "cfg.json").is_file())
            return [(q.name, q, {**summary, **per_hook.get(q.name, {})}) for q in found]
        raise SuperpositionError(
            f"what {p}: a run without SAE folders (sae/ or saes/); a CLT run is not pushed yet"
        )
    return [("", what, {})]


def _summary(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def model_card(entries: list[dict], address: str) -> str:
    """README.md for the hub: front matter, how to load, and a row per SAE."""
    models = sorted({e["model"] for e in entries if e["model"]})
    lines = [
        "---",
        "library_name: saelens",
        "tags:",
        "- sparse-autoencoder",
        "- superposition",
        *([f"base_model: {models[0]}"] if len(models) == 1 else []),
        "---",
        "",
        f"# Sparse autoencoders{f' for {models[0]}' if len(models) == 1 else ''}",
        "",
        "Trained and uploaded with [superposition](https://github.com/) in SAELens's layout "
        "(cfg.json + sae_weights.safetensors). Load one with",
        "",
        "```python",
        "import superposition as sp",
        f'sae = sp.load_sae("{"/".join(p for p in (address.rstrip("/"), entries[0]["folder"]) if p)}")',
        "```",
        "",
        "or with SAELens: `SAE.load_from_disk(path)` on a downloaded folder.",
        "",
        "| folder | model | hook | architecture | d_in | width | L0 | EV | CE recovered | tokens trained |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for e in entries:
        cells = [
            e["folder"] or ".",
            e["model"] or "",
            e["hook"] or "",
            e["architecture"],
            str(e["d_in"]),
            str(e["d_sae"]),
        ]
        cells += [_cell(e["metrics"].get(k)) for k, _ in CARD_KEYS]
        cells.append(_cell(e["metrics"].get("training_tokens"), integer=True))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "L0: mean active latents per token; EV: explained variance of the activations; "
              "CE recovered: the share of the language-model loss increase from zero-ablation that splicing "
              "the SAE in avoids; "
              "all measured on held-out text at the end of training (blank where not measured)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _cell(v, integer: bool = False) -> str:
    if not isinstance(v, int | float) or v != v:
        return ""
    return f"{int(v):,}" if integer else f"{v:.4g}"


def push(what: str | Path, to: str, private: bool = False, message: str | None = None) -> str:
    """Upload `what` (an SAE or a train-sae run) to `to` (hf://owner/repo[/path]); returns the URL."""
    from superposition.sae.formats import hub, load, saelens

    repo, inside = hub.parse_address(to)  # a bad address is one line before anything is read
    items = _saes(str(what))
    entries = []
    staging = Path(tempfile.mkdtemp(prefix="superposition-push-"))
    try:
        for name, where, metrics in items:
            sae = load(where)
            folder = staging / name if name else staging
            saelens.write(
                sae, folder, 0, {k: v for k, v in sae.metadata.items() if k in saelens.METADATA_KEYS}
            )
            c = sae.cfg
            entries.append({"folder": name, "model": c.model_name, "hook": c.hook_name,
                            "architecture": c.architecture, "d_in": c.d_in, "d_sae": c.d_sae,
                            "metrics": metrics})  # fmt: skip
        (staging / "README.md").write_text(model_card(entries, to))
        what_text = f"{len(entries)} SAEs" if len(entries) > 1 else f"a {entries[0]['architecture']} SAE"
        return hub.upload(staging, to, message or f"superposition: {what_text}", private)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@command(
    "push",
    "upload an SAE or a train-sae run to the Hugging Face hub in SAELens's layout",
    PushOptions,
    kind=None,
)
def run(opts: PushOptions, out: Path | None = None) -> Result:
    url = push(opts.what, opts.to, opts.private, opts.message)
    return Result(message=f"uploaded to {opts.to} ({url})", report=False, summary={"to": opts.to, "url": url})
