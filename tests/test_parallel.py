"""train_many: several networks at once, each record as training alone would give it."""
import dataclasses
import os

import keras
import numpy as np
import pytest

from helpers import parallel, training
from helpers.models import build_dnn
from helpers.parallel import Run, plan_workers, train_many
from tests.synthetic import blobs
from tests.backends import once

JAX = keras.backend.backend() == "jax"


def small(seed, batch_norm=False):
    return build_dnn(n_hidden=3, n_neurons=32, input_shape=(20,), seed=seed, batch_norm=batch_norm)


def alone(run, data, batch_norm=False, **kw):
    model = training.compile_model(small(run.seed, batch_norm), run.learning_rate)
    return training.train(model, data, run.variant, seed=run.seed, verbose=0, **kw)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_processes_give_each_network_the_history_it_gets_alone(batch_norm, capsys):
    data = blobs(n_train=800)
    runs = [Run("a", 1, 1e-3), Run("b", 2, 3e-3)]
    many = train_many(lambda seed: small(seed, batch_norm), data, runs, method="processes", n_jobs=2,
                      max_epochs=3, patience=3, verbose=2)
    assert many.method == "processes" and many.workers == 2 and not many.failures
    assert [r.variant for r in many.records] == ["a", "b"]
    for run, record in zip(runs, many.records):
        solo = alone(run, data, batch_norm, max_epochs=3, patience=3)
        # the same computation in another process: equal, not merely close
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert record.history[key] == solo.history[key], key
        assert record.test_accuracy == solo.test_accuracy and record.learning_rate == pytest.approx(run.learning_rate)
        # the trained network comes back too: its weights give the record's validation loss
        model = training.compile_model(many.model(run.variant, lambda seed: small(seed, batch_norm)), 1e-3)
        assert training.evaluate(model, data.x_valid, data.y_valid)[0] == pytest.approx(record.valid_loss, rel=1e-5)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("training 2 networks, 2 at a time, in worker processes")  # said at once
    for name in ("a", "b"):  # one whole line per epoch per network, then a table with a row each
        assert sum(line.startswith(f"[{name}] epoch") for line in lines) == 3
        assert sum(line.startswith(f"{name} ") for line in lines) == 1
    assert all(line.count("epoch ") <= 1 for line in lines)  # never two epochs on one line


@once
def test_a_failing_network_is_reported_and_the_others_are_kept(capsys):
    def build(seed):
        if seed == 13:
            raise RuntimeError("this network cannot be built")
        return small(seed)

    many = train_many(build, blobs(), [Run("ok", 1, 1e-3), Run("broken", 13, 1e-3)], method="processes",
                      n_jobs=2, max_epochs=2, patience=2, verbose=0)
    assert [r.variant for r in many.records] == ["ok"] and many.record("ok").epochs == 2
    assert list(many.failures) == ["broken"] and "this network cannot be built" in many.failures["broken"]
    assert "Traceback" in many.failures["broken"]
    assert "[broken] FAILED: RuntimeError: this network cannot be built" in capsys.readouterr().out
    with pytest.raises(KeyError, match="broken"):
        many.record("broken")


def test_a_killed_worker_is_a_failure_and_the_networks_lost_with_it_are_trained_again(capsys):
    """joblib stops every worker when one dies; the others' networks are retried, alone, and kept."""
    parent = os.getpid()

    def build(seed):
        if seed == 13 and os.getpid() != parent:  # the parent builds one network too (to precompile)
            os._exit(1)  # as if killed: no exception, no result
        return small(seed)

    data = blobs(n_train=400)
    runs = [Run("killed", 13, 1e-3), Run("other", 1, 1e-3), Run("third", 2, 3e-3)]
    many = train_many(build, data, runs, method="processes", n_jobs=2, max_epochs=3, patience=3, verbose=1)
    assert [r.variant for r in many.records] == ["other", "third"] and list(many.failures) == ["killed"]
    assert "died, twice" in many.failures["killed"]
    for run in runs[1:]:  # the records of the others are those of training alone
        record, solo = many.record(run.variant), alone(run, data, max_epochs=3, patience=3)
        assert record.epochs == 3
        assert record.history["val_loss"] == solo.history["val_loss"]
    assert "[killed] FAILED" in capsys.readouterr().out


