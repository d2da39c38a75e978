"""A training killed mid-way (SIGKILL) resumes from its last epoch and ends as an uninterrupted one."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers import callbacks, config, training
from helpers.models import build_dnn
from tests.backends import once
from tests.synthetic import blobs

SCRIPT = textwrap.dedent('''
    import sys, time
    import keras
    from helpers import results, training
    from helpers.models import build_dnn
    from tests.synthetic import blobs

    slow = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: time.sleep(0.2))  # time to be killed
    model = training.compile_model(build_dnn(n_hidden=3, n_neurons=16, input_shape=(20,), seed=1, activation="selu",
                                             initializer="lecun_normal", alpha_dropout=0.1), 3e-3)
    record = training.train(model, blobs(n_train=400), "killed", max_epochs=12, patience=12, seed=1, verbose=2,
                            callbacks=[slow])
    results.save_run(record, directory=sys.argv[1])
''')


def run_script(tmp_path, env, kill_at_epoch=None):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "results")], cwd=config.PROJECT_ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if kill_at_epoch and line.startswith(f"Epoch {kill_at_epoch}/"):
            proc.send_signal(signal.SIGKILL)  # not a polite stop
            break
    proc.wait(timeout=300)
    return proc.returncode, "".join(lines) + (proc.stdout.read() if not proc.stdout.closed else "")


def test_a_killed_training_resumes_and_ends_with_the_uninterrupted_record(tmp_path):
    env = {**os.environ, "CIFAR10_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(config.PROJECT_ROOT)}
    code, out = run_script(tmp_path, env, kill_at_epoch=6)  # epoch 5 is backed up once epoch 6 begins
    assert code == -signal.SIGKILL, out
    (folder,) = (tmp_path / "cache" / "checkpoints").iterdir()
    assert "state.json" in {p.name for p in folder.iterdir()} and not list(folder.glob("*.tmp")), "a whole backup"
    assert not (tmp_path / "results" / "killed.json").exists()

    code, out = run_script(tmp_path, env)  # started again with the same arguments
    assert code == 0, out
    resumed = int(out.split("resumed from a checkpoint after epoch ")[1].split()[0])
    assert resumed >= 5 and f"Epoch {resumed + 1}/12" in out and "Epoch 1/12" not in out
    assert not folder.exists(), "removed when the run completes"

    model = training.compile_model(build_dnn(n_hidden=3, n_neurons=16, input_shape=(20,), seed=1, activation="selu",
                                             initializer="lecun_normal", alpha_dropout=0.1), 3e-3)
    alone = training.train(model, blobs(n_train=400), "killed", max_epochs=12, patience=12, seed=1, verbose=0,
                           resume=False)
    record = json.loads((tmp_path / "results" / "killed.json").read_text())  # a whole, valid record
    assert record["epochs"] == alone.epochs == 12 and record["best_epoch"] == alone.best_epoch
    assert record["config"]["resumed_after_epoch"] == resumed
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        # the same computation from the same state (dropout's random state included), the same batch order
        assert record["history"][key] == alone.history[key], key


def small(seed=0):
    return training.compile_model(build_dnn(n_hidden=2, n_neurons=8, input_shape=(20,), seed=seed), 1e-2)


class Killed(Exception):
    pass


def kill_at(epoch_to_kill):
    def begin(epoch, logs):
        if epoch == epoch_to_kill:
            raise Killed
    return __import__("keras").callbacks.LambdaCallback(on_epoch_begin=begin)


def test_a_run_resumes_with_its_early_stopping_state_and_history(tmp_path, monkeypatch):
    """Killed in-process after epoch 3: the resumed run has every epoch's history and the same best epoch."""
    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path))
    data = blobs(spread=2.0)
    alone = training.train(small(), data, "es", max_epochs=15, patience=3, verbose=0, resume=False)
    assert alone.stopped == "early_stopping"
    with pytest.raises(Killed):
        training.train(small(), data, "es", max_epochs=15, patience=3, verbose=0, callbacks=[kill_at(3)])
    model = small()
    again = training.train(model, data, "es", max_epochs=15, patience=3, verbose=0)
    assert again.config["resumed_after_epoch"] == 3
    assert model._initial_epoch is None  # a later fit of this model starts at epoch 1, not after the resume
    assert again.history["val_loss"] == alone.history["val_loss"] and again.best_epoch == alone.best_epoch
    assert again.valid_accuracy == alone.valid_accuracy


@once
def test_a_kill_in_the_middle_of_a_backup_leaves_the_last_whole_one(tmp_path, monkeypatch, capsys):
    """Files of a backup that state.json does not name yet are ignored and removed; the named one is used."""
    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path))
    data = blobs()
    with pytest.raises(Killed):
        training.train(small(), data, "cut", max_epochs=6, patience=6, verbose=0, callbacks=[kill_at(2)])
    (folder,) = (tmp_path / "checkpoints").iterdir()
    state = json.loads((folder / "state.json").read_text())
    assert state["epoch"] == 2
    (folder / "epoch-3.weights.h5").write_bytes(b"half a file")  # a kill while epoch 3 was written
    (folder / "state.json.tmp").write_text("{")
    with pytest.raises(Killed):  # resumed, then killed again after epoch 3 is backed up
        training.train(small(), data, "cut", max_epochs=6, patience=6, verbose=0, callbacks=[kill_at(3)])
    assert "resumed from a checkpoint after epoch 2" in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == ["epoch-3.npz", "epoch-3.weights.h5", "state.json"]
    assert json.loads((folder / "state.json").read_text())["epoch"] == 3  # a real epoch 3 over the half file
    record = training.train(small(), data, "cut", max_epochs=6, patience=6, verbose=0)
    assert record.epochs == 6 and record.config["resumed_after_epoch"] == 3 and not folder.exists()


