"""train_many: several networks at once, each record as training alone would give it."""
import os

import keras
import numpy as np
import pytest

from helpers import parallel, training
from helpers.models import build_dnn
from helpers.parallel import ManyRuns, Run, plan_workers, summary_line, train_many
from tests.synthetic import blobs
from tests.backends import once

JAX = keras.backend.backend() == "jax"


def small(seed, batch_norm=False):
    return build_dnn(n_hidden=3, n_neurons=32, input_shape=(20,), seed=seed, batch_norm=batch_norm)


def alone(run, data, batch_norm=False, **kw):
    model = training.compile_model(small(run.seed, batch_norm), run.learning_rate)
    return training.train(model, data, run.variant, seed=run.seed, verbose=0, **kw)


@pytest.mark.skipif(not JAX, reason="under TensorFlow fit shuffles with the backend's generator, which "
                                    "differs between processes")
@pytest.mark.parametrize("batch_norm", [False, True])
def test_processes_give_each_network_the_history_it_gets_alone(batch_norm, capsys):
    data = blobs(n_train=800)
    runs = [Run("a", 1, 1e-3), Run("b", 2, 3e-3)]
    many = train_many(lambda seed: small(seed, batch_norm), data, runs, method="processes", n_jobs=2,
                      max_epochs=3, patience=3)
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
    for name in ("a", "b"):  # one line per epoch per network, and a final line each
        assert sum(line.startswith(f"[{name}] epoch") for line in out.splitlines()) == 3
        assert f"[{name}] {name}: best epoch" in out


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


@once
def test_a_killed_worker_is_a_failure_not_a_crash_of_the_call():
    parent = os.getpid()

    def build(seed):
        if seed == 13 and os.getpid() != parent:  # the parent builds one network too (to precompile)
            os._exit(1)  # as if killed: no exception, no result
        return small(seed)

    many = train_many(build, blobs(), [Run("killed", 13, 1e-3), Run("other", 1, 1e-3)], method="processes",
                      n_jobs=2, max_epochs=1, verbose=0)
    assert "killed" not in [r.variant for r in many.records] and "died" in many.failures["killed"]


@once
@pytest.mark.parametrize("k, n_cores, n_jobs, plan", [
    (1, 2, None, (1, False)), (2, 2, None, (2, False)),
    (3, 2, None, (3, True)),   # two rounds would leave a core idle in the second: all three share both
    (4, 2, None, (2, False)),  # two full rounds
    (5, 2, None, (2, False)),  # one worker per network would be more than twice the cores
    (3, 8, None, (3, False)), (3, 1, None, (1, False)),
    (3, 2, 1, (1, False)), (3, 2, 3, (3, True)), (2, 2, 5, (2, False)),
])
def test_plan_workers(k, n_cores, n_jobs, plan):
    assert plan_workers(k, n_cores, n_jobs) == plan


@pytest.mark.skipif(not JAX, reason="under TensorFlow fit shuffles with the backend's generator, which "
                                    "differs between processes")
def test_workers_sharing_the_cores_give_the_records_of_training_alone(monkeypatch):
    data = blobs(n_train=400)
    one_core = parallel.cores()[:1]
    monkeypatch.setattr(parallel, "cores", lambda: one_core)  # two workers on one core: they share it
    runs = [Run("a", 1, 1e-3), Run("b", 2, 3e-3)]
    many = train_many(small, data, runs, method="processes", n_jobs=2, max_epochs=2, patience=2, verbose=0)
    assert many.workers == 2 and many.shared_cores and not many.failures
    for run, record in zip(runs, many.records):
        solo = alone(run, data, max_epochs=2, patience=2)
        assert {k: record.history[k] for k in ("loss", "val_loss")} == {k: solo.history[k] for k in ("loss", "val_loss")}


@once
def test_cifar10_workers_caps_the_workers(monkeypatch):
    monkeypatch.setenv("CIFAR10_WORKERS", "1")
    many = train_many(small, blobs(n_train=200), [Run("x", 1, 1e-3), Run("y", 2, 1e-3)], method="processes",
                      max_epochs=1, verbose=0)
    assert many.workers == 1 and not many.shared_cores and len(many.records) == 2


@once
def test_one_worker_trains_here_one_run_after_another(capsys):
    data = blobs()
    many = train_many(small, data, [Run("x", 1, 1e-3), Run("y", 2, 1e-3)], method="processes", n_jobs=1,
                      max_epochs=2, patience=2)
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
def test_vmap_refuses_networks_of_different_architectures():
    def build(seed):
        return build_dnn(n_hidden=2 + seed, n_neurons=8, input_shape=(20,), seed=seed)

    with pytest.raises(ValueError, match="differ only in"):
        train_many(build, blobs(), [Run("a", 1, 1e-3), Run("b", 2, 1e-3)], method="vmap", max_epochs=1)


def test_summary_line_states_mean_and_range():
    from helpers.results import RunRecord

    def rec(name, acc):
        h = {k: [0.0] for k in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds")}
        return RunRecord(name, "quick", "x", 1e-3, 1, 1, acc, acc, 1.0, 1.0, 1.0, 1.0, 1.0, "max_epochs", h, {})

    many = ManyRuns(records=(rec("a", 0.50), rec("b", 0.52), rec("c", 0.51)))
    assert summary_line(many) == ("valid_accuracy over 3 runs: mean 0.5100, range 0.5000 to 0.5200 "
                                  "(2.00 points)")


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


@pytest.mark.skipif(not JAX, reason="vmap needs JAX")
def test_vmap_refuses_runs_of_different_architectures():
    def build(seed, n_neurons=32):
        return build_dnn(n_hidden=2, n_neurons=n_neurons, input_shape=(20,), seed=seed)

    with pytest.raises(ValueError, match="one architecture"):
        train_many(build, blobs(), [Run("a", 1, 1e-3, options={"n_neurons": 8}), Run("b", 2, 1e-3)],
                   method="vmap", max_epochs=1, verbose=0)
