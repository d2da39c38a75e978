"""A later notebook runs top to bottom in a fresh kernel with no Run records at all.

Notebooks may be run in any order: where an earlier notebook's record is missing, the cell
says which notebook makes it and the rest still runs. Notebook 04 is run here, in quick
mode, into an empty results folder: it reads the records of notebooks 02 (the baseline's
rate, the comparison) and 03 (the comparison). Notebooks 05 and 06 handle missing records
the same way (`results.load_seeds` in a try, a line saying which notebook makes them); 04 is
the cheapest of them to run, which keeps CI within its time.
"""
import os

import nbformat
import pytest

from helpers import run_notebooks
from helpers.config import PROJECT_ROOT


@pytest.mark.skipif(os.environ.get("HELPERS_NESTED_BACKEND_RUN") == "1", reason="once, in the top-level run")
def test_a_later_notebook_runs_with_no_records_present(tmp_path):
    source = PROJECT_ROOT / "notebooks" / "04_selu_self_normalizing.ipynb"
    env = {**os.environ, "CIFAR10_MODE": "quick", "CIFAR10_RESULTS": str(tmp_path / "results")}
    run_notebooks.execute(source, tmp_path / "out.ipynb", env=env)  # raises if any cell fails
    text = "\n".join(o.get("text", "") for c in nbformat.read(tmp_path / "out.ipynb", 4).cells
                     if c.cell_type == "code" for o in c.outputs)
    assert "no run record" in text and "trains 'baseline'" in text and "trains 'bn'" in text
    assert "the Swish contrast uses this notebook's rate instead" in text
    assert "baseline (02) left out of the comparison" in text
    assert (tmp_path / "results" / "quick" / "selu.json").exists()  # what it trains is still saved
