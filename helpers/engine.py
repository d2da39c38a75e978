"""The training engine: how an epoch of steps is run, fast, on each backend.

``helpers.training`` is the part a reader calls (``compile_model``, ``train``,
``evaluate``); this module is what runs underneath, and it can be skipped on a first
reading.

Under the JAX backend a whole epoch runs as one compiled ``jax.lax.scan`` over the
batches, built from Keras' own stateless API (``model.stateless_call`` and
``optimizer.stateless_apply``, the pattern Keras documents for JAX). The model, its
optimizer, the batch size and the update math are the same Keras objects a plain
``model.fit`` would use; only the Python between steps is gone (benchmarks/ measures
the difference; tests/ checks that the losses match ``fit``). Under other backends the
same interface calls ``model.fit`` one epoch at a time, with XLA and several steps per
call.

Learning-rate schedules are ``keras.optimizers.schedules.LearningRateSchedule`` objects
read from the optimizer's iteration counter inside the compiled step, so they take
effect at every step on every backend. Callbacks that set ``optimizer.learning_rate``
between batches are not used anywhere in this project (docs/design.md, "Traps").
"""
from __future__ import annotations

import json
import os

import keras
import numpy as np


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


def epoch_order(n: int, seed) -> np.ndarray:
    """The order in which one epoch visits ``n`` samples: a permutation drawn from ``seed``.

    ``seed`` is a tuple such as ``(run_seed, epoch)``, so each epoch of each run has its own
    order, the same on every backend and after a resume; ``None`` keeps the data's order.
    """
    return np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)


def batch_indices(n: int, batch_size: int, rng: np.random.Generator | None):
    """Sample indices of one epoch: (full batches as a 2-D array, the remainder as 1-D).

    ``rng=None`` keeps the order (no shuffle). Every sample is used once, as in ``fit``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = np.arange(n) if rng is None else rng.permutation(n)
    return split_batches(order, batch_size)


def split_batches(order: np.ndarray, batch_size: int):
    """``order`` cut into full batches (a 2-D array) and the remainder (1-D)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n_full = len(order) // batch_size
    return order[: n_full * batch_size].reshape(n_full, batch_size), order[n_full * batch_size:]


# signature -> (train_scan, eval_scan), jitted; see JaxStepper. The closures keep the first
# model of each signature alive (at most 16 small models).
_COMPILED = {}
_MAX_COMPILED = 16

EVAL_BATCH_SIZE = 500  # evaluation only: larger batches, fewer steps, same metrics


def signature(model: keras.Model) -> str:
    """What the compiled step bakes in: architecture, optimizer settings and loss, not the values.

    A float learning rate is an optimizer *variable*, passed in with the state, so it is
    left out; a schedule's parameters are Python constants in the trace, so they stay in.
    """
    opt = model.optimizer.get_config()
    if not isinstance(opt.get("learning_rate"), dict):
        opt.pop("learning_rate", None)
    return json.dumps([type(model).__name__, model.get_config(), type(model.optimizer).__name__, opt,
                       keras.saving.serialize_keras_object(model.loss)], sort_keys=True, default=str)


