"""Accuracy through one helper that checks shapes; calibration and error detection.

``np.equal(y_test, y_pred).mean()`` with ``y_test`` of shape (N, 1) and ``y_pred`` of
shape (N,) broadcasts to an (N, N) matrix and reports about 0.1 even for perfect
predictions. This helper refuses shapes that would broadcast.
"""
from __future__ import annotations

import math

import numpy as np


def accuracy(y_true, y_pred) -> float:
    """Fraction of correct predictions.

    Args:
        y_true: class ids of shape (N,). Shape (N, 1) is refused: flatten labels once,
            at load (``helpers.data`` does).
        y_pred: predicted class ids (N,) or class probabilities (N, n_classes) with
            n_classes > 1; predictions of shape (N, 1) are refused like labels of that shape.
    Used in: notebooks 02-06.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1:
        raise ValueError(f"y_true must have shape (N,), got {y_true.shape}: comparing (N, 1) with (N,) "
                         "broadcasts to (N, N); flatten the labels first (y.ravel())")
    if y_pred.ndim == 2 and y_pred.shape[1] == 1:
        raise ValueError(f"y_pred has shape {y_pred.shape}: class ids must be (N,) and probabilities "
                         "(N, n_classes); (N, 1) would be argmaxed to all zeros or broadcast")
    if y_pred.ndim == 2:
        y_pred = y_pred.argmax(axis=1)
    if y_pred.ndim != 1 or len(y_pred) != len(y_true):
        raise ValueError(f"y_pred must be (N,) labels or (N, n_classes) probabilities with N={len(y_true)}, "
                         f"got {np.asarray(y_pred).shape}")
    if len(y_true) == 0:
        raise ValueError("accuracy of zero samples is undefined")
    return float(np.mean(y_true == y_pred))


def accuracy_interval(y_true, y_pred, z: float = 1.96) -> tuple[float, float, float]:
    """Accuracy and its 95% Wilson interval: (accuracy, low, high).

    The interval is for the sampling of the evaluation images (N of them), not for the
    training seed. With N = 10,000 and an accuracy near 0.5 it is about ±1 point.
    """
    acc = accuracy(y_true, y_pred)
    return (acc, *wilson_interval(acc, len(np.asarray(y_true)), z))


def wilson_interval(accuracy_value: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """(low, high): the Wilson interval of an accuracy measured on ``n`` images (95% for z = 1.96)."""
    if n < 1 or not 0 <= accuracy_value <= 1:
        raise ValueError(f"need n >= 1 and an accuracy in [0, 1], got n={n}, accuracy={accuracy_value}")
    centre = (accuracy_value + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(accuracy_value * (1 - accuracy_value) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def mcnemar(right_a, right_b) -> tuple[int, int, float]:
    """Two models on the same images, compared image by image: McNemar's exact test.

    Only the images where they disagree count: ``only_a`` right for A alone, ``only_b`` for B
    alone. If the models were equally good, each disagreement would go either way with
    probability 1/2; the p-value is the two-sided binomial probability of a split at least
    this uneven. Overlapping intervals of two accuracies say much less: both are measured
    on the same images, so most of their sampling noise is shared.
    Returns: ``(only_a, only_b, p_value)``. Used in: notebooks 05, 06.
    """
    right_a, right_b = np.asarray(right_a, bool), np.asarray(right_b, bool)
    if right_a.shape != right_b.shape or right_a.ndim != 1:
        raise ValueError(f"need two (N,) arrays of right/wrong for the same images, got {right_a.shape} "
                         f"and {right_b.shape}")
    only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(right_b & ~right_a))
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return only_a, only_b, 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return only_a, only_b, min(1.0, 2 * tail / 2 ** n)


def _check_probabilities(y_true, probabilities):
    y_true, p = np.asarray(y_true), np.asarray(probabilities, dtype=np.float64)
    if y_true.ndim != 1:
        raise ValueError(f"y_true must have shape (N,), got {y_true.shape}; flatten the labels first (y.ravel())")
    if p.ndim != 2 or p.shape[0] != len(y_true) or p.shape[1] < 2:
        raise ValueError(f"probabilities must have shape (N, n_classes) with N={len(y_true)}, got {p.shape}")
    if len(y_true) == 0:
        raise ValueError("calibration of zero samples is undefined")
    return y_true, p


def reliability_bins(y_true, probabilities, n_bins: int = 15):
    """Confidence (the top probability) binned into ``n_bins`` equal-width bins on (0, 1].

    Returns (mean confidence, accuracy, count) per bin, NaN where a bin is empty: the
    points of a reliability diagram. A calibrated model has accuracy = confidence.
    """
    y_true, p = _check_probabilities(y_true, probabilities)
    confidence, correct = p.max(axis=1), (p.argmax(axis=1) == y_true)
    which = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore"):
        conf = np.bincount(which, weights=confidence, minlength=n_bins) / count
        acc = np.bincount(which, weights=correct, minlength=n_bins) / count
    return conf, acc, count


def expected_calibration_error(y_true, probabilities, n_bins: int = 15) -> float:
    """ECE: the gap |accuracy - confidence| of each bin, weighted by its share of the samples."""
    conf, acc, count = reliability_bins(y_true, probabilities, n_bins)
    filled = count > 0
    return float(np.sum(count[filled] * np.abs(acc[filled] - conf[filled])) / np.sum(count))


def roc_auc(scores, positives) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random negative.

    Ties count one half (the Mann-Whitney U statistic). Used with uncertainty as the score
    and wrong predictions as the positives: 0.5 flags errors no better than chance, 1.0
    ranks every error above every right answer.
    """
    scores, positives = np.asarray(scores, dtype=np.float64), np.asarray(positives)
    if scores.ndim != 1 or positives.shape != scores.shape:
        raise ValueError(f"scores and positives must be 1-D of one length, got {scores.shape} and {positives.shape}")
    positives = positives.astype(bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"the ROC area needs positives and negatives, got {n_pos} and {n_neg}")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks of ties, 1-based
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
