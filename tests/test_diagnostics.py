import os

import keras
import numpy as np
import pytest

from helpers.diagnostics import hidden_outputs, layer_stats
from helpers.models import build_dnn
from tests.synthetic import blobs


def test_layer_stats_per_hidden_layer():
    data = blobs(n_features=20)
    stats = layer_stats(build_dnn(n_hidden=5, n_neurons=50, input_shape=(20,)), data.x_train[:256],
                        data.y_train[:256])
    assert len(stats.act_std) == len(stats.grad_norm) == 5
    assert all(s > 0 for s in stats.act_std) and all(g > 0 for g in stats.grad_norm)


def test_tiny_initialization_makes_the_signal_vanish():
    data = blobs(n_features=20)
    x, y = data.x_train[:256], data.y_train[:256]
    he = layer_stats(build_dnn(n_hidden=10, n_neurons=50, input_shape=(20,)), x, y)
    tiny = layer_stats(build_dnn(n_hidden=10, n_neurons=50, input_shape=(20,),
                                 initializer=keras.initializers.RandomNormal(stddev=0.01)), x, y)
    assert tiny.act_std[-1] < 1e-6 * tiny.act_std[0]  # shrinks about 100x a layer
    assert he.act_std[-1] > 0.05 * he.act_std[0]  # He keeps it alive
    assert tiny.grad_norm[0] < 1e-3 * he.grad_norm[0]


def test_batch_norm_network_measures_after_the_activation():
    data = blobs(n_features=20)
    model = build_dnn(n_hidden=3, batch_norm=True, input_shape=(20,))
    outs, _ = hidden_outputs(model)
    assert [t.name for t in outs] == [l.output.name for l in model.layers
                                      if isinstance(l, keras.layers.Activation)]
    stats = layer_stats(model, data.x_train[:64], data.y_train[:64])
    assert len(stats.act_mean) == 3 and np.isfinite(stats.grad_norm).all()


# A network whose weights come from NumPy, so that both backends see the same numbers
# (Keras' own seeded draws differ between JAX and TensorFlow).
CROSS_BACKEND_SCRIPT = r"""
import json, sys
import numpy as np
from helpers.diagnostics import layer_stats
from helpers.models import build_dnn
from tests.synthetic import blobs

data = blobs(n_features=64)
out = {}
for init, std in (("he", None), ("normal_1", 1.0)):
    model = build_dnn(n_hidden=20, n_neurons=100, input_shape=(64,))
    rng = np.random.default_rng(0)
    model.set_weights([(rng.normal(size=w.shape) * (std or np.sqrt(2 / w.shape[0]))).astype(np.float32)
                       if w.ndim == 2 else np.zeros_like(w) for w in model.get_weights()])
    for loss_from in ("logits", "probabilities"):
        s = layer_stats(model, data.x_train[:256], data.y_train[:256], loss_from=loss_from)
        out[f"{init} {loss_from}"] = {"grad_norm": s.grad_norm, "act_std": s.act_std}
print("RESULT " + json.dumps(out))
"""


def _stats_under(backend):
    import json
    import os
    import subprocess
    import sys

    from helpers.config import PROJECT_ROOT

    proc = subprocess.run([sys.executable, "-c", CROSS_BACKEND_SCRIPT], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "KERAS_BACKEND": backend})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT ", 1)[1])


@pytest.mark.skipif(os.environ.get("HELPERS_NESTED_BACKEND_RUN") == "1", reason="runs both backends itself")
def test_gradients_measure_the_network_the_same_on_both_backends():
    """From the logits, JAX and TensorFlow give the same gradient norms, for He and N(0, 1).

    Through Keras' own loss on the softmax's probabilities they do not: under JAX the
    clip at 1e-7 zeroes every gradient of the saturated N(0, 1) network.
    """
    for backend in ("jax", "tensorflow"):
        pytest.importorskip(backend)
    jax_stats, tf_stats = _stats_under("jax"), _stats_under("tensorflow")
    for key in ("he logits", "normal_1 logits", "he probabilities"):
        # float32 sums in another order: agreement to 1e-4, at 1e-3 and at 1e18 alike
        np.testing.assert_allclose(jax_stats[key]["grad_norm"], tf_stats[key]["grad_norm"], rtol=1e-4)
        np.testing.assert_allclose(jax_stats[key]["act_std"], tf_stats[key]["act_std"], rtol=1e-4)
    exploding = jax_stats["normal_1 logits"]["grad_norm"]
    assert min(exploding) > 1e6 * max(jax_stats["he logits"]["grad_norm"])  # N(0, 1) explodes backward too
    assert max(jax_stats["normal_1 probabilities"]["grad_norm"]) == 0.0  # the clip, under JAX
    np.testing.assert_allclose(tf_stats["normal_1 probabilities"]["grad_norm"], exploding, rtol=1e-4)


def test_loss_from_is_checked_and_the_output_layer_must_be_a_softmax():
    data = blobs(n_features=20)
    model = build_dnn(n_hidden=2, input_shape=(20,))
    with pytest.raises(ValueError, match="loss_from"):
        layer_stats(model, data.x_train[:8], data.y_train[:8], loss_from="logit")
    linear = keras.Sequential([keras.Input((20,)), keras.layers.Dense(10)])
    with pytest.raises(ValueError, match="softmax"):
        layer_stats(linear, data.x_train[:8], data.y_train[:8])


def test_layer_stats_at_any_point_of_training():
    """The same measurement on a trained network: it reads the model's current weights."""
    from helpers import training

    data = blobs(n_features=20)
    model = training.compile_model(build_dnn(n_hidden=4, n_neurons=32, input_shape=(20,),
                                             activation="selu", initializer="lecun_normal"), 1e-2)
    x, y = data.x_valid[:128], data.y_valid[:128]
    before = layer_stats(model, x, y)
    training.train(model, data, "selu", max_epochs=3, patience=3, verbose=0)
    after = layer_stats(model, x, y)
    assert len(after.act_std) == 4 and np.isfinite(after.act_std).all()
    assert after.act_std != before.act_std  # the weights moved, and the statistics with them
    assert sum(after.grad_norm) < sum(before.grad_norm)  # a trained net has a smaller loss gradient


def test_weight_sums_of_lecun_normal_layers_sit_near_0_and_1():
    from helpers.diagnostics import weight_sums

    model = build_dnn(n_hidden=4, n_neurons=400, input_shape=(400,), activation="selu", initializer="lecun_normal",
                      seed=0)
    w = weight_sums(model)
    assert len(w.sum_mean) == 4
    # each unit's sum of 400 N(0, 1/400) weights is N(0, 1): mean over 400 units within 0.2 of 0, spread 1
    assert all(abs(m) < 0.2 for m in w.sum_mean) and all(0.85 < s < 1.15 for s in w.sum_std)
    assert all(0.9 < q < 1.1 for q in w.square_mean)  # the sum of squares: 1 on average
    first = np.asarray(keras.ops.convert_to_numpy(model.layers[1].kernel))
    assert w.square_mean[0] == pytest.approx(float((first ** 2).sum(axis=0).mean()))
