"""Learning-rate search: an exponential sweep, then a short check of a few candidates.

The sweep raises the rate exponentially from step to step, on a copy of the model, and
records each batch's own loss (not Keras' running mean of the epoch). The rate is a
``LearningRateSchedule`` of the optimizer's iteration counter, read inside the compiled
step: it takes effect at every step under TensorFlow and JAX alike (tests/ prove it with
a one-weight probe), which a callback that sets ``optimizer.learning_rate`` between
batches does not guarantee.

The finder's curve is noisy and its rule is a heuristic; ``compare_learning_rates`` then
trains a few candidates for a few epochs and lets validation loss decide.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import keras
import numpy as np

from helpers import config, engine, training
from helpers.data import N_CLASSES, class_balanced_subset


@keras.saving.register_keras_serializable(package="helpers")
class ExponentialSweep(keras.optimizers.schedules.LearningRateSchedule):
    """``min_rate * (max_rate / min_rate) ** (step / (steps - 1))``: step 0 is min, steps-1 is max."""

    def __init__(self, min_rate: float, max_rate: float, steps: int):
        if not 0 < min_rate < max_rate:
            raise ValueError(f"need 0 < min_rate < max_rate, got {min_rate}, {max_rate}")
        if steps < 2:
            raise ValueError(f"need at least 2 steps, got {steps}")
        self.min_rate, self.max_rate, self.steps = float(min_rate), float(max_rate), int(steps)

    def __call__(self, step):
        fraction = keras.ops.cast(step, "float32") / (self.steps - 1)
        return self.min_rate * keras.ops.power(self.max_rate / self.min_rate, fraction)

    def rate_at(self, step) -> np.ndarray:
        """The same rate in NumPy, for plots and tests."""
        return self.min_rate * (self.max_rate / self.min_rate) ** (np.asarray(step) / (self.steps - 1))

    def get_config(self):
        return {"min_rate": self.min_rate, "max_rate": self.max_rate, "steps": self.steps}


@dataclass(frozen=True)
class LRFinderResult:
    """What the sweep measured, and what it suggests. Used in: notebooks 02-06."""

    rates: tuple  # the rate used at each step
    losses: tuple  # each batch's own training loss
    smoothed: tuple  # exponential moving average, bias-corrected
    suggestion: float
    rule: str  # how the suggestion was chosen
    stopped: str  # why the sweep ended
    seconds: float  # wall time of the sweep, compilation included


def smooth(losses, beta: float = 0.98) -> np.ndarray:
    """Bias-corrected exponential moving average (as in fastai's LR finder)."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** i))
    return np.array(out)


def _optimizer_with_rate(model: keras.Model, rate):
    """A fresh optimizer of the model's own kind and settings, with ``rate`` as its learning rate."""
    if getattr(model, "optimizer", None) is None:
        return keras.optimizers.Nadam(learning_rate=rate)
    cfg = model.optimizer.get_config()
    cfg["learning_rate"] = rate
    return type(model.optimizer).from_config(cfg)


def find_learning_rate(model: keras.Model, data, *, min_rate: float = 1e-6, max_rate: float = 1.0,
                       steps: int | None = None, batch_size: int | None = None, stop_factor: float = 4.0,
                       beta: float | None = None, chunk: int = 20, seed: int = config.SEARCH_SEED,
                       fallback: float | None = None, settings=None) -> LRFinderResult:
    """Sweep the learning rate exponentially over a fixed number of steps and suggest one.

    Runs on a copy of ``model``: the caller's weights and optimizer state are untouched.
    Uses the model's own optimizer kind and settings (Nadam if it is not compiled yet).

    Args:
        steps: number of batches (default: the mode's ``lr_sweep_steps``), whatever the size
            of the data: a small training set is gone through again, reshuffled, as often
            as the steps need.
        stop_factor: stop once the smoothed loss exceeds ``stop_factor`` times its minimum.
        beta: smoothing factor; default ``1 - 20 / steps`` (within 0.8 to 0.98), an average
            over about 5% of the sweep: a longer memory lags and shifts the minimum to
            higher rates.
        chunk: steps per compiled call; the divergence check runs between chunks.
        fallback: the rate to suggest when the sweep cannot (a loss not finite from the
            start, or rising from the first rate on): a line says why, and the result's
            ``rule`` names the fallback. None: raise instead.
    Returns:
        ``LRFinderResult``; the suggestion is the rate at the smoothed minimum, divided by 10.
    Raises:
        FloatingPointError: without a ``fallback``, when no rate can be suggested (check
            that the inputs are scaled and the model is sane).
    """
    settings = settings or config.SETTINGS
    batch_size = settings.batch_size if batch_size is None else batch_size
    training.check_data(model, data, batch_size)
    steps = settings.lr_sweep_steps if steps is None else steps
    schedule = ExponentialSweep(min_rate, max_rate, steps)
    beta = beta if beta is not None else float(np.clip(1 - 20 / steps, 0.8, 0.98))
    probe = keras.models.clone_model(model)
    probe.set_weights(model.get_weights())
    engine.compile_with_speedups(
        probe, _optimizer_with_rate(model, schedule),
        keras.losses.SparseCategoricalCrossentropy() if getattr(model, "loss", None) is None else model.loss)
    stepper = engine.stepper_for(probe)
    x, y = stepper.device_arrays(data.x_train, data.y_train)
    full = sweep_batches(len(data.y_train), batch_size, steps, seed)
    start = time.perf_counter()
    losses, stopped = [], f"reached max rate {max_rate:g}"
    empty = np.empty(0, dtype=full.dtype)
    for first in range(0, steps, chunk):
        batch_losses, _, _ = stepper.train_steps(x, y, full[first:min(first + chunk, steps)], empty)
        losses.extend(float(v) for v in batch_losses)
        s = smooth(losses, beta)
        bad = np.flatnonzero(~np.isfinite(losses) | (s > stop_factor * np.fmin.accumulate(s)))
        if bad.size:
            losses = losses[: bad[0] + 1]
            stopped = f"stopped at {schedule.rate_at(bad[0]):.2g}: loss diverged"
            break
    seconds = time.perf_counter() - start
    finite = [l for l in losses if math.isfinite(l)]
    if len(finite) < 2:
        return _cannot_suggest(
            f"the loss was not finite from the first steps on (losses {losses[:3]}) at rates from {min_rate:g}: "
            "no learning rate can be suggested. Check that the inputs are scaled or standardized, and try a "
            "lower min_rate", fallback, stopped, seconds)
    if not math.isfinite(losses[-1]):  # only the last can be: the sweep stops at the first
        losses = losses[:-1]
    s = smooth(losses, beta)
    rates = schedule.rate_at(np.arange(len(losses)))
    best = int(np.argmin(s))
    if best == 0:
        return _cannot_suggest(f"the loss only rose from the first rate {min_rate:g} on: start the sweep at a "
                               "lower min_rate", fallback, stopped, seconds, rates, losses, s)
    return LRFinderResult(rates=tuple(rates.tolist()), losses=tuple(losses), smoothed=tuple(s.tolist()),
                          suggestion=float(rates[best] / 10), rule="rate at minimum smoothed loss / 10",
                          stopped=stopped, seconds=seconds)


def sweep_batches(n: int, batch_size: int, steps: int, seed) -> np.ndarray:
    """``steps`` full batches of sample indices: shuffled passes over the ``n`` samples, as many as needed.

    The first pass is drawn from ``seed``, the next ones from ``(seed, 1)``, ``(seed, 2)``, ...
    """
    if n < batch_size:
        raise ValueError(f"batch_size {batch_size} is larger than the training set ({n} images)")
    passes, batches = 0, []
    while sum(len(b) for b in batches) < steps:
        rng = np.random.default_rng(seed if passes == 0 else (seed, passes))
        batches.append(engine.batch_indices(n, batch_size, rng)[0])
        passes += 1
    return np.concatenate(batches)[:steps]


def _cannot_suggest(reason, fallback, stopped, seconds, rates=(), losses=(), smoothed=()):
    """The sweep gave no suggestion: raise, or return ``fallback`` with a line that says why."""
    if fallback is None:
        raise FloatingPointError(reason)
    training.check_learning_rate(fallback)
    print(f"LR finder: {reason};")
    print(f"using the fallback rate {fallback:.2e} instead")
    return LRFinderResult(rates=tuple(np.asarray(rates).tolist()), losses=tuple(losses),
                          smoothed=tuple(np.asarray(smoothed).tolist()), suggestion=float(fallback),
                          rule="fallback: the sweep could not suggest a rate", stopped=stopped, seconds=seconds)


@dataclass(frozen=True)
class RateComparison:
    """Short trainings at a few rates; the one with the lowest validation loss wins."""

    records: tuple  # one RunRecord per rate tried, in the order tried (test set not evaluated)
    best_rate: float
    seconds: float  # wall time of the whole comparison: building, compiling, training, validating
    extended: tuple = ()  # rates added beyond the bracket because its edge won


def compare_learning_rates(build_model, data, rates, epochs: int | None = None, fraction: float | None = None,
                           variant: str = "candidate", max_extra: int = 2, settings=None,
                           **compile_kwargs) -> RateComparison:
    """Train a fresh model at each rate for a few epochs; pick by best validation loss.

    A winner at the edge of the bracket says the bracket was too narrow: the check then
    tries the next rate beyond that edge (same ratio as the bracket's last step), and goes
    on while the edge keeps winning, at most ``max_extra`` extra rates.

    Args:
        build_model: a function with no arguments returning a fresh, uncompiled model
            (same seed each time, so only the rate differs).
        rates: the candidate learning rates, at least two, increasing.
        epochs, fraction: how long, and on which share of the training set (a
            class-balanced subset, the same for every rate); default: the mode's settings.
        max_extra: how many rates beyond the bracket it may add (0: never extend).
    Used in: notebooks 02-06.
    """
    settings = settings or config.SETTINGS
    epochs = settings.candidate_epochs if epochs is None else epochs
    fraction = settings.candidate_fraction if fraction is None else fraction
    rates = [float(r) for r in rates]
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if len(rates) < 2 or any(not (0 < a < b) for a, b in zip(rates, rates[1:])) or not math.isfinite(rates[-1]):
        raise ValueError(f"rates must be at least two positive, finite, increasing values, got {rates}")
    if fraction < 1:
        keep = class_balanced_subset(data.y_train, int(len(data.y_train) * fraction) // N_CLASSES)
        data = replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep])
    start = time.perf_counter()

    def run(rate):
        model = training.compile_model(build_model(), rate, **compile_kwargs)
        return training.train(model, data, f"{variant} lr={rate:.1e}", max_epochs=epochs,
                              patience=epochs, verbose=0, evaluate_test=False, settings=settings)

    tried = {rate: run(rate) for rate in rates}
    extended = []
    while len(extended) < max_extra and (nxt := next_rate(tried)) is not None:
        tried[nxt] = run(nxt)
        extended.append(nxt)
    return RateComparison(records=tuple(tried.values()), best_rate=min(tried, key=lambda r: score(tried[r])),
                          seconds=time.perf_counter() - start, extended=tuple(extended))


