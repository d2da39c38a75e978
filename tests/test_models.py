import keras
import numpy as np
import pytest

from helpers.models import build_dnn, describe


def test_default_is_part_a_network():
    model = build_dnn()
    dense = [l for l in model.layers if isinstance(l, keras.layers.Dense)]
    assert len(dense) == 21 and all(l.units == 100 for l in dense[:-1])
    assert all(l.activation is keras.activations.swish for l in dense[:-1])  # Keras 3: silu
    assert all(isinstance(l.kernel_initializer, keras.initializers.HeNormal) for l in dense[:-1])
    assert dense[-1].units == 10 and dense[-1].activation.__name__ == "softmax"
    # 3072*100+100 + 19*(100*100+100) + 100*10+10
    assert model.count_params() == 500_210
    assert model.output_shape == (None, 10)


def test_batch_norm_comes_before_activation_and_replaces_bias():
    model = build_dnn(n_hidden=3, batch_norm=True)
    kinds = [type(l).__name__ for l in model.layers]
    assert kinds[:2] == ["Flatten", "BatchNormalization"]
    assert kinds[2:11] == ["Dense", "BatchNormalization", "Activation"] * 3
    hidden = [l for l in model.layers if isinstance(l, keras.layers.Dense)][:-1]
    assert not any(l.use_bias for l in hidden)
    assert describe(model)["batch_norm"] is True and describe(model)["activation"] == "swish"
    assert describe(model)["input_batch_norm"] is True


def test_batch_norm_on_the_inputs_is_a_separate_choice():
    hidden_only = build_dnn(n_hidden=3, batch_norm=True, input_batch_norm=False)
    kinds = [type(l).__name__ for l in hidden_only.layers]
    assert kinds[:2] == ["Flatten", "Dense"] and kinds.count("BatchNormalization") == 3
    assert describe(hidden_only)["batch_norm"] is True and describe(hidden_only)["input_batch_norm"] is False
    inputs_only = build_dnn(n_hidden=3, input_batch_norm=True)
    assert describe(inputs_only)["batch_norm"] is False and describe(inputs_only)["input_batch_norm"] is True


def test_alpha_dropout_only_in_a_self_normalizing_net():
    with pytest.raises(ValueError, match="SELU"):
        build_dnn(alpha_dropout=0.1)  # Swish + He: alpha dropout breaks nothing useful
    with pytest.raises(ValueError, match="SELU"):
        build_dnn(activation="selu", initializer="he_normal", alpha_dropout=0.1)
    model = build_dnn(n_hidden=2, activation="selu", initializer="lecun_normal", alpha_dropout=0.1)
    assert isinstance(model.layers[-2], keras.layers.AlphaDropout)
    assert describe(model)["alpha_dropout"] == pytest.approx(0.1)


@pytest.mark.parametrize("kwargs", [{"n_hidden": 0}, {"n_neurons": 0}, {"alpha_dropout": 1.0}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        build_dnn(**kwargs)


def test_same_seed_same_weights_other_seed_other_weights():
    a = build_dnn(n_hidden=2, seed=1).get_weights()
    b = build_dnn(n_hidden=2, seed=1).get_weights()
    c = build_dnn(n_hidden=2, seed=2).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_describe_reads_the_layers():
    d = describe(build_dnn(n_hidden=4, n_neurons=7, activation="selu", initializer="lecun_normal"))
    assert d == {"n_hidden": 4, "n_neurons": 7, "activation": "selu", "initializer": "LecunNormal",
                 "batch_norm": False, "input_batch_norm": False, "alpha_dropout": 0.0,
                 "parameters": d["parameters"]}


def test_initializer_object_gives_each_layer_its_own_draw_reproducibly():
    init = keras.initializers.RandomNormal(stddev=0.01, seed=7)  # seeded: same values at every call
    kernels = [l.kernel.numpy() for l in build_dnn(n_hidden=3, n_neurons=8, initializer=init).layers
               if isinstance(l, keras.layers.Dense)][1:3]
    assert not np.array_equal(kernels[0], kernels[1])
    again = [l.kernel.numpy() for l in build_dnn(n_hidden=3, n_neurons=8, initializer=init).layers
             if isinstance(l, keras.layers.Dense)][1:3]
    assert np.array_equal(kernels[0], again[0])  # build_dnn's seed makes it reproducible
    assert abs(kernels[0].std() - 0.01) < 0.003


def test_alpha_dropout_before_the_output_or_after_every_hidden_layer():
    selu = {"activation": "selu", "initializer": "lecun_normal", "n_hidden": 3, "n_neurons": 8}
    out = build_dnn(**selu, alpha_dropout=0.2)
    hidden = build_dnn(**selu, alpha_dropout=0.2, alpha_dropout_where="hidden")
    kinds = [type(l).__name__ for l in hidden.layers]
    assert kinds == ["Flatten"] + ["Dense", "AlphaDropout"] * 3 + ["Dense"]
    assert describe(out)["alpha_dropout_layers"] == 1 and describe(hidden)["alpha_dropout_layers"] == 3
    assert describe(hidden)["alpha_dropout"] == pytest.approx(0.2)
    assert out.count_params() == hidden.count_params()  # dropout adds no weights
    with pytest.raises(ValueError, match="'output' or 'hidden'"):
        build_dnn(**selu, alpha_dropout=0.2, alpha_dropout_where="everywhere")
