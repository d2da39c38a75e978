import dataclasses
import math
import re

import keras
import numpy as np
import pytest

from helpers import config, engine, training
from helpers.models import build_dnn
from tests.synthetic import blobs

SMALL = dict(n_hidden=2, n_neurons=16, input_shape=(20,))
FAST = keras.backend.backend() == "jax"


def small_model(lr=1e-2, **kw):
    return training.compile_model(build_dnn(**{**SMALL, **kw}), lr)


def test_training_learns_and_fills_the_record():
    data = blobs()
    record = training.train(small_model(), data, "blobs", max_epochs=6, patience=3, verbose=0)
    assert record.valid_accuracy > 0.8 and record.test_accuracy > 0.8
    assert record.epochs == len(record.history["loss"]) <= 6
    assert 1 <= record.best_epoch <= record.epochs
    assert record.history["val_loss"][record.best_epoch - 1] == min(record.history["val_loss"])
    assert record.mode == config.MODE and record.data == "synthetic blobs"
    assert record.learning_rate == pytest.approx(1e-2)
    assert record.config["optimizer"]["class"] == "Nadam"
    assert record.config["versions"]["backend"] == keras.backend.backend()
    assert record.config["fast_path"] is FAST
    assert record.wall_time_to_best <= sum(record.history["epoch_seconds"]) + 1e-9
    assert record.first_epoch_seconds == record.history["epoch_seconds"][0]


def test_best_weights_are_restored():
    data = blobs(spread=2.0)  # noisy: validation loss goes up and down at this rate
    model = small_model(lr=3e-2)
    record = training.train(model, data, "noisy", max_epochs=30, patience=3, verbose=0)
    assert record.stopped == "early_stopping" and record.best_epoch < record.epochs  # weights moved on
    loss, acc = training.evaluate(model, data.x_valid, data.y_valid)
    assert loss == pytest.approx(record.history["val_loss"][record.best_epoch - 1], rel=1e-4)
    assert acc == pytest.approx(record.valid_accuracy)


def test_early_stopping_after_patience_epochs_without_improvement():
    # a rate so small that float32 weights do not move (a rate of 0 is refused)
    record = training.train(small_model(lr=1e-30), blobs(), "frozen", max_epochs=20, patience=2, verbose=0)
    assert record.stopped == "early_stopping" and record.best_epoch == 1 and record.epochs == 3


def test_nan_guard_stops_and_says_why(capsys):
    record = training.train(small_model(lr=1e12), blobs(), "exploding", max_epochs=10, patience=5)
    assert record.stopped == "nan" and record.epochs < 10
    assert "learning rate is too high" in capsys.readouterr().out
    assert not math.isfinite(record.history["loss"][-1]) or not math.isfinite(record.history["val_loss"][-1])


