"""Property-based tests (Hypothesis): generated inputs of every kind, right ones and wrong ones.

A metric either refuses its input with a ValueError or gives a number in its range; the
shared input checks never let raw pixels, NaN or misshapen labels through.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from helpers import metrics
from helpers.data import DataError, check_images, normalize_labels
from tests.backends import once

pytestmark = once  # no Keras involved

sizes = st.integers(1, 60)
labels = sizes.flatmap(lambda n: hnp.arrays(np.int64, n, elements=st.integers(0, 9)))
anything = hnp.arrays(dtype=st.sampled_from([np.float64, np.int64, np.float32, np.uint8, np.bool_]),
                      shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=12))


@given(labels, st.data())
@settings(max_examples=200, deadline=None)
def test_accuracy_is_a_fraction_and_reads_n_1_labels_as_n(y, data):
    pred = data.draw(hnp.arrays(np.int64, len(y), elements=st.integers(0, 9)))
    a = metrics.accuracy(y, pred)
    assert 0 <= a <= 1 and a == np.mean(y == pred)
    assert metrics.accuracy(y[:, None], pred) == a  # never the (N, N) broadcast


@given(anything, anything)
@settings(max_examples=300, deadline=None)
def test_accuracy_of_anything_is_a_fraction_or_a_value_error(y, pred):
    try:
        a = metrics.accuracy(y, pred)
    except ValueError:
        return
    assert 0 <= a <= 1


@given(labels, st.data())
@settings(max_examples=200, deadline=None)
def test_calibration_of_probabilities_is_in_range(y, data):
    raw = data.draw(hnp.arrays(np.float64, (len(y), 10), elements=st.floats(0.001, 1.0)))
    p = raw / raw.sum(axis=1, keepdims=True)
    ece = metrics.expected_calibration_error(y, p)
    assert 0 <= ece <= 1
    conf, acc, count = metrics.reliability_bins(y, p)
    assert count.sum() == len(y)


@given(labels, st.data())
@settings(max_examples=200, deadline=None)
def test_scores_that_are_not_probabilities_are_refused(y, data):
    p = data.draw(hnp.arrays(np.float64, (len(y), 10), elements=st.floats(-50, 50)))
    probabilities = (p >= 0).all() and (p <= 1).all() and np.allclose(p.sum(axis=1), 1, atol=1e-3)
    if probabilities:
        return
    with pytest.raises(ValueError):
        metrics.expected_calibration_error(y, p)


@given(st.integers(1, 20_000), st.floats(0, 1))
@settings(max_examples=200, deadline=None)
def test_the_wilson_interval_is_in_0_1_and_holds_the_accuracy(n, accuracy):
    accuracy = round(accuracy * n) / n
    low, high = metrics.wilson_interval(accuracy, n)
    assert 0 <= low <= accuracy <= high <= 1


@given(hnp.arrays(np.bool_, st.integers(1, 200)), st.data())
@settings(max_examples=200, deadline=None)
def test_mcnemar_counts_and_p_value(a, data):
    b = data.draw(hnp.arrays(np.bool_, len(a)))
    only_a, only_b, p = metrics.mcnemar(a, b)
    assert only_a == np.sum(a & ~b) and only_b == np.sum(b & ~a) and 0 <= p <= 1


@given(hnp.arrays(np.float64, st.integers(2, 8), elements=st.floats(0.3, 0.7)),
       hnp.arrays(np.float64, st.integers(2, 8), elements=st.floats(0.3, 0.7)))
@settings(max_examples=200, deadline=None)
def test_the_seed_comparison_interval_holds_the_difference(a, b):
    c = metrics.compare_seeds(a, b)
    assert c.difference == pytest.approx(a.mean() - b.mean())
    if np.isnan(c.p_value):  # every seed alike in both recipes: no spread, so no interval and no test
        assert np.isnan(c.low) and np.isnan(c.detectable) and a.std() == 0 == b.std()
    else:
        assert c.low <= c.difference + 1e-12 and c.difference <= c.high + 1e-12
        assert 0 <= c.p_value <= 1 and c.detectable >= 0


@given(anything)
@settings(max_examples=300, deadline=None)
def test_labels_are_class_ids_of_shape_n_or_refused(y):
    try:
        out = normalize_labels(y, n_classes=10)
    except DataError:
        return
    assert out.ndim == 1 and out.dtype == np.int64 and ((out >= 0) & (out < 10)).all()
    assert len(out) == len(np.asarray(y))


@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=4, max_side=6),
                  elements=st.integers(0, 255).map(float)))
@settings(max_examples=200, deadline=None)
def test_raw_pixels_as_floats_are_refused(x):
    if x.max() <= 1.5:  # all 0s and 1s: indistinguishable from scaled pixels
        return
    with pytest.raises(DataError, match="raw pixels"):
        check_images(x)


@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=4, max_side=6),
                  elements=st.floats(-3, 3, width=32) | st.just(np.nan)))
@settings(max_examples=200, deadline=None)
def test_images_with_nan_are_refused_and_finite_ones_kept(x):
    if np.isnan(x).any():
        with pytest.raises(DataError, match="NaN"):
            check_images(x)
    elif (x == np.round(x)).all() and x.max() > 1.5:
        with pytest.raises(DataError, match="raw pixels"):
            check_images(x)
    else:
        assert check_images(x) is not None
