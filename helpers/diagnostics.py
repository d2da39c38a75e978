"""What happens inside a deep network at initialization, layer by layer.

Part (a)'s question is whether the signal survives 20 layers: activations that shrink or
grow by a constant factor per layer reach 0 or overflow after 20 of them, and then the
gradients vanish or blow up and the layers stop learning. Notebook 01 measures both, since
they need not move together (with He + Swish the activations shrink, the gradients do not).
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from helpers.data import check_images, normalize_labels


@dataclass(frozen=True)
class LayerStats:
    """Per hidden layer, nearest the input first."""

    act_mean: tuple  # mean activation over the batch and units
    act_std: tuple  # standard deviation of the activations
    grad_norm: tuple  # L2 norm of the loss gradient with respect to the layer's kernel


@dataclass(frozen=True)
class WeightSums:
    """Per hidden layer, over its units: each unit's incoming weights summed, and their squares summed."""

    sum_mean: tuple  # mean over the layer's units of sum_i w_ij
    sum_std: tuple  # their standard deviation over units
    square_mean: tuple  # mean over units of sum_i w_ij**2
    square_std: tuple


def weight_sums(model: keras.Model) -> WeightSums:
    """The two weight conditions of self-normalization (Klambauer et al., 2017), per hidden layer.

    Their fixed point (activations of mean 0 and variance 1, layer after layer) is derived for
    per-unit sums near 0 and sums of squares near 1 (LeCun normal weights at initialization).
    """
    _, dense = hidden_outputs(model)
    kernels = [np.asarray(keras.ops.convert_to_numpy(d.kernel), dtype=np.float64) for d in dense]
    sums, squares = [k.sum(axis=0) for k in kernels], [(k ** 2).sum(axis=0) for k in kernels]
    return WeightSums(sum_mean=tuple(float(s.mean()) for s in sums), sum_std=tuple(float(s.std()) for s in sums),
                      square_mean=tuple(float(q.mean()) for q in squares),
                      square_std=tuple(float(q.std()) for q in squares))


def hidden_outputs(model: keras.Model):
    """The output tensors of the hidden layers: each Dense (or the Activation after its BN)."""
    outs, layers = [], model.layers
    dense = [l for l in layers if isinstance(l, keras.layers.Dense)][:-1]  # not the softmax output
    for d in dense:
        i = layers.index(d)
        after = [l for l in layers[i + 1:i + 3] if isinstance(l, keras.layers.Activation)]
        outs.append((after[0] if after else d).output)
    return outs, dense


def _logits_model(model: keras.Model):
    """(a model from the input to the last hidden output, the softmax output layer): the logits are ``h @ W + b``."""
    out = model.layers[-1]
    if not (isinstance(out, keras.layers.Dense) and getattr(out.activation, "__name__", "") == "softmax"):
        raise ValueError("layer_stats expects a model ending in Dense(..., activation='softmax')")
    return keras.Model(model.inputs[0], model.layers[-2].output), out


def _kernel_gradients(model, x, y, from_logits=True):
    """Gradient of the mean cross-entropy with respect to every trainable variable, by id.

    Under JAX: ``jax.grad`` of the model's own call in a ``keras.StatelessScope``; under TensorFlow: a tape.
    """
    backend = keras.backend.backend()
    y = keras.ops.convert_to_tensor(y)
    if from_logits:
        body, out = _logits_model(model)
        variables = [*body.trainable_variables, out.kernel, out.bias]
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        def forward():
            return keras.ops.matmul(body(x, training=False), out.kernel) + out.bias
    else:  # what Keras does with a softmax output: the loss from the probabilities
        variables = list(model.trainable_variables)
        loss_fn = keras.losses.SparseCategoricalCrossentropy()

        def forward():
            return model(x, training=False)
    if backend == "jax":
        import jax

        def loss(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return loss_fn(y, forward())

        grads = jax.grad(loss)([v.value for v in variables])
    elif backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(y, forward())
        grads = tape.gradient(loss, variables)
    else:
        raise NotImplementedError(f"gradients under the {backend} backend")
    return {id(v): np.zeros(v.shape) if g is None else np.asarray(g) for v, g in zip(variables, grads)}


def layer_stats(model: keras.Model, x, y, loss_from: str = "logits") -> LayerStats:
    """Activation mean and std and kernel-gradient norm of each hidden layer, for one batch.

    Args:
        x, y: a batch of inputs (scaled like the training data) and its labels (N,).
        loss_from: ``"logits"``: the cross-entropy from the output layer's logits, the same on
            every backend; ``"probabilities"``: as Keras computes it from a softmax output, which
            under JAX clips the probabilities (zero gradient where saturated) and under TensorFlow
            reaches back for the logits. Notebook 01 shows both.
    """
    if loss_from not in ("logits", "probabilities"):
        raise ValueError(f"loss_from must be 'logits' or 'probabilities', got {loss_from!r}")
    x = check_images(x, "x", model.input_shape[1:])
    y = normalize_labels(y, "y", model.output_shape[-1], count=len(x))
    _logits_model(model)  # checks the output layer before anything is computed
    outs, dense = hidden_outputs(model)
    probe = keras.Model(model.inputs[0], outs)
    # float64: with a bad init the activations reach 1e17, whose squares overflow float32
    acts = [np.asarray(a, dtype=np.float64) for a in probe(x, training=False)]
    grads = _kernel_gradients(model, x, y, from_logits=loss_from == "logits")
    return LayerStats(act_mean=tuple(float(a.mean()) for a in acts),
                      act_std=tuple(float(a.std()) for a in acts),
                      grad_norm=tuple(float(np.linalg.norm(grads[id(d.kernel)].astype(np.float64)))
                                      for d in dense))
