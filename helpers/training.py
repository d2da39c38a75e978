"""Compile and train a Keras model with early stopping, timing and a Run record.

This is what the notebooks call: ``compile_model`` (Nadam and the loss), ``train`` (the
epoch loop with early stopping on validation loss, best weights restored, one line per
epoch, a ``RunRecord`` at the end) and ``evaluate``. ``train`` does what
``model.fit(..., callbacks=[keras.callbacks.EarlyStopping(patience=20,
restore_best_weights=True)])`` does, with each epoch run by ``helpers.engine`` (one
compiled loop per epoch under JAX; ``fit`` under other backends), and it records more:
per-epoch wall time, the compile epoch apart, the data's fingerprint, the versions.
Notebook 02 shows both side by side.
"""
from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time

import keras
import numpy as np

from helpers import checkpoints, config, engine, models
from helpers.results import HISTORY_KEYS, RunRecord


def compile_model(model: keras.Model, learning_rate, beta_1=0.9, beta_2: float = 0.999) -> keras.Model:
    """Compile with Nadam, sparse categorical cross-entropy and accuracy.

    Args:
        learning_rate: a float or a ``LearningRateSchedule`` (LR finder, 1cycle).
            Keras 3 spells it ``learning_rate``; ``Nadam(lr=...)`` is an error.
        beta_1: Nadam's momentum: a float, or a schedule with a ``momentum(step)`` method
            (``helpers.schedules.OneCycle``), then read from the iteration counter at every step.
    Used in: notebooks 02-06.
    """
    check_learning_rate(learning_rate)
    if hasattr(beta_1, "momentum"):
        from helpers.schedules import ScheduledNadam

        optimizer = ScheduledNadam(learning_rate=learning_rate, momentum_schedule=beta_1, beta_2=beta_2)
    else:
        optimizer = keras.optimizers.Nadam(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2)
    return engine.compile_with_speedups(model, optimizer, keras.losses.SparseCategoricalCrossentropy())


def check_learning_rate(learning_rate):
    """A float rate must be a positive, finite number (a schedule is checked by its own class)."""
    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        return
    try:
        rate = float(learning_rate)
    except (TypeError, ValueError):
        raise TypeError(f"learning_rate must be a number or a keras LearningRateSchedule, got {learning_rate!r}") from None
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"learning_rate must be a positive, finite number, got {learning_rate!r}; "
                         "typical rates for this network are 1e-5 to 1e-2 (run the LR finder)")


def check_data(model: keras.Model, data, batch_size: int | None = None):
    """Refuse data a model cannot train on, with a message that says what to do.

    Checks each of the train, validation and test sets: no empty set; images of the model's
    input shape, floats (not raw uint8 pixels), finite; as many labels as images and, for a
    classifier (more than one output), labels of shape (N,) that are class ids within the
    model's classes. And a batch no larger than the training set. Cheap next to an epoch.
    """
    expected = tuple(model.input_shape[1:])
    n_classes = model.output_shape[-1]
    for name in ("train", "valid", "test"):
        x, y = np.asarray(getattr(data, f"x_{name}")), np.asarray(getattr(data, f"y_{name}"))
        if len(x) == 0:
            raise ValueError(f"the {name} set is empty: nothing to train or evaluate on")
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"{name} images have shape {x.shape[1:]} each, the model expects {expected}; "
                             "load them with helpers.data.load_cifar10() (N, 32, 32, 3), or build the model "
                             "with input_shape=...")
        if x.dtype.kind != "f":
            raise ValueError(f"{name} images are {x.dtype}, not floats: scale or standardize them first "
                             "(helpers.data.scale(data) or helpers.data.standardize(data))")
        if not np.isfinite(x).all():
            bad = int(np.sum(~np.isfinite(x).reshape(len(x), -1).all(axis=1)))
            raise ValueError(f"{name} images contain NaN or infinite pixels ({bad} images): "
                             "fix or drop them before training")
        if len(y) != len(x):
            raise ValueError(f"{len(x)} {name} images but {len(y)} labels: they must match one to one")
        if n_classes == 1:  # one output: a regression probe, not a classifier; no class ids to check
            continue
        if y.ndim == 2 and y.shape[1] == n_classes:
            raise ValueError(f"{name} labels look one-hot, shape {y.shape}: the loss takes class ids of "
                             "shape (N,), e.g. y.argmax(axis=1)")
        if y.ndim != 1:
            raise ValueError(f"{name} labels must have shape (N,), got {y.shape}; flatten them (y.ravel())")
        if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= n_classes:
            raise ValueError(f"{name} labels must be integer class ids 0..{n_classes - 1}, got dtype {y.dtype} "
                             f"with values from {y.min()} to {y.max()}")
    if batch_size is not None and batch_size > len(data.y_train):
        raise ValueError(f"batch_size {batch_size} is larger than the training set ({len(data.y_train)} images); "
                         "use a smaller batch")


