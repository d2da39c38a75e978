"""Test-wide settings, applied before anything imports Keras.

- JAX is the default backend for the tests (the faster one on a CPU); set
  KERAS_BACKEND=tensorflow to run them under TensorFlow. tests/test_other_backend.py
  runs the unit tests again under the other backend, so one `pytest` covers both.
- Notebooks always run in quick mode under pytest (nbval): the kernels inherit this
  process's environment.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ["CIFAR10_MODE"] = "quick"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
