"""`superposition self-explain RUN_DIR --out DIR`: the language model explains a latent itself.

Following Patchscopes/SelfIE and the "self-explaining SAE features" recipe: the prompt asks for the
meaning of a placeholder word X, and at the placeholder's positions the residual stream after
block `layer` (the SAE's own by default) is replaced by scale × the latent's unit decoder
direction, in multiples of the median residual norm there. The model then completes
`... the word "X" means "`. For each scale the run records the completion, the self-similarity
(cosine of the last prompt token's residual after the final block with the direction: does the
model still carry the latent when it starts to answer?) and the entropy of its next-token
distribution (nats). The chosen scale maximises self-similarity − entropy / ln(vocabulary), i.e.
the model carries the latent and answers with confidence.
"""

from __future__ import annotations

import html
import math
import sys
from pathlib import Path

import torch
from pydantic import Field, field_validator

from superposition.atomic import write_jsonl
from superposition.commands.base import LatentOptions, ModelOptions, SAEOptions, command
from superposition.errors import SuperpositionError
from superposition.report.output import Result
from superposition.runs.targets import load_run

KIND = "self-explain"
DEFAULT_SCALES = (0.5, 1.0, 2.0, 4.0, 8.0)
PLACEHOLDER = "X"


def parse_scales(text: str | None) -> list[float]:
    if text is None:
        return list(DEFAULT_SCALES)
    try:
        scales = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise SuperpositionError(f"scales {text!r}: comma-separated positive numbers, e.g. 1,2,4") from None
    if not scales or any(not math.isfinite(s) or s <= 0 for s in scales):
        raise SuperpositionError(f"scales {text!r}: comma-separated positive numbers, e.g. 1,2,4")
    return scales


class SelfExplainOptions(LatentOptions, ModelOptions, SAEOptions):
    """Options of `self-explain` (--latents: default 20)."""

    layer: int | None = Field(None, description="layer to patch (default: the SAE's)")
    scales: str | None = Field(
        None,
        description="comma-separated multiples of the typical residual norm to sweep (default 0.5,1,2,4,8)",
    )
    max_tokens: int = Field(16, gt=0, le=1024, description="tokens to generate (at most 1024)")

    @field_validator("scales")
    @classmethod
    def _scales(cls, v: str | None) -> str | None:
        parse_scales(v)
        return v


def _prompt_ids(tok) -> tuple[list[int], list[int]]:
    msgs = [{"role": "user", "content": f'What is the meaning of the word "{PLACEHOLDER}"?'}]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    text += f'The word "{PLACEHOLDER}" means "'
    ids = tok.encode(text, add_special_tokens=False)
    x = tok.encode(PLACEHOLDER, add_special_tokens=False)
    if len(x) != 1:
        raise SuperpositionError(
            f"self-explain: the placeholder {PLACEHOLDER!r} is not one token for this model"
        )
    where = [i for i, t in enumerate(ids) if t == x[0]]
    if not where:
        raise SuperpositionError("self-explain: the placeholder did not survive tokenisation")
    return ids, where


@torch.no_grad()
def explain_latent(
    hooked,
    tok,
    prompt: tuple[list[int], list[int]],
    direction: torch.Tensor,
    layer: int,
    scales: list[float],
    max_tokens: int,
    norm: float,
    device: str = "cpu",
) -> list[dict]:
    """One completion per scale (a batch): the text, self-similarity and entropy. `prompt` is
    `_prompt_ids(tok)`: the token ids and the placeholder's positions."""
    ids, where = prompt
    unit = direction / direction.norm().clamp(min=1e-12)
    vecs = torch.stack([s * norm * unit for s in scales]).to(device)  # (scale, d_model)
    batch = torch.tensor([ids] * len(scales), device=device)
    last = hooked.n_layers - 1
    seen: dict[str, torch.Tensor] = {}

    def patch(x: torch.Tensor):
        if x.shape[1] <= max(where):  # a generation step after the prompt: leave it alone
            return None
        x = x.clone()
        x[:, where] = vecs.to(x.dtype).unsqueeze(1)
        return x

    def capture(x: torch.Tensor):
        if x.shape[1] > max(where) and "final" not in seen:
            seen["final"] = x[:, -1].float()

    def patch_and_capture(x: torch.Tensor):
        new = patch(x)
        capture(x if new is None else new)
        return new

    if layer == last:  # one hook point both patches and is read
        hooks = {f"blocks.{layer}.hook_resid_post": patch_and_capture}
    else:
        hooks = {f"blocks.{layer}.hook_resid_post": patch, f"blocks.{last}.hook_resid_post": capture}
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    with hooked.hooks(hooks):
        out = hooked.model.generate(
            input_ids=batch,
            attention_mask=torch.ones_like(batch),
            max_new_tokens=max_tokens,
            do_sample=False,
            top_p=None,
            top_k=None,
            temperature=None,
            pad_token_id=pad,
            output_logits=True,
            return_dict_in_generate=True,
        )
    logp = torch.log_softmax(out.logits[0].float(), -1)  # first answer token
    entropy = -(logp.exp() * logp).sum(-1)
    sim = torch.nn.functional.cosine_similarity(seen["final"], unit.float().unsqueeze(0).to(device), dim=-1)
    rows = []
    for b, s in enumerate(scales):
        text = tok.decode(out.sequences[b, len(ids) :], skip_special_tokens=True)
        rows.append(
            {
                "scale": s,
                "explanation": text.split('"')[0].strip(),
                "self_similarity": float(sim[b]),
                "entropy": float(entropy[b]),
            }
        )
    return rows


