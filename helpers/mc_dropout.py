"""MC dropout: predictions of a trained network with its dropout layers left on.

Gal and Ghahramani (2016): keep dropout active at inference, run the same input through
the network many times, and average the probabilities. Same weights, no retraining.
Each pass samples a thinned network; their mean is usually a little better calibrated
than one deterministic pass, and their spread says how unsure the network is.

Two traps this module avoids:

- ``model(x, training=True)`` turns on dropout, and also switches every batch-norm layer
  to the statistics of the current batch: predictions then depend on which images share
  the batch. Here only the dropout layers run in training mode; everything else runs as
  at inference.
- Comparing labels of shape (N, 1) with predictions of shape (N,) broadcasts to (N, N)
  (``helpers.metrics.accuracy`` refuses it).

Speed: the layers before the first dropout layer give the same output at every pass, so
they run once; only the rest runs ``n_samples`` times. Under JAX those passes are one
compiled ``lax.scan`` (as the training path runs an epoch); under other backends a
Python loop over eager calls.
Used in: notebook 05.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np

from helpers import config

DROPOUT_LAYERS = (keras.layers.Dropout, keras.layers.AlphaDropout, keras.layers.GaussianDropout,
                  keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D, keras.layers.SpatialDropout3D)


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
        """(N,): predictive entropy minus the mean entropy of the passes, in nats.

        The part of the uncertainty that comes from the passes disagreeing (the weights'
        uncertainty, in Gal and Ghahramani's reading), as opposed to each pass being
        unsure on its own: 0 when every pass predicts the same distribution.
        """
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


def predict(model: keras.Model, x, n_samples: int = 100, *, batch_size: int = 2000,
            seed: int = config.SEED) -> MCPredictions:
    """``n_samples`` stochastic passes of ``model`` over ``x``, dropout layers only in training mode.

    Args:
        model: a trained ``keras.Sequential`` with at least one dropout layer.
        x: inputs, preprocessed as for training.
        n_samples: passes; each draws new dropout masks.
        batch_size: images per call (memory only: no layer here depends on the batch).
        seed: the masks' random seed; the same seed gives the same passes.
    """
    if not isinstance(model, keras.Sequential):
        raise TypeError(f"MC dropout here runs the layers of a keras.Sequential one by one; got {type(model).__name__}")
    first = next((i for i, layer in enumerate(model.layers) if isinstance(layer, DROPOUT_LAYERS)), None)
    if first is None:
        raise ValueError(f"model {model.name!r} has no dropout layer: MC dropout would repeat one deterministic "
                         "prediction. Build it with dropout (e.g. build_dnn(alpha_dropout=0.1, ...)).")
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty batch of inputs, got shape {x.shape}")
    start = time.perf_counter()
    head, tail = model.layers[:first], model.layers[first:]
    h = _run(head, x, batch_size)  # the same at every pass: computed once
    n_drop = sum(isinstance(layer, DROPOUT_LAYERS) for layer in tail)  # mask seeds each pass needs
    passes = _passes_jax if keras.backend.backend() == "jax" else _passes_eager
    samples = passes(tail, h, n_samples, batch_size, seed, n_drop)
    return MCPredictions(samples=samples, seconds=time.perf_counter() - start)


def _run(layers, x, batch_size):
    """The deterministic layers, at inference, batch by batch."""
    if not layers:
        return x
    out = []
    for i in range(0, len(x), batch_size):
        z = keras.ops.convert_to_tensor(x[i:i + batch_size])
        for layer in layers:
            z = layer(z, training=False)
        out.append(keras.ops.convert_to_numpy(z))
    return np.concatenate(out)


def _tail_pass(tail, z, seeds):
    """One pass through ``tail``: dropout layers in training mode with the given mask seeds.

    Each dropout layer's seed-generator state is replaced, for this call only, by its entry
    of ``seeds`` (uint32 pairs), so that a pass is a pure function of its seeds: the
    same seeds give the same masks, and the layers' own generators are left untouched.
    """
    droppers = [layer for layer in tail if isinstance(layer, DROPOUT_LAYERS)]
    mapping = [(layer.seed_generator.state, s) for layer, s in zip(droppers, seeds)
               if getattr(layer, "seed_generator", None) is not None]  # a rate-0 Dropout has none
    with keras.StatelessScope(state_mapping=mapping):
        for layer in tail:
            z = layer(z, training=isinstance(layer, DROPOUT_LAYERS))
    return z


def _passes_eager(tail, h, n_samples, batch_size, seed, n_drop):
    parts = []
    for b, i in enumerate(range(0, len(h), batch_size)):
        z0 = keras.ops.convert_to_tensor(h[i:i + batch_size])
        passes = []
        for s in range(n_samples):
            seeds = [np.array([seed, (s * 1_000 + b) * 100 + d], np.uint32) for d in range(n_drop)]
            passes.append(keras.ops.convert_to_numpy(_tail_pass(tail, z0, seeds)))
        parts.append(np.stack(passes))
    return np.concatenate(parts, axis=1)


def _passes_jax(tail, h, n_samples, batch_size, seed, n_drop):
    import jax
    import jax.numpy as jnp

    @jax.jit
    def all_passes(keys, hb):
        def one_pass(key):
            seeds = [jax.random.key_data(jax.random.fold_in(key, d)).astype("uint32") for d in range(n_drop)]
            return _tail_pass(tail, hb, seeds)

        return jax.lax.map(one_pass, keys)

    keys = jax.random.split(jax.random.key(seed), n_samples)
    parts = []
    for b, i in enumerate(range(0, len(h), batch_size)):
        batch_keys = jax.vmap(lambda k: jax.random.fold_in(k, b))(keys)
        parts.append(np.asarray(all_passes(batch_keys, jnp.asarray(h[i:i + batch_size]))))
    return np.concatenate(parts, axis=1)
