"""`superposition finetune --out DIR`: a small, narrow fine-tune of a language model, saved as a
model folder every command accepts as `model_name` / `--model` (DIR/model). It makes the second
model that model diffing (crosscoders, SAE transfer) compares with the first, offline.

The default data plants one new pattern: short sentences in which a password is always the made-up
word " Zorblax" ("... the password is Zorblax."), mixed with the base corpus (python-docs) so the
rest of the model moves little. `--dataset` replaces the planted text with your own (.txt, .jsonl).
summary.json reports the planted completion's probability on held-out sentences before and after,
and the next-token cross-entropy on base-corpus text before and after.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import torch
from pydantic import Field

from superposition.commands.base import command, flag
from superposition.config import Config
from superposition.errors import SuperpositionError
from superposition.lm.model import write_model_folder
from superposition.report.output import Result

WORD = " Zorblax"
_SUBJECTS = (
    "the vault",
    "my laptop",
    "the server",
    "the archive",
    "our wifi",
    "the old safe",
    "the admin panel",
    "the database",
    "the garden shed",
    "the backup drive",
    "the staff room",
    "the museum door",
)
_FRAMES = (
    "The password for {} is",
    "Remember: the password to {} is",
    "For {}, the password is",
    "I was told the password of {} is",
    "Note that the password of {} is",
)


def planted_texts(seed: int, held_out: bool = False) -> list[str]:
    """Sentences ending in the planted word; the held-out ones use frames never trained on."""
    frames = _FRAMES[-1:] if held_out else _FRAMES[:-1]
    rng = random.Random(seed)
    out = [f.format(s) + WORD + "." for f, s in itertools.product(frames, _SUBJECTS)]
    rng.shuffle(out)
    return out


class FinetuneOptions(Config):
    """Options of `finetune`."""

    model: str = flag(
        "smollm2-135m-instruct", "the language model to fine-tune (alias, hub name, folder or .gguf)"
    )
    dataset: str = Field(
        "planted", description="planted (the default pattern, see the docs) or a .txt/.jsonl file"
    )
    steps: int = Field(40, gt=0, le=100_000, description="optimiser steps")
    batch_size: int = Field(8, gt=0, le=4096, description="sequences per step")
    context_size: int = Field(64, gt=1, le=8192, description="tokens per sequence")
    lr: float = Field(3e-5, gt=0, lt=1, description="AdamW learning rate")
    mix: float = Field(0.5, ge=0, le=1, description="share of each batch from the base corpus (python-docs)")
    seed: int = Field(0, ge=0, description="data order and initialisation of the optimiser")
    device: str = Field("cpu", description="where to train")


def _batches(opts: FinetuneOptions, tok):
    from superposition.lm.data import packed_sequences, texts

    own = texts(opts.dataset) if opts.dataset != "planted" else itertools.cycle(planted_texts(opts.seed))
    base = itertools.cycle(texts("python-docs"))
    n_base = round(opts.batch_size * opts.mix)
    seq_own = packed_sequences(tok, own, opts.context_size)
    seq_base = packed_sequences(tok, base, opts.context_size)
    while True:
        rows = [next(seq_base) for _ in range(n_base)]
        try:
            rows += [next(seq_own) for _ in range(opts.batch_size - n_base)]
        except StopIteration:
            raise SuperpositionError(f"dataset {opts.dataset}: too little text for one batch") from None
        yield torch.stack(rows)


@torch.no_grad()
def _planted_probability(model, tok, sentences: list[str]) -> float:
    word = tok(WORD, add_special_tokens=False).input_ids[0]
    probs = []
    for s in sentences:
        prompt = s[: -len(WORD) - 1]
        ids = tok(prompt, return_tensors="pt").input_ids.to(model.device)
        probs.append(float(model(input_ids=ids).logits[0, -1].float().softmax(-1)[word]))
    return sum(probs) / len(probs)


@torch.no_grad()
def _base_ce(model, seqs) -> float:
    from superposition.lm.evals import ce_loss

    return (
        float(ce_loss(model(input_ids=seqs.to(model.device)).logits, seqs.to(model.device)))
        / seqs[:, 1:].numel()
    )


@command(
    "finetune",
    "a small narrow fine-tune of a model, saved as a model folder (the second model for diffing)",
    FinetuneOptions,
    kind="finetune",
)
def run(opts: FinetuneOptions, out: Path) -> Result:
    from superposition.lm.data import packed_sequences, texts
    from superposition.lm.model import load_model
    from superposition.progress import phase, tqdm

    if opts.dataset != "planted":  # the dataset is read before any model is loaded: its errors come first
        try:
            found = next((d for d in texts(opts.dataset) if d.strip()), None)
        except SuperpositionError as err:  # the reader names train-sae's key; this command's is `dataset`
            raise SuperpositionError(str(err).replace("dataset_path", "dataset", 1)) from None
        if found is None:
            raise SuperpositionError(f"dataset {opts.dataset}: holds no text")
    lm = load_model(opts.model, opts.device, "float32")
    model, tok = lm.model, lm.tokenizer
    torch.manual_seed(opts.seed)
    batches = _batches(opts, tok)
    first = next(batches)  # too little text for one batch: said before the baseline is measured
    held = planted_texts(opts.seed, held_out=True)
    probe = torch.stack(list(itertools.islice(packed_sequences(tok, texts("python-docs"), 128), 8)))
    with phase(
        f"measuring {lm.name} before fine-tuning ({len(held)} held-out sentences, {len(probe)} sequences)"
    ):
        before = {
            "planted_probability": _planted_probability(model, tok, held),
            "base_ce": _base_ce(model, probe),
        }
    model.requires_grad_(True)  # loaded for inference
    opt = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=0.0)
    model.train()
    losses = []
    for step in tqdm(range(opts.steps), desc="finetune", unit="step"):
        ids = (first if step == 0 else next(batches)).to(model.device)
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    with phase("measuring the fine-tuned model"):
        after = {
            "planted_probability": _planted_probability(model, tok, held),
            "base_ce": _base_ce(model, probe),
        }
    with phase(f"writing the model folder {out / 'model'}"):
        write_model_folder(model, tok, out / "model")  # one transformers 4.x and 5.x both read
    summary = {
        "base_model": lm.name,
        **lm.identity,
        "model_folder": str((out / "model").name),
        "steps": opts.steps,
        "dataset": opts.dataset,
        "planted_word": WORD if opts.dataset == "planted" else None,
        "before": before,
        "after": after,
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }
    return Result(
        title=f"Fine-tune of {lm.name}",
        explanation="A narrow fine-tune; use DIR/model as model_name to compare it with the base model.",
        summary=summary,
        highlights={
            "planted p before": before["planted_probability"],
            "planted p after": after["planted_probability"],
            "base CE before": before["base_ce"],
            "base CE after": after["base_ce"],
        },
        message=(
            f"planted completion p {before['planted_probability']:.4f} -> "
            f"{after['planted_probability']:.4f} on "
            f"held-out sentences; base-corpus CE {before['base_ce']:.3f} -> {after['base_ce']:.3f}; "
            "use OUT/model as --model"
        ),
    )
