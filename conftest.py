"""Test-wide settings, applied before anything imports Keras.

- JAX is the default backend for the tests (the faster one on a CPU); set
  KERAS_BACKEND=tensorflow to run them under TensorFlow. tests/test_other_backend.py
  runs the unit tests again under the other backend, so one `pytest` covers both.
- Notebooks always run in quick mode under pytest (nbval): the kernels inherit this
  process's environment.
- `pytest` runs in one worker process per core (pytest-xdist, `-n auto` in pyproject.toml),
  a test module at a time, and all the notebooks, in order, as one unit of work: the
  longest, so it is handed out first (each notebook reads what the ones before it saved).
"""
import os
import signal

import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ["CIFAR10_MODE"] = "quick"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# the notebooks' train_many calls train one network after another in the kernel: the other
# cores run tests, and a quick-mode training is too short to pay for a worker's start-up
os.environ.setdefault("CIFAR10_WORKERS", "1")

OTHER_BACKEND_TEST = "test_other_backend.py::test_unit_tests_pass_under_the_other_backend"


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: unused without it
def pytest_xdist_make_scheduler(config, log):
    """xdist's ``loadscope`` (a test module at a time), with every notebook in one unit of work."""
    from xdist.scheduler import LoadScopeScheduling

    class NotebooksInOrder(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return "notebooks" if nodeid.startswith("notebooks/") else super()._split_scope(nodeid)

    return NotebooksInOrder(config, log)


def pytest_collection_modifyitems(session, config, items):
    """Start the other backend's run now, in the background; its test, which only waits, goes last."""
    waiting = [item for item in items if item.nodeid.endswith(OTHER_BACKEND_TEST)]
    if waiting:
        items[:] = [item for item in items if item not in waiting] + waiting  # it only waits: last
        from tests.test_other_backend import run_directory, start_other_backend_run

        worker = getattr(config, "workerinput", {}).get("workerid")
        if worker in (None, "gw0"):  # one process starts it; the test, on any worker, waits for it
            config.other_backend_run = start_other_backend_run(run_directory(config))


def pytest_sessionfinish(session, exitstatus):
    """An interrupted session leaves no background run behind.

    An xdist worker that only ran out of work leaves it running: the test waiting for it
    may be on another worker.
    """
    started = getattr(session.config, "other_backend_run", None)
    if started is None or started.poll() is not None:
        return
    if exitstatus == pytest.ExitCode.INTERRUPTED or not hasattr(session.config, "workerinput"):
        os.killpg(started.pid, signal.SIGKILL)  # the shell and the pytest it runs
