"""1cycle: the formula at chosen steps, and both rate and momentum applied by the compiled step."""
import keras
import numpy as np
import pytest

from helpers import schedules, training
from tests.test_lr_finder import probe_data


def cycle(**kw):
    return schedules.OneCycle(**{"peak_learning_rate": 1e-2, "total_steps": 40, **kw})


def test_values_at_chosen_steps():
    s = cycle()  # warm-up: round(40 * 0.9 / 2) = 18 steps up, 18 down, 4 of final phase
    assert s.warmup_steps == 18
    np.testing.assert_allclose(s.rate_at([0, 9, 18, 27, 36, 38, 40, 60]),
                               [1e-3, 5.5e-3, 1e-2, 5.5e-3, 1e-3, 1e-3 - 0.5 * (1e-3 - 1e-5), 1e-5, 1e-5], rtol=1e-9)
    np.testing.assert_allclose(s.momentum_at([0, 9, 18, 27, 36, 40]), [0.95, 0.90, 0.85, 0.90, 0.95, 0.95], rtol=1e-9)
    # the Keras schedule (what the optimizer calls) gives the same numbers as the NumPy formula
    steps = np.arange(0, 45)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(s(steps)), s.rate_at(steps), rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(s.momentum(steps)), s.momentum_at(steps), rtol=1e-6)


def test_final_phase_goes_far_below_the_start_and_momentum_moves_opposite():
    s = cycle(total_steps=1000)
    steps = np.arange(1001)
    rate, momentum = s.rate_at(steps), s.momentum_at(steps)
    assert rate.argmax() == s.warmup_steps and rate.max() == pytest.approx(1e-2)
    assert rate[-1] == pytest.approx(s.start_learning_rate / 100) and rate[-1] < rate[0] / 50
    cycle_part = slice(0, 2 * s.warmup_steps + 1)
    d_rate, d_momentum = np.diff(rate[cycle_part]), np.diff(momentum[cycle_part])
    assert (np.sign(d_rate) == -np.sign(d_momentum)).all()  # opposite at every step of the cycle
    assert momentum[rate.argmax()] == pytest.approx(0.85) and momentum[0] == momentum[-1] == pytest.approx(0.95)


@pytest.mark.parametrize("kwargs", [{"peak_learning_rate": 0.0}, {"peak_learning_rate": -1e-3},
                                    {"peak_learning_rate": float("nan")}, {"total_steps": 2},
                                    {"final_fraction": 1.0}, {"min_momentum": 0.99}, {"start_divisor": 0.5}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        cycle(**kwargs)


def test_steps_per_epoch_counts_the_last_partial_batch():
    assert schedules.steps_per_epoch(45_000, 128) == 352 and schedules.steps_per_epoch(45_000, 32) == 1407
    with pytest.raises(ValueError):
        schedules.steps_per_epoch(0, 32)


def nadam_reference(rates, momenta, n, target=10.0, beta_2=0.999, eps=1e-7):
    """Keras 3's Nadam in NumPy, on the probe w -> (target - w)² (gradient -2 (target - w)).

    Returns w after each step. ``momenta[t]`` is the beta_1 applied at step t.
    """
    w = m = v = 0.0
    u_product, out = 1.0, []
    for t in range(n):
        g, b1, lr = -2.0 * (target - w), momenta[t], rates[t]
        u_t, u_next = b1 * (1 - 0.5 * 0.96 ** (t + 1)), b1 * (1 - 0.5 * 0.96 ** (t + 2))
        u_product *= u_t
        m += (g - m) * (1 - b1)
        v += (g * g - v) * (1 - beta_2)
        m_hat = u_next * m / (1 - u_product * u_next) + (1 - u_t) * g / (1 - u_product)
        w -= lr * m_hat / (np.sqrt(v / (1 - beta_2 ** (t + 1))) + eps)
        out.append(w)
    return np.array(out)


def probe(optimizer):
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=optimizer, loss="mean_squared_error", jit_compile=True,
                  steps_per_execution=training.STEPS_PER_EXECUTION)  # as helpers compiles every model
    return model


def test_rate_and_momentum_are_applied_at_every_step_of_the_compiled_epoch():
    """Through fit, with XLA and 32 steps per call of the compiled step.

    The weight after 40 steps equals Nadam run in NumPy with the formula's rate and momentum at
    each step; with the momentum frozen at its first value, or the rate, it would not.
    """
    s = cycle()
    model = probe(schedules.ScheduledNadam(s, momentum_schedule=s))
    data = probe_data(n=40)
    model.fit(data.x_train, data.y_train, batch_size=1, epochs=1, shuffle=False, verbose=0)
    w = float(model.get_weights()[0].ravel()[0])
    steps = np.arange(40)
    expected = nadam_reference(s.rate_at(steps), s.momentum_at(steps), 40)[-1]
    assert w == pytest.approx(expected, rel=1e-5)
    frozen_momentum = nadam_reference(s.rate_at(steps), np.full(40, 0.95), 40)[-1]
    frozen_rate = nadam_reference(np.full(40, 1e-3), s.momentum_at(steps), 40)[-1]
    assert abs(frozen_momentum - expected) > 100 * abs(w - expected) and abs(frozen_rate - expected) > 0.01
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 40


def test_rate_and_momentum_read_back_step_by_step():
    """The weight after each step (``train_on_batch``), against the reference."""
    s = cycle()
    model = probe(schedules.ScheduledNadam(s, momentum_schedule=s))
    data = probe_data(n=40)
    expected = nadam_reference(s.rate_at(np.arange(40)), s.momentum_at(np.arange(40)), 40)
    for step in range(40):
        model.train_on_batch(data.x_train[step:step + 1], data.y_train[step:step + 1])
        assert float(model.get_weights()[0].ravel()[0]) == pytest.approx(expected[step], rel=1e-5), step


def test_assigning_beta_1_is_refused_and_a_plain_nadam_ignores_it_inside_fit():
    """The trap: a callback setting ``optimizer.beta_1`` at every batch changes nothing in fit's compiled step."""
    s = cycle()
    with pytest.raises(AttributeError, match="momentum_schedule"):
        schedules.ScheduledNadam(s, momentum_schedule=s).beta_1 = 0.5

    class SetBeta1(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):  # after the first step: the step is compiled
            self.model.optimizer.beta_1 = 0.5

    data = probe_data(n=40)
    runs = {}
    for name, callbacks in (("plain", []), ("callback", [SetBeta1()])):
        keras.utils.set_random_seed(0)
        model = probe(keras.optimizers.Nadam(1e-2, beta_1=0.9))
        model.fit(data.x_train, data.y_train, batch_size=1, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)
        runs[name] = float(model.get_weights()[0].ravel()[0])
    assert runs["callback"] == pytest.approx(runs["plain"], rel=1e-6)
    assert runs["plain"] == pytest.approx(nadam_reference(np.full(40, 1e-2), np.full(40, 0.9), 40)[-1], rel=1e-5)


def test_compile_model_takes_a_momentum_schedule_and_records_it():
    s = cycle()
    model = training.compile_model(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")]),
                                   s, beta_1=s)
    assert isinstance(model.optimizer, schedules.ScheduledNadam)
    assert training.learning_rate_of(model.optimizer) == pytest.approx(1e-2)
    config = training.optimizer_config(model.optimizer)
    assert config["learning_rate"]["class"] == "OneCycle" and config["momentum_schedule"]["config"]["min_momentum"] == 0.85
    with pytest.raises(TypeError, match="momentum"):
        schedules.ScheduledNadam(s, momentum_schedule=0.9)
