"""Compile and train a Keras model with early stopping, timing and a Run record.

Under the JAX backend a whole epoch runs as one compiled ``jax.lax.scan`` over the
batches, built from Keras' own stateless API (``model.stateless_call`` and
``optimizer.stateless_apply``, the pattern Keras documents for JAX). The model, its
optimizer, the batch size and the update math are the same Keras objects a plain
``model.fit`` would use; only the Python between steps is gone (benchmarks/ measures
the difference; tests/ checks that the losses match ``fit``). Under other backends the
same loop calls ``model.fit`` one epoch at a time.

Learning-rate schedules are ``keras.optimizers.schedules.LearningRateSchedule`` objects
read from the optimizer's iteration counter inside the compiled step, so they take
effect at every step on every backend. Callbacks that set ``optimizer.learning_rate``
between batches are not used anywhere in this project (see DESIGN.md's traps).
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time

import keras
import numpy as np

from helpers import config, models
from helpers.results import HISTORY_KEYS, RunRecord


# Under TensorFlow, XLA and 32 steps per call to the compiled function about halve an epoch
# of the baseline here (6.2 s to 3.3 s, benchmarks/README.md). Several steps per call would
# break a learning rate set by a per-batch callback; ours are schedules of the optimizer's
# iteration counter, read inside the step (tests/test_training.py checks every step).
TF_SPEEDUPS = {"jit_compile": True, "steps_per_execution": 32}


def compile_with_speedups(model: keras.Model, optimizer, loss, metrics=("accuracy",)) -> keras.Model:
    """``model.compile`` with the backend's measured speed-ups (TensorFlow: XLA, 32 steps a call)."""
    speedups = TF_SPEEDUPS if keras.backend.backend() == "tensorflow" else {}
    model.compile(optimizer=optimizer, loss=loss, metrics=list(metrics), **speedups)
    return model


def compile_model(model: keras.Model, learning_rate, beta_1: float = 0.9, beta_2: float = 0.999) -> keras.Model:
    """Compile with Nadam, sparse categorical cross-entropy and accuracy.

    Args:
        learning_rate: a float or a ``LearningRateSchedule`` (LR finder, 1cycle).
            Keras 3 spells it ``learning_rate``; ``Nadam(lr=...)`` is an error.
    Used in: notebooks 02-06.
    """
    optimizer = keras.optimizers.Nadam(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2)
    return compile_with_speedups(model, optimizer, keras.losses.SparseCategoricalCrossentropy())