def evaluate(model: keras.Model, x, y, batch_size: int = engine.EVAL_BATCH_SIZE):
    """(loss, accuracy) of ``model`` on ``(x, y)``. Used in: notebooks 02-06."""
    stepper = engine.stepper_for(model)
    x, y = stepper.device_arrays(x, y)
    return stepper.evaluate(x, y, batch_size)


def learning_rate_of(optimizer) -> float:
    """The rate to report: the float, or a schedule's ``peak_learning_rate`` (1cycle's maximum).

    Read from the optimizer's public config, where a schedule appears serialized (a dict).
    A schedule without a peak reports NaN rather than the rate at whatever step it is.
    """
    lr = optimizer.get_config()["learning_rate"]
    if isinstance(lr, dict):
        return float(lr.get("config", {}).get("peak_learning_rate", math.nan))
    return float(lr)


def optimizer_config(optimizer) -> dict:
    cfg = optimizer.get_config()
    lr = cfg.get("learning_rate")
    if isinstance(lr, dict):  # a serialized schedule
        cfg["learning_rate"] = {"class": lr.get("class_name"), **lr.get("config", {})}
    return {"class": type(optimizer).__name__, **{k: v for k, v in cfg.items()
                                                   if isinstance(v, (int, float, str, bool, dict, type(None)))}}


def versions() -> dict:
    out = {"python": sys.version.split()[0], "keras": keras.__version__, "numpy": np.__version__,
           "backend": keras.backend.backend(),
           "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores"}
    backend_module = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}.get(out["backend"])
    if backend_module:
        out[backend_module] = __import__(backend_module).__version__
    return out


