"""`superposition analyze`: the latents behind one prompt's next token, as a table.

For the last position of the prompt and a target token t (default: the model's top prediction):
activation z_j, direct logit attribution z_j (d_j ⊙ g)·W_U[t], attribution patching
z_j ∂logit_t/∂z_j, and the exact change in logit_t when latent j is ablated."""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field

from superposition.commands.base import ModelOptions, SAEOptions, command
from superposition.errors import SuperpositionError
from superposition.lm import analysis as an
from superposition.report.output import Result
from superposition.runs.targets import load_run


class AnalyzeOptions(ModelOptions, SAEOptions):
    """Options of `analyze`."""

    prompt: str = Field(description="text; analysed at its last token")
    token: str | None = Field(
        None, description="target next token (text; default: the model's top prediction)"
    )
    top: int = Field(10, gt=0, description="latents to list")


@command(
    "analyze",
    "which latents drive a prompt's next token: activation, attribution, ablation",
    AnalyzeOptions,
    kind=None,
)
def run(opts: AnalyzeOptions, out: Path | None = None) -> Result:
    """SAE is a train-sae run or any readable SAE (with model and hook when it names none)."""
    text = analyze_prompt(
        opts.sae, opts.prompt, opts.token, opts.top, opts.model, opts.hook, opts.device, opts.dtype
    )
    return Result(message=text, report=False)


def analyze_prompt(
    run_dir: str | Path, prompt: str, token: str | None = None, top: int = 10, model: str | None = None,
    hook: str | None = None, device: str | None = None, dtype: str | None = None,
) -> str:  # fmt: skip
    """The table `analyze` prints. One prompt: the CPU in float32 unless `device`/`dtype` say otherwise."""
    run = load_run(run_dir, model, hook, device or "cpu", dtype or "float32")
    cfg, sae = run.cfg, run.sae.batched
    if sae.transcodes:
        raise SuperpositionError(
            f"{run_dir}: analyze explains SAEs spliced at one hook; a transcoder reads the MLP's input and "
            "writes its output (use eval-sae or dashboard for it)"
        )
    lm, hooked = run.load_model()
    ids = lm.tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    if cfg.prepend_bos and lm.tokenizer.bos_token_id is not None:
        ids = torch.cat([torch.tensor([[lm.tokenizer.bos_token_id]]), ids], 1)
    if ids.shape[1] < 2:
        raise SuperpositionError("prompt: needs at least one token")
    if ids.shape[1] > lm.n_ctx:
        raise SuperpositionError(f"prompt: {ids.shape[1]} tokens; {cfg.model_name} reads at most {lm.n_ctx}")
    with torch.no_grad():
        logits, z = an.spliced_logits(hooked, sae, cfg.hook_name, ids)
    if token is None:
        target = int(logits[0, -1].argmax())
    else:
        enc = lm.tokenizer(token, add_special_tokens=False).input_ids
        if len(enc) != 1:
            raise SuperpositionError(
                f"token {token!r}: is {len(enc)} tokens; give text that is exactly one token"
            )
        target = enc[0]
    z_last = z[0, -1]

    def metric(lg):
        return lg[0, -1, target]

    attr = an.attribution_patching(hooked, sae, cfg.hook_name, ids, metric)[0, -1]
    dla = an.direct_logit_attribution(hooked, sae, cfg.hook_name, z_last, target)
    order = attr.abs().argsort(descending=True)[:top]
    lines = [
        f"prompt: {prompt!r}  -> target {lm.tokenizer.decode([target])!r} (logit "
        f"{logits[0, -1, target]:.3f}); "
        f"{int((z_last > 0).sum())} latents active at the last token",
        f"{'latent':>7} {'activation':>11} {'DLA':>9} {'attrib.':>9} {'ablation':>9}",
    ]
    for j in order.tolist():

        def zero_j(zz, j=j):
            zz = zz.clone()
            zz[0, -1, j] = 0
            return zz

        with torch.no_grad():
            ablated, _ = an.spliced_logits(hooked, sae, cfg.hook_name, ids, zero_j)
        effect = float(ablated[0, -1, target] - logits[0, -1, target])
        lines.append(
            f"{j:>7} {float(z_last[j]):>11.4g} {float(dla[j]):>9.4g} {float(attr[j]):>9.4g} {effect:>9.4g}"
        )
    lines.append(
        "DLA: direct path only; attrib.: gradient × activation (estimates −ablation); ablation: exact change "
        "in the target logit"
    )
    return "\n".join(lines)
