"""Prompts, the explainer, the scorers and their controls.

Scorers ask one question per example, so each answer has its own probability where the back-end
gives log-probabilities:

- detection: given the explanation, does the latent fire anywhere in this window? (activating
  scoring windows against negatives);
- fuzzing: given the explanation, is the one marked token a token it fires on? (each activating
  window twice: its strongest token marked, and a token where it is zero marked);
- simulation (back-ends with probes): the model predicts every token's activation 0-9 in one
  pre-filled answer; the score is Pearson r between the expected digit and the true activation
  over all tokens of the activating and negative windows.

The controls are the same scorers given another latent's explanation (`shuffled`, expected near
0.5 balanced accuracy) and given the top-tokens baseline, which needs no language model.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from superposition.errors import SuperpositionError
from superposition.interp.clients import Answer, Request
from superposition.interp.examples import LatentExamples, Window
from superposition.interp.scoring import binary_scores, pearson

YES_NO = ("Yes", "No")
DIGITS = tuple(str(d) for d in range(10))
HIGHLIGHT = 0.3  # explanation examples mark tokens at or above this fraction of the window's max

EXPLAIN_SYSTEM = (
    "You study a feature of a language model. You see short texts; the tokens where the feature fires "
    "are marked <<like this>>. Say in a few words what the feature responds to."
)
DEMO_USER = (
    "Examples:\n1. I went to the <<store>> to buy bread\n2. she works at a coffee <<shop>> downtown\n"
    "3. the farmers <<market>> opens on Sunday\n\n"
    "What does the feature respond to? Answer in at most 8 words."
)
DEMO_ANSWER = "places where things are sold, like shops"
JUDGE_SYSTEM = "You judge whether a description of a language-model feature fits a text. Answer Yes or No."
SIMULATE_SYSTEM = (
    "You predict how strongly a language-model feature fires on each token of a text, from 0 (not at all) "
    "to 9 (as strongly as it ever does)."
)


def _mark(tokens: Sequence[str], marked: set[int]) -> str:
    out = []
    for i, t in enumerate(tokens):
        if i in marked:
            stripped = t.lstrip()
            out.append(f"{t[: len(t) - len(stripped)]}<<{stripped}>>")
        else:
            out.append(t)
    return "".join(out).replace("\n", " ").strip()


def highlighted(w: Window, frac: float = HIGHLIGHT) -> str:
    top = max(w.acts) if w.acts else 0.0
    return _mark(w.tokens, {i for i, a in enumerate(w.acts) if top > 0 and a >= frac * top})


def plain(w: Window) -> str:
    return _mark(w.tokens, set())


# ---------------------------------------------------------------------- explainer
def explain_request(examples: Sequence[Window], seed: int = 0) -> Request:
    lines = "\n".join(f"{i + 1}. {highlighted(w)}" for i, w in enumerate(examples))
    user = f"Examples:\n{lines}\n\nWhat does the feature respond to? Answer in at most 8 words."
    return Request(
        (("system", EXPLAIN_SYSTEM), ("user", DEMO_USER), ("assistant", DEMO_ANSWER), ("user", user)),
        max_tokens=24,
        seed=seed,
    )


def parse_explanation(text: str) -> str | None:
    """The first sentence of the first non-empty line, without a leading 'Explanation:' or 'The
    feature responds to', or quotes; None if nothing is left."""
    for line in text.splitlines():
        line = re.sub(r"^\s*(explanation|answer)\s*[:\-]\s*", "", line, flags=re.I)
        line = re.sub(r"^\s*(the )?feature (responds|fires|reacts) (to|on)\s*[:\-]?\s*", "", line, flags=re.I)
        line = re.split(r"(?<=[a-z0-9\"')])\.\s", line, maxsplit=1)[0]
        for _ in range(2):  # quotes inside a full stop, or a full stop inside quotes
            line = line.strip().rstrip(".").strip().strip("\"'`*").strip()
        if line:
            return line[:200]
    return None


def top_tokens_explanation(examples: Sequence[Window], n: int = 3) -> str:
    """The baseline explainer: the tokens the latent fires on most in the explanation examples."""
    mass: Counter[str] = Counter()
    for w in examples:
        for t, a in zip(w.tokens, w.acts):
            if a > 0 and t.strip():
                mass[t.strip()] += a
    words = [t for t, _ in mass.most_common(n)]
    return "the tokens " + ", ".join(f'"{t}"' for t in words) if words else "nothing"


