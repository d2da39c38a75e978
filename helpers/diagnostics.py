"""What happens inside a deep network at initialization, layer by layer.

Part (a)'s question is whether the signal survives 20 layers: activations that shrink or
grow by a constant factor per layer reach 0 or overflow after 20 of them, and then the
gradients vanish or blow up and the layers stop learning. Notebook 01 measures both, since
they need not move together (with He + Swish the activations shrink, the gradients do not).
Used in: notebooks 01 and 04.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np


@dataclass(frozen=True)
class LayerStats:
    """Per hidden layer, nearest the input first."""

    act_mean: tuple  # mean activation over the batch and units
    act_std: tuple  # standard deviation of the activations
    grad_norm: tuple  # L2 norm of the loss gradient with respect to the layer's kernel


def hidden_outputs(model: keras.Model):
    """The output tensors of the hidden layers: each Dense (or the Activation after its BN)."""
    outs, layers = [], model.layers
    dense = [l for l in layers if isinstance(l, keras.layers.Dense)][:-1]  # not the softmax output
    for d in dense:
        i = layers.index(d)
        after = [l for l in layers[i + 1:i + 3] if isinstance(l, keras.layers.Activation)]
        outs.append((after[0] if after else d).output)
    return outs, dense


def _kernel_gradients(model, x, y):
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]

        def loss_of(tv):
            y_pred, _ = model.stateless_call(tv, ntv, x, training=False)
            return loss_fn(y, y_pred)

        grads = jax.grad(loss_of)(tv)
    elif backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=False))
        grads = tape.gradient(loss, model.trainable_variables)
    else:
        raise NotImplementedError(f"gradients under the {backend} backend")
    return {id(v): np.asarray(g) for v, g in zip(model.trainable_variables, grads)}


def layer_stats(model: keras.Model, x, y) -> LayerStats:
    """Activation mean and std and kernel-gradient norm of each hidden layer, for one batch.

    Args:
        x, y: a batch of inputs (scaled like the training data) and its labels (N,).
    """
    outs, dense = hidden_outputs(model)
    probe = keras.Model(model.inputs[0], outs)
    # float64: with a bad init the activations reach 1e17, whose squares overflow float32
    acts = [np.asarray(a, dtype=np.float64) for a in probe(x, training=False)]
    grads = _kernel_gradients(model, x, np.asarray(y))
    return LayerStats(act_mean=tuple(float(a.mean()) for a in acts),
                      act_std=tuple(float(a.std()) for a in acts),
                      grad_norm=tuple(float(np.linalg.norm(grads[id(d.kernel)].astype(np.float64)))
                                      for d in dense))
