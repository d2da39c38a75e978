"""Every number in a notebook's prose must be one the notebook printed (tests/notebook_claims.py)."""
import json
from pathlib import Path

import pytest

from tests.notebook_claims import unbacked_claims
from tests.backends import once  # noqa: E402

pytestmark = once  # no Keras backend involved: checked once

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(REPO.glob("notebooks/[0-9][0-9]_*.ipynb"))


def notebook(prose, printed=""):
    """A two-cell notebook: one markdown cell of prose, one code cell that printed `printed`."""
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": prose},
            {"cell_type": "code", "metadata": {}, "source": "", "execution_count": 1,
             "outputs": [{"output_type": "stream", "name": "stdout", "text": printed}]},
        ],
    }


def test_printed_fraction_backs_stated_percentage():
    assert unbacked_claims(notebook("Validation accuracy reaches 50.2%.", "val_accuracy: 0.5024\n")) == []


def test_printed_seconds_back_stated_minutes():
    assert unbacked_claims(notebook("One run takes 3.5 minutes.", "elapsed: 210 s\n")) == []


def test_decimal_with_nothing_printed_is_unbacked():
    assert unbacked_claims(notebook("The loss settles near 0.7.")) == [(0, "0.7")]


def test_claim_text_keeps_its_unit_and_cell_index_counts_all_cells():
    nb = notebook("Intro.", "accuracy 0.41\n")
    nb["cells"].append({"cell_type": "markdown", "metadata": {}, "source": ["It trained ", "for 12 epochs."]})
    assert unbacked_claims(nb) == [(2, "12 epochs")]


def test_numbers_in_code_spans_and_formulas_are_not_claims():
    prose = "Set `learning_rate=0.7` and use $\\beta_2 = 0.999$, or $$\\epsilon = 1.5$$ in display."
    assert unbacked_claims(notebook(prose)) == []


def test_bare_integers_are_not_claims():
    assert unbacked_claims(notebook("Part 2 stacks 20 hidden layers of 100 neurons.")) == []


def test_scientific_notation_is_read_in_outputs():
    assert unbacked_claims(notebook("The learning rate ends at 0.000158.", "lr: 1.58e-04\n")) == []


def test_scientific_notation_in_prose_reads_as_its_mantissa():
    # The exponent "-4" is a bare integer and is skipped; "1.58" alone is the claim and
    # 1.58 was never printed (0.000158 was), so it is unbacked: write the value in full.
    assert unbacked_claims(notebook("The learning rate ends at 1.58e-4.", "lr: 1.58e-04\n")) == [(0, "1.58")]


def test_rounding_within_half_a_unit_of_the_last_decimal_is_backed():
    assert unbacked_claims(notebook("Accuracy is 50.2%.", "0.50249\n")) == []
    assert unbacked_claims(notebook("It ran 12 epochs.", "epochs run: 12.4\n")) == []


def test_rounding_beyond_half_a_unit_of_the_last_decimal_is_unbacked():
    # 0.50251 is 50.251%, which rounds to 50.3%, not to the stated 50.2%.
    assert unbacked_claims(notebook("Accuracy is 50.2%.", "0.50251\n")) == [(0, "50.2%")]


def test_rich_outputs_back_claims_and_a_path_is_accepted(tmp_path):
    nb = notebook("The best run scored 0.63.")
    nb["cells"][1]["outputs"] = [{"output_type": "execute_result", "execution_count": 1, "metadata": {},
                                  "data": {"text/plain": ["   run  score\n", "0  a   0.63"]}}]
    path = tmp_path / "claims.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    assert unbacked_claims(nb) == unbacked_claims(path) == unbacked_claims(str(path)) == []


def test_the_series_has_notebooks():
    assert NOTEBOOKS, f"no notebooks/[0-9][0-9]_*.ipynb under {REPO}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_every_number_in_the_prose_was_printed(path):
    missing = unbacked_claims(path)
    listing = "\n".join(f"  markdown cell {cell}: '{claim}'" for cell, claim in missing)
    assert not missing, (f"{path.relative_to(REPO)}: {len(missing)} number(s) in the prose "
                         f"not among the notebook's printed outputs:\n{listing}")