def test_verbose_2_prints_one_line_per_epoch_and_1_a_bar_then_one_line(capsys):
    training.train(small_model(), blobs(), "lines", max_epochs=3, patience=3, verbose=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all(l.startswith("epoch") for l in lines[:3])
    assert lines[3].startswith("lines: best epoch")
    training.train(small_model(), blobs(), "bar", max_epochs=3, patience=3, verbose=1)
    out = capsys.readouterr().out
    *bar, last = out.strip().split("\n")
    assert "epoch" not in "".join(bar).replace("epochs", "")  # no epoch lines, only the bar's redraws
    assert "\r" in out and "3/3 epochs" in out.split("\r")[-1]  # the bar, redrawn in place, ends full
    assert last.startswith("bar: best epoch") and max(len(part) for part in re.split("[\r\n]", out)) <= 100


def test_monitor_val_accuracy_keeps_the_most_accurate_epoch():
    data = blobs(spread=2.0)
    record = training.train(small_model(lr=3e-2), data, "acc", max_epochs=12, patience=3, verbose=0,
                            monitor="val_accuracy")
    assert record.valid_accuracy == pytest.approx(max(record.history["val_accuracy"]))
    assert record.history["val_accuracy"][record.best_epoch - 1] == max(record.history["val_accuracy"][:record.best_epoch])
    assert record.config["early_stopping"].startswith("val_accuracy")
    with pytest.raises(ValueError, match="monitor must be one of"):
        training.train(small_model(), data, "x", max_epochs=1, verbose=0, monitor="accuracy")


def test_different_run_seeds_never_share_a_batch_order():
    orders = {}
    for seed in (1, 2):
        for epoch in (1, 2):
            full, _ = engine.batch_indices(100, 10, np.random.default_rng((seed, epoch)))
            orders[seed, epoch] = full.ravel().tolist()
    assert orders[1, 2] != orders[2, 1]  # seed + epoch would make these equal
    assert len({tuple(o) for o in orders.values()}) == 4


def test_zero_epochs_or_patience_is_an_error_not_the_default():
    with pytest.raises(ValueError, match="at least 1"):
        training.train(small_model(), blobs(), "x", max_epochs=0, verbose=0)


def test_uncompiled_model_is_refused():
    with pytest.raises(ValueError, match="compile the model first"):
        training.train(build_dnn(**SMALL), blobs(), "x", max_epochs=1, verbose=0)


def test_batch_indices_cover_each_sample_once():
    full, rest = engine.batch_indices(103, 32, np.random.default_rng(0))
    assert full.shape == (3, 32) and rest.shape == (7,)
    assert sorted(np.concatenate([full.ravel(), rest]).tolist()) == list(range(103))
    with pytest.raises(ValueError):
        engine.batch_indices(10, 0, None)


def test_tensorboard_logs_are_written(tmp_path):
    training.train(small_model(), blobs(), "tb", max_epochs=2, patience=2, verbose=0, tensorboard_dir=tmp_path)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


@pytest.mark.skipif(not FAST, reason="the compiled fast path exists under the JAX backend")
@pytest.mark.parametrize("batch_norm", [False, True])
def test_fast_path_matches_plain_fit(batch_norm):
    """Same seed, same data order: the scan loop and Keras' fit take the same steps."""
    data = blobs(n_train=200)
    a, b = small_model(lr=1e-2, seed=3, batch_norm=batch_norm), small_model(lr=1e-2, seed=3, batch_norm=batch_norm)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
    history = a.fit(data.x_train, data.y_train, batch_size=32, epochs=2, shuffle=False, verbose=0)
    stepper = engine.stepper_for(b)
    x, y = stepper.device_arrays(data.x_train, data.y_train)
    full, rest = engine.batch_indices(len(y), 32, None)  # 6 full batches + 8: the partial one too
    epoch_losses = []
    for _ in range(2):
        losses, corrects, sizes = stepper.train_steps(x, y, full, rest)
        epoch_losses.append(np.sum(losses * sizes) / np.sum(sizes))
    # tolerance: float32 summation order differs between the two compiled programs
    np.testing.assert_allclose(epoch_losses, history.history["loss"], rtol=1e-5)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-6)
    assert int(a.optimizer.iterations.numpy()) == int(b.optimizer.iterations.numpy()) == 14


