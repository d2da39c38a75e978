import dataclasses
import inspect
import math

import keras
import numpy as np
import pytest

from helpers import callbacks, config, schedules, training
from helpers.models import build_dnn
from tests.synthetic import blobs

SMALL = dict(n_hidden=2, n_neurons=16, input_shape=(20,))


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
    assert record.config["steps_per_execution"] == training.STEPS_PER_EXECUTION > 1
    assert record.wall_time_to_best == pytest.approx(sum(record.history["epoch_seconds"][:record.best_epoch]))
    assert record.first_epoch_seconds == record.history["epoch_seconds"][0]
    assert len(record.test_predictions) == len(data.y_test)


def test_train_is_model_fit():
    """The trained weights are fit's: train calls model.fit, on the model it was given."""
    assert "model.fit(" in inspect.getsource(training.train)
    model = small_model()
    before = [w.copy() for w in model.get_weights()]
    record = training.train(model, blobs(), "in place", max_epochs=2, patience=2, verbose=0, resume=False)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert training.evaluate(model, blobs().x_valid, blobs().y_valid)[1] == pytest.approx(record.valid_accuracy)


def test_best_weights_are_restored():
    data = blobs(spread=2.0)  # noisy: validation loss goes up and down at this rate
    model = small_model(lr=3e-2)
    record = training.train(model, data, "noisy", max_epochs=30, patience=3, verbose=0)
    assert record.stopped == "early_stopping" and record.best_epoch < record.epochs  # weights moved on
    loss, acc = training.evaluate(model, data.x_valid, data.y_valid)
    assert loss == pytest.approx(record.history["val_loss"][record.best_epoch - 1], rel=1e-4)
    assert acc == pytest.approx(record.valid_accuracy)
    assert record.valid_loss == pytest.approx(loss)


def test_early_stopping_after_patience_epochs_without_improvement():
    # a rate so small that float32 weights do not move (a rate of 0 is refused)
    record = training.train(small_model(lr=1e-30), blobs(), "frozen", max_epochs=20, patience=2, verbose=0)
    assert record.stopped == "early_stopping" and record.epochs == 3


def test_a_loss_that_becomes_nan_stops_the_training():
    record = training.train(small_model(lr=1e12), blobs(), "exploding", max_epochs=10, patience=5, verbose=0)
    assert record.stopped == "nan" and record.epochs < 10
    assert not math.isfinite(record.history["loss"][-1]) or not math.isfinite(record.history["val_loss"][-1])


def test_verbose_is_fits_own(capsys):
    training.train(small_model(), blobs(), "lines", max_epochs=3, patience=3, verbose=2, resume=False)
    out = capsys.readouterr().out
    assert out.count("Epoch ") == 3 and "val_loss" in out  # fit's one line per epoch
    training.train(small_model(), blobs(), "quiet", max_epochs=2, patience=2, verbose=0, resume=False)
    assert capsys.readouterr().out == ""


def test_monitor_val_accuracy_keeps_the_most_accurate_epoch():
    data = blobs(spread=2.0)
    record = training.train(small_model(lr=3e-2), data, "acc", max_epochs=12, patience=3, verbose=0,
                            monitor="val_accuracy")
    assert record.valid_accuracy == pytest.approx(record.history["val_accuracy"][record.best_epoch - 1])
    assert record.history["val_accuracy"][record.best_epoch - 1] == max(record.history["val_accuracy"])
    assert record.config["kept"].startswith("best epoch by val_accuracy")
    with pytest.raises(ValueError, match="monitor must be"):
        training.train(small_model(), data, "x", max_epochs=1, verbose=0, monitor="accuracy")


def test_a_metric_added_at_compile_time_reaches_the_record():
    model = training.compile_model(build_dnn(**SMALL), 1e-2,
                                   metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=3, name="top3")])
    record = training.train(model, blobs(), "top3", max_epochs=2, patience=2, verbose=0, resume=False)
    assert len(record.history["top3"]) == 2 and len(record.history["val_top3"]) == 2


