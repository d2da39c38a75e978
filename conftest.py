"""Test-wide settings, applied before anything imports Keras.

- JAX is the default backend for the tests (the faster one on a CPU); set
  KERAS_BACKEND=tensorflow to run them under TensorFlow. tests/test_other_backend.py
  runs the unit tests again under the other backend, so one `pytest` covers both.
- Notebooks always run in quick mode under pytest (nbval): the kernels inherit this
  process's environment.
- `pytest` runs in one worker process per core (pytest-xdist, `-n auto` in pyproject.toml),
  a test module at a time, and all the notebooks, in order, as one unit of work: the
  longest, so it is handed out first (each notebook reads what the ones before it saved).
- Every process of the run (xdist workers, notebook kernels, train_many's workers, test
  subprocesses) shares one JAX compilation cache in the run's temporary folder: they compile
  the same few networks, and the first to compile one saves the others the work.
"""
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ["CIFAR10_MODE"] = "quick"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# the notebooks' train_many calls train one network after another in the kernel: the other
# cores run tests, and a quick-mode training is too short to pay for a worker's start-up
os.environ.setdefault("CIFAR10_WORKERS", "1")
# One temporary folder for the whole run, made by the first process (the others inherit the
# variable) and removed by it at the end: the other backend's run writes its output there, and
# every process shares the JAX compilation cache in it, every program cached, not only those
# that took over a second to compile. Measured: the whole suite in 0.82x the wall time without
# the cache (benchmarks/README.md, test_suite.py).
_OWN_RUN_FOLDER = None
if "HELPERS_TEST_RUN_FOLDER" not in os.environ:
    os.environ["HELPERS_TEST_RUN_FOLDER"] = _OWN_RUN_FOLDER = tempfile.mkdtemp(prefix="helpers-tests-")
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(_OWN_RUN_FOLDER, "jax-compilation-cache")
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

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
            config.other_backend_run = start_other_backend_run(run_directory())  # kept: its process is running


def pytest_unconfigure(config):
    """The process that made the run's folder ends last: it stops an unfinished run and removes the folder.

    The other backend's run is unfinished here only when nobody waited for it: the session was
    interrupted (Ctrl-C) or stopped early (-x).
    """
    if _OWN_RUN_FOLDER is None:
        return
    from tests.test_other_backend import run_directory, stop_unfinished_run

    stop_unfinished_run(run_directory())
    shutil.rmtree(_OWN_RUN_FOLDER, ignore_errors=True)
