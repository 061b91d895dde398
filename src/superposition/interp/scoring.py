"""The arithmetic of explanation scores: balanced accuracy, F1, ROC AUC and Pearson r.

Inputs are plain sequences; `None` predictions (a failed or unparseable answer) are left out and
counted by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def balanced_accuracy(pred: Sequence[bool], label: Sequence[bool]) -> float:
    """(TPR + TNR) / 2: 0.5 for constant or random answers whatever the class balance. NaN when a
    class is absent."""
    p, y = np.asarray(pred, bool), np.asarray(label, bool)
    if y.all() or not y.any():
        return math.nan
    return float((p[y].mean() + (~p[~y]).mean()) / 2)


def f1(pred: Sequence[bool], label: Sequence[bool]) -> float:
    p, y = np.asarray(pred, bool), np.asarray(label, bool)
    tp, fp, fn = int((p & y).sum()), int((p & ~y).sum()), int((~p & y).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def auc(score: Sequence[float], label: Sequence[bool]) -> float:
    """ROC AUC as the Mann-Whitney probability that a positive outscores a negative (ties count
    half). NaN when a class is absent."""
    s, y = np.asarray(score, float), np.asarray(label, bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def pearson(a: Sequence[float], b: Sequence[float]) -> float:
    """Pearson r; NaN when either side is constant."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def binary_scores(pred: Sequence[bool | None], label: Sequence[bool], p_yes: Sequence[float | None]) -> dict:
    """balanced_accuracy, f1, auc (where every answer has a probability) and the counts."""
    keep = [i for i, p in enumerate(pred) if p is not None]
    pr = [bool(pred[i]) for i in keep]
    y = [bool(label[i]) for i in keep]
    out = {
        "balanced_accuracy": balanced_accuracy(pr, y) if keep else math.nan,
        "f1": f1(pr, y) if keep else math.nan,
        "n": len(keep),
        "failed": len(pred) - len(keep),
    }
    probs = [p_yes[i] for i in keep]
    out["auc"] = auc(probs, y) if keep and all(p is not None for p in probs) else None
    return out
