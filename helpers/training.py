"""Compile and train a Keras model: ``model.fit`` with early stopping, a resume after a kill, a Run record.

What ``train`` adds to ``fit``, and why: docs/design.md, "Backends and the training path". Notebook 02 shows its source.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path

import keras
import numpy as np

from helpers import callbacks as ours
from helpers import config, models, results, schedules
from helpers.data import check_images, normalize_labels
from helpers.results import RunRecord

# 32 train steps per call of the compiled step: fewer round trips between Python and the
# backend (benchmarks/README.md). Schedules here read the optimizer's iteration counter inside
# the step, so they change at every step whatever this is; a per-batch callback would not.
STEPS_PER_EXECUTION = 32
EVAL_BATCH_SIZE = 500  # evaluation only: fewer, larger batches, the same numbers


def compile_model(model: keras.Model, learning_rate, beta_1=0.9, beta_2: float = 0.999,
                  metrics=("accuracy",)) -> keras.Model:
    """Compile with Nadam, sparse categorical cross-entropy and ``metrics``, XLA and 32 steps per call.

    Nadam is Adam with Nesterov momentum: each weight moves by a running mean of its
    gradients (momentum, weighted by ``beta_1``) divided by the root of a running mean of
    their squares (``beta_2``), looking one momentum step ahead. ``learning_rate``: a float or
    a ``LearningRateSchedule``; ``beta_1``: a float, or a schedule with a ``momentum(step)`` method
    (``helpers.schedules.OneCycle``), read from the iteration counter at every step.
    """
    check_learning_rate(learning_rate)
    if hasattr(beta_1, "momentum"):
        optimizer = schedules.ScheduledNadam(learning_rate=learning_rate, momentum_schedule=beta_1, beta_2=beta_2)
    else:
        optimizer = keras.optimizers.Nadam(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=list(metrics),
                  jit_compile=True, steps_per_execution=STEPS_PER_EXECUTION)
    return model


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
    """Refuse data a model cannot train on, with a message that says what to do; returns it, labels flattened."""
    expected, n_classes = tuple(model.input_shape[1:]), model.output_shape[-1]
    checked = {}
    for name in ("train", "valid", "test"):
        x, y = getattr(data, f"x_{name}"), getattr(data, f"y_{name}")
        check_images(x, f"{name} images", expected)
        if n_classes > 1:  # one output: a regression probe, not a classifier; no class ids to check
            checked[f"y_{name}"] = normalize_labels(y, f"{name} labels", n_classes, count=len(x))
        elif len(y) != len(x):
            raise ValueError(f"{len(x)} {name} images but {len(y)} labels: they must match one to one")
    if batch_size is not None and batch_size > len(data.y_train):
        raise ValueError(f"batch_size {batch_size} is larger than the training set ({len(data.y_train)} images); "
                         "use a smaller batch")
    return dataclasses.replace(data, **checked) if checked else data


def evaluate(model: keras.Model, x, y, batch_size: int = EVAL_BATCH_SIZE):
    """(loss, accuracy) of a compiled ``model`` on ``(x, y)``: ``model.evaluate``, inputs checked first."""
    require_compiled(model)
    x = check_images(x, "images", model.input_shape[1:])
    y = normalize_labels(y, "labels", model.output_shape[-1], count=len(x))
    out = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
    return float(out["loss"]), float(out.get("accuracy", math.nan))


def require_compiled(model):
    if getattr(model, "optimizer", None) is None:
        raise ValueError("compile the model first (helpers.training.compile_model, or model.compile(...))")


def require_accuracy(model):
    """The Run record keeps accuracy: refuse, before training, a model compiled without it."""
    names = []
    for m in (model.get_compile_config() or {}).get("metrics") or []:
        for one in (m if isinstance(m, (list, tuple)) else [m]):
            names.append(one if isinstance(one, str) else str((one or {}).get("config", {}).get("name", "")))
    if not {"accuracy", "acc", "sparse_categorical_accuracy"} & set(names):
        raise ValueError(f"the model is compiled with metrics {names or 'none'}: add 'accuracy' "
                         "(model.compile(..., metrics=['accuracy', ...]); compile_model does), which the Run record keeps")


def learning_rate_of(optimizer) -> float:
    """The rate to report: the float, or a schedule's ``peak_learning_rate`` (1cycle's maximum), else NaN."""
    lr = optimizer_config(optimizer)["learning_rate"]
    return float(lr.get("peak_learning_rate", math.nan)) if isinstance(lr, dict) else float(lr)


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
    if out["backend"] in ("jax", "tensorflow", "torch"):
        out[out["backend"]] = __import__(out["backend"]).__version__
    return out


def train(model: keras.Model, data, variant: str, *, max_epochs: int | None = None,
          patience: int | None = None, batch_size: int | None = None, seed: int = config.SEED,
          verbose="auto", monitor: str = "val_loss", resume: bool = True, tensorboard_dir=None,
          callbacks=(), evaluate_test: bool = True, extra_config: dict | None = None) -> RunRecord:
    """``model.fit`` with early stopping and an exact resume; returns the run's ``RunRecord``.

    The trained weights stay in ``model``: the best epoch's under early stopping, the last epoch's
    under a schedule that fixes the length (1cycle: judged at its end, no early stopping).

    Args:
        model, data: compiled (``compile_model``, or with a sparse loss and accuracy); a scaled ``Dataset``.
        variant: the record's name, e.g. ``"baseline"``.
        max_epochs, patience, batch_size: default to the mode's settings.
        seed: each epoch's batch order is drawn from ``(seed, epoch)``; verbose: as ``fit``'s.
        monitor: what early stopping watches: ``"val_loss"`` (lowest) or ``"val_accuracy"`` (highest).
        resume: back up after every epoch (``callbacks.ExactBackupAndRestore``), and continue from
            there when the same run is started again after a kill; with ``CIFAR10_REUSE_FINISHED=1``
            a run that finished is read back (``read_finished``). False writes nothing.
        tensorboard_dir: if given, Keras' ``TensorBoard`` callback logs to ``tensorboard_dir/variant``.
        callbacks: more Keras callbacks, passed to ``fit``.
        evaluate_test: False leaves the test set alone (test metrics NaN), for searches.
        extra_config: anything else the record's ``config`` should keep.
    """
    settings = config.SETTINGS
    max_epochs, patience, batch_size = resolve_lengths(settings, max_epochs, patience, batch_size)
    if monitor not in ("val_loss", "val_accuracy"):
        raise ValueError(f"monitor must be 'val_loss' or 'val_accuracy', got {monitor!r}")
    require_compiled(model)
    require_accuracy(model)
    data = check_data(model, data, batch_size)
    fixed_length = check_schedule(model.optimizer, max_epochs, len(data.y_train), batch_size)
    log = ours.RunLog()
    batches = ours.EpochOrder(data.x_train, data.y_train, batch_size, seed)
    stopper = None if fixed_length else keras.callbacks.EarlyStopping(monitor=monitor, patience=patience,
                                                                       restore_best_weights=True)
    steps = [log, keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: batches.set_epoch(epoch)),
             *([stopper] if stopper else []), keras.callbacks.TerminateOnNaN(), *callbacks]
    if tensorboard_dir is not None:
        steps.append(keras.callbacks.TensorBoard(log_dir=os.path.join(str(tensorboard_dir), variant)))
    backup, reuse = None, resume and config.reuse_finished()  # read once: the same answer before and after fit
    if resume:
        folder = backup_folder(model, data, variant=variant, seed=seed, batch_size=batch_size, max_epochs=max_epochs,
                               patience=patience, monitor=monitor, mode=settings.mode, evaluate_test=evaluate_test)
        finished = folder.parent / "finished" / folder.name
        if reuse and (record := read_finished(model, finished, variant, say=verbose != 0)) is not None:
            return dataclasses.replace(record, config={**record.config, **(extra_config or {}), "read_back": True})
        backup = ours.ExactBackupAndRestore(folder, log, stopper)
        steps.append(backup)  # last: it saves what the others recorded, and restores after they reset
    model.fit(batches, epochs=max_epochs, validation_data=(data.x_valid, data.y_valid),
              validation_batch_size=EVAL_BATCH_SIZE, shuffle=False, verbose=verbose, callbacks=steps)
    kept = (len(log.history["loss"]) if stopper is None or stopper.best_weights is None
            else stopper.best_epoch + 1)
    extra = {**(extra_config or {}), **({"resumed_after_epoch": backup.resumed_after} if backup and
                                        backup.resumed_after else {})}
    record = run_record(model, data, variant, log.history, kept, stopped_early=bool(stopper and stopper.stopped_epoch),
                        seed=seed, batch_size=batch_size, max_epochs=max_epochs, patience=patience if stopper else None,
                        kept_as=(f"best epoch by {monitor}, weights restored" if stopper else
                                 "the last epoch: the schedule fixes the length, no early stopping"),
                        evaluate_test=evaluate_test, extra_config=extra)
    if reuse:
        write_finished(model, finished, record)
    return record


def write_finished(model, folder: Path, record: RunRecord) -> None:
    """Keep a finished training for ``read_finished``: its weights, then its record (whose presence says both are whole)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        model.save_weights(folder / "final.weights.h5", overwrite=True)
        results.save_run(record, directory=folder)
    except OSError as e:
        warnings.warn(f"could not keep the finished training in {folder} ({e})", RuntimeWarning, stacklevel=2)


