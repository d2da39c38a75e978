"""Run the unit tests again under the other Keras backend, so one `pytest` covers both.

The backend is fixed when Keras is imported, so the second backend needs its own
process: ``pytest tests`` under the other backend, one process, started by this test.
Under xdist it gets a worker of its own (conftest.py), so it runs beside the first
backend's tests and the notebooks; deselect it (``-k``) and it does not run at all.
"""
import importlib.util
import os
import subprocess
import sys

import keras
import pytest

from helpers.config import PROJECT_ROOT

OTHER = {"jax": "tensorflow", "tensorflow": "jax"}.get(keras.backend.backend())
NESTED = os.environ.get("HELPERS_NESTED_BACKEND_RUN") == "1"


@pytest.mark.skipif(OTHER is None or NESTED, reason="runs once, from the top-level pytest process")
def test_unit_tests_pass_under_the_other_backend():
    if importlib.util.find_spec(OTHER) is None:
        pytest.skip(f"{OTHER} is not installed")
    env = {**os.environ, "KERAS_BACKEND": OTHER, "HELPERS_NESTED_BACKEND_RUN": "1"}
    command = [sys.executable, "-m", "pytest", "tests", "-q", "-n", "0", "-p", "no:cacheprovider",
               f"--ignore={PROJECT_ROOT / 'tests' / 'test_other_backend.py'}"]
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=1800)
    output = done.stdout + done.stderr
    last = output.strip().splitlines()[-1] if output.strip() else ""
    assert done.returncode == 0 and " passed" in last, f"under KERAS_BACKEND={OTHER}:\n{output[-5000:]}"
    print(f"KERAS_BACKEND={OTHER}: {last}")
