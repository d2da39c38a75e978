"""Accuracy through one helper that checks shapes.

``np.equal(y_test, y_pred).mean()`` with ``y_test`` of shape (N, 1) and ``y_pred`` of
shape (N,) broadcasts to an (N, N) matrix and reports about 0.1 even for perfect
predictions. This helper refuses shapes that would broadcast.
"""
from __future__ import annotations

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
