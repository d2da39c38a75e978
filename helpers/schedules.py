"""1cycle (Smith, 2018): the learning rate and the momentum, per iteration, applied inside the compiled step.

The rate climbs linearly from ``peak / start_divisor`` to ``peak``, comes back down as many steps, then anneals
far below its start; the momentum moves the other way. Both are functions of the optimizer's iteration counter,
read inside the step: a callback that assigns ``optimizer.beta_1`` between batches fails silently, ``beta_1``
being a Python float baked into the step when it is traced (notebook 06 shows it). Hence ``ScheduledNadam``.
"""
from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops


def steps_per_epoch(n_samples: int, batch_size: int) -> int:
    """Train steps in one epoch: every sample used once, the last batch possibly smaller."""
    if n_samples < 1 or batch_size < 1:
        raise ValueError(f"n_samples and batch_size must be positive, got {n_samples}, {batch_size}")
    return math.ceil(n_samples / batch_size)


def _lerp(a, b, t):
    """From a (t = 0) to b (t = 1), exact at both ends (no cancellation near small rates)."""
    return a * (1.0 - t) + b * t


@keras.saving.register_keras_serializable(package="helpers")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """The 1cycle rate as a schedule of the step; ``momentum`` gives the matching momentum.

    Args:
        peak_learning_rate: the maximum rate, reached at the end of the warm-up.
        total_steps: steps of the whole training (epochs x ``steps_per_epoch``).
        start_divisor: the rate starts (and ends its second phase) at ``peak / start_divisor``.
        final_divisor: the last phase anneals to ``start / final_divisor``.
        final_fraction: share of the steps in that last phase.
        max_momentum, min_momentum: the momentum (Nadam's ``beta_1``) range.
    """

    def __init__(self, peak_learning_rate: float, total_steps: int, start_divisor: float = 10.0,
                 final_divisor: float = 100.0, final_fraction: float = 0.1,
                 max_momentum: float = 0.95, min_momentum: float = 0.85):
        if not (peak_learning_rate > 0 and math.isfinite(peak_learning_rate)):
            raise ValueError(f"peak_learning_rate must be a positive number, got {peak_learning_rate}")
        if total_steps < 3:
            raise ValueError(f"total_steps must be at least 3, got {total_steps}")
        if start_divisor < 1 or final_divisor < 1:
            raise ValueError(f"the divisors must be at least 1, got {start_divisor}, {final_divisor}")
        if not 0 <= final_fraction < 1:
            raise ValueError(f"final_fraction must be in [0, 1), got {final_fraction}")
        if not 0 <= min_momentum <= max_momentum < 1:
            raise ValueError(f"need 0 <= min_momentum <= max_momentum < 1, got {min_momentum}, {max_momentum}")
        self.peak_learning_rate = float(peak_learning_rate)
        self.total_steps = int(total_steps)
        self.start_divisor, self.final_divisor = float(start_divisor), float(final_divisor)
        self.final_fraction = float(final_fraction)
        self.max_momentum, self.min_momentum = float(max_momentum), float(min_momentum)
        self.warmup_steps = max(1, round(self.total_steps * (1 - self.final_fraction) / 2))

    @property
    def start_learning_rate(self) -> float:
        return self.peak_learning_rate / self.start_divisor

    @property
    def final_learning_rate(self) -> float:
        return self.start_learning_rate / self.final_divisor

    def _phases(self, step, xp):
        """(phase 1 progress, phase 2 progress, phase 3 progress), each clipped to [0, 1]."""
        w = float(self.warmup_steps)
        tail = max(1.0, self.total_steps - 2 * w)
        return (xp.clip(step / w, 0.0, 1.0), xp.clip((step - w) / w, 0.0, 1.0),
                xp.clip((step - 2 * w) / tail, 0.0, 1.0))

    def _rate(self, step, xp):
        up, down, final = self._phases(step, xp)
        peak, start, end = self.peak_learning_rate, self.start_learning_rate, self.final_learning_rate
        w = float(self.warmup_steps)
        return xp.where(step < w, _lerp(start, peak, up),
                        xp.where(step < 2 * w, _lerp(peak, start, down), _lerp(start, end, final)))

    def _momentum(self, step, xp):
        up, down, _ = self._phases(step, xp)
        high, low = self.max_momentum, self.min_momentum
        return xp.where(step < self.warmup_steps, _lerp(high, low, up), _lerp(low, high, down))

    def __call__(self, step):
        return self._rate(ops.cast(step, "float32"), ops)

    def momentum(self, step):
        """The momentum at ``step`` (a tensor): what ``ScheduledNadam`` uses as ``beta_1``."""
        return self._momentum(ops.cast(step, "float32"), ops)

    def rate_at(self, steps) -> np.ndarray:
        """The formula in NumPy, for plots and tests."""
        return self._rate(np.asarray(steps, dtype=np.float64), np)

    def momentum_at(self, steps) -> np.ndarray:
        return self._momentum(np.asarray(steps, dtype=np.float64), np)

    def get_config(self):
        names = ("peak_learning_rate", "total_steps", "start_divisor", "final_divisor", "final_fraction",
                 "max_momentum", "min_momentum")
        return {name: getattr(self, name) for name in names}


@keras.saving.register_keras_serializable(package="helpers")
class ScheduledNadam(keras.optimizers.Nadam):
    """Nadam whose ``beta_1`` follows ``momentum_schedule(iterations)``, read inside the step.

    Keras' Nadam reads ``self.beta_1`` in its update: a function of the iteration counter there changes
    the momentum at every compiled step. Assigning ``beta_1`` is refused: it would be a silent no-op.
    """

    def __init__(self, learning_rate, momentum_schedule, **kwargs):
        if isinstance(momentum_schedule, dict):  # from get_config
            momentum_schedule = keras.saving.deserialize_keras_object(momentum_schedule)
        if not hasattr(momentum_schedule, "momentum"):
            raise TypeError("momentum_schedule needs a .momentum(step) method, e.g. a helpers.schedules.OneCycle")
        kwargs.pop("beta_1", None)
        super().__init__(learning_rate=learning_rate, **kwargs)  # sets beta_1 once: ignored below
        self.momentum_schedule = momentum_schedule

    @property
    def beta_1(self):
        return self.momentum_schedule.momentum(self.iterations)

    @beta_1.setter
    def beta_1(self, value):
        if "momentum_schedule" in self.__dict__:
            raise AttributeError("ScheduledNadam's beta_1 follows its momentum_schedule; it cannot be assigned")

    def get_config(self):
        config = super().get_config()
        config["beta_1"] = None
        config["momentum_schedule"] = keras.saving.serialize_keras_object(self.momentum_schedule)
        return config
