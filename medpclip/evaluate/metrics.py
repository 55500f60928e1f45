"""Metric arithmetic for the zero-shot evaluation: pure numpy, each with the value a random guess gets."""

from __future__ import annotations

import math

import numpy as np


def top1(scores: np.ndarray, truth: np.ndarray) -> float:
    """Share of rows whose highest-scoring column is ``truth`` (scores (n, K), truth (n,) column indices)."""
    if len(truth) == 0:
        return float("nan")
    return float((scores.argmax(axis=1) == truth).mean())


def balanced_accuracy(scores: np.ndarray, truth: np.ndarray) -> float:
    """Mean per-class recall over the classes that occur in ``truth``."""
    if len(truth) == 0:
        return float("nan")
    pred = scores.argmax(axis=1)
    return float(np.mean([(pred[truth == c] == c).mean() for c in np.unique(truth)]))


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U, ties counted half); NaN without both classes."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(values):  # average ranks over ties
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def macro_auc(scores: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
    """Mean AUC over the columns of a multi-label problem (scores and boolean labels, (n, K)) that have
    positives and negatives; returns (AUC, number of classes counted)."""
    aucs = [roc_auc(scores[:, k], labels[:, k]) for k in range(labels.shape[1])]
    aucs = [a for a in aucs if not math.isnan(a)]
    return (float(np.mean(aucs)) if aucs else float("nan")), len(aucs)


def _hit_chance(gallery: int, positives: int, k: int) -> float:
    """P(at least one of ``positives`` items in a random top-``k`` of ``gallery``)."""
    k = min(k, gallery)
    if positives <= 0:
        return 0.0
    if gallery - positives < k:
        return 1.0
    log_miss = sum(math.log(gallery - positives - i) - math.log(gallery - i) for i in range(k))
    return 1.0 - math.exp(log_miss)


def recall_at_k(scores: np.ndarray, positive: np.ndarray, ks=(1, 5, 10)) -> dict[int, tuple[float, float]]:
    """Retrieval with possibly several positives per query: ``scores`` and boolean ``positive`` are
    (queries, gallery). R@k = share of queries with a positive in the top k. Returns {k: (R@k, chance)};
    queries without any positive are left out."""
    has = positive.any(axis=1)
    scores, positive = scores[has], positive[has]
    out: dict[int, tuple[float, float]] = {}
    if len(scores) == 0:
        return {k: (float("nan"), float("nan")) for k in ks}
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked = np.take_along_axis(positive, order, axis=1)
    gallery = scores.shape[1]
    n_pos = positive.sum(axis=1)
    for k in ks:
        hit = ranked[:, :k].any(axis=1).mean()
        chance = float(np.mean([_hit_chance(gallery, int(m), k) for m in n_pos]))
        out[k] = (float(hit), chance)
    return out