@once
@pytest.mark.parametrize("k, n_cores, n_jobs, plan", [
    (1, 2, None, 1), (2, 2, None, 2),
    (3, 2, None, 3),  # two rounds would leave a core idle in the second: all three share both
    (4, 2, None, 2),  # two full rounds
    (5, 2, None, 2),  # one worker per network would be more than twice the cores
    (3, 8, None, 3), (3, 1, None, 1),
    (3, 2, 1, 1), (3, 2, 3, 3), (2, 2, 5, 2),
])
def test_plan_workers(k, n_cores, n_jobs, plan):
    assert plan_workers(k, n_cores, n_jobs) == plan


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux's sched_setaffinity")
def test_workers_sharing_the_cores_give_the_records_of_training_alone():
    data = blobs(n_train=400)
    runs = [Run("a", 1, 1e-3), Run("b", 2, 3e-3), Run("c", 3, 1e-2)]
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})  # three workers on one core (they inherit it): unpinned, sharing it
    try:
        many = train_many(small, data, runs, method="processes", n_jobs=3, max_epochs=2, patience=2, verbose=0)
    finally:
        os.sched_setaffinity(0, allowed)
    assert many.workers == 3 and not many.failures
    for run, record in zip(runs, many.records):
        solo = alone(run, data, max_epochs=2, patience=2)
        assert {k: record.history[k] for k in ("loss", "val_loss")} == {k: solo.history[k] for k in ("loss", "val_loss")}


@once
def test_cifar10_workers_caps_the_workers(monkeypatch):
    monkeypatch.setenv("CIFAR10_WORKERS", "1")
    many = train_many(small, blobs(n_train=200), [Run("x", 1, 1e-3), Run("y", 2, 1e-3)], method="processes",
                      max_epochs=1, verbose=0)
    assert many.workers == 1 and len(many.records) == 2


@once
def test_one_worker_trains_here_one_run_after_another(capsys):
    data = blobs()
    many = train_many(small, data, [Run("x", 1, 1e-3), Run("y", 2, 1e-3)], method="processes", n_jobs=1,
                      max_epochs=2, patience=2, verbose=2)
    assert many.workers == 1 and [r.variant for r in many.records] == ["x", "y"]
    assert many.record("y").history == alone(Run("y", 2, 1e-3), data, max_epochs=2, patience=2).history | {
        "epoch_seconds": many.record("y").history["epoch_seconds"]}
    assert "[x] epoch   2/2" in capsys.readouterr().out


