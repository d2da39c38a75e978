import keras
import numpy as np
import pytest

from helpers import training
from helpers.data import Dataset
from helpers.lr_finder import find_learning_rate, search_rates, smooth
from helpers.models import build_dnn
from tests.synthetic import blobs
from tests.backends import once


def probe_model(optimizer):
    """One weight w (starting at 0), input 1, target 10, absolute error: loss = 10 - w (w < 10).

    The gradient is -1 at every step, so plain SGD moves w by exactly the rate it used.
    """
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False,
                                                                     kernel_initializer="zeros")])
    # compiled as helpers compiles every model: with the speed-ups on (several steps per call, XLA)
    model.compile(optimizer=optimizer, loss="mean_absolute_error", steps_per_execution=training.STEPS_PER_EXECUTION,
                  jit_compile=True)
    return model


def probe_data(n=64):
    x = np.ones((n, 1), np.float32)
    y = np.full((n,), 10.0, np.float32)
    return Dataset(x, y, x[:8], y[:8], x[:8], y[:8], source="probe", preprocessing="scaled")


def test_finder_applies_its_sweep_to_the_models_optimizer():
    """The finder's own batch losses fall by exactly the rate of each step (SGD probe).

    Each loss is a batch's own, recovered from Keras' running mean of the epoch; a running
    mean would fall by less and less.
    """
    model = probe_model(keras.optimizers.SGD(learning_rate=0.5))
    result = find_learning_rate(model, probe_data(), min_rate=1e-2, max_rate=1.0, steps=30, batch_size=2)
    applied = -np.diff(result.losses)
    np.testing.assert_allclose(applied, result.rates[:-1], rtol=1e-3)
    assert result.rates[0] == pytest.approx(1e-2) and result.rates[-1] == pytest.approx(1.0)


def test_finder_leaves_the_callers_model_untouched():
    model = training.compile_model(build_dnn(n_hidden=2, n_neurons=16, input_shape=(20,)), 1e-3)
    before = [w.copy() for w in model.get_weights()]
    find_learning_rate(model, blobs(n_train=640), steps=20, batch_size=32)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 0


def test_finder_stops_on_divergence_and_suggests_a_sane_rate():
    model = build_dnn(n_hidden=2, n_neurons=32, input_shape=(20,))
    result = find_learning_rate(model, blobs(n_train=6400, spread=2.0), min_rate=1e-5, max_rate=1e3, steps=200,
                                batch_size=32)
    assert "diverged" in result.stopped
    assert len(result.rates) < 200  # it stopped before the end of the sweep
    assert 1e-4 < result.suggestion < 1.0  # Nadam on blobs: a usable rate, not the floor or the blow-up
    best = int(np.argmin(result.smoothed))
    assert result.suggestion == pytest.approx(result.rates[best] / 10)
    assert result.rule == "rate at minimum smoothed loss / 10"


def test_the_sweep_is_one_epoch_by_default_and_has_its_steps_whatever_the_size_of_the_data():
    model = build_dnn(n_hidden=2, n_neurons=16, input_shape=(20,))
    one_epoch = find_learning_rate(model, blobs(n_train=640), batch_size=32, max_rate=1e-2)
    assert len(one_epoch.rates) == 20  # 640 images at batch 32
    more = find_learning_rate(model, blobs(n_train=640), steps=50, batch_size=32, max_rate=1e-2)
    assert len(more.rates) == 50  # the data gone through again, reshuffled


def test_a_sweep_that_cannot_suggest_falls_back_and_says_so(capsys):
    model = build_dnn(n_hidden=2, n_neurons=16, input_shape=(20,),
                      initializer=keras.initializers.RandomNormal(stddev=1e20))  # NaN from the first step
    result = find_learning_rate(model, blobs(n_train=640), steps=20, batch_size=32, fallback=5e-4)
    assert result.suggestion == 5e-4 and result.rule.startswith("fallback")
    assert "using the fallback rate 5.00e-04" in capsys.readouterr().out


