"""Run the unit tests again under the other Keras backend, so one `pytest` covers both.

The backend is fixed when Keras is imported, so the second backend needs its own process.
That process starts as soon as the tests are collected (conftest.py: by the first xdist
worker, or by pytest itself without xdist), and runs beside the first backend's tests;
this test, scheduled last, waits for it and reports its result. The run writes its
output and exit status into the test run's folder, which every worker knows (conftest.py).
"""
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import pytest

from helpers.config import PROJECT_ROOT

OTHER = {"jax": "tensorflow", "tensorflow": "jax"}.get(keras.backend.backend())
NESTED = os.environ.get("HELPERS_NESTED_BACKEND_RUN") == "1"


def run_directory() -> Path:
    """The folder of this test run's other-backend run, the same in every xdist worker.

    Inside the run's folder (conftest.py), or, for a process run without it, a new one.
    """
    if "HELPERS_TEST_RUN_FOLDER" not in os.environ:
        os.environ["HELPERS_TEST_RUN_FOLDER"] = tempfile.mkdtemp(prefix="helpers-tests-")
    return Path(os.environ["HELPERS_TEST_RUN_FOLDER"]) / "other-backend"


def start_other_backend_run(directory: Path):
    """Start ``pytest tests`` under the other backend in the background; its output and status go to ``directory``."""
    if OTHER is None or NESTED or importlib.util.find_spec(OTHER) is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KERAS_BACKEND": OTHER, "HELPERS_NESTED_BACKEND_RUN": "1"}
    command = [sys.executable, "-m", "pytest", "tests", "-q", "-n", "0", "-p", "no:randomly", "-p",
               "no:cacheprovider", f"--ignore={PROJECT_ROOT / 'tests' / 'test_other_backend.py'}"]
    # the shell writes the exit status once pytest ends, for a test waiting in another process
    script = '"$@" > "$0/log" 2>&1; echo $? > "$0/status.tmp" && mv "$0/status.tmp" "$0/status"'
    started = subprocess.Popen(["sh", "-c", script, str(directory), *command], cwd=PROJECT_ROOT, env=env,
                               start_new_session=True)  # its own process group, stopped as one
    (directory / "process_group").write_text(str(started.pid))
    return started


def stop_unfinished_run(directory: Path) -> None:
    """Kill the run in ``directory`` (the shell and the pytest it runs) if it has not written its status."""
    group = directory / "process_group"
    if group.exists() and not (directory / "status").exists():
        try:
            os.killpg(int(group.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


@pytest.mark.skipif(OTHER is None or NESTED, reason="runs once, from the top-level pytest process")
def test_unit_tests_pass_under_the_other_backend():
    pytest.importorskip(OTHER)
    directory = run_directory()
    if not directory.exists():  # collected without conftest.py's hook
        start_other_backend_run(directory)
    status, deadline = directory / "status", time.monotonic() + 900
    while not status.exists():
        assert time.monotonic() < deadline, f"the run under KERAS_BACKEND={OTHER} took over 15 minutes"
        time.sleep(0.5)
    output, code = (directory / "log").read_text(), status.read_text().strip()
    shutil.rmtree(directory, ignore_errors=True)
    tail = output[-5000:]
    assert code == "0", f"under KERAS_BACKEND={OTHER}:\n{tail}"
    last = output.strip().splitlines()[-1]
    assert " passed" in last, tail
    print(f"KERAS_BACKEND={OTHER}: {last}")