def score(record) -> float:
    """A candidate's best validation loss; a diverged one (NaN loss) never wins."""
    finite = [v for v in record.history["val_loss"] if math.isfinite(v)]
    return min(finite) if finite else math.inf


def next_rate(tried: dict):
    """The rate beyond the winning edge of ``{rate: record}`` (same ratio as the last step), or None.

    A winner at an edge says the bracket was too narrow on that side (notebook 02's rule).
    """
    ordered = sorted(tried)
    best = min(ordered, key=lambda r: score(tried[r]))
    if best == ordered[-1]:
        return best * best / ordered[-2]
    if best == ordered[0]:
        return best * best / ordered[1]
    return None


def compare_full_trainings(build_model, data, rates, *, prefix: str, seed: int = config.SEARCH_SEED,
                           max_extra: int = 2, **train_many_kwargs) -> RateComparison:
    """Train at each rate to the end (early stopping), side by side; the lowest validation loss wins.

    For networks whose short check misleads (batch norm learns fast at first at any rate,
    notebook 03): full trainings of the search seed, then, while the winner is at an edge,
    the next rate beyond it, at most ``max_extra`` times (``next_rate``). Records are named
    ``{prefix}_lr_{rate:.1e}``; the test set is left alone.
    Args: ``build_model(seed)`` as ``parallel.train_many``'s; ``train_many_kwargs`` go to it.
    Used in: notebooks 03-06.
    """
    from helpers import parallel

    rates = [float(r) for r in rates]
    if len(rates) < 2 or any(not (0 < a < b) for a, b in zip(rates, rates[1:])):
        raise ValueError(f"rates must be at least two positive, increasing values, got {rates}")
    start = time.perf_counter()
    train_many_kwargs.setdefault("evaluate_test", False)

    def run(*rates_):
        names = {r: f"{prefix}_lr_{r:.1e}" for r in rates_}
        many = parallel.train_many(build_model, data, [parallel.Run(names[r], seed, r) for r in rates_],
                                   **train_many_kwargs)
        if many.failures:  # a bracket with a hole would pick its winner among the others
            raise RuntimeError(f"trainings of the bracket failed, so no rate is chosen: {sorted(many.failures)} "
                               "(their tracebacks are printed above)")
        return {r: many.record(names[r]) for r in rates_}  # keyed by the rate tried, not the float32 one

    tried = run(*rates)
    extended = []
    while len(extended) < max_extra and (nxt := next_rate(tried)) is not None:
        tried |= run(nxt)
        extended.append(nxt)
    ordered = sorted(tried)
    return RateComparison(records=tuple(tried[r] for r in ordered),
                          best_rate=min(ordered, key=lambda r: score(tried[r])),
                          seconds=time.perf_counter() - start, extended=tuple(extended))
