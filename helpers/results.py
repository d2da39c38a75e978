"""Run records: one small JSON file per training run, written atomically, readable with ``json.load`` alone.

The top-level keys are fixed (docs/design.md, "The Run record").
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import config

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds")

# One name per variant in every table, legend and sentence: the part of the exercise (a to f), then what changes
VARIANT_NAMES = {
    "baseline": "a-b: baseline",
    "input_bn": "c: inputs normalized only",
    "bn_hidden": "c: batch norm, hidden layers only",
    "bn": "c: batch norm",
    "selu": "d: SELU",
    "alpha_dropout": "e: alpha dropout",
    "mc_dropout": "e: + MC dropout",
    "bn_128": "f: batch norm, batch 128",
    "onecycle": "f: 1cycle",
    "onecycle_30": "beyond: 1cycle, 30 epochs",
    "onecycle_30_flip": "beyond: 1cycle + flips, 30 epochs",
}


# Which notebook writes a record, by the start of its name (longest first): what a refusal tells the reader to run.
WRITTEN_BY = {"baseline": "02", "lr_grid": "02", "input_bn": "03", "bn_hidden": "03", "bn_128": "06", "bn": "03",
              "selu": "04", "swish_for_stats": "04", "alpha_dropout": "05", "hidden_": "05", "onecycle": "06"}


def notebook_for(variant: str) -> str:
    """'notebook 03' for a record that notebook writes, else 'the notebook or script that trains it'."""
    prefix = max((p for p in WRITTEN_BY if variant.startswith(p)), key=len, default=None)
    return f"notebook {WRITTEN_BY[prefix]}" if prefix else "the notebook or script that trains it"


def variant_of(name: str) -> str:
    """A record's variant without its seed suffix: ``bn_seed1`` -> ``bn``."""
    return name.split("_seed")[0]


def name_of(variant: str) -> str:
    """The series' name for a variant (``VARIANT_NAMES``), or the variant itself."""
    return VARIANT_NAMES.get(variant_of(variant), variant)


@dataclass(frozen=True)
class RunRecord:
    """What one training run did and measured."""

    variant: str
    mode: str
    data: str
    learning_rate: float
    epochs: int
    best_epoch: int  # 1-based: the epoch whose weights were kept (early stopping's best, or the last)
    valid_accuracy: float
    test_accuracy: float
    valid_loss: float
    test_loss: float
    seconds_per_epoch: float  # median over epochs after the first (compiling) one
    first_epoch_seconds: float  # includes compilation
    wall_time_to_best: float  # from the start of training to the end of the best epoch
    stopped: str  # "early_stopping", "max_epochs" or "nan"
    history: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    test_predictions: str = ""  # one digit per test image ("": not evaluated), for metrics.mcnemar

    def test_predicted(self) -> np.ndarray:
        """The predicted class of each test image, as integers (empty if the test set was not evaluated)."""
        return np.frombuffer(self.test_predictions.encode("ascii"), dtype=np.uint8) - ord("0")

    def __post_init__(self):
        if self.mode not in config.MODES:
            raise ValueError(f"mode must be one of {config.MODES}, got {self.mode!r}")
        if missing := [k for k in HISTORY_KEYS if k not in self.history]:
            raise ValueError(f"history lacks {missing}")
        lengths = {len(self.history[k]) for k in HISTORY_KEYS}
        if lengths != {self.epochs}:
            raise ValueError(f"history lists must all have {self.epochs} entries, got lengths {lengths}")


def results_dir(mode: str | None = None) -> Path:
    return config.settings_for(mode or config.MODE).results_dir


def record_path(variant: str, mode: str | None = None, directory=None) -> Path:
    return Path(directory or results_dir(mode)) / f"{variant}.json"