def test_a_model_compiled_the_usual_keras_way_trains():
    model = build_dnn(**SMALL)
    model.compile(optimizer="nadam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    record = training.train(model, blobs(), "plain", max_epochs=2, patience=2, verbose=0, resume=False)
    assert record.epochs == 2 and record.history["loss"][1] < record.history["loss"][0]


def test_a_model_compiled_without_accuracy_is_refused_before_training():
    model = build_dnn(**SMALL)
    model.compile(optimizer="nadam", loss="sparse_categorical_crossentropy", metrics=["sparse_top_k_categorical_accuracy"])
    with pytest.raises(ValueError, match="add 'accuracy'"):
        training.train(model, blobs(), "no accuracy", max_epochs=1, verbose=0, resume=False)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 0  # refused before any step


def test_labels_of_shape_n_1_train_as_fit_reads_them():
    data = blobs()
    column = dataclasses.replace(data, y_train=data.y_train[:, None], y_valid=data.y_valid[:, None],
                                 y_test=data.y_test[:, None])
    a = training.train(small_model(seed=1), data, "flat", max_epochs=2, patience=2, verbose=0, resume=False)
    b = training.train(small_model(seed=1), column, "column", max_epochs=2, patience=2, verbose=0, resume=False)
    assert a.history["val_loss"] == b.history["val_loss"] and a.test_accuracy == b.test_accuracy


def test_each_epoch_has_its_own_order_drawn_from_seed_and_epoch():
    x, y = np.arange(100)[:, None].astype("float32"), np.arange(100)
    batches = callbacks.EpochOrder(x, y, 10, seed=1)
    assert len(batches) == 10
    orders = {}
    for seed in (1, 2):
        for epoch in (1, 2):
            batches = callbacks.EpochOrder(x, y, 10, seed=seed)
            batches.set_epoch(epoch)
            orders[seed, epoch] = np.concatenate([batches[i][1] for i in range(len(batches))]).tolist()
            assert sorted(orders[seed, epoch]) == list(range(100))  # every sample once
    assert orders[1, 2] != orders[2, 1]  # seed + epoch would make these equal
    assert len({tuple(o) for o in orders.values()}) == 4
    last = callbacks.EpochOrder(x[:25], y[:25], 10, seed=0)
    assert len(last) == 3 and len(last[2][1]) == 5  # the last batch is a partial one


def test_zero_epochs_or_patience_is_an_error_not_the_default():
    with pytest.raises(ValueError, match="at least 1"):
        training.train(small_model(), blobs(), "x", max_epochs=0, verbose=0)


def test_uncompiled_model_is_refused():
    with pytest.raises(ValueError, match="compile the model first"):
        training.train(build_dnn(**SMALL), blobs(), "x", max_epochs=1, verbose=0)


def test_tensorboard_logs_are_written(tmp_path):
    training.train(small_model(), blobs(), "tb", max_epochs=2, patience=2, verbose=0, tensorboard_dir=tmp_path,
                   resume=False)
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))


def test_schedule_takes_effect_at_every_step_of_fit_with_several_steps_per_call():
    """One-weight probe: the gradient is -1 at every step, so with SGD the weight ends at
    the sum of the rates actually applied. A rate refreshed only once per call of the
    compiled step (a per-batch callback, 32 steps a call) would give another sum.
    """
    from tests.test_lr_finder import probe_data, probe_model

    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 63, 1e-1 / 1e-3)  # the LR finder's sweep
    model = probe_model(keras.optimizers.SGD(learning_rate=schedule))
    data = probe_data(n=64)
    model.fit(data.x_train, data.y_train, batch_size=1, epochs=1, shuffle=False, verbose=0)
    assert model.steps_per_execution == training.STEPS_PER_EXECUTION > 1
    w = float(model.get_weights()[0].ravel()[0])
    assert w == pytest.approx((1e-3 * 100.0 ** (np.arange(64) / 63)).sum(), rel=1e-4)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 64


