"""Training that survives being killed: a checkpoint after every epoch, resumed on restart.

A laptop sleeps, a kernel dies at epoch 40 of 60: ``training.train`` started again with
the same arguments continues from its last completed epoch instead of epoch 1, and ends
with the record an uninterrupted run gives (under JAX the same numbers exactly: batches
are drawn from ``(seed, epoch)``, and the state saved is the whole state). Keras'
``BackupAndRestore`` callback does the same for ``fit`` only, so it would not reach the
compiled fast path.

What is saved, after every epoch, in one file written atomically (a temporary file, then
a rename: a kill during the write leaves the previous checkpoint whole): every model
variable (weights, batch-norm statistics, dropout seed states), every optimizer variable
(iteration counter, moments), and the early-stopping state (history, best epoch, best
weights). Where: ``checkpoints/`` in the cache folder (``CIFAR10_CACHE``), outside the
repository. The file is removed when the run completes.

Which run a checkpoint belongs to: a hash of everything that decides the training (the
record's name, the architecture, the optimizer and its settings, the initial weights,
the data's fingerprint and sizes, seed, batch size, epochs, patience, augmentation, the
backend). Change any of them and the run starts afresh; the stale file stays until that
run completes or the folder is cleared.
Used in: ``helpers.training.train`` (every notebook that trains).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import warnings
from pathlib import Path

import keras
import numpy as np

from helpers import config

FORMAT = 1  # bumped when the file's content changes; other versions are ignored


def _numpy(variables):
    return [np.array(keras.ops.convert_to_numpy(v.value)) for v in variables]


class Checkpoint:
    """The checkpoint file of one training run; see the module's docstring."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def for_run(cls, model, data, **settings) -> "Checkpoint":
        """The checkpoint of this model (as built, before training), this data and these settings."""
        digest = hashlib.sha256()
        digest.update(json.dumps({
            "format": FORMAT, "backend": keras.backend.backend(), "model": model.get_config(),
            "optimizer": model.optimizer.get_config(), "data": [data.source, data.preprocessing, data.sizes()],
            **settings}, sort_keys=True, default=str).encode())
        for w in model.get_weights():
            digest.update(np.ascontiguousarray(w).tobytes())
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(settings.get("variant", "run")))
        return cls(config.cache_dir() / "checkpoints" / f"{name}-{digest.hexdigest()[:16]}.pkl")

    def exists(self) -> bool:
        try:
            return self.path.is_file()
        except OSError:  # e.g. the cache "folder" is a file
            return False

    def save(self, model, progress) -> bool:
        """Write the state after ``progress.epoch`` epochs; False (with a warning) if it cannot be written."""
        state = {"format": FORMAT, "epoch": progress.epoch, "model": _numpy(model.variables),
                 "optimizer": _numpy(model.optimizer.variables),
                 "progress": {k: getattr(progress, k) for k in
                              ("history", "best_val_loss", "best_epoch", "best_weights", "best_elapsed", "elapsed",
                               "stopped")}}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(tmp, self.path)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        except OSError as e:
            warnings.warn(f"could not write the checkpoint {self.path} ({e}); training goes on, but a killed run "
                          "will start again from epoch 1", RuntimeWarning, stacklevel=2)
            return False
        return True

    def restore(self, model, progress) -> int:
        """Load the saved state into ``model`` and ``progress``; the number of epochs it covers.

        0 (and nothing changed) if the file is unreadable, of another format, or does not
        match the model: the run then starts from epoch 1.
        """
        try:
            with open(self.path, "rb") as f:
                state = pickle.load(f)
            if state.get("format") != FORMAT:
                raise ValueError(f"format {state.get('format')}, expected {FORMAT}")
            if not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            pairs = [*zip(model.variables, state["model"]), *zip(model.optimizer.variables, state["optimizer"])]
            if (len(state["model"]) != len(model.variables) or len(state["optimizer"]) != len(model.optimizer.variables)
                    or any(tuple(v.shape) != value.shape for v, value in pairs)):
                raise ValueError("the saved variables do not match this model")
        except Exception as e:  # noqa: BLE001 - a bad checkpoint never stops a training
            warnings.warn(f"ignoring the checkpoint {self.path}: {e}; starting from epoch 1", RuntimeWarning, stacklevel=2)
            return 0
        for v, value in pairs:
            v.assign(value)
        for k, value in state["progress"].items():
            setattr(progress, k, value)
        return int(state["epoch"])

    def remove(self):
        try:
            self.path.unlink()
        except OSError:  # never written (FileNotFoundError), or the cache is not a folder
            pass
