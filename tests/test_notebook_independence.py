"""The richest notebook runs top to bottom with no Run records at all, on the GPU's code path.

Notebooks may be run in any order: where an earlier notebook's record is missing, the cell
says which notebook makes it and the rest still runs. Notebook 06 is run here, in quick
mode, into an empty results folder (it reads the records of notebooks 02-05), with
``CIFAR10_TRAIN_MANY=vmap``: every ``train_many`` call in it takes the path a GPU takes
(several networks side by side in one compiled step, a group per schedule), on this CPU.
The normal notebook run (nbval) covers the other method.
"""
import json
import os

import keras
import nbformat
import pytest

from helpers import run_notebooks
from helpers.config import PROJECT_ROOT


@pytest.mark.skipif(os.environ.get("HELPERS_NESTED_BACKEND_RUN") == "1", reason="once, in the top-level run")
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="vmap is the JAX path")
def test_notebook_06_runs_alone_and_on_the_gpu_code_path(tmp_path):
    source = PROJECT_ROOT / "notebooks" / "06_one_cycle_and_summary.ipynb"
    env = {**os.environ, "CIFAR10_MODE": "quick", "CIFAR10_RESULTS": str(tmp_path / "results"),
           "CIFAR10_TRAIN_MANY": "vmap"}
    run_notebooks.execute(source, tmp_path / "out.ipynb", env=env)  # raises if any cell fails
    text = "\n".join(o.get("text", "") for c in nbformat.read(tmp_path / "out.ipynb", 4).cells
                     if c.cell_type == "code" for o in c.outputs)
    assert "no run record" in text and "trains 'bn'" in text  # it says what is missing, and goes on
    saved = json.loads((tmp_path / "results" / "quick" / "onecycle.json").read_text())
    assert saved["config"]["trained"].startswith("side by side (vmap)")
