"""The richest notebook runs top to bottom with no Run records at all.

Notebooks may be run in any order: where an earlier notebook's record is missing, the cell
says which notebook makes it and the rest still runs. Notebook 06 is run here, in quick
mode, into an empty results folder (it reads the records of notebooks 02-05).
"""
import json
import os

import nbformat
import pytest

from helpers import run_notebooks
from helpers.config import PROJECT_ROOT


@pytest.mark.skipif(os.environ.get("HELPERS_NESTED_BACKEND_RUN") == "1", reason="once, in the top-level run")
def test_notebook_06_runs_alone(tmp_path):
    source = PROJECT_ROOT / "notebooks" / "06_one_cycle_and_summary.ipynb"
    env = {**os.environ, "CIFAR10_MODE": "quick", "CIFAR10_RESULTS": str(tmp_path / "results")}
    run_notebooks.execute(source, tmp_path / "out.ipynb", env=env)  # raises if any cell fails
    text = "\n".join(o.get("text", "") for c in nbformat.read(tmp_path / "out.ipynb", 4).cells
                     if c.cell_type == "code" for o in c.outputs)
    assert "no run record" in text and "trains 'bn'" in text  # it says what is missing, and goes on
    saved = json.loads((tmp_path / "results" / "quick" / "onecycle.json").read_text())
    assert saved["best_epoch"] == saved["epochs"]  # 1cycle is judged at its end