def write_json_atomic(path, obj) -> Path:
    """Write JSON to a temp file beside ``path``, then rename: a crash leaves the old file whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a write that was killed
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_run(record: RunRecord, directory=None) -> Path:
    """Save to ``results/<variant>.json`` (quick mode: ``results/quick/``)."""
    path = record_path(record.variant, record.mode, directory)
    try:
        return write_json_atomic(path, asdict(record))
    except OSError as e:
        raise OSError(f"cannot write the Run record {path}: {e.strerror or e}. Make {path.parent} writable, or "
                      "save elsewhere with save_run(record, directory=...)") from e


def load_run(variant: str, mode: str | None = None, directory=None) -> RunRecord:
    """Load a saved record; any refusal names the file and the notebook that writes it again."""
    path = record_path(variant, mode, directory)
    again = f"run {notebook_for(variant)} again ({mode or config.MODE} mode), which rewrites it"
    if not path.exists():
        raise FileNotFoundError(f"no run record {path}: first run {notebook_for(variant)}, which trains "
                                f"{variant!r} in {mode or config.MODE} mode (README, 'Results')")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a valid Run record: not JSON, or cut short ({e}); {again} "
                         "(or delete the file)") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path} is not a Run record: a JSON {type(content).__name__}, not an object; {again}")
    fields = set(RunRecord.__dataclass_fields__)
    if missing := sorted(fields - set(content) - {"test_predictions"}):  # added later; older records load without it
        raise ValueError(f"{path} lacks {missing}: a record of an older or other format; {again}")
    try:
        if set(content) - fields:
            raise ValueError(f"unknown keys in run record: {sorted(set(content) - fields)}")
        return RunRecord(**content)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path} is not a valid Run record: {e}; {again}") from None


def summary_table(records):
    """One row per run, as a reader scans it: rates in scientific notation, percentages, seconds with units."""
    formats = {"learning_rate": "{:.2e}", "valid_accuracy": "{:.2%}", "test_accuracy": "{:.2%}",
               "seconds_per_epoch": "{:.2f} s", "wall_time_to_best": "{:.0f} s"}
    cols = ["variant", "learning_rate", "epochs", "best_epoch", "valid_accuracy", "test_accuracy",
            "seconds_per_epoch", "wall_time_to_best"]
    return pd.DataFrame([asdict(r) for r in records], columns=cols).style.hide(axis="index").format(formats, na_rep="-")


def seed_names(variant: str, seeds=None) -> list:
    """``[(record name, seed), ...]`` of a final model: ``variant`` for seed 42, ``variant_seed1``, ``variant_seed2``."""
    return [(variant if seed == config.SEED else f"{variant}_seed{seed}", seed) for seed in (seeds or config.SEEDS)]


def load_seeds(variant: str, mode: str | None = None, directory=None) -> list:
    """The records of a final model's seeds in ``mode`` (``seed_names``), in that order."""
    return [load_run(name, mode, directory) for name, _ in seed_names(variant, config.settings_for(mode or config.MODE).seeds)]


def load_search(prefix: str, mode: str | None = None, directory=None) -> list:
    """The records of a learning-rate search (``lr_finder.search_rates``' ``{prefix}_lr_{rate}``), by rate."""
    names = [p.stem for p in Path(directory or results_dir(mode)).glob(f"{prefix}_lr_*.json")]
    return sorted((load_run(name, mode, directory) for name in names), key=lambda r: r.learning_rate)


def load_json(name: str, mode: str | None = None) -> dict:
    """A JSON file of the results folder that is not a Run record (``mc_dropout``, ``series_summary``)."""
    path = results_dir(mode) / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no {path}: the notebook that writes it has not run in this mode")
    return json.loads(path.read_text())


def markdown_table(frame: pd.DataFrame) -> str:
    """A frame as a GitHub markdown table, its index first, cells as they are (``to_markdown`` needs ``tabulate``)."""
    header = [str(frame.index.name or "")] + [str(c) for c in frame.columns]
    rows = [[str(i)] + [str(v) for v in row] for i, row in zip(frame.index, frame.itertuples(index=False))]
    cells = [header, ["---"] + ["---:"] * len(frame.columns), *rows]
    return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells)
