"""Run the unit tests again under the other Keras backend, so one `pytest` covers both.

The backend is fixed when Keras is imported, so the second backend needs its own process.
That process starts as soon as pytest has collected this test (conftest.py), and runs
beside the first backend's unit tests, which mostly keep one core busy; this test then
waits for it and reports its result.
"""
import importlib.util
import os
import subprocess
import sys
import tempfile

import keras
import pytest

from helpers.config import PROJECT_ROOT

OTHER = {"jax": "tensorflow", "tensorflow": "jax"}.get(keras.backend.backend())
NESTED = os.environ.get("HELPERS_NESTED_BACKEND_RUN") == "1"


def start_other_backend_run():
    """Start ``pytest tests`` under the other backend in the background: (process, log file), or None."""
    if OTHER is None or NESTED or importlib.util.find_spec(OTHER) is None:
        return None
    log = tempfile.TemporaryFile(mode="w+")
    env = {**os.environ, "KERAS_BACKEND": OTHER, "HELPERS_NESTED_BACKEND_RUN": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
         f"--ignore={PROJECT_ROOT / 'tests' / 'test_other_backend.py'}"],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    return proc, log


@pytest.mark.skipif(OTHER is None or NESTED, reason="runs once, from the top-level pytest process")
def test_unit_tests_pass_under_the_other_backend(request):
    pytest.importorskip(OTHER)
    started = getattr(request.config, "other_backend_run", None) or start_other_backend_run()
    proc, log = started
    proc.wait(timeout=900)
    log.seek(0)
    output = log.read()
    tail = output[-5000:]
    assert proc.returncode == 0, f"under KERAS_BACKEND={OTHER}:\n{tail}"
    last = output.strip().splitlines()[-1]
    assert " passed" in last, tail
    print(f"KERAS_BACKEND={OTHER}: {last}")