def median_residual_norm(hooked, ids: list[int], layer: int, device: str = "cpu") -> float:
    """The median norm of the residual after block `layer` over the prompt's tokens (the first,
    whose norm is often an outlier, left out)."""
    name = f"blocks.{layer}.hook_resid_post"
    act = hooked.run_with_cache(torch.tensor([ids], device=device), [name])[name][0, 1:]
    return float(act.float().norm(dim=-1).median())


@command("self-explain", "the model explains a latent itself: its direction patched into a prompt",
         SelfExplainOptions, kind=KIND)  # fmt: skip
def run(opts: SelfExplainOptions, out: Path) -> Result:
    from superposition.lm.analysis import decoder_in_residual
    from superposition.lm.hooks import read_names
    from superposition.progress import tqdm

    sweep = parse_scales(opts.scales)
    run = load_run(opts.sae, opts.model, opts.hook, opts.device, opts.dtype)
    chosen = opts.chosen(run.sae.cfg.d_sae, default=20)
    lm, hooked = run.load_model()
    if getattr(lm.tokenizer, "chat_template", None) is None:
        raise SuperpositionError(
            f"self-explain: {run.cfg.model_name} has no chat template (needs an instruct model)"
        )
    own = hooked.parse(read_names(run.cfg.hook_name)[-1])[0]
    layer = own if opts.layer is None else opts.layer
    if not 0 <= layer < hooked.n_layers:
        raise SuperpositionError(f"layer: must be in 0..{hooked.n_layers - 1}, got {layer}")
    dirs = decoder_in_residual(hooked, run.sae, run.cfg.hook_name).float()
    prompt = _prompt_ids(lm.tokenizer)
    norm = median_residual_norm(hooked, prompt[0], layer, run.cfg.device)
    vocab = math.log(hooked.model.config.vocab_size)
    rows = []
    print(f"self-explain: patching after block {layer} at {len(sweep)} scales", file=sys.stderr, flush=True)
    for j in tqdm(chosen, desc="self-explain", leave=False):
        sw = explain_latent(
            hooked, lm.tokenizer, prompt, dirs[j], layer, sweep, opts.max_tokens, norm, run.cfg.device
        )
        best = max(sw, key=lambda r: r["self_similarity"] - r["entropy"] / vocab)
        rows.append({"latent": j, "layer": layer, **best, "sweep": sw})
    write_jsonl(out / "self_explanations.jsonl", rows)
    summary = {
        "sae": str(run.path),
        "model_name": run.cfg.model_name,
        "layer": layer,
        "scales": sweep,
        "residual_norm": norm,
        "latents": len(rows),
    }
    table = "".join(
        f"<tr><td>{r['latent']}</td><td>{html.escape(r['explanation'])}</td><td>{r['scale']:g}</td>"
        f"<td>{r['self_similarity']:.3f}</td><td>{r['entropy']:.2f}</td></tr>"
        for r in rows
    )
    return Result(
        title="self-explain",
        explanation=(
            f"<p>Each latent's decoder direction patched after block {layer} into a prompt asking what "
            "a placeholder word means; the best scale per latent.</p><table><tr><th>latent</th>"
            f"<th>explanation</th><th>scale</th><th>self-similarity</th><th>entropy</th></tr>{table}</table>"
        ),
        summary=summary,
        highlights={"latents": len(rows), "layer": layer},
        message=f"{len(rows)} latents explained at layer {layer}",
    )
