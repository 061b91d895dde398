"""`superposition intervene` and `superposition steer`.

intervene RUN_DIR --prompt "..." --nodes 3_120_5,7_88_* [--mode ablate|clamp|add] [--value V]
    ablates, clamps or shifts transcoder latents (graph.json's node ids) and prints the change at
    the last position: KL from the model's distribution, and the logits that moved most, with
    attention frozen (the model the attribution graph describes: its edges predict these
    changes) and unfrozen (the real model).
steer SAE --prompt "..." --latent F --value V [--mode add|clamp] [--max-new-tokens N]
    generates text greedily with and without latent F steered at the SAE's hook.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from superposition.commands.attribute import TranscoderOptions
from superposition.commands.base import ModelOptions, SAEOptions, command
from superposition.commands.targets import load_run
from superposition.errors import SuperpositionError
from superposition.interp import interventions as iv
from superposition.report.output import Result


class InterveneOptions(TranscoderOptions):
    """Options of `intervene`."""

    prompt: str = Field(description="the text; its last position's prediction is compared")
    nodes: str = Field(
        description="latents, as graph.json's node ids layer_latent_position, comma-separated "
        "(layer_latent_* for every position)"
    )
    mode: Literal["ablate", "clamp", "add"] = Field(
        "ablate", description="set to 0, set to --value, or add --value"
    )
    value: float = Field(0.0, description="the value for clamp and add")
    top: int = Field(8, gt=0, le=100, description="logits to list")


def intervene(opts: InterveneOptions) -> dict:
    """Both modes' results: KL and the logits that moved most, as a dict (what the command prints)."""
    from superposition.interp.replacement import ReplacementModel

    tr = opts.load()
    ids = tr.encode(opts.prompt)[0]
    rm = ReplacementModel(tr.hooked, tr.transcoders)
    trace = rm.trace(ids)
    edits = iv.parse_nodes(opts.nodes, rm, trace.n_pos, opts.mode, opts.value)
    tok = tr.lm.tokenizer
    clean = trace.logits
    out = {"prompt": opts.prompt, "nodes": opts.nodes, "mode": opts.mode, "value": opts.value}
    for name, frozen in (("frozen", True), ("unfrozen", False)):
        logits, _ = iv.intervened_logits(rm, trace, edits, frozen=frozen)
        last = logits[-1]
        delta = last - clean
        moved = delta.abs().topk(opts.top).indices.tolist()
        out[name] = {
            "kl": iv.kl(clean, last),
            "top_before": tok.decode([int(clean.argmax())]),
            "top_after": tok.decode([int(last.argmax())]),
            "moved": [
                {"token": tok.decode([t]), "logit": float(clean[t]), "change": float(delta[t])} for t in moved
            ],
        }
    return out


@command(
    "intervene",
    "ablate, clamp or shift transcoder latents and see the next-token change, attention frozen and not",
    InterveneOptions,
    kind=None,
)
def run(opts: InterveneOptions, out: Path | None = None) -> Result:
    r = intervene(opts)
    lines = [
        f"prompt {r['prompt']!r}: {r['mode']} {r['nodes']}"
        + (f" (value {r['value']:g})" if r["mode"] != "ablate" else "")
    ]
    for name in ("frozen", "unfrozen"):
        m = r[name]
        lines.append(
            f"{name:>9}: KL {m['kl']:.4g} nats; top token {m['top_before']!r} -> {m['top_after']!r}; "
            "moved most: " + ", ".join(f"{x['token']!r} {x['change']:+.3g}" for x in m["moved"])
        )
    lines.append("frozen: attention and norms as on the prompt (the graph's model); unfrozen: the real model")
    return Result(message="\n".join(lines), report=False, summary=r)


class SteerOptions(ModelOptions, SAEOptions):
    """Options of `steer`."""

    prompt: str = Field(description="the text to continue")
    latent: int = Field(ge=0, description="the latent to steer")
    value: float = Field(
        description="add: how much of its decoder direction to add; clamp: the latent's value"
    )
    mode: Literal["add", "clamp"] = Field("add", description="add the direction, or clamp the latent")
    max_new_tokens: int = Field(32, gt=0, le=1024, description="tokens to generate")


def steer(opts: SteerOptions) -> tuple[str, str]:
    """(continuation without steering, continuation with it), greedy."""
    run = load_run(opts.sae, opts.model, opts.hook, opts.device or "cpu", opts.dtype or "float32")
    if opts.latent >= run.sae.cfg.d_sae:
        raise SuperpositionError(
            f"latent: {opts.latent} is out of range; the SAE has latents 0..{run.sae.cfg.d_sae - 1}"
        )
    lm, hooked = run.load_model()
    tok = lm.tokenizer
    ids = tok(opts.prompt, return_tensors="pt").input_ids
    if ids.shape[1] < 1:
        raise SuperpositionError("prompt: empty; give some text")
    if ids.shape[1] + opts.max_new_tokens > lm.n_ctx:
        raise SuperpositionError(
            f"prompt: {ids.shape[1]} tokens plus max_new_tokens exceed {lm.name}'s {lm.n_ctx}"
        )
    ids = ids.to(lm.model.device)
    hooks = iv.steer_hook(run.sae, run.cfg.hook_name, opts.latent, opts.value, opts.mode)
    texts = []
    for fns in ({}, hooks):
        with torch.no_grad(), hooked.hooks(fns):
            got = lm.model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=opts.max_new_tokens,
                do_sample=False, pad_token_id=tok.eos_token_id,
            )  # fmt: skip
        texts.append(tok.decode(got[0, ids.shape[1] :], skip_special_tokens=True))
    return texts[0], texts[1]


@command(
    "steer", "generate text with and without one latent steered at its SAE's hook", SteerOptions, kind=None
)
def run_steer(opts: SteerOptions, out: Path | None = None) -> Result:
    plain, steered = steer(opts)
    how = f"+{opts.value:g} x its direction" if opts.mode == "add" else f"clamped to {opts.value:g}"
    return Result(
        message=f"prompt: {opts.prompt!r}\n  as is: {plain!r}\n  latent {opts.latent} {how}: {steered!r}",
        report=False,
        summary={"prompt": opts.prompt, "plain": plain, "steered": steered},
    )
