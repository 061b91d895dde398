"""Examples of one latent for explaining and for scoring, drawn disjointly.

Every example is a token window around one (sequence, position) of the held-out text. The
explanation examples are the top activations and samples from activation quantiles; the scoring
examples come only from *other* sequences (so no scoring window shares a token with an
explanation window, which delphi's reuse of examples allows), spread over the activation range;
the negatives are windows of still other sequences where the latent is zero throughout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from superposition.lm.analysis import LatentActivations, example_at


class NoExamples(Exception):
    """A latent without enough held-out activations to explain or score (e.g. a dead latent)."""


@dataclass
class Window:
    seq: int
    pos: int  # the example's token: its activation is `value`
    tokens: list[str]
    acts: list[float]  # the latent's activation on every token of the window
    focus: int  # index of `pos` within the window
    value: float

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class LatentExamples:
    explanation: list[Window]
    scoring: list[Window]  # activating
    negatives: list[Window]  # not activating anywhere in the window


def _window(
    la: LatentActivations, j: int, seq: int, pos: int, before: int, after: int, decode: Callable[[int], str]
) -> Window:
    e = example_at(la, j, seq * la.seqs.shape[1] + pos, 0.0, before, after)
    return Window(seq, pos, [decode(t) for t in e.token_ids], e.acts, e.focus, float(e.acts[e.focus]))


def _spread(n_items: int, n: int) -> list[int]:
    """n indices spread evenly over range(n_items) (all of them when n ≥ n_items)."""
    if n >= n_items:
        return list(range(n_items))
    return sorted({int(round(x)) for x in np.linspace(0, n_items - 1, n)})


def select_examples(
    la: LatentActivations,
    j: int,
    decode: Callable[[int], str],
    n_top: int = 8,
    n_quantile: int = 4,
    n_score: int = 5,
    n_negative: int = 5,
    before: int = 10,
    after: int = 3,
    seed: int = 0,
) -> LatentExamples:
    """At most one example per sequence in each set, and no sequence in two sets. A latent that fires
    in fewer than `n_top` + `n_score` sequences gives about a third of them to scoring."""
    tok, val = la.of(j)
    if len(val) == 0:
        raise NoExamples(f"latent {j} never fires on the {la.seqs.shape[0]} held-out sequences (dead latent)")
    ctx = la.seqs.shape[1]
    seq_of, pos_of = tok // ctx, tok % ctx
    # each sequence's strongest activation, strongest first (tok/val are sorted by value)
    _, first = np.unique(seq_of, return_index=True)
    best = np.sort(first)
    used: set[int] = set()

    def take(indices) -> list[Window]:
        out = []
        for i in indices:
            s = int(seq_of[i])
            used.add(s)
            out.append(_window(la, j, s, int(pos_of[i]), before, after, decode))
        return out

    if len(best) < 2:
        raise NoExamples(
            f"latent {j} fires in only 1 held-out sequence: too few to both explain and score "
            "(raise `sequences`)"
        )
    # with few sequences, keep about a third of them (up to n_score) for scoring
    n_top = min(n_top, len(best) - min(n_score, max(1, len(best) // 3)))
    explanation = take(best[:n_top])
    rest = best[n_top:]
    # activation-quantile samples for the explanation, then the scoring set over the range left
    if n_quantile and len(rest) > n_quantile + n_score:
        q = [rest[k] for k in _spread(len(rest), n_quantile + n_score)[1::2]][:n_quantile]
        explanation += take(q)
        rest = np.array([i for i in rest if int(seq_of[i]) not in used])
    scoring = take(rest[k] for k in _spread(len(rest), n_score))
    # negatives: windows of unused sequences with no activation at all
    rng = np.random.default_rng(seed + j)
    fires = set(tok.tolist())
    negatives: list[Window] = []
    candidates = [s for s in rng.permutation(la.seqs.shape[0]).tolist() if s not in used]
    for s in candidates:
        if len(negatives) >= n_negative:
            break
        for _ in range(8):
            pos = int(rng.integers(min(before, ctx - 1), ctx - min(after, ctx - 1)))
            lo, hi = max(0, pos - before), min(ctx, pos + after + 1)
            if not any(s * ctx + t in fires for t in range(lo, hi)):
                used.add(s)
                negatives.append(_window(la, j, s, pos, before, after, decode))
                break
    return LatentExamples(explanation, scoring, negatives)