def batch_indices(n: int, batch_size: int, rng: np.random.Generator | None):
    """Sample indices of one epoch: (full batches as a 2-D array, the remainder as 1-D).

    ``rng=None`` keeps the order (no shuffle). Every sample is used once, as in ``fit``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = np.arange(n) if rng is None else rng.permutation(n)
    n_full = n // batch_size
    return order[: n_full * batch_size].reshape(n_full, batch_size), order[n_full * batch_size:]


# signature -> (train_scan, eval_scan), jitted; see _JaxStepper. The closures keep the first
# model of each signature alive (at most 16 small models).
_COMPILED = {}

EVAL_BATCH_SIZE = 500  # evaluation only: larger batches, fewer steps, same metrics


def _signature(model: keras.Model) -> str:
    """What the compiled step bakes in: architecture, optimizer settings and loss, not the values.

    A float learning rate is an optimizer *variable*, passed in with the state, so it is
    left out; a schedule's parameters are Python constants in the trace, so they stay in.
    """
    opt = model.optimizer.get_config()
    if not isinstance(opt.get("learning_rate"), dict):
        opt.pop("learning_rate", None)
    return json.dumps([type(model).__name__, model.get_config(), type(model.optimizer).__name__, opt,
                       keras.saving.serialize_keras_object(model.loss)], sort_keys=True, default=str)


class _JaxStepper:
    """Many train (or eval) steps as one compiled scan through Keras' stateless API.

    The compiled functions are shared between models of the same signature (same
    architecture, optimizer settings and loss): they read every value, weights and
    learning rate included, from the state passed in, so a second model of the same
    kind (the next learning-rate candidate) starts without compiling again.
    """

    def __init__(self, model: keras.Model):
        import jax
        import jax.numpy as jnp

        _require_compiled(model)
        if not isinstance(model.loss, keras.losses.Loss):
            raise ValueError("the fast path needs a keras.losses.Loss instance as the model's loss")
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        self.model = model
        self._jnp = jnp
        key = _signature(model)
        if key in _COMPILED:
            self._train, self._eval = _COMPILED[key]
            return
        loss_fn = model.loss

        def train_step(state, batch):
            trainable, non_trainable, opt_vars = state
            x, y = batch

            def loss_of(tv):
                y_pred, ntv, losses = model.stateless_call(tv, non_trainable, x, training=True,
                                                           return_losses=True)
                loss = loss_fn(y, y_pred)
                if losses:
                    loss = loss + sum(losses)
                return loss, (y_pred, ntv)

            (loss, (y_pred, ntv)), grads = jax.value_and_grad(loss_of, has_aux=True)(trainable)
            trainable, opt_vars = model.optimizer.stateless_apply(opt_vars, grads, trainable)
            correct = jnp.sum(jnp.argmax(y_pred, axis=-1) == y)
            return (trainable, ntv, opt_vars), (loss, correct)

        def train_scan(state, x_all, y_all, idx):
            return jax.lax.scan(lambda s, i: train_step(s, (x_all[i], y_all[i])), state, idx)

        def eval_scan(trainable, non_trainable, x_all, y_all, idx):
            def body(carry, i):
                y = y_all[i]
                y_pred, _ = model.stateless_call(trainable, non_trainable, x_all[i], training=False)
                return carry, (loss_fn(y, y_pred) * i.shape[0], jnp.sum(jnp.argmax(y_pred, -1) == y))

            return jax.lax.scan(body, 0, idx)[1]

        self._train = jax.jit(train_scan)
        self._eval = jax.jit(eval_scan)
        if len(_COMPILED) >= 16:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[key] = (self._train, self._eval)

    def _state(self):
        m = self.model
        return ([v.value for v in m.trainable_variables], [v.value for v in m.non_trainable_variables],
                [v.value for v in m.optimizer.variables])

    def _write_back(self, state):
        m = self.model
        for variables, values in zip((m.trainable_variables, m.non_trainable_variables,
                                      m.optimizer.variables), state):
            for v, value in zip(variables, values):
                v.assign(value)

    def device_arrays(self, x, y):
        return self._jnp.asarray(x), self._jnp.asarray(y)

    def train_steps(self, x, y, full, rest):
        """Run the batches in ``full`` (2-D) then ``rest`` (1-D); per-step (loss, correct, size)."""
        state = self._state()
        out = []
        for idx in (full, rest.reshape(1, -1)):
            if idx.size:
                state, (loss, correct) = self._train(state, x, y, self._jnp.asarray(idx))
                out.append((np.asarray(loss), np.asarray(correct), np.full(len(idx), idx.shape[1])))
        self._write_back(state)
        return tuple(np.concatenate(parts) for parts in zip(*out))

    def evaluate(self, x, y, batch_size):
        full, rest = batch_indices(len(y), batch_size, None)
        tv = [v.value for v in self.model.trainable_variables]
        ntv = [v.value for v in self.model.non_trainable_variables]
        loss_sum = correct = 0.0
        for idx in (full, rest.reshape(1, -1)):
            if idx.size:
                losses, corrects = self._eval(tv, ntv, x, y, self._jnp.asarray(idx))
                loss_sum += float(np.sum(losses))
                correct += float(np.sum(corrects))
        return loss_sum / len(y), correct / len(y)


class _KerasStepper:
    """The same interface through Keras' own ``fit``/``train_on_batch`` (any backend)."""

    def __init__(self, model: keras.Model):
        _require_compiled(model)
        self.model = model

    def device_arrays(self, x, y):
        return x, y

    def train_steps(self, x, y, full, rest):
        losses, corrects, sizes = [], [], []
        for idx in [*full, rest]:
            if len(idx):
                xb, yb = x[idx], y[idx]
                # train_on_batch resets the metrics at each call: the batch's own loss, not a running mean
                logs = self.model.train_on_batch(xb, yb, return_dict=True)
                losses.append(logs["loss"])
                corrects.append(logs.get("accuracy", np.nan) * len(idx))
                sizes.append(len(idx))
        return np.array(losses), np.array(corrects), np.array(sizes)

    def train_epoch(self, x, y, batch_size, seed):
        # shuffled by the backend's RNG, seeded once by build_dnn; ``seed`` is not used here
        h = self.model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=True, verbose=0)
        return h.history["loss"][0], h.history.get("accuracy", [np.nan])[0]

    def evaluate(self, x, y, batch_size):
        out = self.model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
        return out["loss"], out["accuracy"]


def _require_compiled(model):
    if getattr(model, "optimizer", None) is None:
        raise ValueError("compile the model first (helpers.training.compile_model)")


def stepper_for(model: keras.Model, fast: bool | None = None):
    """The JAX scan stepper when the backend is JAX (``fast=None``), else Keras' own loop."""
    fast = keras.backend.backend() == "jax" if fast is None else fast
    if fast and keras.backend.backend() != "jax":
        raise ValueError("the compiled fast path needs KERAS_BACKEND=jax")
    return _JaxStepper(model) if fast else _KerasStepper(model)


def train_epoch(stepper, x, y, batch_size: int, seed):
    """One epoch over shuffled data; returns (mean loss, accuracy) weighted by batch size.

    ``seed`` (an int or a tuple such as ``(run_seed, epoch)``) fixes the batch order of the
    JAX path. Under other backends ``fit`` shuffles with the backend's generator, seeded
    once by ``build_dnn``.
    """
    if isinstance(stepper, _KerasStepper):
        return stepper.train_epoch(x, y, batch_size, seed)
    full, rest = batch_indices(len(y), batch_size, np.random.default_rng(seed))
    losses, corrects, sizes = stepper.train_steps(x, y, full, rest)
    return float(np.sum(losses * sizes) / np.sum(sizes)), float(np.sum(corrects) / np.sum(sizes))