def step_functions(model: keras.Model):
    """(train_scan, eval_scan), pure JAX functions of the state, not yet compiled.

    ``train_scan(state, x_all, y_all, idx, flip_all=None)`` runs one train step per row of
    ``idx`` (the batches' sample indices) with ``state = (trainable, non_trainable, optimizer
    variables)``, and returns the new state and per-step ``(loss, correct)``. ``flip_all``,
    one boolean per image, mirrors those images left-right inside the step (augmentation
    at no cost: the same gather, one select).
    ``eval_scan(trainable, non_trainable, x_all, y_all, idx)`` returns per-batch
    ``(loss * batch size, correct)``. ``helpers.vmapped`` maps the same functions over
    several networks.
    """
    import jax
    import jax.numpy as jnp

    loss_fn = model.loss

    def train_step(state, batch):
        trainable, non_trainable, opt_vars = state
        x, y = batch

        def loss_of(tv):
            y_pred, ntv, losses = model.stateless_call(tv, non_trainable, x, training=True, return_losses=True)
            loss = loss_fn(y, y_pred)
            if losses:
                loss = loss + sum(losses)
            return loss, (y_pred, ntv)

        (loss, (y_pred, ntv)), grads = jax.value_and_grad(loss_of, has_aux=True)(trainable)
        trainable, opt_vars = model.optimizer.stateless_apply(opt_vars, grads, trainable)
        correct = jnp.sum(jnp.argmax(y_pred, axis=-1) == y)
        return (trainable, ntv, opt_vars), (loss, correct)

    def train_scan(state, x_all, y_all, idx, flip_all=None):
        def body(s, i):
            x = x_all[i]
            if flip_all is not None:  # random horizontal flips, drawn per image on the host
                x = jnp.where(flip_all[i][:, None, None, None], x[:, :, ::-1, :], x)
            return train_step(s, (x, y_all[i]))

        return jax.lax.scan(body, state, idx)

    def eval_scan(trainable, non_trainable, x_all, y_all, idx):
        def body(carry, i):
            y = y_all[i]
            y_pred, _ = model.stateless_call(trainable, non_trainable, x_all[i], training=False)
            return carry, (loss_fn(y, y_pred) * i.shape[0], jnp.sum(jnp.argmax(y_pred, -1) == y))

        return jax.lax.scan(body, 0, idx)[1]

    return train_scan, eval_scan


def prepare_fast_path(model: keras.Model):
    """Checks the model can take the fast path, and builds its optimizer's variables."""
    require_compiled(model)
    if not isinstance(model.loss, keras.losses.Loss):
        raise ValueError("the fast path needs a keras.losses.Loss instance as the model's loss")
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


class JaxStepper:
    """Many train (or eval) steps as one compiled scan through Keras' stateless API.

    The compiled functions are shared between models of the same signature (same
    architecture, optimizer settings and loss): they read every value, weights and
    learning rate included, from the state passed in, so a second model of the same
    kind (the next learning-rate candidate) starts without compiling again.
    """

    def __init__(self, model: keras.Model):
        import jax
        import jax.numpy as jnp

        prepare_fast_path(model)
        self.model = model
        self._jnp = jnp
        key = signature(model)
        if key in _COMPILED:
            self._train, self._eval = _COMPILED[key]
            return
        train_scan, eval_scan = step_functions(model)
        self._train = jax.jit(train_scan)
        self._eval = jax.jit(eval_scan)
        if len(_COMPILED) >= _MAX_COMPILED:
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

    def precompile(self, n_train, x_shape, batch_size, eval_sizes=(), random_flip=False):
        """Compile the epoch's steps for these shapes without running them (fills JAX's caches).

        With ``enable_compilation_cache`` the result lands on disk, where other processes
        (``helpers.parallel``'s workers) load it instead of compiling again.
        """
        import jax

        jnp = self._jnp
        state = self._state()

        def spec(shape, dtype):
            return jax.ShapeDtypeStruct(shape, jnp.asarray(np.zeros(1, dtype)).dtype)

        for n, fn, size in [(n_train, "train", batch_size)] + [(m, "eval", EVAL_BATCH_SIZE) for m in eval_sizes]:
            full, rest = batch_indices(n, size, None)
            x, y = spec((n, *x_shape), np.float32), spec((n,), np.int64)
            flips = spec((n,), np.bool_) if random_flip else None  # the flipping step is another program
            for idx in (full, rest.reshape(1, -1)):
                if idx.size:
                    i = spec(idx.shape, np.int64)
                    if fn == "train":
                        self._train.lower(state, x, y, i, flips).compile()
                    else:
                        self._eval.lower(state[0], state[1], x, y, i).compile()

    def train_steps(self, x, y, full, rest, flips=None):
        """Run the batches in ``full`` (2-D) then ``rest`` (1-D); per-step (loss, correct, size).

        ``flips``: one boolean per image of ``x``, mirrored inside the step where True.
        """
        state = self._state()
        flips = None if flips is None else self._jnp.asarray(flips)
        out = []
        for idx in (full, rest.reshape(1, -1)):
            if idx.size:
                state, (loss, correct) = self._train(state, x, y, self._jnp.asarray(idx), flips)
                out.append((np.asarray(loss), np.asarray(correct), np.full(len(idx), idx.shape[1])))
        self._write_back(state)
        return tuple(np.concatenate(parts) for parts in zip(*out))

    def train_epoch(self, x, y, batch_size: int, seed, flips=None):
        """One epoch in the order drawn from ``seed`` (``epoch_order``); (mean loss, accuracy)."""
        full, rest = split_batches(epoch_order(len(y), seed), batch_size)
        losses, corrects, sizes = self.train_steps(x, y, full, rest, flips)
        return float(np.sum(losses * sizes) / np.sum(sizes)), float(np.sum(corrects) / np.sum(sizes))

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


