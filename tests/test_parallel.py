"""train_many: several networks through joblib.Parallel, each record as training alone would give it."""
import keras
import pytest

from helpers import training
from helpers.models import build_dnn
from helpers.parallel import Run, train_many
from tests.backends import once
from tests.synthetic import blobs

HISTORY = ("loss", "accuracy", "val_loss", "val_accuracy")


def small(seed, batch_norm=False):
    return build_dnn(n_hidden=3, n_neurons=32, input_shape=(20,), seed=seed, batch_norm=batch_norm)


def alone(run, data, **kw):
    model = training.compile_model(small(run.seed, **run.options), run.learning_rate)
    return training.train(model, data, run.variant, seed=run.seed, verbose=0, resume=False, **kw)


@once
def test_worker_processes_give_each_network_the_history_it_gets_alone(capsys):
    data = blobs(n_train=800)
    runs = [Run("a", 1, 1e-3), Run("b", 2, 3e-3, options={"batch_norm": True})]
    many = train_many(small, data, runs, n_jobs=2, max_epochs=3, patience=3, verbose=2)
    assert not many.failures and [r.variant for r in many.records] == ["a", "b"]
    for run, record in zip(runs, many.records):
        solo = alone(run, data, max_epochs=3, patience=3)
        for key in HISTORY:  # the same computation in another process: equal, not merely close
            assert record.history[key] == solo.history[key], key
        assert record.test_accuracy == solo.test_accuracy and record.learning_rate == pytest.approx(run.learning_rate)
        # the trained network comes back through the loader: its weights give the record's validation loss
        model = training.compile_model(many.model(run.variant), 1e-3)
        assert training.evaluate(model, data.x_valid, data.y_valid)[0] == pytest.approx(record.valid_loss, rel=1e-5)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "training 2 networks with joblib (LokyBackend)"
    for name in ("a", "b"):  # one whole line per epoch per network, then one when it is done
        assert sum(f"[{name}] epoch" in line for line in lines) == 3
        assert sum(f"[{name}] 3 epochs, kept epoch" in line for line in lines) == 1


@once
def test_a_dask_cluster_gives_the_records_of_the_default_backend():
    """Any joblib backend runs train_many: a Dask LocalCluster here, a scheduler's address on a real one."""
    distributed = pytest.importorskip("distributed", reason="the cluster extra: pip install -e '.[cluster]'")
    import joblib

    data = blobs(n_train=400)
    runs = [Run("a", 1, 1e-3), Run("b", 2, 3e-3)]
    here = train_many(small, data, runs, n_jobs=1, max_epochs=2, patience=2, verbose=0)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster), joblib.parallel_config(backend="dask"):
        on_dask = train_many(small, data, runs, max_epochs=2, patience=2, verbose=0)
    assert not on_dask.failures
    for a, b in zip(here.records, on_dask.records):
        for key in HISTORY:
            assert a.history[key] == b.history[key], key


@once
def test_a_failing_network_is_reported_and_the_others_are_kept(capsys):
    def build(seed):
        if seed == 13:
            raise RuntimeError("this network cannot be built")
        return small(seed)

    many = train_many(build, blobs(), [Run("ok", 1, 1e-3), Run("broken", 13, 1e-3)], n_jobs=1, max_epochs=2,
                      patience=2, verbose=0)
    assert [r.variant for r in many.records] == ["ok"] and many.record("ok").epochs == 2
    assert list(many.failures) == ["broken"] and "this network cannot be built" in many.failures["broken"]
    assert "Traceback" in many.failures["broken"]
    assert "[broken] FAILED: RuntimeError: this network cannot be built" in capsys.readouterr().out
    with pytest.raises(KeyError, match="broken"):
        many.model("broken")


@once
def test_one_job_trains_here_one_run_after_another(capsys):
    data = blobs()
    many = train_many(small, data, [Run("x", 1, 1e-3), Run("y", 2, 1e-3)], n_jobs=1, max_epochs=2, patience=2,
                      verbose=2)
    assert [r.variant for r in many.records] == ["x", "y"]
    assert {k: many.record("y").history[k] for k in HISTORY} == {
        k: alone(Run("y", 2, 1e-3), data, max_epochs=2, patience=2).history[k] for k in HISTORY}
    assert "[x] epoch 2: loss" in capsys.readouterr().out


