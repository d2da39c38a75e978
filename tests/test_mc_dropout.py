"""MC dropout: only the dropout layers in training mode, passes averaged, wrong uses refused."""
import keras
import numpy as np
import pytest

from helpers import mc_dropout, training
from helpers.models import build_dnn


def selu_net(rate=0.3, where="output", seed=3):
    return build_dnn(n_hidden=3, n_neurons=16, input_shape=(12,), n_classes=4, activation="selu",
                     initializer="lecun_normal", alpha_dropout=rate, alpha_dropout_where=where, seed=seed)


X = np.random.default_rng(0).normal(size=(50, 12)).astype("float32")


@pytest.mark.parametrize("where", ["output", "hidden"])
def test_passes_differ_with_dropout_and_their_mean_is_returned(where):
    p = mc_dropout.predict(selu_net(where=where), X, n_samples=7, batch_size=16)
    assert p.samples.shape == (7, 50, 4)
    assert not np.allclose(p.samples[0], p.samples[1])  # new masks at every pass
    np.testing.assert_allclose(p.mean, p.samples.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(p.samples.sum(axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(p.running_mean(3), p.samples[:3].mean(axis=0), rtol=1e-6)
    assert p.entropy.shape == p.std.shape == (50,) and (p.std > 0).any()
    again = mc_dropout.predict(selu_net(where=where), X, n_samples=7, batch_size=16)
    np.testing.assert_array_equal(p.samples, again.samples)  # same seed, same passes
    other = mc_dropout.predict(selu_net(where=where), X, n_samples=7, batch_size=16, seed=1)
    assert not np.allclose(p.samples, other.samples)


def test_passes_are_identical_without_dropout_and_equal_the_deterministic_prediction():
    """A dropout layer of rate 0 does nothing in training mode either: every pass is model.predict."""
    model = selu_net(rate=0.0)
    model = keras.Sequential([*model.layers[:-1], keras.layers.Dropout(0.0), model.layers[-1]])
    p = mc_dropout.predict(model, X, n_samples=4)
    for s in p.samples:
        np.testing.assert_allclose(s, model.predict(X, verbose=0), rtol=1e-5, atol=1e-6)


def test_batch_norm_stays_in_inference_mode():
    """An image's MC prediction must not depend on the other images of its batch.

    With batch statistics (``model(x, training=True)``) it would; here the same masks (same
    seed, same shapes) give the first image the same prediction whatever its batch-mates.
    """
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(8, use_bias=False), keras.layers.BatchNormalization(),
                              keras.layers.Activation("swish"), keras.layers.Dropout(0.3), keras.layers.Dense(4, activation="softmax")])
    other = X.copy()
    other[1:] = X[5] * 3 + 1  # very different batch-mates
    a = mc_dropout.predict(model, X, n_samples=5)
    b = mc_dropout.predict(model, other, n_samples=5)
    np.testing.assert_allclose(a.samples[:, 0], b.samples[:, 0], rtol=1e-5, atol=1e-7)
    naive_a = keras.ops.convert_to_numpy(model(X, training=True))[0]
    naive_b = keras.ops.convert_to_numpy(model(other, training=True))[0]
    assert np.abs(naive_a - naive_b).max() > 1e-3  # what the trap does: the batch changes the answer


def test_batch_norm_statistics_are_not_updated():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(8), keras.layers.Dropout(0.3),
                              keras.layers.BatchNormalization(), keras.layers.Dense(4, activation="softmax")])
    before = [w.copy() for w in model.get_weights()]
    mc_dropout.predict(model, X * 5 + 2, n_samples=3)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_wrong_uses_are_refused_with_a_message():
    with pytest.raises(ValueError, match="no dropout layer"):
        mc_dropout.predict(build_dnn(n_hidden=2, n_neurons=4, input_shape=(12,)), X, n_samples=3)
    with pytest.raises(ValueError, match="n_samples"):
        mc_dropout.predict(selu_net(), X, n_samples=0)
    with pytest.raises(ValueError, match="no images"):
        mc_dropout.predict(selu_net(), X[:0], n_samples=3)
    with pytest.raises(ValueError, match="look like raw pixels"):
        mc_dropout.predict(selu_net(), np.round(X * 40 + 128), n_samples=3)
    inputs = keras.Input((12,))
    functional = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dropout(0.2)(inputs)))
    with pytest.raises(TypeError, match="Sequential"):
        mc_dropout.predict(functional, X)
    with pytest.raises(ValueError, match="between 1 and 3"):
        mc_dropout.predict(selu_net(), X, n_samples=3).running_mean(4)


def test_a_trained_network_with_alpha_dropout_trains_and_predicts():
    """Alpha dropout inside the fast training path, then MC predictions of the trained weights."""
    from tests.synthetic import blobs

    data = blobs(n_train=400, n_features=12, n_classes=4)
    model = training.compile_model(selu_net(rate=0.1, where="hidden"), 1e-3)
    record = training.train(model, data, "alpha", max_epochs=2, patience=2, verbose=0)
    assert record.epochs == 2 and np.isfinite(record.valid_loss)
    p = mc_dropout.predict(model, data.x_valid, n_samples=20)
    assert abs(float(np.mean(p.mean.argmax(1) == data.y_valid)) - record.valid_accuracy) < 0.15


def test_mutual_information_is_the_disagreement_of_the_passes():
    from helpers.mc_dropout import MCPredictions, predictive_entropy

    agree = np.tile(np.array([[[0.7, 0.2, 0.1]]]), (5, 1, 1))  # every pass the same: nothing from disagreement
    p = MCPredictions(agree, 0.0)
    assert p.mutual_information == pytest.approx([0.0], abs=1e-12)
    split = np.array([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]])  # two sure passes that disagree: ln 2 of it
    q = MCPredictions(split, 0.0)
    assert q.mutual_information == pytest.approx([np.log(2)], rel=1e-6)
    assert q.entropy == pytest.approx(predictive_entropy([[0.5, 0.5, 0.0]]))
