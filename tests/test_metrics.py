import numpy as np
import pytest

from helpers.metrics import accuracy
from tests.backends import once  # noqa: E402

pytestmark = once  # no Keras backend involved: checked once


def test_perfect_predictions_score_one_where_the_broadcast_bug_scores_a_tenth():
    y = np.arange(1000) % 10
    assert accuracy(y, y) == 1.0
    # the published bug: labels of shape (N, 1) against predictions of shape (N,)
    assert abs(np.equal(y.reshape(-1, 1), y).mean() - 0.1) < 1e-9


def test_labels_of_shape_n_1_are_read_as_n_never_broadcast():
    y = np.arange(1000) % 10
    assert accuracy(y.reshape(-1, 1), y) == 1.0  # the broadcast would give 0.1
    assert accuracy(y.reshape(-1, 1), np.roll(y, 1)) == 0.0


def test_predictions_of_shape_n_1_are_refused_too():
    y = np.arange(10)
    with pytest.raises(ValueError, match=r"\(10, 1\)"):
        accuracy(y, y.reshape(-1, 1))


def test_probabilities_are_argmaxed_and_lengths_checked():
    probs = np.eye(10)[[3, 1, 2]]
    assert accuracy(np.array([3, 1, 0]), probs) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="2 images but 3 y_pred"):
        accuracy(np.array([3, 1]), probs)
    with pytest.raises(ValueError, match="zero samples"):
        accuracy(np.array([], int), np.array([], int))


def test_wilson_interval_on_a_hand_computed_case():
    from helpers.metrics import accuracy_interval

    y = np.zeros(100, int)
    pred = np.r_[np.zeros(80, int), np.ones(20, int)]  # 80 of 100 right
    acc, low, high = accuracy_interval(y, pred)
    # Wilson: centre (0.8 + 1.96²/200) / (1 + 1.96²/100), half-width 1.96 sqrt(0.0016 + 1.96²/40000) / (1 + 1.96²/100)
    assert acc == 0.8 and low == pytest.approx(0.7112, abs=1e-4) and high == pytest.approx(0.8666, abs=1e-4)


def test_ece_and_reliability_bins_on_hand_made_probabilities():
    from helpers.metrics import expected_calibration_error, reliability_bins

    # four images at confidence 0.9 (3 right), two at confidence 0.6 (both right)
    p = np.array([[0.9, 0.1]] * 4 + [[0.4, 0.6]] * 2)
    y = np.array([0, 0, 0, 1, 1, 1])
    conf, acc, count = reliability_bins(y, p, n_bins=10)
    assert count[8] == 4 and count[5] == 2 and count.sum() == 6  # (0.8, 0.9] and (0.5, 0.6]
    assert conf[8] == pytest.approx(0.9) and acc[8] == pytest.approx(0.75) and acc[5] == 1.0
    # ECE = 4/6 * |0.75 - 0.9| + 2/6 * |1.0 - 0.6|
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.4)
    perfect = np.eye(2)[y]
    assert expected_calibration_error(y, perfect) == 0.0


def test_roc_area_on_hand_made_scores():
    from helpers.metrics import roc_auc

    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0  # every positive above every negative
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    # pairs (positive, negative): (0.4 > 0.3) yes, (0.4 > 0.5) no, (0.6 > 0.3) yes, (0.6 > 0.5) yes: 3 of 4
    assert roc_auc([0.3, 0.4, 0.5, 0.6], [0, 1, 0, 1]) == pytest.approx(0.75)
    assert roc_auc([0.5, 0.5, 0.5], [0, 1, 1]) == pytest.approx(0.5)  # ties count one half


def test_mcnemar_counts_the_disagreements_and_gives_the_exact_two_sided_p_value():
    from helpers.metrics import mcnemar

    a = np.array([1, 1, 1, 0, 0, 1, 1, 0], bool)
    b = np.array([1, 0, 0, 0, 1, 1, 0, 0], bool)
    # disagreements: A alone right on 3 images, B alone on 1; P(split at least 3-1 of 4) = 2 * (1 + 4) / 16
    assert mcnemar(a, b) == (3, 1, pytest.approx(0.625))
    assert mcnemar(a, a) == (0, 0, 1.0)
    many_a, many_b = np.r_[np.ones(60, bool), np.zeros(40, bool)], np.r_[np.zeros(60, bool), np.ones(40, bool)]
    only_a, only_b, p = mcnemar(many_a, many_b)  # 60 against 40: two-sided binomial p = 0.0569
    assert (only_a, only_b) == (60, 40) and p == pytest.approx(0.05689, abs=1e-4)
    with pytest.raises(ValueError, match="same images"):
        mcnemar(a, b[:5])


@pytest.mark.parametrize("call", [
    lambda m: m.roc_auc([0.1, 0.2], [1, 1]),                         # no negatives
    lambda m: m.roc_auc([0.1, 0.2, 0.3], [1, 0]),                    # lengths differ
    lambda m: m.expected_calibration_error(np.zeros((3, 2)), np.full((3, 2), 0.5)),  # labels (N, 2)
    lambda m: m.expected_calibration_error(np.zeros(3, int), np.full((4, 2), 0.5)),  # N differs
    lambda m: m.reliability_bins(np.zeros(3, int), np.full(3, 0.5)),               # not (N, n_classes)
])
def test_calibration_and_roc_refuse_mismatched_shapes(call):
    from helpers import metrics

    with pytest.raises(ValueError):
        call(metrics)
