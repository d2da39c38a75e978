"""Compile and train a Keras model with early stopping, timing and a Run record.

This is what the notebooks call: ``compile_model`` (Nadam and the loss), ``train`` (the
epoch loop with early stopping on validation loss, best weights restored, a progress bar
or one line per epoch, a ``RunRecord`` at the end) and ``evaluate``. ``train`` does what
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

from helpers import checkpoints, config, engine, models, progress
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
          monitor: str = "val_loss", settings=None) -> RunRecord:
    """Train a compiled model with early stopping on validation loss; restore the best weights.

    Args:
        data: a ``helpers.data.Dataset`` (already scaled or standardized).
        variant: the record's name, e.g. ``"baseline"``.
        max_epochs, patience, batch_size: default to the mode's settings.
        seed: draws each epoch's batch order (and flips) from ``(seed, epoch)``.
        verbose: 1 shows a progress bar, then one line; 2 one line per epoch (best epochs
            marked); 0 nothing (``helpers.progress``).
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
        monitor: what early stopping watches and the best epoch is chosen by: ``"val_loss"``
            (lowest) or ``"val_accuracy"`` (highest), as Keras' ``EarlyStopping(monitor=...)``.
    Returns:
        A ``RunRecord`` (not yet saved: ``helpers.results.save_run``). Each epoch's time
        covers training and validation; the first epoch (compilation) is kept apart.
    Used in: notebooks 02-06.
    """
    return train_networks(Solo(model), data, [(variant, seed)], max_epochs=max_epochs, patience=patience,
                          batch_size=batch_size, verbose=verbose, tensorboard_dir=tensorboard_dir,
                          extra_config=extra_config, evaluate_test=evaluate_test, shuffle=shuffle,
                          random_flip=random_flip, resume=resume, monitor=monitor, settings=settings)[0]


class Solo:
    """One network, as ``train_networks`` trains it: its stepper (``helpers.engine``) behind the group interface.

    A group of K networks (this one, or ``helpers.vmapped.SideBySide``) trains one epoch of
    each active network, evaluates them all, and gives each network's variables by path
    (for checkpoints) and its weights (for early stopping).
    """

    def __init__(self, model: keras.Model):
        self.models = [model]
        self.stepper = engine.stepper_for(model)
        engine.require_compiled(model)
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)

    def device_arrays(self, x, y):
        return self.stepper.device_arrays(x, y)

    def train_epoch(self, x, y, batch_size, seeds, flips, active):
        loss, acc = self.stepper.train_epoch(x, y, batch_size, seeds[0], flips[0])
        return np.array([loss]), np.array([acc])

    def evaluate(self, x, y):
        loss, acc = self.stepper.evaluate(x, y, engine.EVAL_BATCH_SIZE)
        return np.array([loss]), np.array([acc])

    def variables(self, i):
        return checkpoints.variables_of(self.models[i])

    def load(self, i, values):
        checkpoints.assign(self.models[i], values)

    def weights(self, i):
        return checkpoints.weights_of(self.models[i])

    def finished_model(self, i):
        return self.models[i], self.stepper


def train_networks(networks, data, runs, *, max_epochs: int | None = None, patience: int | None = None,
                   batch_size: int | None = None, verbose: int = 1, tensorboard_dir=None,
                   extra_config: dict | None = None, evaluate_test: bool = True, shuffle: bool = True,
                   random_flip: bool = False, resume: bool = True, monitor: str = "val_loss", settings=None,
                   report=None) -> list:
    """The epoch loop of ``train``, for a group of networks trained together: one record per network.

    ``networks``: ``Solo(model)`` or ``helpers.vmapped.SideBySide(models)``; ``runs``: one
    ``(variant, seed)`` per network. Each network keeps its own epoch count, batch order,
    early stopping, checkpoint and TensorBoard log, so a record is what training the network
    alone gives. ``report``: where each epoch's numbers go (default a ``progress.Display``
    at ``verbose``); the other arguments as ``train``'s.
    """
    settings = settings or config.SETTINGS
    max_epochs, patience, batch_size = resolve_lengths(settings, max_epochs, patience, batch_size)
    if monitor not in TrainingState.MONITORS:
        raise ValueError(f"monitor must be one of {TrainingState.MONITORS}, got {monitor!r}")
    for model in networks.models:
        check_data(model, data, batch_size)
    if random_flip and np.ndim(data.x_train) != 4:
        raise ValueError(f"random_flip mirrors images of shape (N, height, width, channels); the training "
                         f"inputs have shape {np.shape(data.x_train)}")
    own_report = report is None
    report = report or progress.Display([v for v, _ in runs], max_epochs, verbose)
    try:  # an interrupted cell still ends its own bar
        x_train, y_train = networks.device_arrays(data.x_train, data.y_train)
        x_valid, y_valid = networks.device_arrays(data.x_valid, data.y_valid)
        states = [TrainingState(patience, monitor) for _ in runs]
        saved = [None] * len(runs)
        if resume:
            fingerprint = checkpoints.data_fingerprint(data)
            saved = [checkpoints.Checkpoint.for_run(model, data, fingerprint, variant=variant, seed=seed,
                                                    batch_size=batch_size, max_epochs=max_epochs, patience=patience,
                                                    monitor=monitor, shuffle=shuffle, random_flip=random_flip,
                                                    mode=settings.mode)
                     for model, (variant, seed) in zip(networks.models, runs)]
            for i, (checkpoint, state) in enumerate(zip(saved, states)):
                values = checkpoint.restore(networks.variables(i), state) if checkpoint.exists() else None
                if values is not None:
                    networks.load(i, values)
                    report.note(runs[i][0], f"resumed from a checkpoint after epoch {state.epoch} "
                                            f"({checkpoint.path.name})")
        writers = [_tensorboard_writer(tensorboard_dir, variant) for variant, _ in runs]
        n = len(data.y_train)
        try:
            while True:
                active = np.array([s.stopped is None and s.epoch < max_epochs for s in states])
                if not active.any():
                    break
                epochs = [s.epoch + 1 for s in states]
                seeds = [(seed, e) if shuffle else None for (_, seed), e in zip(runs, epochs)]
                flips = [np.random.default_rng((seed, e, 1)).random(n) < 0.5 if random_flip else None
                         for (_, seed), e in zip(runs, epochs)]
                start = time.perf_counter()
                losses, accs = networks.train_epoch(x_train, y_train, batch_size, seeds, flips, active)
                val_losses, val_accs = networks.evaluate(x_valid, y_valid)
                seconds = time.perf_counter() - start
                for i in np.flatnonzero(active):
                    state = states[i]
                    improved = state.update(losses[i], accs[i], val_losses[i], val_accs[i], seconds,
                                            lambda i=i: networks.weights(i))
                    if saved[i] is not None:  # before the report: an epoch shown is an epoch saved
                        saved[i].save(networks.variables(i), state)
                    report.epoch(progress.EpochEnd(runs[i][0], state.epoch, max_epochs, losses[i], accs[i],
                                                   val_losses[i], val_accs[i], seconds, improved, state.stopped))
                    if writers[i] is not None:
                        _tensorboard_write(writers[i], state.epoch, losses[i], accs[i], val_losses[i], val_accs[i])
        finally:
            for writer in writers:
                if writer is not None:
                    writer.close()
        if random_flip:
            extra_config = {**(extra_config or {}), "augmentation": "random horizontal flip"}
        records = []
        for i, ((variant, seed), state) in enumerate(zip(runs, states)):
            model, stepper = networks.finished_model(i)
            records.append(finish(model, data, variant, state, settings, stepper, seed=seed, batch_size=batch_size,
                                  max_epochs=max_epochs, evaluate_test=evaluate_test, extra_config=extra_config))
            report.finished(records[-1])
            if saved[i] is not None:
                saved[i].remove()
    finally:
        if own_report:
            report.close()
    return records


def time_alone(networks: dict, epochs: int = 3, settings=None) -> dict:
    """Seconds per epoch of each network trained alone, one after another, here: the series' one way to time.

    ``networks``: ``{label: (make_model, data, train_kwargs)}``, ``make_model()`` returning a
    compiled model. Each trains ``epochs`` epochs (no early stopping, no checkpoint, the test
    set left alone); its time is the median of the epochs after the first (which compiles).
    Trained side by side in one process at one time, the figures compare; seconds measured
    at other moments, or while other trainings share the cores, do not (a shared machine's
    speed varies up to 3x from day to day). Returns ``{label: seconds per epoch}``.
    Used in: notebooks 03-06.
    """
    return {label: train(make_model(), data, f"timing {label}", max_epochs=epochs, patience=epochs, verbose=0,
                         evaluate_test=False, resume=False, settings=settings, **kwargs).seconds_per_epoch
            for label, (make_model, data, kwargs) in networks.items()}


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


class TrainingState:
    """Early stopping's bookkeeping for one network, apart from the loop that feeds it.

    ``update`` takes one epoch's numbers, appends them to the history, keeps the weights
    of the best epoch so far (by path; lowest validation loss, or highest validation accuracy with
    ``monitor="val_accuracy"``), and sets ``stopped`` to ``"nan"`` (a loss is not finite)
    or ``"early_stopping"`` (``patience`` epochs without a better one). What
    ``keras.callbacks.EarlyStopping(restore_best_weights=True)`` does inside ``fit``.
    """

    MONITORS = ("val_loss", "val_accuracy")
    FIELDS = ("history", "best_score", "best_epoch", "best_elapsed", "elapsed", "stopped")  # saved in checkpoints

    def __init__(self, patience: int, monitor: str = "val_loss"):
        self.patience, self.monitor = patience, monitor
        self.history = {k: [] for k in HISTORY_KEYS}  # loss, accuracy, val_loss, val_accuracy, epoch_seconds
        self.best_score, self.best_epoch, self.best_weights, self.best_elapsed = math.inf, 0, None, 0.0
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
        score = float(val_loss) if self.monitor == "val_loss" else -float(val_acc)
        improved = score < self.best_score and math.isfinite(val_loss)
        if improved:
            self.best_score, self.best_epoch = score, self.epoch
            self.best_weights, self.best_elapsed = get_weights(), self.elapsed
        if not (math.isfinite(loss) and math.isfinite(val_loss)):
            self.stopped = "nan"
        elif self.epoch - self.best_epoch >= self.patience:
            self.stopped = "early_stopping"
        return improved


def finish(model, data, variant, state: TrainingState, settings, stepper, *, seed, batch_size, max_epochs,
           evaluate_test=True, extra_config=None) -> RunRecord:
    """Restore the best weights, evaluate them, and write it all into a ``RunRecord``."""
    if state.best_weights is not None:
        for w in model.weights:
            w.assign(state.best_weights[w.path])
    valid_loss, valid_acc = stepper.evaluate(*stepper.device_arrays(data.x_valid, data.y_valid),
                                             engine.EVAL_BATCH_SIZE)
    test_loss, test_acc = (stepper.evaluate(*stepper.device_arrays(data.x_test, data.y_test), engine.EVAL_BATCH_SIZE)
                           if evaluate_test else (math.nan, math.nan))
    predicted = (model.predict(data.x_test, batch_size=engine.EVAL_BATCH_SIZE, verbose=0).argmax(axis=1)
                 if evaluate_test and model.output_shape[-1] <= 10 else [])
    times = state.history["epoch_seconds"]
    stopped = state.stopped or "max_epochs"
    watched = "val_loss" if state.monitor == "val_loss" else "val_accuracy (highest)"
    record = RunRecord(
        variant=variant, mode=settings.mode, data=data.source,
        learning_rate=learning_rate_of(model.optimizer), epochs=len(times), best_epoch=state.best_epoch,
        valid_accuracy=float(valid_acc), test_accuracy=float(test_acc),
        valid_loss=float(valid_loss), test_loss=float(test_loss),
        seconds_per_epoch=float(statistics.median(times[1:])) if len(times) > 1 else float(times[0]),
        first_epoch_seconds=float(times[0]), wall_time_to_best=float(state.best_elapsed), stopped=stopped,
        history=state.history,
        config={"architecture": models.describe(model), "optimizer": optimizer_config(model.optimizer),
                "batch_size": batch_size, "max_epochs": max_epochs, "patience": state.patience,
                "early_stopping": f"{watched}, best weights restored", "seed": seed,
                "preprocessing": data.preprocessing, "sizes": data.sizes(),
                "fast_path": isinstance(stepper, engine.JaxStepper), "versions": versions(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra_config or {})},
        test_predictions="".join(map(str, predicted)))
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