def train(model: keras.Model, data, variant: str, *, max_epochs: int | None = None,
          patience: int | None = None, batch_size: int | None = None, seed: int = config.SEED,
          verbose: int = 1, tensorboard_dir=None, extra_config: dict | None = None,
          evaluate_test: bool = True, shuffle: bool = True, random_flip: bool = False, resume: bool = True,
          settings=None) -> RunRecord:
    """Train a compiled model with early stopping on validation loss; restore the best weights.

    Args:
        data: a ``helpers.data.Dataset`` (already scaled or standardized).
        variant: the record's name, e.g. ``"baseline"``.
        max_epochs, patience, batch_size: default to the mode's settings.
        verbose: 1 prints one line per epoch (best epochs marked), 0 prints nothing.
        tensorboard_dir: if given, per-epoch scalars are written there for TensorBoard.
        extra_config: anything else the record's ``config`` should keep.
        evaluate_test: False leaves the test set alone (test metrics NaN), for runs that
            only compare settings, such as learning-rate candidates.
        shuffle: False keeps the training order, as ``fit(..., shuffle=False)`` does (to
            compare the two step for step); True reshuffles every epoch from ``(seed, epoch)``.
        random_flip: mirror each training image left-right with probability 1/2, drawn anew
            every epoch from ``(seed, epoch)`` (under JAX inside the compiled step, so at no
            cost). Validation and test images are never flipped.
        resume: keep a checkpoint after every epoch (``helpers.checkpoints``), and continue
            from it when the same run is started again after being killed; False trains
            from epoch 1 and writes nothing.
    Returns:
        A ``RunRecord`` (not yet saved: ``helpers.results.save_run``). Each epoch's time
        covers training and validation; the first epoch (compilation) is kept apart.
    Used in: notebooks 02-06.
    """
    settings = settings or config.SETTINGS
    max_epochs, patience, batch_size = resolve_lengths(settings, max_epochs, patience, batch_size)
    check_data(model, data, batch_size)
    if random_flip and np.ndim(data.x_train) != 4:
        raise ValueError(f"random_flip mirrors images of shape (N, height, width, channels); the training "
                         f"inputs have shape {np.shape(data.x_train)}")
    stepper = engine.stepper_for(model)
    x_train, y_train = stepper.device_arrays(data.x_train, data.y_train)
    x_valid, y_valid = stepper.device_arrays(data.x_valid, data.y_valid)
    writer = _tensorboard_writer(tensorboard_dir, variant)
    progress = EarlyStopping(patience)
    checkpoint = None
    if resume:
        checkpoint = checkpoints.Checkpoint.for_run(
            model, data, variant=variant, seed=seed, batch_size=batch_size, max_epochs=max_epochs, patience=patience,
            shuffle=shuffle, random_flip=random_flip, mode=settings.mode)
        done = checkpoint.restore(model, progress) if checkpoint.exists() else 0
        if done and verbose:
            print(f"resumed from a checkpoint after epoch {done} ({checkpoint.path.name})", flush=True)
    for epoch in range(progress.epoch + 1, max_epochs + 1):
        if progress.stopped:
            break
        start = time.perf_counter()
        flips = np.random.default_rng((seed, epoch, 1)).random(len(data.y_train)) < 0.5 if random_flip else None
        loss, acc = engine.train_epoch(stepper, x_train, y_train, batch_size, (seed, epoch) if shuffle else None, flips)
        val_loss, val_acc = stepper.evaluate(x_valid, y_valid, engine.EVAL_BATCH_SIZE)
        improved = progress.update(loss, acc, val_loss, val_acc, time.perf_counter() - start, model.get_weights)
        if checkpoint is not None:  # before the line: an epoch printed is an epoch saved
            checkpoint.save(model, progress)
        if verbose:
            print(format_epoch(progress, max_epochs, improved), flush=True)
        if writer is not None:
            _tensorboard_write(writer, epoch, loss, acc, val_loss, val_acc)
        if progress.stopped:
            break
    if random_flip:
        extra_config = {**(extra_config or {}), "augmentation": "random horizontal flip"}
    record = finish(model, data, variant, progress, settings, stepper, seed=seed, batch_size=batch_size,
                    max_epochs=max_epochs, evaluate_test=evaluate_test, verbose=verbose, extra_config=extra_config)
    if checkpoint is not None:
        checkpoint.remove()
    return record


