"""Subject–verb agreement pairs from templates (after Marks et al. 2024 and Finlayson et al. 2021),
made offline: the clean prompt has a singular subject (answer " is"), the patch the same prompt
with the subject plural (answer " are"); a distractor noun of either number sits in between in the
harder templates, so a model that agrees with the nearest noun fails them.

    simple   The {subject}
    pp       The {subject} near the {distractor}
    rc       The {subject} that the {distractor} {likes/like}

`sva_pairs(template, tokenizer)` keeps the pairs whose clean and patch prompts are the same number
of tokens and of the most common length (so they batch), with single-token answers.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter

NOUNS = (
    "author", "pilot", "surgeon", "farmer", "manager", "customer", "officer", "teacher", "senator",
    "dancer", "doctor", "lawyer", "painter", "player", "singer", "student", "writer", "guard",
    "baker", "driver", "minister", "architect", "banker", "consultant",
)  # fmt: skip
TEMPLATES = ("simple", "pp", "rc")


def _prompts(template: str, subject: str, distractor: str, distractor_plural: bool) -> tuple[str, str]:
    other = distractor + ("s" if distractor_plural else "")
    if template == "simple":
        body = "The {}"
    elif template == "pp":
        body = "The {} near the " + other
    else:
        body = "The {} that the " + other + (" like" if distractor_plural else " likes")
    return body.format(subject), body.format(subject + "s")


def sva_pairs(template: str, tokenizer=None, n: int = 64, seed: int = 0) -> list[dict]:
    """Up to n pairs of one template (see the module docstring), deterministic for a seed."""
    if template not in TEMPLATES:
        raise ValueError(f"template: one of {', '.join(TEMPLATES)}, got {template!r}")
    rng = random.Random(seed)
    combos = [(s, d, pl) for s, d in itertools.permutations(NOUNS, 2) for pl in (False, True)]
    if template == "simple":
        combos = [(s, NOUNS[0], False) for s in NOUNS]
    rng.shuffle(combos)
    pairs = []
    for s, d, pl in combos:
        clean, patch = _prompts(template, s, d, pl)
        pairs.append({"clean": clean, "patch": patch, "clean_answer": " is", "patch_answer": " are"})
    if tokenizer is None:
        return pairs[:n]

    def length(text):
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    for answer in (" is", " are"):
        if length(answer) != 1:
            raise ValueError(f"the tokenizer splits {answer!r}; the SVA templates need one-token answers")
    same = [(p, length(p["clean"])) for p in pairs if length(p["clean"]) == length(p["patch"])]
    if not same:
        return []
    common = Counter(n_tok for _, n_tok in same).most_common(1)[0][0]
    return [p for p, n_tok in same if n_tok == common][:n]