# ---------------------------------------------------------------------- scorers
def _yes_no(user: str, seed: int) -> Request:
    return Request((("system", JUDGE_SYSTEM), ("user", user)), max_tokens=1, seed=seed, choices=YES_NO)


def detection_requests(expl: str, ex: LatentExamples, seed: int = 0) -> tuple[list[Request], list[bool]]:
    items = [(w, True) for w in ex.scoring] + [(w, False) for w in ex.negatives]
    reqs = [
        _yes_no(
            f"Feature description: {expl}\n\nText: {plain(w)}\n\n"
            "Does the feature fire anywhere in this text? Answer Yes or No.",
            seed,
        )
        for w, _ in items
    ]
    return reqs, [y for _, y in items]


def fuzzing_requests(expl: str, ex: LatentExamples, seed: int = 0) -> tuple[list[Request], list[bool]]:
    reqs, labels = [], []
    rng = np.random.default_rng(seed)
    for w in ex.scoring:
        zero = [i for i, a in enumerate(w.acts) if a == 0 and w.tokens[i].strip()]
        marks = [(w.focus, True)] + ([(int(rng.choice(zero)), False)] if zero else [])
        for i, y in marks:
            reqs.append(
                _yes_no(
                    f"Feature description: {expl}\n\nText: {_mark(w.tokens, {i})}\n\n"
                    "Is the marked token <<...>> one the feature fires on? Answer Yes or No.",
                    seed,
                )
            )
            labels.append(y)
    return reqs, labels


def simulation_requests(
    expl: str, ex: LatentExamples, seed: int = 0
) -> tuple[list[Request], list[list[float]]]:
    reqs, truth = [], []
    for w in [*ex.scoring, *ex.negatives]:
        shown = [t.replace("\n", "↵").replace("\t", " ") or " " for t in w.tokens]
        segs: list[str] = []
        for t in shown:
            segs += [f"{t.strip() or repr(t)}\t", "0\n"]
        reqs.append(
            Request(
                (
                    ("system", SIMULATE_SYSTEM),
                    ("user", f"Feature description: {expl}\n\nText: {plain(w)}\n\nFor each token write the "
                     "token, a tab, and its activation from 0 to 9, one token per line."),
                ),
                max_tokens=0,
                seed=seed,
                choices=DIGITS,
                prefill=tuple(segs),
                probe_after=tuple(range(0, len(segs), 2)),
            )
        )  # fmt: skip
        truth.append(list(w.acts))
    return reqs, truth


def yes_probability(a: Answer) -> tuple[bool | None, float | None]:
    """The prediction (None when unreadable) and P(yes) where the answer has log-probabilities."""
    if a.error is not None:
        return None, None
    lp = a.choice_logprobs
    if lp and not (math.isinf(lp.get("Yes", -math.inf)) and math.isinf(lp.get("No", -math.inf))):
        y, n = lp.get("Yes", -math.inf), lp.get("No", -math.inf)
        m = max(y, n)
        p = math.exp(y - m) / (math.exp(y - m) + math.exp(n - m))
        return p > 0.5, p
    word = a.text.strip().lower()
    if word.startswith("yes"):
        return True, None
    if word.startswith("no"):
        return False, None
    return None, None


def score_binary(answers: Sequence[Answer], labels: Sequence[bool]) -> dict:
    pairs = [yes_probability(a) for a in answers]
    return binary_scores([p for p, _ in pairs], labels, [q for _, q in pairs])


def score_simulation(answers: Sequence[Answer], truth: Sequence[Sequence[float]]) -> dict:
    pred, true, failed = [], [], 0
    for a, t in zip(answers, truth):
        if a.error is not None or not a.probe_logprobs or len(a.probe_logprobs) != len(t):
            failed += 1
            continue
        for lp, v in zip(a.probe_logprobs, t):
            w = np.exp(np.array([lp[d] for d in DIGITS]) - max(lp.values()))
            pred.append(float((w * np.arange(10)).sum() / w.sum()))
            true.append(v)
    return {"pearson_r": pearson(pred, true) if pred else math.nan, "n_tokens": len(pred), "failed": failed}


def read_explanations(path: str | Path) -> dict[int, dict]:
    """An autointerp output's rows by latent (a folder holding explanations.jsonl, or the file)."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "explanations.jsonl"
    try:
        rows = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        return {int(r["latent"]): r for r in rows}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SuperpositionError(
            f"explanations {path}: not a readable autointerp output ({type(err).__name__}); make one with "
            "superposition autointerp"
        ) from None
