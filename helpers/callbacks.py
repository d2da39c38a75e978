"""What ``training.train`` adds to ``model.fit``, where Keras has nothing that does it.

``fit(shuffle=True)`` draws its order from the global random state, which a resumed run cannot draw again,
and Keras' ``History`` starts again at each ``fit``: ``EpochOrder`` and ``RunLog`` are the same after a resume.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path

import keras
import numpy as np


class EpochOrder(keras.utils.PyDataset):
    """Batches of ``(x, y)``, shuffled anew each epoch by ``np.random.default_rng((seed, epoch))``.

    ``set_epoch`` is called at each epoch's start (a ``LambdaCallback``): the order depends on the epoch alone.
    """

    def __init__(self, x, y, batch_size: int, seed: int):
        super().__init__()
        self.x, self.y, self.batch_size, self.seed = x, y, int(batch_size), seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int):
        self.order = np.random.default_rng((self.seed, epoch)).permutation(len(self.y))

    def __len__(self):
        return -(-len(self.y) // self.batch_size)

    def __getitem__(self, i):
        rows = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        return self.x[rows], self.y[rows]


class RunLog(keras.callbacks.Callback):
    """Each epoch's logs (loss, metrics, validation) and its wall time in ``epoch_seconds``, across resumes."""

    def __init__(self):
        super().__init__()
        self.history = {}

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start  # training and validation of this epoch
        for key, value in {**(logs or {}), "epoch_seconds": seconds}.items():
            self.history.setdefault(key, []).append(float(value))


class ExactBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` that also keeps random state, early stopping and the ``RunLog``.

    Keras' saves the weights and the optimizer only: a resumed run would then end elsewhere. After
    every epoch this writes the weights, then the other arrays, then replaces ``state.json``, which
    names both, in one atomic rename: a kill at any moment leaves a complete backup, or none. Put it
    last in the callbacks: it saves what the others recorded, and restores after they have reset.
    """

    def __init__(self, backup_dir, run_log: RunLog, early_stopping=None):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=True)
        self.folder, self.run_log, self.early_stopping = Path(backup_dir), run_log, early_stopping
        self.resumed_after = 0

    def _random_state(self):
        """The variables ``save_weights`` leaves out: the seed generators of dropout and flip layers."""
        saved = {id(v) for v in self.model.weights}
        return {v.path: v for v in self.model.variables if id(v) not in saved}

    def _save_model(self):
        try:
            self._write_backup()
        except OSError as e:
            if not getattr(self, "_warned", False):
                warnings.warn(f"could not write the backup in {self.folder} ({e.strerror or e}); training goes on, but "
                              "a killed run will start again from epoch 1 (set CIFAR10_CACHE to a writable folder)",
                              RuntimeWarning, stacklevel=2)
                self._warned = True

    def _write_backup(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        epoch = self._current_epoch
        weights, arrays = f"epoch-{epoch}.weights.h5", f"epoch-{epoch}.npz"
        self.model.save_weights(self.folder / weights, overwrite=True)
        stopper = self.early_stopping
        best = [] if stopper is None or stopper.best_weights is None else stopper.best_weights
        np.savez(self.folder / arrays, **{f"random/{k}": keras.ops.convert_to_numpy(v.value)
                                          for k, v in self._random_state().items()},
                 **{f"best/{i}": w for i, w in enumerate(best)})
        state = {"epoch": epoch, "weights": weights, "arrays": arrays, "history": self.run_log.history,
                 "early_stopping": None if stopper is None else
                 {"wait": stopper.wait, "best": float(stopper.best), "best_epoch": stopper.best_epoch}}
        tmp = self.folder / "state.json.tmp"
        tmp.write_text(json.dumps(state))
        for name in (weights, arrays, tmp.name):  # on disk before state.json names them, even after a power cut
            with open(self.folder / name, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, self.folder / "state.json")
        self._remove_all_but(weights, arrays)

    def _remove_all_but(self, *keep):
        for path in self.folder.iterdir():
            if path.name not in (*keep, "state.json"):
                path.unlink(missing_ok=True)

    def _load_model(self):
        path = self.folder / "state.json"
        if not path.exists():
            shutil.rmtree(self.folder, ignore_errors=True)  # what a kill before the first complete backup left
            return
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        before = [np.array(keras.ops.convert_to_numpy(v.value))
                  for v in [*self.model.variables, *self.model.optimizer.variables]]
        try:
            state = json.loads(path.read_text())
            history, stopping, epoch = state["history"], state["early_stopping"], int(state["epoch"])
            with np.load(self.folder / state["arrays"]) as arrays:
                arrays = dict(arrays)
            self.model.load_weights(self.folder / state["weights"])
            for name, variable in self._random_state().items():
                variable.assign(arrays[f"random/{name}"])
        except Exception as e:  # a corrupt backup: anything h5py, NumPy or JSON may raise
            for variable, value in zip([*self.model.variables, *self.model.optimizer.variables], before):
                variable.assign(value)  # as built: nothing half-loaded
            warnings.warn(f"ignoring the backup in {self.folder} ({type(e).__name__}: {e}); starting from epoch 1",
                          RuntimeWarning, stacklevel=2)
            shutil.rmtree(self.folder, ignore_errors=True)
            return
        if self.early_stopping is not None and stopping is not None:
            for key, value in stopping.items():
                setattr(self.early_stopping, key, value)
            best = [arrays[f"best/{i}"] for i in range(sum(k.startswith("best/") for k in arrays))]
            self.early_stopping.best_weights = best or None
        self.run_log.history = history
        self.model._initial_epoch = self.resumed_after = epoch  # how BackupAndRestore resumes fit
        self._remove_all_but(state["weights"], state["arrays"])
        print(f"resumed from a checkpoint after epoch {epoch} ({self.folder.name})", flush=True)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)  # removes the backup: the run is complete
        self.model._initial_epoch = None  # a later fit of the same model starts at epoch 1 again

