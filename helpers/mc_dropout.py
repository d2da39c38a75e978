"""MC dropout: predictions of a trained network with its dropout layers left on.

Gal and Ghahramani (2016): keep dropout active at inference, run the same input through the
network many times, and average the probabilities; their spread says how unsure the network is.
How, in Keras: the published solution's idea, a dropout layer whose ``call`` forces
``training=True`` (``AlwaysOn``), in place of each dropout layer of a copy of the network that
shares every other layer; then ``predict``, once per pass. Unlike ``model(x, training=True)``,
which also switches every batch-norm layer to the statistics of the current batch, only the
dropout layers are on.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np

from helpers import config
from helpers.data import check_images

DROPOUT_LAYERS = (keras.layers.Dropout, keras.layers.AlphaDropout, keras.layers.GaussianDropout)


@dataclass(frozen=True)
class MCPredictions:
    """What ``predict`` returns.

    ``samples`` has shape (n_samples, N, n_classes): the class probabilities of every
    pass, in the order drawn, so that the mean of the first k passes shows what k passes
    would have given.
    """

    samples: np.ndarray
    seconds: float  # wall time of the passes, compilation included

    @property
    def mean(self) -> np.ndarray:
        """(N, n_classes): the MC estimate of the class probabilities."""
        return self.samples.mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        """(N,): standard deviation over the passes of the probability of the predicted class."""
        predicted = self.mean.argmax(axis=1)
        return self.samples[:, np.arange(self.samples.shape[1]), predicted].std(axis=0)

    @property
    def entropy(self) -> np.ndarray:
        """(N,): predictive entropy of the mean probabilities, in nats (0: certain; ln 10: uniform)."""
        return predictive_entropy(self.mean)

    @property
    def mutual_information(self) -> np.ndarray:
        """(N,): predictive entropy minus the mean entropy of the passes, in nats: 0 when the passes agree."""
        return self.entropy - predictive_entropy(self.samples).mean(axis=0)

    def running_mean(self, k: int) -> np.ndarray:
        """Mean probabilities of the first ``k`` passes."""
        if not 1 <= k <= len(self.samples):
            raise ValueError(f"k must be between 1 and {len(self.samples)}, got {k}")
        return self.samples[:k].mean(axis=0)


def predictive_entropy(probabilities) -> np.ndarray:
    """Entropy of each row of class probabilities, in nats."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=-1)


def always_on(layer):
    """A copy of the dropout ``layer`` that drops at inference too: its ``call`` forces ``training=True``."""
    base = type(layer)

    class AlwaysOn(base):
        def call(self, inputs, training=None):
            return super().call(inputs, training=True)

    AlwaysOn.__name__ = AlwaysOn.__qualname__ = f"AlwaysOn{base.__name__}"
    return AlwaysOn.from_config(layer.get_config())


def mc_model(model: keras.Sequential, seed: int = config.SEED) -> keras.Sequential:
    """A ``Sequential`` that shares every layer of ``model`` (the trained weights) but its dropout layers, left on."""
    if not isinstance(model, keras.Sequential):
        raise TypeError(f"MC dropout here rebuilds a keras.Sequential layer by layer; got {type(model).__name__}")
    if not any(isinstance(layer, DROPOUT_LAYERS) for layer in model.layers):
        raise ValueError(f"model {model.name!r} has no dropout layer: MC dropout would repeat one deterministic "
                         "prediction. Build it with dropout (e.g. build_dnn(alpha_dropout=0.1, ...)).")
    seeds = iter(np.random.default_rng(seed).integers(0, 2**31 - 1, size=len(model.layers)).tolist())
    layers = [always_on(layer.from_config({**layer.get_config(), "seed": next(seeds)}))
              if isinstance(layer, DROPOUT_LAYERS) else layer for layer in model.layers]
    return keras.Sequential(layers, name=f"{model.name}_mc")


def predict(model: keras.Model, x, n_samples: int = 100, *, batch_size: int = 1000,
            seed: int = config.SEED) -> MCPredictions:
    """``n_samples`` passes of ``mc_model(model).predict(x)``: dropout on, everything else at inference.

    ``model``: a trained ``keras.Sequential`` with a dropout layer; ``x``: preprocessed as for training;
    ``batch_size``: memory only (no layer here depends on the batch); the same ``seed``, the same passes.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    mc = mc_model(model, seed)
    try:
        shape = model.input_shape[1:]
    except (AttributeError, ValueError):  # a Sequential without an Input: its shape comes from the first call
        shape = None
    x = check_images(x, "x", shape)  # raw 0-255 pixels would give numbers, all wrong
    start = time.perf_counter()
    samples = np.stack([mc.predict(x, batch_size=batch_size, verbose=0) for _ in range(n_samples)])
    return MCPredictions(samples=samples, seconds=time.perf_counter() - start)
