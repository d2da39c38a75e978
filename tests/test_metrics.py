import numpy as np
import pytest

from helpers.metrics import accuracy


def test_perfect_predictions_score_one_where_the_broadcast_bug_scores_a_tenth():
    y = np.arange(1000) % 10
    assert accuracy(y, y) == 1.0
    # the published bug: labels of shape (N, 1) against predictions of shape (N,)
    assert abs(np.equal(y.reshape(-1, 1), y).mean() - 0.1) < 1e-9


def test_labels_of_shape_n_1_are_refused():
    y = np.arange(10)
    with pytest.raises(ValueError, match="broadcasts"):
        accuracy(y.reshape(-1, 1), y)


def test_predictions_of_shape_n_1_are_refused_too():
    y = np.arange(10)
    with pytest.raises(ValueError, match=r"\(10, 1\)"):
        accuracy(y, y.reshape(-1, 1))


def test_probabilities_are_argmaxed_and_lengths_checked():
    probs = np.eye(10)[[3, 1, 2]]
    assert accuracy(np.array([3, 1, 0]), probs) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="N=2"):
        accuracy(np.array([3, 1]), probs)
    with pytest.raises(ValueError, match="zero samples"):
        accuracy(np.array([], int), np.array([], int))