def read_finished(model, folder: Path, variant: str, say: bool = True) -> RunRecord | None:
    """The record of this same training, finished earlier, with its final weights set in ``model``; else None.

    ``say``: print where it came from (``parallel.train_many`` says it on its own line instead).
    """
    if not (folder / f"{variant}.json").exists():
        return None
    try:
        record = results.load_run(variant, directory=folder)
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(folder / "final.weights.h5")
    except Exception as e:  # anything h5py or JSON may raise: train again
        warnings.warn(f"ignoring the finished training in {folder} ({type(e).__name__}: {e})", RuntimeWarning, 2)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    if say:
        print(f"{variant}: finished in an earlier run, read back from {folder} (CIFAR10_REUSE_FINISHED=1)", flush=True)
    return record


def time_alone(networks: dict, epochs: int = 3, rounds: int = 2) -> dict:
    """Seconds per epoch of each network trained alone, here: the series' one way to time.

    ``networks``: ``{label: (make_model, data, train_kwargs)}``, ``make_model()`` returning a compiled
    model (a 1cycle schedule sized for ``epochs``). Every network is timed ``rounds`` times, interleaved
    (A B A B), and keeps its fastest: on a shared machine, other work only ever slows a run down, and its
    speed drifts within minutes. Seconds measured at other moments, or while other trainings share the
    cores, do not compare.
    """
    seconds = {label: [] for label in networks}
    for _ in range(rounds):
        for label, (make_model, data, kwargs) in networks.items():
            seconds[label].append(train(make_model(), data, f"timing {label}", max_epochs=epochs, patience=epochs,
                                        verbose=0, evaluate_test=False, resume=False, **kwargs).seconds_per_epoch)
    return {label: min(s) for label, s in seconds.items()}


