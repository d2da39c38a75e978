"""Test-wide settings, applied before anything imports Keras.

- JAX is the default backend for the tests (the faster one on a CPU); set
  KERAS_BACKEND=tensorflow to run them under TensorFlow. tests/test_other_backend.py
  runs the unit tests again under the other backend, so one `pytest` covers both.
- Notebooks always run in quick mode under pytest (nbval): the kernels inherit this
  process's environment.
- `pytest` runs in worker processes (pytest-xdist, `-n auto --dist loadgroup` in
  pyproject.toml): the notebooks form one group, run in order on one worker (each reads
  what the ones before it saved); the other backend's run, a test that mostly waits for
  its subprocess, gets a worker of its own, one more than there are cores.
- One temporary folder for the whole run, made by the first process (the others inherit
  its path) and removed by it at the end: the cache folder of the tests (checkpoints,
  never the reader's ~/.cache) and one JAX compilation cache that every process shares
  (they compile the same few networks; the suite in 0.82x the time: benchmarks/README.md).
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

_OWN_RUN_FOLDER = None
if "HELPERS_TEST_RUN_FOLDER" not in os.environ:  # the first process of the run; the others inherit it
    os.environ["HELPERS_TEST_RUN_FOLDER"] = _OWN_RUN_FOLDER = tempfile.mkdtemp(prefix="helpers-tests-")
    from helpers import data

    if not os.environ.get("CIFAR10_NPZ") and data.offline_path():  # the data stays where it is
        os.environ["CIFAR10_NPZ"] = str(data.offline_path())
    os.environ["CIFAR10_CACHE"] = os.path.join(_OWN_RUN_FOLDER, "cache")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_OWN_RUN_FOLDER, "jax-compilation-cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(1 << 30))  # a few MB a network; 1 GiB at most


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: a worker per core, and one for the other backend's run, which waits for its subprocess."""
    return (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) + 1


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(session, config, items):
    """The notebooks in one xdist group, in order; the other backend's run first, so that it starts at once."""
    for item in items:
        if item.nodeid.startswith("notebooks/"):
            item.add_marker(pytest.mark.xdist_group("notebooks"))
    items.sort(key=lambda item: "test_other_backend.py" not in item.nodeid)  # stable: the rest keep their order


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook, in the controlling process
def pytest_xdist_node_collection_finished(node, ids):
    """Guard: xdist's grouping silently stops working on pytest 9.2 (pytest-xdist issue #1386)."""
    lost = [i for i in ids if i.startswith("notebooks/") and not i.endswith("@notebooks")]
    if lost and node.config.getoption("dist") == "loadgroup":
        pytest.exit(f"pytest-xdist did not keep the notebooks in one group ({lost[0]}): their cells would run in "
                    "different kernels. pytest 9.2 breaks --dist loadgroup (pytest-xdist issue #1386): install "
                    "'pytest<9.2' (as the test extra asks), or run without workers: pytest -n 0", returncode=4)


def pytest_unconfigure(config):
    if _OWN_RUN_FOLDER is not None:
        shutil.rmtree(_OWN_RUN_FOLDER, ignore_errors=True)
