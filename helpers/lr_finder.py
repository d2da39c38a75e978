"""Learning-rate search: an exponential sweep over about one epoch, then a bracket of full trainings.

The sweep's rate is Keras' ``ExponentialDecay`` of the optimizer's iteration counter (a decay rate above 1),
read inside the compiled step: it takes effect at every step on every backend, which a callback that sets
``optimizer.learning_rate`` between batches does not once several steps run per call. The sweep's curve is
noisy and its rule a heuristic: ``search_rates`` then trains the network to the end at a few rates.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd

from helpers import callbacks, config, parallel, training


@dataclass(frozen=True)
class LRFinderResult:
    """What the sweep measured, and what it suggests."""

    rates: tuple  # the rate used at each step
    losses: tuple  # each batch's own training loss
    smoothed: tuple  # exponential moving average, bias-corrected
    suggestion: float
    rule: str  # how the suggestion was chosen
    stopped: str  # why the sweep ended
    seconds: float  # wall time of the sweep, compilation included


def smooth(losses, beta: float = 0.98) -> np.ndarray:
    """Bias-corrected exponential moving average (as in fastai's LR finder): pandas' ``ewm(adjust=True)``."""
    return pd.Series(losses, dtype="float64").ewm(alpha=1 - beta, adjust=True).mean().to_numpy()


class BatchLosses(keras.callbacks.Callback):
    """Each batch's own training loss, and a stop once the smoothed loss passes ``stop_factor`` x its minimum.

    At a batch's end Keras logs the mean loss of the epoch so far, weighted by batch size:
    m_k after N_k samples; the batch's own loss is (N_k m_k - N_(k-1) m_(k-1)) / n_k, n_k its
    size (the last batch of an epoch may be smaller). Needs one step per call
    (``steps_per_execution=1``): with more, this runs once per call.
    """

    def __init__(self, steps: int, beta: float, stop_factor: float, rates, seen):
        super().__init__()
        self.steps, self.beta, self.stop_factor, self.rates = steps, beta, stop_factor, rates
        self.seen = seen  # samples after each batch of an epoch
        self.losses, self.stopped, self._mean = [], f"reached max rate {rates[-1]:g}", 0.0
        self._average, self._lowest = 0.0, math.inf  # smooth()'s running average, and its minimum

    def on_epoch_begin(self, epoch, logs=None):
        self._mean = 0.0

    def on_train_batch_end(self, batch, logs=None):
        mean = float(logs["loss"])
        seen, before = float(self.seen[batch]), float(self.seen[batch - 1]) if batch else 0.0
        self.losses.append((seen * mean - before * self._mean) / (seen - before))
        self._mean = mean
        self._average = self.beta * self._average + (1 - self.beta) * self.losses[-1]
        smoothed = self._average / (1 - self.beta ** len(self.losses))
        self._lowest = min(self._lowest, smoothed)
        if not math.isfinite(self.losses[-1]) or smoothed > self.stop_factor * self._lowest:
            self.stopped = f"stopped at {self.rates[len(self.losses) - 1]:.2g}: loss diverged"
            self.model.stop_training = True
        elif len(self.losses) >= self.steps:
            self.model.stop_training = True


def find_learning_rate(model: keras.Model, data, *, min_rate: float = 1e-5, max_rate: float = 1.0,
                       steps: int | None = None, batch_size: int | None = None, stop_factor: float = 4.0,
                       beta: float | None = None, seed: int = config.SEARCH_SEED,
                       fallback: float | None = None) -> LRFinderResult:
    """Sweep the learning rate exponentially from ``min_rate`` to ``max_rate`` and suggest one.

    Runs on a copy of ``model``: the caller's weights and optimizer state are untouched.
    Uses the model's own optimizer kind and settings (Nadam if it is not compiled yet).

    Args:
        steps: number of batches; default one epoch of the training set, reshuffled passes if more.
        stop_factor: stop once the smoothed loss exceeds ``stop_factor`` times its minimum.
        beta: smoothing factor; default ``1 - 20 / steps`` (within 0.8 to 0.98), about 5% of the sweep:
            a longer memory lags and shifts the minimum to higher rates.
        fallback: the rate to suggest when the sweep cannot (a loss not finite from the
            start, or rising from the first rate on): a line says why, and the result's
            ``rule`` names the fallback. None: raise ``FloatingPointError`` instead.
    The suggestion is the rate at the smoothed minimum, divided by 10.
    """
    batch_size = config.SETTINGS.batch_size if batch_size is None else batch_size
    data = training.check_data(model, data, batch_size)
    batches = callbacks.EpochOrder(data.x_train, data.y_train, batch_size, seed)
    steps = len(batches) if steps is None else steps
    if not 0 < min_rate < max_rate or steps < 2:
        raise ValueError(f"need 0 < min_rate < max_rate and at least 2 steps, got {min_rate}, {max_rate}, {steps}")
    # min_rate * (max_rate / min_rate) ** (step / (steps - 1)): min_rate at step 0, max_rate at step steps - 1
    schedule = keras.optimizers.schedules.ExponentialDecay(min_rate, steps - 1, max_rate / min_rate)
    rates = min_rate * (max_rate / min_rate) ** (np.arange(steps) / (steps - 1))  # the same in NumPy
    beta = beta if beta is not None else float(np.clip(1 - 20 / steps, 0.8, 0.98))
    probe = keras.models.clone_model(model)
    probe.set_weights(model.get_weights())
    kind = model.optimizer if getattr(model, "optimizer", None) is not None else keras.optimizers.Nadam()
    optimizer = type(kind).from_config({**kind.get_config(), "learning_rate": schedule})
    probe.compile(optimizer=optimizer, steps_per_execution=1,
                  loss=getattr(model, "loss", None) or "sparse_categorical_crossentropy")
    seen = np.minimum(np.arange(1, len(batches) + 1) * batch_size, len(data.y_train))
    losses = BatchLosses(steps, beta, stop_factor, rates, seen)
    start = time.perf_counter()
    probe.fit(batches, epochs=math.ceil(steps / len(batches)), shuffle=False, verbose=0, callbacks=[
        keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: batches.set_epoch(epoch)), losses])
    seconds, losses, stopped = time.perf_counter() - start, losses.losses[:steps], losses.stopped
    finite = [l for l in losses if math.isfinite(l)]
    if len(finite) < 2:
        return _cannot_suggest(
            f"the loss was not finite from the first steps on (losses {losses[:3]}) at rates from {min_rate:g}: "
            "no learning rate can be suggested. Check that the inputs are scaled or standardized, and try a "
            "lower min_rate", fallback, stopped, seconds)
    if not math.isfinite(losses[-1]):  # only the last can be: the sweep stops at the first
        losses = losses[:-1]
    s = smooth(losses, beta)
    rates = rates[:len(losses)]
    best = int(np.argmin(s))
    if best == 0:
        return _cannot_suggest(f"the loss only rose from the first rate {min_rate:g} on: start the sweep at a "
                               "lower min_rate", fallback, stopped, seconds, rates, losses, s)
    return LRFinderResult(rates=tuple(rates.tolist()), losses=tuple(losses), smoothed=tuple(s.tolist()),
                          suggestion=float(rates[best] / 10), rule="rate at minimum smoothed loss / 10",
                          stopped=stopped, seconds=seconds)


def _cannot_suggest(reason, fallback, stopped, seconds, rates=(), losses=(), smoothed=()):
    """The sweep gave no suggestion: raise, or return ``fallback`` with a line that says why."""
    if fallback is None:
        raise FloatingPointError(reason)
    training.check_learning_rate(fallback)
    print(f"LR finder: {reason};\nusing the fallback rate {fallback:.2e} instead")
    return LRFinderResult(rates=tuple(np.asarray(rates).tolist()), losses=tuple(losses),
                          smoothed=tuple(np.asarray(smoothed).tolist()), suggestion=float(fallback),
                          rule="fallback: the sweep could not suggest a rate", stopped=stopped, seconds=seconds)


@dataclass(frozen=True)
class RateSearch:
    """Full trainings at a few rates; the one with the lowest validation loss wins."""

    records: tuple  # one RunRecord per rate tried, by increasing rate (test set not evaluated)
    best_rate: float
    seconds: float  # wall time of the whole search
    extended: tuple = ()  # rates added beyond the bracket because its edge won


def score(record) -> float:
    """A candidate's validation loss, of the weights it kept; a diverged one (NaN) never wins."""
    return record.valid_loss if math.isfinite(record.valid_loss) else math.inf


def next_rate(tried: dict):
    """The rate beyond the winning edge of ``{rate: record}`` (same ratio as the last step), or None.

    A winner at an edge says the bracket was too narrow on that side.
    """
    ordered = sorted(tried)
    best = min(ordered, key=lambda r: score(tried[r]))
    neighbour = {ordered[-1]: ordered[-2], ordered[0]: ordered[1]}.get(best)  # of an edge
    return None if neighbour is None else best * best / neighbour


def search_rates(build_model, data, rates, *, prefix: str, seed: int = config.SEARCH_SEED, max_extra: int = 2,
                 suggestion: float | None = None, **train_many_kwargs) -> RateSearch:
    """Train the network to the end at each rate, side by side; the lowest validation loss wins.

    The one search of the series, the same for every network and every control: full
    trainings of the search seed (early stopping, or the whole 1cycle), then, while the
    winner is at an edge, the next rate beyond it, at most ``max_extra`` times
    (``next_rate``). Records are named ``{prefix}_lr_{rate:.1e}``; the test set is left alone.

    Args:
        build_model: ``build_model(seed)``, as ``parallel.train_many``'s.
        rates: at least two positive, increasing rates (1cycle: peaks, with a
            ``compile_model`` that builds the schedule from each).
        suggestion: the LR finder's, kept in each record's ``config`` (``finder_suggestion``).
        train_many_kwargs: go to ``parallel.train_many`` (``compile_model``, ``batch_size``, ...).
    """
    rates = [float(r) for r in rates]
    if len(rates) < 2 or any(not (0 < a < b) for a, b in zip(rates, rates[1:])) or not math.isfinite(rates[-1]):
        raise ValueError(f"rates must be at least two positive, finite, increasing values, got {rates}")
    start = time.perf_counter()
    train_many_kwargs.setdefault("evaluate_test", False)
    if suggestion is not None:
        train_many_kwargs["extra_config"] = {**(train_many_kwargs.get("extra_config") or {}),
                                             "finder_suggestion": float(suggestion)}

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
    return RateSearch(records=tuple(tried[r] for r in ordered), best_rate=min(ordered, key=lambda r: score(tried[r])),
                      seconds=time.perf_counter() - start, extended=tuple(extended))