def check_schedule(optimizer, max_epochs: int, n_train: int, batch_size: int) -> bool:
    """True for a rate schedule that fixes the training's length (1cycle); refuses one sized for other steps."""
    total = getattr(getattr(optimizer, "_learning_rate", None), "total_steps", None)  # a schedule's, if any
    if total is None:
        return False
    steps = max_epochs * math.ceil(n_train / batch_size)
    if total != steps:
        raise ValueError(f"the learning-rate schedule is sized for {total} steps, but {max_epochs} epochs of "
                         f"{n_train} images at batch {batch_size} are {steps} steps: size it with "
                         "schedules.steps_per_epoch(len(data.y_train), batch_size) * epochs, or train as many epochs")
    return True


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


def backup_folder(model, data, **settings):
    """Where a run's backup lives, in the cache folder: named after everything that makes it this run.

    Another seed, rate, architecture, data or setting gives another name: another run's backup is never picked up.
    """
    digest = hashlib.sha256(json.dumps({
        "backend": keras.backend.backend(), "keras": keras.__version__, "model": model.get_config(),
        "optimizer": model.optimizer.get_config(), "data": [data.source, data.preprocessing, data.sizes()],
        **settings}, sort_keys=True, default=str).encode())
    for a in (*model.get_weights(), data.x_train[::97], data.y_train, data.x_valid[::97]):
        digest.update(np.ascontiguousarray(a).tobytes())
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(settings.get("variant", "run")))
    return config.cache_dir() / "checkpoints" / f"{name}-{digest.hexdigest()[:16]}"


def run_record(model, data, variant, history, kept_epoch, *, stopped_early, seed, batch_size, max_epochs, patience,
               kept_as, evaluate_test=True, extra_config=None) -> RunRecord:
    """Evaluate the weights ``model`` holds and write it all into a ``RunRecord``."""
    valid_loss, valid_acc = evaluate(model, data.x_valid, data.y_valid)
    test_loss, test_acc = evaluate(model, data.x_test, data.y_test) if evaluate_test else (math.nan, math.nan)
    predicted = (model.predict(data.x_test, batch_size=EVAL_BATCH_SIZE, verbose=0).argmax(axis=1)
                 if evaluate_test and model.output_shape[-1] <= 10 else [])
    times = history["epoch_seconds"]
    finite = all(math.isfinite(v) for k in ("loss", "val_loss") for v in history.get(k, []))
    stopped = "nan" if not finite else "early_stopping" if stopped_early else "max_epochs"
    return RunRecord(
        variant=variant, mode=config.SETTINGS.mode, data=data.source,
        learning_rate=learning_rate_of(model.optimizer), epochs=len(times), best_epoch=int(kept_epoch),
        valid_accuracy=valid_acc, test_accuracy=test_acc, valid_loss=valid_loss, test_loss=test_loss,
        seconds_per_epoch=float(statistics.median(times[1:])) if len(times) > 1 else float(times[0]),
        first_epoch_seconds=float(times[0]), wall_time_to_best=float(sum(times[:kept_epoch])), stopped=stopped,
        history=history,
        config={"architecture": models.describe(model), "optimizer": optimizer_config(model.optimizer),
                "batch_size": batch_size, "max_epochs": max_epochs, "patience": patience, "kept": kept_as,
                "seed": seed, "preprocessing": data.preprocessing, "sizes": data.sizes(),
                "steps_per_execution": model.steps_per_execution, "versions": versions(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra_config or {})},
        test_predictions="".join(map(str, predicted)))