@pytest.mark.parametrize("runs, kwargs, message", [
    ([], {}, "no runs"),
    ([Run("a", 1, 1e-3), Run("a", 2, 1e-3)], {}, "unique"),
    ([Run("a", 1)], {}, "no learning rate"),
    ([Run("a", 1, 1e-3)], {"method": "threads"}, "method must be one of"),
    ([Run("a", 1, 1e-3)], {"n_jobs": 0}, "n_jobs"),
])
def test_wrong_calls_are_refused_with_a_message(runs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_many(small, blobs(), runs, **{"method": "processes", **kwargs})


@pytest.mark.parametrize("kwargs, message", [({"max_epoch": 2}, r"unexpected keywords \['max_epoch'\]"),
                                             ({"seed": 3}, "each Run carries its own")])
def test_a_keyword_train_does_not_take_is_refused_before_any_worker_starts(kwargs, message):
    with pytest.raises(TypeError, match=message):
        train_many(small, blobs(), [Run("a", 1, 1e-3), Run("b", 2, 1e-3)], method="processes", **kwargs)


@pytest.mark.skipif(not JAX, reason="vmap is the JAX path")
@pytest.mark.parametrize("batch_norm", [False, True])
def test_vmap_matches_training_alone_first_tightly_then_in_what_matters(batch_norm):
    """Vmapped and solo steps are different compiled programs: equal to float32 rounding at
    first, then drifting apart as any two float paths do in training, faster at high rates
    and with batch norm. Measured here: first-epoch training loss within 2e-7 (tolerance
    1e-5); validation losses over four epochs within 7e-7 without BN and 4.4e-3 with BN
    at rate 1e-2, where the loss is down to 4e-4 (tolerance 1e-2)."""
    data = blobs(n_train=1000)
    runs = [Run("a", 1, 1e-3), Run("b", 2, 3e-3), Run("c", 3, 1e-2)]
    many = train_many(lambda seed: small(seed, batch_norm), data, runs, method="vmap", max_epochs=4, patience=4,
                      verbose=0)
    assert many.method == "vmap" and not many.failures
    for run, record in zip(runs, many.records):
        solo = alone(run, data, batch_norm, max_epochs=4, patience=4)
        assert record.epochs == solo.epochs == 4
        np.testing.assert_allclose(record.history["loss"][0], solo.history["loss"][0], rtol=1e-5)
        np.testing.assert_allclose(record.history["val_loss"], solo.history["val_loss"], rtol=1e-2)
        assert abs(record.valid_accuracy - solo.valid_accuracy) <= 0.02
        assert record.learning_rate == pytest.approx(run.learning_rate)
        assert record.config["trained"] == "side by side (vmap) with 3 networks"


@pytest.mark.skipif(not JAX, reason="vmap is the JAX path")
def test_vmap_stops_each_network_on_its_own_and_restores_its_best_weights():
    data = blobs(spread=2.0)  # noisy: at a high rate the validation loss soon turns up
    runs = [Run("noisy", 1, 3e-2), Run("steady", 2, 1e-4)]
    many = train_many(small, data, runs, method="vmap", max_epochs=12, patience=2, verbose=0)
    noisy, steady = many.record("noisy"), many.record("steady")
    assert noisy.stopped == "early_stopping" and noisy.epochs < steady.epochs
    assert noisy.best_epoch == noisy.epochs - 2
    # the final evaluation is of the restored best weights, not of the last ones
    assert noisy.valid_loss == pytest.approx(noisy.history["val_loss"][noisy.best_epoch - 1], rel=1e-4)
    model = training.compile_model(many.model("noisy", small), 1e-3)
    assert training.evaluate(model, data.x_valid, data.y_valid)[0] == pytest.approx(noisy.valid_loss, rel=1e-5)
    solo = alone(runs[0], data, max_epochs=12, patience=2)
    assert solo.epochs == noisy.epochs and solo.best_epoch == noisy.best_epoch


@pytest.mark.skipif(not JAX, reason="vmap is the JAX path")
def test_vmap_groups_runs_that_cannot_share_a_step_and_each_gets_its_record_alone():
    """Two architectures (options) and two 1cycle peaks: four groups, one after another.

    Measured here: validation losses over 3 epochs within 2e-6 of training alone
    (tolerance: relative 1e-4)."""
    from helpers.schedules import OneCycle

    def build(seed, n_neurons=32):
        return build_dnn(n_hidden=2, n_neurons=n_neurons, input_shape=(20,), seed=seed)

    data = blobs(n_train=400)
    steps = 3 * (400 // 32 + 1)
    runs = [Run("narrow", 1, 1e-3, options={"n_neurons": 8}), Run("wide", 2, 1e-3), Run("wide3", 3, 3e-3),
            Run("cycle_a", 4, OneCycle(3e-3, steps)), Run("cycle_b", 5, OneCycle(1e-2, steps))]
    many = train_many(build, data, runs, method="vmap", max_epochs=3, patience=3, verbose=0)
    assert [r.variant for r in many.records] == [r.variant for r in runs] and not many.failures
    trained = {r.variant: r.config["trained"] for r in many.records}
    assert trained["wide"] == trained["wide3"] == "side by side (vmap) with 2 networks, group 2 of 4"
    assert trained["narrow"].endswith("group 1 of 4") and trained["cycle_b"].endswith("group 4 of 4")
    assert many.record("narrow").config["build_options"] == {"n_neurons": 8}
    for run in runs:
        model = training.compile_model(build(run.seed, **run.options), run.learning_rate)
        solo = training.train(model, data, run.variant, seed=run.seed, max_epochs=3, patience=3, verbose=0,
                              resume=False)
        np.testing.assert_allclose(many.record(run.variant).history["val_loss"], solo.history["val_loss"], rtol=1e-4)
    assert many.model("narrow", build).layers[1].units == 8


@pytest.mark.skipif(not JAX, reason="vmap is the JAX path")
def test_vmap_flips_change_the_training_and_leave_validation_alone():
    """Flips are drawn per network inside the vmapped step: they change the training, and each run
    equals training alone with flips, where validation and test images are never flipped."""
    d = blobs(n_train=96, n_valid=32, n_test=32, n_features=12)
    d = dataclasses.replace(d, x_train=d.x_train.reshape(96, 2, 2, 3), x_valid=d.x_valid.reshape(32, 2, 2, 3),
                            x_test=d.x_test.reshape(32, 2, 2, 3))

    def build(seed):
        return build_dnn(n_hidden=2, n_neurons=8, input_shape=(2, 2, 3), seed=seed)

    runs = [Run("f1", 1, 1e-2), Run("f2", 2, 1e-2)]
    flipped = train_many(build, d, runs, method="vmap", max_epochs=2, patience=2, verbose=0, random_flip=True)
    plain = train_many(build, d, runs, method="vmap", max_epochs=2, patience=2, verbose=0)
    for run in runs:
        assert flipped.record(run.variant).history["loss"] != plain.record(run.variant).history["loss"]
        assert flipped.record(run.variant).config["augmentation"] == "random horizontal flip"
        solo = training.train(training.compile_model(build(run.seed), 1e-2), d, run.variant, seed=run.seed,
                              max_epochs=2, patience=2, verbose=0, random_flip=True, resume=False)
        np.testing.assert_allclose(flipped.record(run.variant).history["val_loss"], solo.history["val_loss"],
                                   rtol=1e-5)
        np.testing.assert_allclose(flipped.record(run.variant).valid_loss, solo.valid_loss, rtol=1e-5)


@once
def test_vmap_takes_every_keyword_that_train_takes():
    """A keyword added to training.train later cannot be forgotten on the vmap path (or in train_many)."""
    import inspect

    from helpers import vmapped

    def keywords(f):
        return {n for n, p in inspect.signature(f).parameters.items() if p.kind == p.KEYWORD_ONLY}

    # the loop both methods run takes all of train's keywords (the seed comes per network, with runs)
    assert keywords(training.train) - {"seed"} <= keywords(training.train_networks)
    # and the vmap path hands them all on to it
    assert "train_kwargs" in inspect.signature(vmapped.train_side_by_side).parameters
    assert keywords(vmapped.train_side_by_side) <= keywords(training.train_networks) | {"compile_model"}


@pytest.mark.skipif(JAX, reason="under JAX, vmap runs")
def test_vmap_under_tensorflow_says_what_to_do():
    with pytest.raises(ValueError, match="needs KERAS_BACKEND=jax"):
        train_many(small, blobs(), [Run("a", 1, 1e-3)], method="vmap", max_epochs=1, verbose=0)


@once
def test_cifar10_train_many_forces_the_method(monkeypatch):
    monkeypatch.setenv("CIFAR10_TRAIN_MANY", "vmap")
    assert parallel.default_method() == "vmap"
    monkeypatch.setenv("CIFAR10_TRAIN_MANY", "processes")
    assert parallel.default_method() == "processes"
    monkeypatch.setenv("CIFAR10_TRAIN_MANY", "threads")
    with pytest.raises(ValueError, match="CIFAR10_TRAIN_MANY='threads' is not one of"):
        parallel.default_method()


@once
def test_runs_can_vary_the_architecture_through_options(capsys):
    """Run.options reach build_model(seed, **options), the record and ManyRuns.model."""
    def build(seed, n_neurons=32):
        return build_dnn(n_hidden=2, n_neurons=n_neurons, input_shape=(20,), seed=seed)

    runs = [Run("narrow", 1, 1e-3, options={"n_neurons": 8}), Run("default", 2, 1e-3)]
    many = train_many(build, blobs(), runs, n_jobs=1, max_epochs=1, verbose=0)
    assert many.record("narrow").config["architecture"]["n_neurons"] == 8
    assert many.record("narrow").config["build_options"] == {"n_neurons": 8}
    assert "build_options" not in many.record("default").config
    assert many.model("narrow", build).layers[1].units == 8 and many.model("default", build).layers[1].units == 32
