"""`superposition intervene` and `superposition steer`.

intervene RUN_DIR --prompt "..." --nodes 3_120_5,7_88_* [--mode ablate|clamp|add] [--value V]
    ablates, clamps or shifts transcoder latents (graph.json's node ids) and prints the change at
    the last position: KL from the model's distribution, and the logits that moved most, with
    attention frozen (the model the attribution graph describes: its edges predict these
    changes) and unfrozen (the real model).
steer SAE --prompt "..." --latent F[,G,...] --value V [--mode add|clamp|ablate] [--max-new-tokens N]
      [--temperature T --top-p P --seed S]
    generates text with and without the latents steered at the SAE's hook (greedy, or sampled with
    the same seed), and prints each latent's activation scale on held-out text to choose V by.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator

from superposition.commands.base import ModelOptions, SAEOptions, TranscoderOptions, command, parse_latent_ids
from superposition.errors import SuperpositionError
from superposition.interp import interventions as iv
from superposition.interp.attribution import zeroed_positions
from superposition.report.output import Result
from superposition.runs.targets import load_run


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
    value: float = Field(0.0, ge=-1e6, le=1e6, description="the value for clamp and add")
    top: int = Field(8, gt=0, le=100, description="logits to list")
    keep_bos: bool = Field(
        False,
        description="let `*` and explicit ids edit the BOS position, which attribution graphs leave out "
        "(circuit-tracer's rule)",
    )


def intervene(opts: InterveneOptions) -> dict:
    """Both modes' results: KL and the logits that moved most, as a dict (what the command prints)."""
    from superposition.interp.replacement import ReplacementModel

    tr = opts.load()
    ids = tr.encode(opts.prompt)[0]
    rm = ReplacementModel(tr.hooked, tr.replaces)
    trace = rm.trace(ids)
    first = zeroed_positions(ids, tr.lm.tokenizer.bos_token_id, tr.lm.names, opts.keep_bos)
    edits = iv.parse_nodes(opts.nodes, rm, trace.n_pos, opts.mode, opts.value, first)
    tok = tr.lm.tokenizer
    clean = trace.logits
    out = {"prompt": opts.prompt, "nodes": opts.nodes, "mode": opts.mode, "value": opts.value}
    for name, frozen in (("frozen", True), ("unfrozen", False)):
        logits, _ = iv.intervened_logits(rm, trace, edits, frozen=frozen)
        last = logits[-1]
        if not bool(torch.isfinite(last).all()):  # a NaN is never printed as a result
            raise SuperpositionError(
                f"value: the edit made the model's logits not finite ({name}); give a smaller value"
            )
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
    latent: str = Field(description="the latent to steer, or several comma-separated (3 or 3,17)")
    value: float = Field(
        0.0,
        ge=-1e6,
        le=1e6,
        description="add: how much of each decoder direction to add; clamp: each latent's value; "
        "ablate: unused",
    )
    mode: Literal["add", "clamp", "ablate"] = Field(
        "add", description="add the directions, clamp the latents to --value, or ablate them (clamp to 0)"
    )
    max_new_tokens: int = Field(32, gt=0, le=1024, description="tokens to generate")
    temperature: float = Field(
        0.0, ge=0.0, le=100.0, description="0: greedy; above 0: sampling at this temperature"
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="sampling: nucleus probability mass")
    seed: int | None = Field(None, description="sampling: the seed (both continuations use it)")
    scale_sequences: int = Field(
        16,
        ge=0,
        le=4096,
        description="held-out sequences over which each latent's activation scale is measured (0: skip)",
    )

    @field_validator("latent", mode="before")
    @classmethod
    def _latent(cls, v):  # from Python, latent=3 or latent=[3, 17] too; checked when the SAE is read
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        if isinstance(v, list | tuple):
            return ",".join(str(x) for x in v)
        return v


def steer(opts: SteerOptions) -> dict:
    """Both continuations (without and with the steering) and each latent's activation scale."""
    from superposition.lm.analysis import activation_scale, latent_activations
    from superposition.lm.hooked_sae import HookedSAEModel, Intervention
    from superposition.lm.store import ActivationStore

    run = load_run(opts.sae, opts.model, opts.hook, opts.device or "cpu", opts.dtype or "float32")
    latents = parse_latent_ids(opts.latent, "latent")
    d_sae = run.sae.cfg.d_sae
    if any(j >= d_sae for j in latents):
        raise SuperpositionError(f"latent: {opts.latent} is out of range; the SAE has latents 0..{d_sae - 1}")
    lm, hooked = run.load_model()
    model = HookedSAEModel(lm)
    bos = run.cfg.prepend_bos
    n_prompt = model.to_tokens(opts.prompt, bos).shape[1]  # empty or too long: one line, before any work
    if n_prompt + opts.max_new_tokens > lm.n_ctx:
        raise SuperpositionError(
            f"prompt: {n_prompt} tokens plus max_new_tokens exceed {lm.name}'s {lm.n_ctx}"
        )
    scale = {}
    if opts.scale_sequences:
        seqs = ActivationStore.for_run(run.cfg, lm, hooked, holdout=True).first_sequences(
            opts.scale_sequences
        )
        la = latent_activations(
            hooked, lm.tokenizer, run.sae, run.cfg.hook_name, seqs, run.cfg.model_batch_size, run.cfg.device
        )
        scale = {str(j): v for j, v in zip(latents, activation_scale(la, latents))}
    iv = Intervention(run.sae, latents, opts.mode, opts.value)
    kw = dict(max_new_tokens=opts.max_new_tokens, temperature=opts.temperature, top_p=opts.top_p,
              seed=opts.seed, prepend_bos=bos, return_type="continuation")  # fmt: skip
    plain = model.generate(opts.prompt, **kw)
    steered = model.generate(opts.prompt, interventions=[iv], **kw)
    return {"prompt": opts.prompt, "latents": latents, "mode": opts.mode, "value": opts.value,
            "temperature": opts.temperature, "seed": opts.seed, "plain": plain, "steered": steered,
            "scale": scale}  # fmt: skip


@command(
    "steer", "generate text with and without latents steered at their SAE's hook", SteerOptions, kind=None
)
def run_steer(opts: SteerOptions, out: Path | None = None) -> Result:
    r = steer(opts)
    names = ",".join(map(str, r["latents"]))
    plural = "s" if len(r["latents"]) > 1 else ""
    how = {
        "add": f"+{opts.value:g} x {'their directions' if plural else 'its direction'}",
        "clamp": f"clamped to {opts.value:g}",
        "ablate": "ablated",
    }[opts.mode]
    lines = [
        f"prompt: {opts.prompt!r}",
        f"  as is: {r['plain']!r}",
        f"  latent{plural} {names} {how}: {r['steered']!r}",
    ]
    for j, s in r["scale"].items():
        if s["fires"] == 0:
            lines.append(f"  latent {j}: never fires on {s['tokens']:,} held-out tokens")
        else:
            lines.append(
                f"  latent {j} scale: max {s['max']:.3g}, 99th percentile {s['p99']:.3g}, "
                f"median {s['median']:.3g} when firing; fires on {s['frequency']:.2%} of {s['tokens']:,} "
                "held-out tokens"
            )
    return Result(message="\n".join(lines), report=False, summary=r, title="steer",
                  highlights={"plain": r["plain"], "steered": r["steered"]})  # fmt: skip