def test_diverging_model_gives_a_clear_message():
    """Sane data, but weights so large that the loss is NaN from the first step."""
    model = build_dnn(n_hidden=2, n_neurons=16, input_shape=(20,),
                      initializer=keras.initializers.RandomNormal(stddev=1e20))
    with pytest.raises(FloatingPointError, match="not finite from the first steps"):
        find_learning_rate(model, blobs(n_train=640), steps=20, batch_size=32)


def test_sweep_rates_and_bad_arguments():
    result = find_learning_rate(probe_model(keras.optimizers.SGD(learning_rate=0.5)), probe_data(), min_rate=1e-4,
                                max_rate=1.0, steps=5, batch_size=2)
    np.testing.assert_allclose(result.rates, [1e-4, 1e-3, 1e-2, 1e-1, 1.0], rtol=1e-6)
    sweep = keras.optimizers.schedules.ExponentialDecay(1e-4, 4, 1.0 / 1e-4)  # the finder's schedule
    np.testing.assert_allclose(keras.ops.convert_to_numpy(sweep(2)), 1e-2, rtol=1e-5)
    for args in [(0, 1, 5), (1, 0.1, 5), (1e-3, 1, 1)]:
        with pytest.raises(ValueError, match="min_rate < max_rate"):
            find_learning_rate(probe_model(keras.optimizers.SGD()), probe_data(), min_rate=args[0],
                               max_rate=args[1], steps=args[2], batch_size=2)


def test_smoothing_is_bias_corrected_and_lags():
    np.testing.assert_allclose(smooth([2.0, 2.0, 2.0]), [2.0, 2.0, 2.0])  # no pull towards 0 at the start
    # a step from 1 to 0: the average follows with a lag, weighted as an EMA with beta = 0.5
    np.testing.assert_allclose(smooth([1.0, 0.0, 0.0], beta=0.5), [1.0, 0.25 / 0.75, 0.125 / 0.875])


@pytest.mark.parametrize("rates", [[1e-3], [3e-3, 1e-3], [0.0, 1e-3], [1e-3, float("nan")]])
def test_search_rates_refuses_a_bracket_that_is_not_one(rates):
    with pytest.raises(ValueError, match="increasing"):
        search_rates(lambda seed: build_dnn(n_hidden=2, n_neurons=16, input_shape=(20,)), blobs(), rates, prefix="x")


@once
def test_a_winner_at_the_edge_extends_the_bracket_in_its_direction():
    """Rates far too low for blobs: the top one wins, so the search trains the next one up (ratio 10)."""
    def build(seed):
        return build_dnn(n_hidden=2, n_neurons=16, input_shape=(20,), seed=seed)

    cmp = search_rates(build, blobs(), [1e-7, 1e-6], prefix="blob", max_extra=1, n_jobs=1, verbose=0,
                                 max_epochs=2, patience=2)
    assert [r.learning_rate for r in cmp.records] == pytest.approx([1e-7, 1e-6, 1e-5])
    assert cmp.extended == pytest.approx((1e-5,)) and cmp.best_rate == pytest.approx(1e-5)
    assert [r.variant for r in cmp.records] == ["blob_lr_1.0e-07", "blob_lr_1.0e-06", "blob_lr_1.0e-05"]
    assert all(r.config["seed"] == 0 for r in cmp.records)  # the search seed, never a final model's
    assert all(np.isnan(r.test_accuracy) for r in cmp.records)  # the test set left alone


@once
def test_a_bracket_with_a_failed_rate_chooses_nothing():
    """A failed training leaves a hole in the bracket: an error naming it, never a winner among the rest."""
    calls = []

    def compile_model(model, rate):
        calls.append(rate)
        if len(calls) == 2:  # the second rate of the bracket
            raise RuntimeError("out of memory, say")
        return training.compile_model(model, rate)

    def build(seed):
        return build_dnn(n_hidden=2, n_neurons=16, input_shape=(20,), seed=seed)

    with pytest.raises(RuntimeError, match=r"blob_lr_1\.0e-03"):
        search_rates(build, blobs(), [1e-4, 1e-3, 1e-2], prefix="blob", n_jobs=1, verbose=0,
                               max_epochs=1, patience=1, compile_model=compile_model)
