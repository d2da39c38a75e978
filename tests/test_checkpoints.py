"""A training killed mid-way (SIGKILL) resumes from its last epoch and ends as an uninterrupted one."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

from helpers import checkpoints, config, training
from helpers.models import build_dnn
from tests.synthetic import blobs
from tests.backends import once

SCRIPT = textwrap.dedent('''
    import sys, time
    from helpers import engine, results, training
    from helpers.models import build_dnn
    from tests.synthetic import blobs

    epoch = engine.train_epoch
    def slow_epoch(*args, **kwargs):  # epochs long enough to be killed in the middle of the run
        time.sleep(0.15)
        return epoch(*args, **kwargs)
    engine.train_epoch = slow_epoch

    data = blobs(n_train=400)
    model = training.compile_model(build_dnn(n_hidden=3, n_neurons=16, input_shape=(20,), seed=1), 3e-3)
    record = training.train(model, data, "killed", max_epochs=12, patience=12, seed=1)
    results.save_run(record, directory=sys.argv[1])
''')


def run_script(tmp_path, env, kill_after_epoch=None):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "results")], cwd=config.PROJECT_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if kill_after_epoch and line.startswith(f"epoch {kill_after_epoch:3d}/"):
            proc.send_signal(signal.SIGKILL)  # not a polite stop
            break
    proc.wait(timeout=300)
    return proc.returncode, "".join(lines) + (proc.stdout.read() if not proc.stdout.closed else "")


def test_a_killed_training_resumes_and_ends_with_the_uninterrupted_record(tmp_path):
    env = {**os.environ, "CIFAR10_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(config.PROJECT_ROOT)}
    code, out = run_script(tmp_path, env, kill_after_epoch=4)
    assert code == -signal.SIGKILL, out
    saved = list((tmp_path / "cache" / "checkpoints").glob("killed-*.pkl"))
    assert len(saved) == 1 and not list(saved[0].parent.glob("*.tmp")), "one whole checkpoint, no half-written file"
    assert not (tmp_path / "results" / "killed.json").exists()

    code, out = run_script(tmp_path, env)  # started again with the same arguments
    assert code == 0, out
    resumed = int(out.split("resumed from a checkpoint after epoch ")[1].split()[0])
    assert 4 <= resumed < 12 and f"epoch {resumed + 1:3d}/12" in out and "epoch   1/12" not in out
    assert not list((tmp_path / "cache" / "checkpoints").glob("killed-*")), "removed when the run completes"
    record = json.loads((tmp_path / "results" / "killed.json").read_text())  # a whole, valid record

    # the same run, never killed, here in this process
    model = training.compile_model(build_dnn(n_hidden=3, n_neurons=16, input_shape=(20,), seed=1), 3e-3)
    alone = training.train(model, blobs(n_train=400), "killed", max_epochs=12, patience=12, seed=1, verbose=0,
                           resume=False).to_dict()
    assert record["epochs"] == alone["epochs"] == 12
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        # the same computation from the same state: equal under JAX; TensorFlow's fit reshuffles
        # with its own generator, which the checkpoint does not hold, so only close there
        if keras.backend.backend() == "jax":
            assert record["history"][key] == alone["history"][key], key
        else:
            np.testing.assert_allclose(record["history"][key], alone["history"][key], rtol=0.2)
    assert record["best_epoch"] == alone["best_epoch"] or keras.backend.backend() != "jax"


def small_model(seed=0):
    return training.compile_model(build_dnn(n_hidden=2, n_neurons=8, input_shape=(20,), seed=seed), 1e-3)


@once
def test_a_checkpoint_of_another_run_or_a_corrupt_one_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path))
    data = blobs(n_train=64, n_valid=16, n_test=16)
    a = checkpoints.Checkpoint.for_run(small_model(0), data, variant="x", seed=0)
    assert a.path == checkpoints.Checkpoint.for_run(small_model(0), data, variant="x", seed=0).path
    assert a.path != checkpoints.Checkpoint.for_run(small_model(1), data, variant="x", seed=0).path  # other weights
    assert a.path != checkpoints.Checkpoint.for_run(small_model(0), data, variant="x", seed=0, batch_size=8).path
    assert str(a.path).startswith(str(tmp_path)) and not str(a.path).startswith(str(config.PROJECT_ROOT))
    a.path.parent.mkdir(parents=True)
    a.path.write_bytes(b"not a pickle")
    model, progress = small_model(0), training.EarlyStopping(3)
    with pytest.warns(RuntimeWarning, match="ignoring the checkpoint"):
        assert a.restore(model, progress) == 0
    assert progress.epoch == 0


@once
def test_a_completed_run_leaves_no_checkpoint_and_resume_false_writes_none(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path))
    data = blobs(n_train=64, n_valid=16, n_test=16)
    training.train(small_model(), data, "done", max_epochs=2, patience=2, verbose=0)
    assert not list(tmp_path.rglob("*.pkl"))
    saved = []
    monkeypatch.setattr(checkpoints.Checkpoint, "save", lambda self, m, p: saved.append(p.epoch))
    training.train(small_model(), data, "done", max_epochs=2, patience=2, verbose=0, resume=False)
    assert saved == []
    training.train(small_model(), data, "done", max_epochs=2, patience=2, verbose=0)
    assert saved == [1, 2]


@once
def test_an_unwritable_cache_warns_and_trains_on(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv("CIFAR10_CACHE", str(blocked))
    with pytest.warns(RuntimeWarning, match="could not write the checkpoint"):
        record = training.train(small_model(), blobs(n_train=64, n_valid=16, n_test=16), "nowhere", max_epochs=1,
                                patience=1, verbose=0)
    assert record.epochs == 1
