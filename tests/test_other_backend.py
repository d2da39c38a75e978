"""Run the unit tests again under the other Keras backend, so one `pytest` covers both.

The backend is fixed when Keras is imported, so the second backend needs its own process.
"""
import os
import subprocess
import sys

import keras
import pytest

from helpers.config import PROJECT_ROOT

OTHER = {"jax": "tensorflow", "tensorflow": "jax"}.get(keras.backend.backend())


@pytest.mark.skipif(OTHER is None or os.environ.get("HELPERS_NESTED_BACKEND_RUN") == "1",
                    reason="runs once, from the top-level pytest process")
def test_unit_tests_pass_under_the_other_backend():
    pytest.importorskip(OTHER)
    env = {**os.environ, "KERAS_BACKEND": OTHER, "HELPERS_NESTED_BACKEND_RUN": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:randomly",
         f"--ignore={PROJECT_ROOT / 'tests' / 'test_other_backend.py'}"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, f"under KERAS_BACKEND={OTHER}:\n{tail}"
    assert " passed" in proc.stdout.splitlines()[-1], tail
    print(f"KERAS_BACKEND={OTHER}: {proc.stdout.splitlines()[-1]}")