def evaluate(model: keras.Model, x, y, batch_size: int = EVAL_BATCH_SIZE):
    """(loss, accuracy) of ``model`` on ``(x, y)``. Used in: notebooks 02-06."""
    stepper = stepper_for(model)
    x, y = stepper.device_arrays(x, y)
    return stepper.evaluate(x, y, batch_size)


def learning_rate_of(optimizer) -> float:
    """The rate to report: the float, or a schedule's ``peak_learning_rate`` (1cycle's maximum)."""
    lr = optimizer._learning_rate
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        return float(getattr(lr, "peak_learning_rate", float("nan")))
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


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


def _format_epoch(epoch, max_epochs, loss, acc, val_loss, val_acc, seconds, best):
    return (f"epoch {epoch:3d}/{max_epochs}  loss {loss:.4f}  acc {acc:.4f} | "
            f"val_loss {val_loss:.4f}  val_acc {val_acc:.4f} | {seconds:5.1f} s{'  *best' if best else ''}")


def train(model: keras.Model, data, variant: str, *, max_epochs: int | None = None,
          patience: int | None = None, batch_size: int | None = None, seed: int = config.SEED,
          verbose: int = 1, tensorboard_dir=None, extra_config: dict | None = None,
          evaluate_test: bool = True, settings=None) -> RunRecord:
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
    Returns:
        A ``RunRecord`` (not yet saved: ``helpers.results.save_run``). Each epoch's time
        covers training and validation; the first epoch (compilation) is kept apart.
    Used in: notebooks 02-06.
    """
    settings = settings or config.SETTINGS
    max_epochs = settings.max_epochs if max_epochs is None else max_epochs
    patience = settings.patience if patience is None else patience
    batch_size = settings.batch_size if batch_size is None else batch_size
    if max_epochs < 1 or patience < 1:
        raise ValueError(f"max_epochs and patience must be at least 1, got {max_epochs}, {patience}")
    stepper = stepper_for(model)
    x_train, y_train = stepper.device_arrays(data.x_train, data.y_train)
    x_valid, y_valid = stepper.device_arrays(data.x_valid, data.y_valid)
    writer = _tensorboard_writer(tensorboard_dir, variant)
    history = {k: [] for k in HISTORY_KEYS}  # loss, accuracy, val_loss, val_accuracy, epoch_seconds
    best = (math.inf, 0, None, 0.0)  # val_loss, epoch, weights, elapsed at its end
    stopped, elapsed = "max_epochs", 0.0
    for epoch in range(1, max_epochs + 1):
        start = time.perf_counter()
        loss, acc = train_epoch(stepper, x_train, y_train, batch_size, (seed, epoch))
        val_loss, val_acc = stepper.evaluate(x_valid, y_valid, EVAL_BATCH_SIZE)
        seconds = time.perf_counter() - start
        elapsed += seconds
        for k, v in zip(history, (loss, acc, val_loss, val_acc, seconds)):
            history[k].append(float(v))
        improved = val_loss < best[0]
        if improved:
            best = (val_loss, epoch, model.get_weights(), elapsed)
        if verbose:
            print(_format_epoch(epoch, max_epochs, loss, acc, val_loss, val_acc, seconds, improved), flush=True)
        if writer is not None:
            _tensorboard_write(writer, epoch, loss, acc, val_loss, val_acc)
        if not (math.isfinite(loss) and math.isfinite(val_loss)):
            stopped = "nan"
            if verbose:
                print(f"stopped: the loss is {loss} at epoch {epoch}; the learning rate is too high "
                      "for this network (try a lower one, or run the LR finder)")
            break
        if epoch - best[1] >= patience:
            stopped = "early_stopping"
            break
    if best[2] is not None:
        model.set_weights(best[2])
    valid_loss, valid_acc = stepper.evaluate(x_valid, y_valid, EVAL_BATCH_SIZE)
    test_loss, test_acc = (stepper.evaluate(*stepper.device_arrays(data.x_test, data.y_test), EVAL_BATCH_SIZE)
                           if evaluate_test else (math.nan, math.nan))
    times = history["epoch_seconds"]
    record = RunRecord(
        variant=variant, mode=settings.mode, data=data.source,
        learning_rate=learning_rate_of(model.optimizer), epochs=len(times), best_epoch=best[1],
        valid_accuracy=float(valid_acc), test_accuracy=float(test_acc),
        valid_loss=float(valid_loss), test_loss=float(test_loss),
        seconds_per_epoch=float(statistics.median(times[1:])) if len(times) > 1 else float(times[0]),
        first_epoch_seconds=float(times[0]), wall_time_to_best=float(best[3]), stopped=stopped,
        history=history,
        config={"architecture": models.describe(model), "optimizer": optimizer_config(model.optimizer),
                "batch_size": batch_size, "max_epochs": max_epochs, "patience": patience,
                "early_stopping": "val_loss, best weights restored", "seed": seed,
                "preprocessing": data.preprocessing, "sizes": data.sizes(),
                "fast_path": isinstance(stepper, _JaxStepper), "versions": versions(),
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
