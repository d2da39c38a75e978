"""Every number stated in a notebook's prose must be one the notebook printed.

Why: the notebooks teach by measurement. A sentence such as "accuracy reaches 50.2%" or
"an epoch takes 3.5 minutes" is only honest if a code cell of the same notebook printed that
value; numbers typed by hand drift away from the outputs as soon as a notebook is re-run with
other settings. This module lists the numbers in markdown cells that no code-cell output of
the same notebook backs, so a test can fail on them.

Rules (the project's notebook-claims rules; keep them identical everywhere they are used):

- Claims are numbers in markdown cells: percentages ("50.2%"), decimals ("0.7") and counts
  with a unit ("12 epochs", "90 s", "40 seconds", "3 minutes"). Bare integers ("part 2",
  "5 layers") are not claims and are skipped. A number glued to a word or a dot ("v1.5",
  "conv2d") is not a claim either.
- Code spans (`...`) are names, not claims; LaTeX formulas ($...$ and $$...$$) are
  derivations, not measurements. Both are removed before looking for numbers.
- Printed values are every number in the code cells' outputs (stream text and the
  text/plain, text/html and text/markdown representations), scientific notation included
  ("1.58e-04" reads as 0.000158). A printed fraction <= 1 also backs the percentage
  (x 100); printed seconds >= 100 also back minutes (/ 60).
- A claim is backed when some printed value lies within half a unit of the claim's last
  shown decimal ("50.2" is backed by 50.15 .. 50.25; "12 epochs" by 11.5 .. 12.5).
- Scientific notation is read in outputs only: in prose, "1.58e-4" reads as the claim
  "1.58" (the exponent is a bare integer), so write such values out in full ("0.000158")
  or put them in a code span.

Usage: python tests/notebook_claims.py NOTEBOOK.ipynb [...]
Prints one line per unbacked number and a total; exits 1 if any number is unbacked.
"""
from __future__ import annotations

import json
import os
import re
import sys

# A stated number with its optional unit; not preceded by a word character or a dot.
CLAIM = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(%|s\b|seconds|epochs?|minutes?)?")
# A printed number, scientific notation included.
PRINTED = re.compile(r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
CODE_SPAN = re.compile(r"`[^`]*`")
FORMULA = re.compile(r"\$\$.*?\$\$|\$[^$]*\$", flags=re.S)
OUTPUT_MIMETYPES = ("text/plain", "text/html", "text/markdown")


def load(notebook: dict | str | os.PathLike) -> dict:
    """The notebook as a dict: given one, or read from a .ipynb path."""
    if isinstance(notebook, dict):
        return notebook
    with open(notebook, encoding="utf-8") as f:
        return json.load(f)


def outputs_text(nb: dict) -> str:
    """All text that the notebook's code cells printed or displayed."""
    parts = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        for out in cell.get("outputs", []):
            if "text" in out:
                parts.append("".join(out["text"]))
            for mimetype, value in out.get("data", {}).items():
                if mimetype in OUTPUT_MIMETYPES:
                    parts.append("".join(value))
    return "\n".join(parts)


def printed_values(text: str) -> set[float]:
    """Every value a claim may match: the printed numbers, plus their readings as
    percentages (fractions <= 1, x 100) and as minutes (seconds >= 100, / 60)."""
    values = set()
    for m in PRINTED.finditer(text):
        x = float(m.group(0))
        values.add(x)
        if x <= 1.0:
            values.add(x * 100)  # fractions printed, percentages stated
        if x >= 100:
            values.add(x / 60)  # seconds printed, minutes stated
    return values


def is_backed(value: float, decimals: int, printed: set[float]) -> bool:
    """True if a printed value rounds to the stated one at its shown precision."""
    tolerance = 0.5 * 10 ** (-decimals) + 1e-9
    return any(abs(value - p) <= tolerance for p in printed)


def prose(cell: dict) -> str:
    """A markdown cell's text without code spans and formulas."""
    text = "".join(cell["source"])
    text = CODE_SPAN.sub("", text)  # code spans are names, not claims
    return FORMULA.sub("", text)  # formulas are derivations, not measurements


def unbacked_claims(notebook: dict | str | os.PathLike) -> list[tuple[int, str]]:
    """(markdown cell index, claim text) for each number in the prose that no output backs.

    `notebook` is a notebook dict (nbformat 4 JSON) or the path of a .ipynb file. The cell
    index counts all cells, code cells included, from 0.
    """
    nb = load(notebook)
    printed = printed_values(outputs_text(nb))
    missing = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        for m in CLAIM.finditer(prose(cell)):
            number, unit = m.group(1), m.group(2)
            if not unit and "." not in number:
                continue  # bare integers: part numbers, layer counts
            decimals = len(number.split(".")[1]) if "." in number else 0
            if not is_backed(float(number), decimals, printed):
                missing.append((index, m.group(0).strip()))
    return missing


def main(paths: list[str]) -> int:
    total = 0
    for path in paths:
        missing = unbacked_claims(path)
        total += len(missing)
        for cell, claim in missing:
            print(f"{path}: markdown cell {cell}: '{claim}' not among printed outputs")
    print(f"{total} unbacked numbers")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
