"""Training that survives being killed: a checkpoint after every epoch, resumed on restart.

A laptop sleeps, a kernel dies at epoch 40 of 60: ``training.train`` started again with
the same arguments continues from its last completed epoch instead of epoch 1, and ends
with the record an uninterrupted run gives (the same numbers exactly: batches are drawn
from ``(seed, epoch)`` on the host, and the state saved is the whole state). Keras'
``BackupAndRestore`` callback does the same for ``fit`` only, so it would not reach the
compiled fast path.

What is saved, after every epoch, in one ``.npz`` file written atomically (a temporary
file, then a rename: a kill during the write leaves the previous checkpoint whole):
every model variable (weights, batch-norm statistics, dropout seed states) and every
optimizer variable (iteration counter, moments), each under its Keras path
(``model/sequential/dense/kernel``, ``optimizer/nadam/dense_kernel_momentum``), the best
epoch's weights (``best/...``), and the early-stopping state as JSON. Nothing in it is
a pickle: it loads with ``allow_pickle=False``, and it is restored by path, so a Keras
version that lists the optimizer's variables in another order still gets each value
into its own variable. Where: ``checkpoints/`` in the cache folder (``CIFAR10_CACHE``),
outside the repository. The file is removed when the run completes.

Which run a checkpoint belongs to: a hash of everything that decides the training (the
record's name, the architecture, the optimizer and its settings, the initial weights,
the data's contents and sizes, seed, batch size, epochs, patience, augmentation, the
backend and the Keras version). Change any of them and the run starts afresh; the
stale file stays until that run completes or the folder is cleared.
Used in: ``helpers.training.train`` (every notebook that trains).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import keras
import numpy as np

from helpers import config

FORMAT = 2  # bumped when the file's content changes; other versions are ignored
_STATE = "state.json"


def variables_of(model) -> dict:
    """Every model and optimizer variable of ``model`` as ``{path: NumPy array}``."""
    out = {}
    for prefix, variables in (("model", model.variables), ("optimizer", model.optimizer.variables)):
        for v in variables:
            key = f"{prefix}/{v.path}"
            if key in out:
                raise ValueError(f"two variables share the path {key!r}: a checkpoint could not tell them apart")
            out[key] = np.array(keras.ops.convert_to_numpy(v.value))
    return out


def weights_of(model) -> dict:
    """The model's weights (what ``get_weights`` returns) as ``{path: NumPy array}``."""
    return {w.path: np.array(keras.ops.convert_to_numpy(w.value)) for w in model.weights}


def assign(model, values: dict):
    """Set each model and optimizer variable of ``model`` from ``values``, by path."""
    for prefix, variables in (("model", model.variables), ("optimizer", model.optimizer.variables)):
        for v in variables:
            v.assign(values[f"{prefix}/{v.path}"])


def data_fingerprint(data) -> str:
    """sha256 of the training and validation arrays as trained on (after scaling or standardizing)."""
    digest = hashlib.sha256()
    for a in (data.x_train, data.y_train, data.x_valid, data.y_valid):
        a = np.ascontiguousarray(a)
        digest.update(str((a.dtype.str, a.shape)).encode())
        digest.update(memoryview(a).cast("B"))
    return digest.hexdigest()


class Checkpoint:
    """The checkpoint file of one training run; see the module's docstring."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def for_run(cls, model, data, fingerprint: str | None = None, **settings) -> "Checkpoint":
        """The checkpoint of this model (as built, before training), this data and these settings.

        ``fingerprint``: ``data_fingerprint(data)``, when the caller has it already.
        """
        digest = hashlib.sha256()
        digest.update(json.dumps({
            "format": FORMAT, "backend": keras.backend.backend(), "keras": keras.__version__,
            "model": model.get_config(), "optimizer": model.optimizer.get_config(),
            "data": [data.source, data.preprocessing, data.sizes(), fingerprint or data_fingerprint(data)],
            **settings}, sort_keys=True, default=str).encode())
        for w in model.get_weights():
            digest.update(np.ascontiguousarray(w).tobytes())
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(settings.get("variant", "run")))
        return cls(config.cache_dir() / "checkpoints" / f"{name}-{digest.hexdigest()[:16]}.npz")

    def exists(self) -> bool:
        try:
            return self.path.is_file()
        except OSError:  # e.g. the cache "folder" is a file
            return False

    def save(self, variables: dict, state) -> bool:
        """Write ``variables`` (``variables_of``) and ``state`` (``training.TrainingState``) after its last epoch.

        False, with a warning, if the file cannot be written: training goes on.
        """
        arrays = dict(variables)
        if state.best_weights is not None:
            arrays |= {f"best/{path}": np.asarray(w) for path, w in state.best_weights.items()}
        fields = {k: getattr(state, k) for k in state.FIELDS}
        arrays[_STATE] = np.array(json.dumps({"format": FORMAT, "epoch": state.epoch, **fields}))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    np.savez(f, **arrays)
                os.replace(tmp, self.path)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        except OSError as e:
            warnings.warn(f"could not write the checkpoint {self.path} ({e}); training goes on, but a killed run "
                          "will start again from epoch 1", RuntimeWarning, stacklevel=2)
            return False
        return True

    def restore(self, expected: dict, state):
        """The saved variables, by path, for a model whose variables are ``expected`` (``variables_of``).

        Fills ``state`` (history, best epoch and weights, ...) too. None, with a warning,
        and ``state`` untouched, if the file is unreadable, of another format, or does not
        match the model: the run then starts from epoch 1.
        """
        try:
            with np.load(self.path, allow_pickle=False) as f:
                saved = json.loads(str(f[_STATE]))
                if saved.get("format") != FORMAT:
                    raise ValueError(f"format {saved.get('format')}, expected {FORMAT}")
                missing = [k for k in expected if k not in f.files]
                if missing:
                    raise ValueError(f"the saved variables do not match this model (no {missing[0]!r})")
                values = {k: f[k] for k in expected}
                best = {k[len("best/"):]: f[k] for k in f.files if k.startswith("best/")}
        except Exception as e:  # noqa: BLE001 - a bad checkpoint never stops a training
            warnings.warn(f"ignoring the checkpoint {self.path}: {e}; starting from epoch 1", RuntimeWarning,
                          stacklevel=2)
            return None
        wrong = [k for k, v in expected.items() if np.shape(v) != values[k].shape]
        if wrong:
            warnings.warn(f"ignoring the checkpoint {self.path}: {wrong[0]} has shape {values[wrong[0]].shape}, "
                          f"the model's has {np.shape(expected[wrong[0]])}; starting from epoch 1", RuntimeWarning,
                          stacklevel=2)
            return None
        for k in state.FIELDS:
            setattr(state, k, saved[k])
        state.best_weights = best or None
        return values

    def remove(self):
        try:
            self.path.unlink()
        except OSError:  # never written (FileNotFoundError), or the cache is not a folder
            pass
