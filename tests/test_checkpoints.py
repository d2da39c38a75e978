"""A training killed mid-way (SIGKILL) resumes from its last epoch and ends as an uninterrupted one."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from helpers import checkpoints, config, parallel, training
from helpers.models import build_dnn
from tests.synthetic import blobs
from tests.backends import once

SCRIPT = textwrap.dedent('''
    import sys, time
    from helpers import parallel, results, training
    from helpers.models import build_dnn
    from tests.synthetic import blobs

    update = training.TrainingState.update
    def slow_update(*args, **kwargs):  # epochs long enough to be killed in the middle of the run
        time.sleep(0.15)
        return update(*args, **kwargs)
    training.TrainingState.update = slow_update

    def build(seed):
        return build_dnn(n_hidden=3, n_neurons=16, input_shape=(20,), seed=seed)

    data = blobs(n_train=400)
    if sys.argv[2] == "train":
        model = training.compile_model(build(1), 3e-3)
        records = [training.train(model, data, "killed", max_epochs=12, patience=12, seed=1, verbose=2)]
    else:  # two networks side by side, the GPU's way
        runs = [parallel.Run("killed", 1, 3e-3), parallel.Run("killed_too", 2, 1e-2)]
        records = parallel.train_many(build, data, runs, method="vmap", max_epochs=12, patience=12, verbose=2).records
    for record in records:
        results.save_run(record, directory=sys.argv[1])
''')


def run_script(tmp_path, env, how, kill_after_epoch=None):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "results"), how], cwd=config.PROJECT_ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if kill_after_epoch and f"epoch {kill_after_epoch:3d}/" in line:
            proc.send_signal(signal.SIGKILL)  # not a polite stop
            break
    proc.wait(timeout=300)
    return proc.returncode, "".join(lines) + (proc.stdout.read() if not proc.stdout.closed else "")


def uninterrupted(how):
    """The same run as SCRIPT's, never killed, here in this process."""
    def build(seed):
        return build_dnn(n_hidden=3, n_neurons=16, input_shape=(20,), seed=seed)

    data = blobs(n_train=400)
    if how == "train":
        model = training.compile_model(build(1), 3e-3)
        return [training.train(model, data, "killed", max_epochs=12, patience=12, seed=1, verbose=0, resume=False)]
    runs = [parallel.Run("killed", 1, 3e-3), parallel.Run("killed_too", 2, 1e-2)]
    return list(parallel.train_many(build, data, runs, method="vmap", max_epochs=12, patience=12, verbose=0,
                                    resume=False).records)


@pytest.mark.parametrize("how", ["train", "vmap"])
def test_a_killed_training_resumes_and_ends_with_the_uninterrupted_record(tmp_path, how):
    if how == "vmap" and keras.backend.backend() != "jax":
        pytest.skip("vmap is the JAX path")
    env = {**os.environ, "CIFAR10_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(config.PROJECT_ROOT)}
    code, out = run_script(tmp_path, env, how, kill_after_epoch=4)
    assert code == -signal.SIGKILL, out
    saved = list((tmp_path / "cache" / "checkpoints").glob("killed*.npz"))
    assert len(saved) == (1 if how == "train" else 2), "one whole checkpoint per network"
    assert not list(saved[0].parent.glob("*.tmp")), "no half-written file"
    assert not (tmp_path / "results" / "killed.json").exists()

    code, out = run_script(tmp_path, env, how)  # started again with the same arguments
    assert code == 0, out
    resumed = int(out.split("resumed from a checkpoint after epoch ")[1].split()[0])
    assert 4 <= resumed < 12 and f"epoch {resumed + 1:3d}/12" in out and "epoch   1/12" not in out
    assert not list((tmp_path / "cache" / "checkpoints").glob("killed*")), "removed when the run completes"
    for alone in uninterrupted(how):
        record = json.loads((tmp_path / "results" / f"{alone.variant}.json").read_text())  # a whole, valid record
        assert record["epochs"] == alone.epochs == 12 and record["best_epoch"] == alone.best_epoch
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            # the same computation from the same state, the batch order drawn from (seed, epoch): equal
            assert record["history"][key] == alone.history[key], key


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
    a.path.write_bytes(b"not an npz")
    model, state = small_model(0), training.TrainingState(3)
    with pytest.warns(RuntimeWarning, match="ignoring the checkpoint"):
        assert a.restore(checkpoints.variables_of(model), state) is None
    assert state.epoch == 0


@once
def test_the_key_covers_the_data_contents_and_the_keras_version(tmp_path, monkeypatch):
    import dataclasses

    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path))
    data = blobs(n_train=64, n_valid=16, n_test=16)
    a = checkpoints.Checkpoint.for_run(small_model(0), data, variant="x", seed=0)
    nudged = dataclasses.replace(data, x_train=data.x_train + np.float32(1e-3))  # same source, sizes and shapes
    assert a.path != checkpoints.Checkpoint.for_run(small_model(0), nudged, variant="x", seed=0).path
    monkeypatch.setattr(keras, "__version__", "9.9.9")
    assert a.path != checkpoints.Checkpoint.for_run(small_model(0), data, variant="x", seed=0).path


@once
def test_restore_is_by_path_so_a_reordered_file_still_restores_each_variable(tmp_path):
    """Nadam's momentum and velocity of a kernel have the same shape: restored by position, a file
    (or a Keras version) that lists them in the other order would swap them without an error."""
    model = small_model(0)
    training.train(model, blobs(n_train=64, n_valid=16, n_test=16), "x", max_epochs=1, patience=1, verbose=0,
                   resume=False)
    saved = checkpoints.variables_of(model)
    checkpoint = checkpoints.Checkpoint(tmp_path / "x.npz")
    assert checkpoint.save(saved, training.TrainingState(3))
    with np.load(checkpoint.path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    keys = list(arrays)
    m = next(k for k in keys if k.endswith("kernel_momentum"))
    v = m.replace("momentum", "velocity")
    i, j = keys.index(m), keys.index(v)
    keys[i], keys[j] = keys[j], keys[i]  # the two swapped in the file's order
    np.savez(checkpoint.path, **{k: arrays[k] for k in keys})
    assert list(np.load(checkpoint.path).files).index(v) < list(np.load(checkpoint.path).files).index(m)
    assert not np.allclose(saved[m], saved[v])  # telling them apart matters

    fresh = small_model(0)
    fresh.optimizer.build(fresh.trainable_variables)
    values = checkpoint.restore(checkpoints.variables_of(fresh), training.TrainingState(3))
    checkpoints.assign(fresh, values)
    restored = checkpoints.variables_of(fresh)
    for key, value in saved.items():
        np.testing.assert_array_equal(restored[key], value, err_msg=key)


@once
def test_a_completed_run_leaves_no_checkpoint_and_resume_false_writes_none(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path))
    data = blobs(n_train=64, n_valid=16, n_test=16)
    training.train(small_model(), data, "done", max_epochs=2, patience=2, verbose=0)
    assert not list(tmp_path.rglob("*.npz"))
    saved = []
    monkeypatch.setattr(checkpoints.Checkpoint, "save", lambda self, values, state: saved.append(state.epoch))
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