@pytest.mark.skipif(not FAST, reason="the compiled fast path exists under the JAX backend")
def test_shared_compiled_step_gives_the_same_training_as_a_fresh_one():
    """A model that reuses another model's compiled step (same signature) trains as if alone."""
    data = blobs(n_train=300)
    engine._COMPILED.clear()  # noqa: private - the test looks at the cache itself
    training.train(small_model(lr=5e-2, seed=1), data, "first", max_epochs=1, verbose=0)
    assert len(engine._COMPILED) == 1
    shared = small_model(lr=1e-2, seed=2)
    training.train(shared, data, "second", max_epochs=2, patience=2, verbose=0)
    assert len(engine._COMPILED) == 1  # reused, not compiled again
    engine._COMPILED.clear()
    alone = small_model(lr=1e-2, seed=2)
    training.train(alone, data, "alone", max_epochs=2, patience=2, verbose=0)
    for a, b in zip(shared.get_weights(), alone.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    other = training.compile_model(build_dnn(**{**SMALL, "n_neurons": 8}), 1e-2)
    training.train(other, data, "other", max_epochs=1, verbose=0)
    assert len(engine._COMPILED) == 2  # another architecture compiles its own


def test_schedule_takes_effect_at_every_step_of_a_training_epoch():
    """Through the epoch path itself (scan under JAX, fit under TensorFlow, speed-ups on).

    One-weight probe: the gradient is -1 at every step, so with SGD the weight ends at
    the sum of the rates actually applied. A rate refreshed only every k steps (a
    callback with steps_per_execution=k) would give a different sum.
    """
    from helpers.lr_finder import ExponentialSweep
    from tests.test_lr_finder import probe_data, probe_model

    schedule = ExponentialSweep(1e-3, 1e-1, steps=64)
    model = probe_model(keras.optimizers.SGD(learning_rate=schedule))
    data = probe_data(n=64)
    stepper = engine.stepper_for(model)
    x, y = stepper.device_arrays(data.x_train, data.y_train)
    stepper.train_epoch(x, y, batch_size=1, seed=0)
    w = float(model.get_weights()[0].ravel()[0])
    assert w == pytest.approx(schedule.rate_at(np.arange(64)).sum(), rel=1e-4)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 64
    if keras.backend.backend() == "tensorflow":
        assert model.steps_per_execution == engine.TF_SPEEDUPS["steps_per_execution"] > 1


def test_flips_inside_the_compiled_step_equal_flipping_the_images_first():
    """The fast path mirrors images inside the step; the result equals training on pre-flipped images."""
    from helpers.data import flip_images

    if keras.backend.backend() != "jax":
        pytest.skip("the in-step flip is the JAX path's; TensorFlow flips on the host (the other side of this test)")
    x = np.random.default_rng(0).random((64, 4, 5, 3)).astype(np.float32)
    y = np.arange(64) % 10
    flips = np.random.default_rng(1).random(64) < 0.5
    full, rest = engine.batch_indices(64, 16, np.random.default_rng(2))
    out = []
    for images, f in ((x, flips), (flip_images(x, flips), None)):
        model = training.compile_model(build_dnn(n_hidden=2, n_neurons=8, input_shape=(4, 5, 3), seed=0), 1e-2)
        stepper = engine.stepper_for(model)
        xs, ys = stepper.device_arrays(images, y)
        losses, _, _ = stepper.train_steps(xs, ys, full, rest, f)
        out.append((losses, model.get_weights()))
    np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-6)
    for a, b in zip(out[0][1], out[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_random_flip_changes_the_training_and_is_recorded():
    from tests.synthetic import blobs

    d = blobs(n_train=64, n_valid=16, n_test=16, n_features=12)
    d = dataclasses.replace(d, x_train=d.x_train.reshape(64, 2, 2, 3), x_valid=d.x_valid.reshape(16, 2, 2, 3),
                            x_test=d.x_test.reshape(16, 2, 2, 3))
    records = {}
    for flip in (False, True):
        model = training.compile_model(build_dnn(n_hidden=2, n_neurons=8, input_shape=(2, 2, 3), seed=0), 1e-2)
        records[flip] = training.train(model, d, "flip", max_epochs=2, patience=2, verbose=0, random_flip=flip,
                                       resume=False)
    assert records[True].config["augmentation"] == "random horizontal flip"
    assert "augmentation" not in records[False].config
    assert records[True].history["loss"] != records[False].history["loss"]


def test_the_same_seed_gives_the_same_history_twice():
    """Reproducibility, on the backend under test (tests/test_other_backend.py runs the other).

    One seed, given once: build_dnn(seed=...) seeds Python, NumPy and the backend, and train()
    draws its batch order from (seed, epoch). On a CPU both backends then repeat a run exactly.
    """
    from tests.synthetic import blobs

    histories = []
    for _ in range(2):
        model = training.compile_model(build_dnn(n_hidden=3, n_neurons=16, input_shape=(20,), seed=7), 3e-3)
        record = training.train(model, blobs(n_train=320), "again", max_epochs=3, patience=3, seed=7, verbose=0,
                                resume=False)
        histories.append({k: record.history[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")})
    assert histories[0] == histories[1]
