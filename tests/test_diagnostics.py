import keras
import numpy as np

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