def resolve_lengths(settings, max_epochs, patience, batch_size):
    """The mode's defaults for what is None; refuses zero or negative values."""
    max_epochs = settings.max_epochs if max_epochs is None else max_epochs
    patience = settings.patience if patience is None else patience
    batch_size = settings.batch_size if batch_size is None else batch_size
    if max_epochs < 1 or patience < 1:
        raise ValueError(f"max_epochs and patience must be at least 1, got {max_epochs}, {patience}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return max_epochs, patience, batch_size


class EarlyStopping:
    """Early stopping on validation loss, kept apart from the loop that feeds it.

    ``update`` takes one epoch's numbers, appends them to the history, keeps the weights
    of the best epoch so far, and sets ``stopped`` to ``"nan"`` (a loss is not finite)
    or ``"early_stopping"`` (``patience`` epochs without a lower validation loss).
    The same object serves one network trained alone and each of several trained side
    by side (``helpers.parallel``).
    """

    def __init__(self, patience: int):
        self.patience = patience
        self.history = {k: [] for k in HISTORY_KEYS}  # loss, accuracy, val_loss, val_accuracy, epoch_seconds
        self.best_val_loss, self.best_epoch, self.best_weights, self.best_elapsed = math.inf, 0, None, 0.0
        self.elapsed = 0.0
        self.stopped = None

    @property
    def epoch(self) -> int:
        return len(self.history["loss"])

    def update(self, loss, acc, val_loss, val_acc, seconds, get_weights) -> bool:
        """Record one epoch; True if it is the best so far (its weights are then kept)."""
        self.elapsed += seconds
        for k, v in zip(HISTORY_KEYS, (loss, acc, val_loss, val_acc, seconds)):
            self.history[k].append(float(v))
        improved = val_loss < self.best_val_loss
        if improved:
            self.best_val_loss, self.best_epoch = float(val_loss), self.epoch
            self.best_weights, self.best_elapsed = get_weights(), self.elapsed
        if not (math.isfinite(loss) and math.isfinite(val_loss)):
            self.stopped = "nan"
        elif self.epoch - self.best_epoch >= self.patience:
            self.stopped = "early_stopping"
        return improved


def format_epoch(progress: EarlyStopping, max_epochs: int, improved: bool) -> str:
    """One line per epoch; the best epochs marked, and a diverged one explained."""
    h, e = progress.history, progress.epoch
    line = (f"epoch {e:3d}/{max_epochs}  loss {h['loss'][-1]:.4f}  acc {h['accuracy'][-1]:.4f} | "
            f"val_loss {h['val_loss'][-1]:.4f}  val_acc {h['val_accuracy'][-1]:.4f} | "
            f"{h['epoch_seconds'][-1]:5.1f} s{'  *best' if improved else ''}")
    if progress.stopped == "nan":
        line += (f"\nstopped: the loss is {h['loss'][-1]} at epoch {e}; the learning rate is too high "
                 "for this network (try a lower one, or run the LR finder)")
    return line


def finish(model, data, variant, progress: EarlyStopping, settings, stepper, *, seed, batch_size, max_epochs,
           evaluate_test=True, verbose=0, extra_config=None) -> RunRecord:
    """Restore the best weights, evaluate them, and write it all into a ``RunRecord``."""
    if progress.best_weights is not None:
        model.set_weights(progress.best_weights)
    valid_loss, valid_acc = stepper.evaluate(*stepper.device_arrays(data.x_valid, data.y_valid),
                                             engine.EVAL_BATCH_SIZE)
    test_loss, test_acc = (stepper.evaluate(*stepper.device_arrays(data.x_test, data.y_test), engine.EVAL_BATCH_SIZE)
                           if evaluate_test else (math.nan, math.nan))
    times = progress.history["epoch_seconds"]
    stopped = progress.stopped or "max_epochs"
    record = RunRecord(
        variant=variant, mode=settings.mode, data=data.source,
        learning_rate=learning_rate_of(model.optimizer), epochs=len(times), best_epoch=progress.best_epoch,
        valid_accuracy=float(valid_acc), test_accuracy=float(test_acc),
        valid_loss=float(valid_loss), test_loss=float(test_loss),
        seconds_per_epoch=float(statistics.median(times[1:])) if len(times) > 1 else float(times[0]),
        first_epoch_seconds=float(times[0]), wall_time_to_best=float(progress.best_elapsed), stopped=stopped,
        history=progress.history,
        config={"architecture": models.describe(model), "optimizer": optimizer_config(model.optimizer),
                "batch_size": batch_size, "max_epochs": max_epochs, "patience": progress.patience,
                "early_stopping": "val_loss, best weights restored", "seed": seed,
                "preprocessing": data.preprocessing, "sizes": data.sizes(),
                "fast_path": isinstance(stepper, engine.JaxStepper), "versions": versions(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra_config or {})})
    if verbose:
        print(f"{variant}: best epoch {record.best_epoch} of {record.epochs} ({stopped}); "
              f"valid acc {record.valid_accuracy:.4f}, test acc {record.test_accuracy:.4f}; "
              f"{record.seconds_per_epoch:.1f} s/epoch, {record.wall_time_to_best:.0f} s to best")
    return record


def _tensorboard_writer(directory, variant):
    if directory is None:
        return None
    import tensorflow as tf  # TensorBoard's writer; installed with the project

    return tf.summary.create_file_writer(str(directory) + f"/{variant}")


def _tensorboard_write(writer, epoch, loss, acc, val_loss, val_acc):
    import tensorflow as tf

    with writer.as_default():
        for name, value in (("loss/train", loss), ("loss/valid", val_loss),
                            ("accuracy/train", acc), ("accuracy/valid", val_acc)):
            tf.summary.scalar(name, value, step=epoch)
    writer.flush()
