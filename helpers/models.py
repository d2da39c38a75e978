"""One function that builds every network of the exercise.

Part (a)'s network is the default: 20 hidden Dense layers of 100 units, He normal
initialization, Swish. Each later part changes one or two arguments, so a notebook
shows the change as one readable call rather than a copied block.
"""
from __future__ import annotations

import keras
import numpy as np

from helpers import config
from helpers.data import IMAGE_SHAPE, N_CLASSES


def build_dnn(n_hidden: int = 20, n_neurons: int = 100, activation: str = "swish",
              initializer: str = "he_normal", batch_norm: bool = False,
              alpha_dropout: float = 0.0, input_shape=IMAGE_SHAPE, n_classes: int = N_CLASSES,
              seed: int | None = config.SEED, name: str | None = None,
              input_batch_norm: bool | None = None, alpha_dropout_where: str = "output",
              random_flip: bool = False) -> keras.Sequential:
    """A dense classifier for 32x32x3 images (uncompiled).

    Args:
        n_hidden, n_neurons: depth and width of the hidden stack.
        activation, initializer: Keras names, e.g. ``"selu"`` and ``"lecun_normal"``, or an
            initializer object. Each layer gets its own copy with its own seed: one seeded
            Keras initializer returns the same values at every call.
        batch_norm: a BatchNormalization before every hidden activation; the Dense layers
            then have no bias (BN's learned offset, beta, takes its place).
        input_batch_norm: a BatchNormalization right after Flatten, on the inputs, as the
            published solution has; default: the same as ``batch_norm``.
        alpha_dropout: rate of AlphaDropout. Only with SELU and LeCun normal init: it is
            built to keep SELU's mean and variance, which plain dropout breaks.
        alpha_dropout_where: ``"output"``, one AlphaDropout before the output layer (the
            published solution's choice), or ``"hidden"``, one after every hidden layer.
        random_flip: a ``RandomFlip("horizontal")`` first: each training image mirrored with
            probability 1/2; at inference it does nothing.
        seed: clears the Keras session, seeds Python, NumPy and the backend, and gives every
            initializer, dropout and flip layer a seed of its own drawn from it: the same seed
            gives the same network whatever other threads draw. None: Keras' defaults.
    """
    if n_hidden < 1 or n_neurons < 1:
        raise ValueError(f"n_hidden and n_neurons must be positive, got {n_hidden}, {n_neurons}")
    if not 0.0 <= alpha_dropout < 1.0:
        raise ValueError(f"alpha_dropout is a rate in [0, 1), got {alpha_dropout}")
    if alpha_dropout and (activation != "selu" or initializer != "lecun_normal" or batch_norm):
        raise ValueError(
            "alpha dropout preserves self-normalization only in a SELU net with LeCun normal "
            f"init and no batch norm; got activation={activation!r}, initializer={initializer!r}, "
            f"batch_norm={batch_norm}. Use keras.layers.Dropout for other networks.")
    if alpha_dropout_where not in ("output", "hidden"):
        raise ValueError(f"alpha_dropout_where is 'output' or 'hidden', got {alpha_dropout_where!r}")
    if seed is not None:
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
    layer_seeds = iter(np.random.default_rng(seed).integers(0, 2**31 - 1, size=3 * n_hidden + 4).tolist()
                       if seed is not None else [None] * (3 * n_hidden + 4))

    def seeded(init):
        init = keras.initializers.get(init)
        return type(init).from_config({**init.get_config(), "seed": next(layer_seeds)})

    layers = [keras.Input(shape=input_shape)]
    if random_flip:
        if len(input_shape) != 3:
            raise ValueError(f"random_flip mirrors images of shape (height, width, channels); the inputs have "
                             f"shape {tuple(input_shape)}")
        layers.append(keras.layers.RandomFlip("horizontal", seed=next(layer_seeds)))
    layers.append(keras.layers.Flatten())
    if batch_norm if input_batch_norm is None else input_batch_norm:
        layers.append(keras.layers.BatchNormalization())
    for _ in range(n_hidden):
        if batch_norm:
            layers += [keras.layers.Dense(n_neurons, kernel_initializer=seeded(initializer), use_bias=False),
                       keras.layers.BatchNormalization(),
                       keras.layers.Activation(activation)]
        else:
            layers.append(keras.layers.Dense(n_neurons, activation=activation,
                                             kernel_initializer=seeded(initializer)))
        if alpha_dropout and alpha_dropout_where == "hidden":
            layers.append(keras.layers.AlphaDropout(alpha_dropout, seed=next(layer_seeds)))
    if alpha_dropout and alpha_dropout_where == "output":
        layers.append(keras.layers.AlphaDropout(alpha_dropout, seed=next(layer_seeds)))
    layers.append(keras.layers.Dense(n_classes, activation="softmax", kernel_initializer=seeded("glorot_uniform")))
    return keras.Sequential(layers, name=name)


_ALIASES = {"silu": "swish"}  # Keras 3 names Swish by its other name, SiLU


def describe(model: keras.Model) -> dict:
    """The architecture as a small dict for Run records, read off the layers themselves."""
    dense = [l for l in model.layers if isinstance(l, keras.layers.Dense)]
    hidden = dense[:-1]
    acts = [l for l in model.layers if isinstance(l, keras.layers.Activation)]
    activation = (acts[0].activation if acts else hidden[0].activation) if hidden else None
    dropout = [l for l in model.layers if isinstance(l, keras.layers.AlphaDropout)]
    input_bn = [b for a, b in zip(model.layers, model.layers[1:])  # right after the Flatten, on the inputs
                if isinstance(a, keras.layers.Flatten) and isinstance(b, keras.layers.BatchNormalization)]
    return {
        "n_hidden": len(hidden),
        "n_neurons": hidden[0].units if hidden else None,
        "activation": _ALIASES.get(name := getattr(activation, "__name__", str(activation)), name),
        "initializer": type(hidden[0].kernel_initializer).__name__ if hidden else None,
        "batch_norm": any(isinstance(l, keras.layers.BatchNormalization) and l not in input_bn
                          for l in model.layers[1:]),
        "input_batch_norm": bool(input_bn),
        "alpha_dropout": dropout[0].rate if dropout else 0.0,
        # how many AlphaDropout layers (1: before the output; one per hidden layer), only when there are any
        **({"alpha_dropout_layers": len(dropout)} if dropout else {}),
        **({"random_flip": True} if any(isinstance(l, keras.layers.RandomFlip) for l in model.layers) else {}),
        "parameters": int(model.count_params()),
    }