@once
def test_cifar10_workers_sets_the_jobs_and_a_readers_own_setting_wins(monkeypatch):
    import joblib

    seen = []
    real = joblib.Parallel

    def spy(*args, **kwargs):
        seen.append(kwargs.get("n_jobs"))
        return real(*args, **{**kwargs, "n_jobs": 1})  # what was asked is recorded; the work runs here

    monkeypatch.setattr(joblib, "Parallel", spy)
    monkeypatch.setenv("CIFAR10_WORKERS", "1")
    train_many(small, blobs(n_train=200), [Run("x", 1, 1e-3)], max_epochs=1, verbose=0)
    with joblib.parallel_config(n_jobs=3):  # a reader's own setting wins over CIFAR10_WORKERS
        train_many(small, blobs(n_train=200), [Run("x", 1, 1e-3)], max_epochs=1, verbose=0)
    train_many(small, blobs(n_train=200), [Run("x", 1, 1e-3)], max_epochs=1, verbose=0, n_jobs=2)  # and n_jobs=
    monkeypatch.delenv("CIFAR10_WORKERS")
    train_many(small, blobs(n_train=200), [Run("x", 1, 1e-3)], max_epochs=1, verbose=0)
    assert seen == [1, 3, 2, -1]  # -1: one per core


@pytest.mark.parametrize("runs, message", [
    ([], "no runs"),
    ([Run("a", 1, 1e-3), Run("a", 2, 1e-3)], "unique"),
    ([Run("a", 1)], "no learning rate"),
])
def test_wrong_calls_are_refused_with_a_message(runs, message):
    with pytest.raises(ValueError, match=message):
        train_many(small, blobs(), runs)


@pytest.mark.parametrize("build, kwargs, message", [
    (small, {"max_epoch": 2}, r"unexpected keywords \['max_epoch'\]"),
    (small, {"seed": 3}, "each Run carries its own"),
    (lambda: small(0), {}, "must take the seed as its first argument"),
    (lambda seed: small(seed), {}, r"build_model\(seed, \*\*\{'width': 8\}\)"),
    (small(0), {}, "must be a function"),
])
def test_a_wrong_builder_or_keyword_is_refused_before_any_worker_starts(build, kwargs, message, monkeypatch):
    import joblib

    monkeypatch.setattr(joblib, "Parallel", lambda *a, **k: pytest.fail("a worker was started"))
    runs = [Run("a", 1, 1e-3, options={"width": 8} if "width" in message else {})]
    with pytest.raises(TypeError, match=message):
        train_many(build, blobs(), runs, **kwargs)


@once
def test_runs_can_vary_the_architecture_through_options():
    """Run.options reach build_model(seed, **options), the record and ManyRuns.model."""
    def build(seed, n_neurons=32):
        return build_dnn(n_hidden=2, n_neurons=n_neurons, input_shape=(20,), seed=seed)

    runs = [Run("narrow", 1, 1e-3, options={"n_neurons": 8}), Run("default", 2, 1e-3)]
    many = train_many(build, blobs(), runs, n_jobs=1, max_epochs=1, verbose=0)
    assert many.record("narrow").config["architecture"]["n_neurons"] == 8
    assert many.record("narrow").config["build_options"] == {"n_neurons": 8}
    assert "build_options" not in many.record("default").config
    assert many.model("narrow").layers[1].units == 8 and many.model("default").layers[1].units == 32
    assert isinstance(many.model("narrow"), keras.Model)


@once
def test_a_killed_worker_fails_the_networks_it_took_and_keeps_the_finished_ones(capsys):
    """joblib stops the call when a worker dies: the networks not finished are failures that say what to do."""
    import os

    parent = os.getpid()

    def build(seed):
        if seed == 13 and os.getpid() != parent:
            import time

            time.sleep(20)  # the other network finishes first
            os._exit(1)  # as if killed: no exception, no result
        return small(seed)

    many = train_many(build, blobs(n_train=200), [Run("killed", 13, 1e-3), Run("other", 1, 1e-3)], n_jobs=2,
                      max_epochs=1, verbose=0)
    assert [r.variant for r in many.records] == ["other"]
    assert "a worker process died" in many.failures["killed"] and "call train_many again" in many.failures["killed"]
    assert "[killed] FAILED: TerminatedWorkerError: a worker process died" in capsys.readouterr().out


@once
def test_a_network_resumed_in_a_worker_says_so_on_its_own_line(capfd, tmp_path, monkeypatch):
    """A worker killed in epoch 2, then the same call again: the network resumes, and the parent's line says
    so; the worker's own "resumed from a checkpoint" line, which would break the bar's line, is not printed."""
    import os

    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path))
    marker, parent = tmp_path / "killed once", os.getpid()

    class KillInEpoch2(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1 and os.getpid() != parent and not marker.exists():
                marker.touch()
                os._exit(1)  # as if killed, before epoch 2's backup (the backup is the last callback)

    kwargs = dict(n_jobs=2, max_epochs=4, patience=4, callbacks=[KillInEpoch2()])
    first = train_many(small, blobs(n_train=200), [Run("cut", 1, 1e-3)], **kwargs)
    assert "cut" in first.failures and marker.exists()
    capfd.readouterr()
    again = train_many(small, blobs(n_train=200), [Run("cut", 1, 1e-3)], **kwargs)
    out = capfd.readouterr().out
    assert [r.epochs for r in again.records] == [4]
    assert "[cut] 4 epochs, kept epoch" in out and "(resumed after epoch 1)" in out, out
    assert "resumed from a checkpoint" not in out

