"""The committed notebooks as a reader meets them: short cells, outputs that fit on a screen, whole lines.

A code cell of more than 25 lines is a block to copy, not a step to read; an output of more than
40 lines is a log, not a result; and two epochs' records on one line are what workers writing
to one stream without coordination produce (notebook 02 once showed `...2.4 s[baseline_seed2]
epoch 2/100`). Every stream line also stays under 100 characters, so that it does not wrap in
the middle of a word at a laptop's width. nbval runs the cells; the metadata JupyterLab fills in
is there, so that opening a notebook does not mark it modified.
"""
import json
import re
from pathlib import Path

import pytest

from helpers.run_notebooks import KERNELSPEC
from tests.backends import once

pytestmark = once  # no Keras backend involved: checked once

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EPOCH_RECORD = re.compile(r"epoch\s+\d+/\d+")


def code_cells(path):
    return [(i, c) for i, c in enumerate(json.loads(path.read_text())["cells"]) if c["cell_type"] == "code"]


def output_lines(cell):
    for out in cell.get("outputs", []):
        text = out.get("text") or "".join(out.get("data", {}).get("text/plain", ""))
        yield out, ("".join(text) if isinstance(text, list) else text).splitlines()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_code_cells_are_short_and_outputs_fit_on_a_screen(path):
    for i, cell in code_cells(path):
        source = "".join(cell["source"]).splitlines()
        assert len(source) <= 25, f"{path.name} cell {i}: {len(source)} lines of code"
        assert not any("NBVAL" in line for line in source), f"{path.name} cell {i}: nbval's cell tags, not comments"
        listing = re.fullmatch(r"show\([\w.]+\)", "".join(cell["source"]).strip())  # a helper's source, on purpose
        for out, lines in output_lines(cell):
            assert listing or len(lines) <= 40, f"{path.name} cell {i}: an output of {len(lines)} lines"
            if out["output_type"] == "stream":
                for line in lines:
                    assert len(EPOCH_RECORD.findall(line)) <= 1, f"{path.name} cell {i}: two epochs on one line: {line}"
                    assert len(line) <= 100, f"{path.name} cell {i}: a line of {len(line)} characters: {line}"
                    assert "\r" not in line, f"{path.name} cell {i}: a progress bar's redraws were saved"


def markdown_cells(path):
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_one_short_answer_and_at_most_five_takeaways(path):
    """An answer a student reads whole: at most 250 words (its numbers sit in the table above it)."""
    cells = markdown_cells(path)
    answers = [s for s in cells if s.startswith("## Answer")]
    assert len(answers) == 1, f"{path.name}: {len(answers)} cells start with '## Answer'"
    assert len(answers[0].split()) <= 250, f"{path.name}: an answer of {len(answers[0].split())} words"
    assert "akeaways" not in answers[0], f"{path.name}: the takeaways belong in a cell of their own"
    takeaways = [s for s in cells if s.split("\n", 1)[0] in ("## Takeaways", "**Takeaways**")]
    assert len(takeaways) == 1, f"{path.name}: {len(takeaways)} takeaway cells"
    bullets = re.findall(r"^- ", takeaways[0], flags=re.MULTILINE)
    assert 1 <= len(bullets) <= 5, f"{path.name}: {len(bullets)} takeaways"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_notebooks_carry_the_metadata_jupyterlab_fills_in(path):
    metadata = json.loads(path.read_text())["metadata"]
    assert metadata["kernelspec"] == KERNELSPEC
    assert metadata["language_info"]["name"] == "python" and "version" in metadata["language_info"]


def test_the_checks_catch_what_they_look_for(tmp_path):
    long_answer = tmp_path / "07_long.ipynb"
    long_answer.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": ["## Answer\n\n" + "word " * 251]},
                                                 {"cell_type": "markdown", "source": ["**Takeaways**\n\n- one"]}]}))
    with pytest.raises(AssertionError, match="an answer of 253 words"):
        test_one_short_answer_and_at_most_five_takeaways(long_answer)
    glued = "epoch  14/100  loss 1.2 | 3.7 s  *best[bn_seed2] epoch  14/100  loss 1.2"
    assert len(EPOCH_RECORD.findall(glued)) == 2
    assert len(EPOCH_RECORD.findall("[bn_seed2] epoch  14/100  loss 1.26")) == 1
