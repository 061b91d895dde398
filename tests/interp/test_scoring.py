"""Known answers for the scoring arithmetic, and the scorers driven end to end by scripted clients."""

import math

import numpy as np
import pytest
import torch

from superposition.commands.autointerp import score_latent
from superposition.interp import explain as ex
from superposition.interp.clients import Answer, CachedClient, ScriptedClient
from superposition.interp.examples import LatentExamples, NoExamples, Window, select_examples
from superposition.interp.scoring import auc, balanced_accuracy, f1, pearson
from superposition.lm.analysis import LatentActivations


def test_balanced_accuracy_known_answers():
    label = [True] * 50 + [False] * 50
    assert balanced_accuracy(label, label) == 1.0
    assert balanced_accuracy([True] * 100, label) == 0.5 and balanced_accuracy([False] * 100, label) == 0.5
    pred = [True] * 40 + [False] * 10 + [False] * 30 + [True] * 20  # 40/50 positives, 30/50 negatives right
    assert balanced_accuracy(pred, label) == pytest.approx(0.7)
    assert f1(pred, label) == pytest.approx(2 * 40 / (2 * 40 + 20 + 10))  # tp 40, fp 20, fn 10
    # unbalanced classes: still 0.5 for a constant answer
    assert balanced_accuracy([True] * 10, [True] * 9 + [False]) == 0.5
    assert math.isnan(balanced_accuracy([True, False], [True, True]))


def test_auc_and_pearson_known_answers():
    assert auc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auc([0.5] * 4, [True, True, False, False]) == 0.5  # ties count half
    assert auc([0.9, 0.1, 0.5, 0.3], [True, True, False, False]) == pytest.approx(0.5)  # hand: 2 of 4 pairs
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0) and pearson(
        [1, 2, 3], [3, 2, 1]
    ) == pytest.approx(-1)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))


def _window(seq: int, acts: list[float], focus: int) -> Window:
    toks = [f" w{seq}_{i}" for i in range(len(acts))]
    return Window(seq, focus, toks, acts, focus, acts[focus])


EXAMPLES = LatentExamples(
    explanation=[_window(0, [0, 9, 0], 1)],
    scoring=[_window(s, [0, 0, 3 + s, 1, 0], 2) for s in range(1, 6)],
    negatives=[_window(s, [0, 0, 0, 0, 0], 2) for s in range(6, 11)],
)
POSITIVE_TEXTS = {ex.plain(w) for w in EXAMPLES.scoring}


def _oracle(r) -> Answer:
    """Answers every scorer correctly: it knows which windows fire and which token is marked."""
    user = r.messages[-1][1]
    if r.prefill:  # simulation: put all mass on the true activation (integers 0..9 here)
        text = user.split("Text: ")[1].split("\n\n")[0]
        w = next(w for w in [*EXAMPLES.scoring, *EXAMPLES.negatives] if ex.plain(w) == text)
        return Answer(
            probe_logprobs=[{d: (0.0 if int(d) == int(a) else -50.0) for d in ex.DIGITS} for a in w.acts]
        )
    text = user.split("Text: ")[1].split("\n\n")[0]
    if "marked token" in user:
        w = next(w for w in EXAMPLES.scoring if ex.plain(w) == text.replace("<<", "").replace(">>", ""))
        marked = text.split("<<")[1].split(">>")[0]
        yes = w.acts[[t.strip() for t in w.tokens].index(marked)] > 0
    else:
        yes = text in POSITIVE_TEXTS
    return Answer(
        text="Yes" if yes else "No", choice_logprobs={"Yes": 0.0 if yes else -9.0, "No": -9.0 if yes else 0.0}
    )