def test_a_one_cycle_run_is_judged_at_its_end_and_must_fit_the_training():
    data = blobs(n_train=320)
    steps = schedules.steps_per_epoch(len(data.y_train), 32)
    cycle = schedules.OneCycle(3e-2, total_steps=4 * steps)
    model = training.compile_model(build_dnn(**SMALL, seed=0), cycle, beta_1=cycle)
    record = training.train(model, data, "cycle", max_epochs=4, patience=1, verbose=0, resume=False)
    assert record.epochs == 4 and record.best_epoch == 4  # no early stopping, no rollback
    assert record.valid_loss == pytest.approx(record.history["val_loss"][-1], rel=1e-4)
    assert record.learning_rate == pytest.approx(3e-2) and "schedule fixes the length" in record.config["kept"]
    model = training.compile_model(build_dnn(**SMALL, seed=0), cycle, beta_1=cycle)
    with pytest.raises(ValueError, match=f"sized for {4 * steps} steps, but 3 epochs"):
        training.train(model, data, "short", max_epochs=3, verbose=0)


def test_random_flip_is_a_keras_layer_on_in_training_only():
    x = np.random.default_rng(0).random((64, 2, 2, 3)).astype("float32")
    d = blobs(n_train=64, n_valid=16, n_test=16, n_features=12)
    d = dataclasses.replace(d, x_train=x, x_valid=x[:16], x_test=x[:16])
    model = build_dnn(n_hidden=2, n_neurons=8, input_shape=(2, 2, 3), seed=0, random_flip=True)
    assert isinstance(model.layers[0], keras.layers.RandomFlip)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.layers[0](x, training=False)), x)
    flipped = keras.ops.convert_to_numpy(model.layers[0](x, training=True))
    mirrored = (flipped == x[:, :, ::-1]).all(axis=(1, 2, 3)) & ~(flipped == x).all(axis=(1, 2, 3))
    assert 10 < mirrored.sum() < 54  # about half the images mirrored, the rest untouched
    records = {}
    for flip in (False, True):
        model = training.compile_model(build_dnn(n_hidden=2, n_neurons=8, input_shape=(2, 2, 3), seed=0,
                                                 random_flip=flip), 1e-2)
        records[flip] = training.train(model, d, "flip", max_epochs=2, patience=2, verbose=0, resume=False)
        assert records[flip].config["architecture"].get("random_flip", False) is flip
    assert records[True].history["loss"] != records[False].history["loss"]


def test_the_same_seed_gives_the_same_history_twice():
    """Reproducibility, on the backend under test (tests/test_other_backend.py runs the other).

    One seed, given once: build_dnn(seed=...) seeds every layer, and train() draws its batch
    order from (seed, epoch). On a CPU both backends then repeat a run exactly.
    """
    histories = []
    for _ in range(2):
        model = training.compile_model(build_dnn(n_hidden=3, n_neurons=16, input_shape=(20,), seed=7,
                                                 activation="selu", initializer="lecun_normal", alpha_dropout=0.1),
                                       3e-3)
        record = training.train(model, blobs(n_train=320), "again", max_epochs=3, patience=3, seed=7, verbose=0,
                                resume=False)
        histories.append({k: record.history[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")})
    assert histories[0] == histories[1]


def test_time_alone_interleaves_the_networks_and_keeps_each_ones_fastest(monkeypatch):
    """A B A B, the minimum per network: a slow moment of a shared machine hits one round, not one network."""
    order, speeds = [], {"timing a": iter([3.0, 2.0]), "timing b": iter([5.0, 6.0])}

    def fake_train(model, data, variant, **kwargs):
        order.append(variant)
        assert kwargs["resume"] is False and kwargs["evaluate_test"] is False and kwargs["batch_size"] == 8
        return dataclasses.make_dataclass("R", ["seconds_per_epoch"])(next(speeds[variant]))

    monkeypatch.setattr(training, "train", fake_train)
    timed = training.time_alone({"a": (lambda: None, None, {"batch_size": 8}), "b": (lambda: None, None, {"batch_size": 8})})
    assert order == ["timing a", "timing b", "timing a", "timing b"]
    assert timed == {"a": 2.0, "b": 5.0}


def test_time_alone_times_a_real_training():
    timed = training.time_alone({"small": (small_model, blobs(), {"batch_size": 16})}, epochs=2, rounds=1)
    assert list(timed) == ["small"] and 0 < timed["small"] < 60
