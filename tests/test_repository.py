"""The repository stands alone: a reader who clones it has nothing beside it."""
import json
import subprocess

from helpers.config import PROJECT_ROOT
from tests.backends import once  # noqa: E402

pytestmark = once  # no Keras backend involved: checked once

# CI alone builds its data from a folder beside the clone; README's CI paragraph may say so.
ALLOWED = {".ci/run"}
# spelled in pieces, so that this file does not match itself
NEEDLES = [".." + "/shared", *("shared/" + d for d in ("docs", "data", "tools")), "DESIGN" + ".md"]


def test_no_file_refers_to_a_path_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    offenders = []
    for name in files:
        if name in ALLOWED:
            continue
        try:
            text = (PROJECT_ROOT / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue  # binary files (figures), or deleted in the working tree
        for needle in NEEDLES:
            if needle in text:
                offenders.append(f"{name}: {needle}")
    assert not offenders, "files that point outside the repository:\n" + "\n".join(offenders)


def test_readme_shows_the_series_table_that_notebook_06_wrote():
    """The README's summary table is results/series_summary.md, not a copy that drifted."""
    summary = (PROJECT_ROOT / "results" / "series_summary.md").read_text().strip()
    table, caption = summary.split("\n\n", 1)
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert table in readme and caption.strip() in readme


def test_no_two_committed_records_share_a_history():
    """A record is one training: none is another's history under a second name (a search run shown as a grid
    point, or as a final model, would count one training twice)."""
    seen = {}
    for path in sorted((PROJECT_ROOT / "results").glob("*.json")):
        record = json.loads(path.read_text())
        history = record.get("history", {}).get("val_loss") if isinstance(record, dict) else None
        if history:  # Run records; the series summary and MC dropout's file have none
            seen.setdefault(tuple(history), []).append(path.stem)
    shared = [names for names in seen.values() if len(names) > 1]
    assert not shared, f"records with the same validation-loss history: {shared}"