@once
def test_another_runs_backup_is_never_picked(tmp_path):
    data = blobs()
    settings = dict(variant="x", seed=0, batch_size=32)
    a = training.backup_folder(small(0), data, **settings)
    assert a == training.backup_folder(small(0), data, **settings)
    assert a != training.backup_folder(small(1), data, **settings)  # other initial weights
    assert a != training.backup_folder(small(0), data, **{**settings, "batch_size": 8})
    assert a != training.backup_folder(training.compile_model(build_dnn(n_hidden=2, n_neurons=8, input_shape=(20,),
                                                                        seed=0), 1e-3), data, **settings)  # other rate
    nudged = blobs()
    nudged.x_train[0, 0] += 1
    assert a != training.backup_folder(small(0), nudged, **settings)
    assert a.parent == config.cache_dir() / "checkpoints"


def test_random_state_is_part_of_the_backup():
    """save_weights leaves out the dropout layers' seed generators; the backup keeps them."""
    model = training.compile_model(build_dnn(n_hidden=2, n_neurons=8, input_shape=(20,), seed=0, activation="selu",
                                             initializer="lecun_normal", alpha_dropout=0.2), 1e-2)
    backup = callbacks.ExactBackupAndRestore("/nonexistent", callbacks.RunLog())
    backup.set_model(model)
    random_state = backup._random_state()
    assert random_state and all("seed_generator" in name for name in random_state)
    assert not np.isin(list(random_state), [w.path for w in model.weights]).any()


@once
def test_an_unwritable_cache_warns_and_trains_on(tmp_path, monkeypatch):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv("CIFAR10_CACHE", str(blocked))
    with pytest.warns(RuntimeWarning, match="could not write the backup"):
        record = training.train(small(), blobs(), "nowhere", max_epochs=2, patience=2, verbose=0)
    assert record.epochs == 2


@once
def test_a_corrupt_backup_is_ignored_and_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path))
    data = blobs()
    with pytest.raises(Killed):
        training.train(small(), data, "corrupt", max_epochs=4, patience=4, verbose=0, callbacks=[kill_at(2)])
    (folder,) = (tmp_path / "checkpoints").iterdir()
    (folder / "epoch-2.weights.h5").write_bytes(b"not an HDF5 file")  # corrupt, not missing

    with pytest.warns(RuntimeWarning, match="ignoring the backup .*starting from epoch 1"):
        record = training.train(small(), data, "corrupt", max_epochs=4, patience=4, verbose=0)
    assert record.epochs == 4 and "resumed_after_epoch" not in record.config
    fresh = training.train(small(), data, "fresh", max_epochs=4, patience=4, verbose=0, resume=False)
    assert record.history["val_loss"] == fresh.history["val_loss"]  # nothing half-loaded from the bad file


def test_a_finished_training_is_read_back_with_its_weights_when_asked_again(tmp_path, monkeypatch, capsys):
    """CIFAR10_REUSE_FINISHED=1: the same training asked for again is not trained; its record and weights come back."""
    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path))
    monkeypatch.setenv("CIFAR10_REUSE_FINISHED", "1")
    data = blobs()
    first_model = small()
    first = training.train(first_model, data, "kept", max_epochs=4, patience=4, verbose=0)
    assert "read_back" not in first.config
    (kept,) = (tmp_path / "checkpoints" / "finished").iterdir()
    assert sorted(p.name for p in kept.iterdir()) == ["final.weights.h5", "kept.json"]

    def no_fit(*args, **kwargs):
        raise AssertionError("fit was called: the finished training was not read back")

    model = small()
    monkeypatch.setattr(model, "fit", no_fit)
    again = training.train(model, data, "kept", max_epochs=4, patience=4, verbose=1, extra_config={"note": "x"})
    assert "finished in an earlier run, read back" in capsys.readouterr().out
    quiet = small()
    monkeypatch.setattr(quiet, "fit", no_fit)
    assert training.train(quiet, data, "kept", max_epochs=4, patience=4, verbose=0).config["read_back"] is True
    assert capsys.readouterr().out == ""  # silent: parallel.train_many says it on its own line
    assert again.config["read_back"] is True and again.config["note"] == "x"
    assert again.history == first.history and again.valid_loss == first.valid_loss
    for a, b in zip(model.get_weights(), first_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    other = training.train(small(seed=1), data, "kept", max_epochs=4, patience=4, verbose=0)  # other initial weights
    assert "read_back" not in other.config and other.history != first.history


@once
def test_finished_trainings_are_neither_kept_nor_read_back_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path))
    monkeypatch.delenv("CIFAR10_REUSE_FINISHED", raising=False)
    training.train(small(), blobs(), "plain", max_epochs=2, patience=2, verbose=0)
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())
    monkeypatch.setenv("CIFAR10_REUSE_FINISHED", "yes")
    with pytest.raises(ValueError, match="CIFAR10_REUSE_FINISHED='yes' must be 1"):
        training.train(small(), blobs(), "plain", max_epochs=2, patience=2, verbose=0)


@once
def test_a_corrupt_finished_training_is_ignored_and_trained_again(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path))
    monkeypatch.setenv("CIFAR10_REUSE_FINISHED", "1")
    data = blobs()
    first = training.train(small(), data, "broken", max_epochs=3, patience=3, verbose=0)
    (kept,) = (tmp_path / "checkpoints" / "finished").iterdir()
    (kept / "final.weights.h5").write_bytes(b"not an HDF5 file")
    with pytest.warns(RuntimeWarning, match="ignoring the finished training"):
        again = training.train(small(), data, "broken", max_epochs=3, patience=3, verbose=0)
    assert "read_back" not in again.config and again.history["val_loss"] == first.history["val_loss"]