def test_scorers_known_answers_with_scripted_clients(tmp_path):
    perfect = score_latent(
        CachedClient(ScriptedClient(_oracle), tmp_path / "a"), {"explanation": "x"}, EXAMPLES, 0
    )
    e = perfect["explanation"]
    assert (
        e["detection"]["balanced_accuracy"] == 1.0
        and e["detection"]["auc"] == 1.0
        and e["detection"]["n"] == 10
    )
    assert e["fuzzing"]["balanced_accuracy"] == 1.0 and e["fuzzing"]["n"] == 10  # each positive twice
    assert e["simulation"]["pearson_r"] == pytest.approx(1.0) and e["simulation"]["n_tokens"] == 50

    def always_yes(r):
        if r.prefill:
            return Answer(probe_logprobs=[dict.fromkeys(ex.DIGITS, 0.0)] * (len(r.prefill) // 2))
        return Answer(text="Yes")  # no log-probabilities: read from the text, no AUC

    const = score_latent(
        CachedClient(ScriptedClient(always_yes), tmp_path / "b"), {"explanation": "x"}, EXAMPLES, 0
    )
    c = const["explanation"]
    assert c["detection"]["balanced_accuracy"] == 0.5 and c["fuzzing"]["balanced_accuracy"] == 0.5
    assert c["detection"]["auc"] is None and math.isnan(c["simulation"]["pearson_r"])

    def garbled(r):
        return Answer(text="I think maybe") if not r.prefill else Answer(error="boom")

    bad = score_latent(
        CachedClient(ScriptedClient(garbled), tmp_path / "c"), {"explanation": "x"}, EXAMPLES, 0
    )
    assert bad["explanation"]["detection"]["failed"] == 10 and bad["explanation"]["detection"]["n"] == 0
    assert bad["explanation"]["simulation"]["failed"] == 10


def test_parse_and_baseline_explanations():
    assert ex.parse_explanation('Explanation: "shops and stores".') == "shops and stores"
    assert ex.parse_explanation("The feature responds to digits. And more.") == "digits"
    assert ex.parse_explanation("  \n ") is None
    assert ex.top_tokens_explanation(EXAMPLES.explanation) == 'the tokens "w0_1"'
    assert ex.highlighted(_window(0, [0, 1, 10, 2], 2)) == "w0_0 w0_1 <<w0_2>> w0_3"  # 30% of the max
    assert ex.highlighted(_window(0, [0, 4, 10, 2], 2)) == "w0_0 <<w0_1>> <<w0_2>> w0_3"


def _synthetic(seed: int, n_seq: int = 60, ctx: int = 32, d_sae: int = 4) -> LatentActivations:
    rng = np.random.default_rng(seed)
    toks, lats, vals = [], [], []
    for j in range(d_sae - 1):  # the last latent never fires
        hits = rng.choice(n_seq * ctx, size=int(rng.integers(30, 200)), replace=False)
        toks += hits.tolist()
        lats += [j] * len(hits)
        vals += rng.exponential(1.0, len(hits)).tolist()
    seqs = torch.randint(0, 100, (n_seq, ctx))
    return LatentActivations(
        seqs, np.array(toks), np.array(lats), np.array(vals, np.float32), d_sae, n_seq * ctx
    )


@pytest.mark.parametrize("seed", range(4))
def test_explanation_and_scoring_examples_never_overlap(seed):
    la = _synthetic(seed)
    for j in range(3):
        e = select_examples(la, j, str, seed=seed)
        ids = lambda ws: {(w.seq, w.pos) for w in ws}  # noqa: E731
        assert not ids(e.explanation) & ids(e.scoring) and not ids(e.negatives) & (
            ids(e.explanation) | ids(e.scoring)
        )
        seqs = [{w.seq for w in ws} for ws in (e.explanation, e.scoring, e.negatives)]
        assert not (seqs[0] & seqs[1]) and not (seqs[2] & (seqs[0] | seqs[1]))  # no shared window at all
        assert all(w.value > 0 for w in e.explanation + e.scoring)
        assert all(max(w.acts) == 0 for w in e.negatives) and len(e.negatives) == 5
        tok, val = la.of(j)
        assert e.explanation[0].value == pytest.approx(val[0])  # the top activation explains
        assert len(e.scoring) == 5 and min(w.value for w in e.scoring) < np.median(
            val
        )  # spread, not just tops
    with pytest.raises(NoExamples, match="dead latent"):
        select_examples(la, 3, str)