class KerasStepper:
    """The same interface through Keras' own ``fit``/``train_on_batch`` (any backend)."""

    def __init__(self, model: keras.Model):
        require_compiled(model)
        self.model = model

    def device_arrays(self, x, y):
        return x, y

    def train_steps(self, x, y, full, rest):
        losses, corrects, sizes = [], [], []
        for idx in [*full, rest]:
            if len(idx):
                xb, yb = x[idx], y[idx]
                # the batch's own loss, not a running mean: Keras before 3.15 does not reset the
                # metrics between train_on_batch calls (tests/lowest_versions.sh found it)
                self.model.reset_metrics()
                logs = self.model.train_on_batch(xb, yb, return_dict=True)
                losses.append(logs["loss"])
                corrects.append(logs.get("accuracy", np.nan) * len(idx))
                sizes.append(len(idx))
        return np.array(losses), np.array(corrects), np.array(sizes)

    def train_epoch(self, x, y, batch_size: int, seed, flips=None):
        """One epoch through ``fit``, in the same order as the JAX path: drawn here from ``seed``.

        ``fit(shuffle=True)`` would draw the order from the backend's own generator, which a
        checkpoint does not hold and the other backend does not share.
        """
        if flips is not None:  # the same flips as the JAX path, applied on the host
            from helpers.data import flip_images

            x = flip_images(x, flips)
        if seed is not None:
            order = epoch_order(len(y), seed)
            x, y = x[order], y[order]
        h = self.model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
        return h.history["loss"][0], h.history.get("accuracy", [np.nan])[0]

    def evaluate(self, x, y, batch_size):
        out = self.model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
        return out["loss"], out["accuracy"]


def precompile_for_workers(model, data, batch_size: int, evaluate_test: bool = True, random_flip: bool = False):
    """Compile ``model``'s epoch for ``data``'s shapes into JAX's disk cache, where worker processes load it."""
    if keras.backend.backend() != "jax":
        return
    enable_compilation_cache()
    sizes = [len(data.y_valid)] + ([len(data.y_test)] if evaluate_test else [])
    JaxStepper(model).precompile(len(data.y_train), data.x_train.shape[1:], batch_size, sizes, random_flip)


def enable_compilation_cache(directory=None):
    """Keep JAX's compiled steps on disk, so that another process skips compiling them.

    Default folder: ``$JAX_COMPILATION_CACHE_DIR`` if set, else ``jax-compilation`` in the
    data cache folder (``CIFAR10_CACHE``), outside the repository. A no-op under other backends.
    """
    if keras.backend.backend() != "jax":
        return None
    import jax

    from helpers import config

    directory = directory or os.environ.get("JAX_COMPILATION_CACHE_DIR") or config.cache_dir() / "jax-compilation"
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    # a few MB per program; past this size JAX removes the least recently used ones
    jax.config.update("jax_compilation_cache_max_size", config.COMPILATION_CACHE_MAX_BYTES)
    return directory


def require_compiled(model):
    if getattr(model, "optimizer", None) is None:
        raise ValueError("compile the model first (helpers.training.compile_model)")


def stepper_for(model: keras.Model, fast: bool | None = None):
    """The JAX scan stepper when the backend is JAX (``fast=None``), else Keras' own loop."""
    fast = keras.backend.backend() == "jax" if fast is None else fast
    if fast and keras.backend.backend() != "jax":
        raise ValueError("the compiled fast path needs KERAS_BACKEND=jax")
    return JaxStepper(model) if fast else KerasStepper(model)
