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


def pytest_collection_modifyitems(session, config, items):
    """Start the other backend's unit tests now, in the background, if their test is selected."""
    if any(item.nodeid.endswith("test_other_backend.py::test_unit_tests_pass_under_the_other_backend")
           for item in items):
        from tests.test_other_backend import start_other_backend_run

        config.other_backend_run = start_other_backend_run()


def pytest_unconfigure(config):
    """An interrupted session leaves no background run behind."""
    started = getattr(config, "other_backend_run", None)
    if started and started[0].poll() is None:
        started[0].kill()
