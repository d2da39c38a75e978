"""Run records: one small JSON file per training run, written atomically.

The top-level keys are fixed (docs/design.md, "The Run record") so that scripts and later
notebooks can read a record with ``json.load`` alone, without importing ``helpers``.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import config

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds")


@dataclass(frozen=True)
class RunRecord:
    """What one training run did and measured. Used in: notebooks 02-06."""

    variant: str
    mode: str
    data: str
    learning_rate: float
    epochs: int
    best_epoch: int  # 1-based, lowest validation loss; 0 if no epoch had a finite one
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
    # the predicted class of each test image, as one digit each ("" if the test set was not evaluated):
    # two models compared image by image (metrics.mcnemar), from their records alone
    test_predictions: str = ""

    def test_predicted(self) -> np.ndarray:
        """The predicted class of each test image, as integers (empty if the test set was not evaluated)."""
        return np.frombuffer(self.test_predictions.encode("ascii"), dtype=np.uint8) - ord("0")

    def __post_init__(self):
        if self.mode not in config.MODES:
            raise ValueError(f"mode must be one of {config.MODES}, got {self.mode!r}")
        missing = [k for k in HISTORY_KEYS if k not in self.history]
        if missing:
            raise ValueError(f"history lacks {missing}")
        lengths = {len(self.history[k]) for k in HISTORY_KEYS}
        if lengths != {self.epochs}:
            raise ValueError(f"history lists must all have {self.epochs} entries, got lengths {lengths}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunRecord":
        names = cls.__dataclass_fields__
        unknown = set(d) - set(names)
        if unknown:
            raise ValueError(f"unknown keys in run record: {sorted(unknown)}")
        return cls(**d)


def results_dir(mode: str | None = None) -> Path:
    return config.settings_for(mode or config.MODE).results_dir


def record_path(variant: str, mode: str | None = None, directory=None) -> Path:
    return Path(directory or results_dir(mode)) / f"{variant}.json"


def write_json_atomic(path, obj) -> Path:
    """Write JSON to a temp file beside ``path``, then rename: a crash leaves the old file whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, allow_nan=True)
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
        return write_json_atomic(path, record.to_dict())
    except OSError as e:
        raise OSError(f"cannot write the Run record {path}: {e.strerror or e}. Make {path.parent} writable, or "
                      "save elsewhere with save_run(record, directory=...)") from e


def load_run(variant: str, mode: str | None = None, directory=None) -> RunRecord:
    """Load a saved record; a missing one names the notebook or command that makes it."""
    path = record_path(variant, mode, directory)
    if not path.exists():
        raise FileNotFoundError(f"no run record {path}: first run the notebook or script that trains "
                                f"{variant!r} in {mode or config.MODE} mode (README, 'Results')")
    try:
        with open(path) as f:
            content = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a valid Run record: not JSON, or cut short ({e}). Run the notebook "
                         f"that trains {variant!r} again, which rewrites it (or delete the file)") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path} is not a Run record: a JSON {type(content).__name__}, not an object")
    optional = {"test_predictions"}  # added later; older records load without it
    missing = sorted(set(RunRecord.__dataclass_fields__) - set(content) - optional)
    if missing:
        raise ValueError(f"{path} lacks {missing}: a record of an older or other format. Run the notebook that "
                         f"trains {variant!r} again to rewrite it")
    return RunRecord.from_dict(content)


def summary_frame(records) -> pd.DataFrame:
    """One row per run: the numbers a comparison table shows."""
    cols = ["variant", "learning_rate", "epochs", "best_epoch", "valid_accuracy", "test_accuracy",
            "seconds_per_epoch", "wall_time_to_best"]
    return pd.DataFrame([{c: getattr(r, c) for c in cols} for r in records], columns=cols)


def summary_table(records):
    """``summary_frame`` formatted for a notebook: rates in scientific notation, 4 digits."""
    formats = {"learning_rate": "{:.2e}", "valid_accuracy": "{:.4f}", "test_accuracy": "{:.4f}",
               "seconds_per_epoch": "{:.2f}", "wall_time_to_best": "{:.1f}"}
    return summary_frame(records).style.hide(axis="index").format(formats)


def history_frame(records) -> pd.DataFrame:
    """A tidy frame: one row per (variant, epoch), columns for each history key."""
    rows = []
    for r in records:
        for i in range(r.epochs):
            rows.append({"variant": r.variant, "epoch": i + 1, **{k: r.history[k][i] for k in HISTORY_KEYS}})
    return pd.DataFrame(rows, columns=["variant", "epoch", *HISTORY_KEYS])


def time_to_reach(record: RunRecord, val_loss: float):
    """(epoch, seconds) at the end of the first epoch whose validation loss is at most ``val_loss``.

    Seconds are wall time from the start of training, the compiling first epoch included, as
    ``wall_time_to_best``. ``(None, None)`` if the run never got there.
    Used in: notebooks 03-06 ("does it converge faster?").
    """
    if not math.isfinite(val_loss):
        raise ValueError(f"val_loss must be a finite target, got {val_loss}")
    elapsed = 0.0
    for epoch, (loss, seconds) in enumerate(zip(record.history["val_loss"], record.history["epoch_seconds"]), 1):
        elapsed += seconds
        if loss <= val_loss:
            return epoch, elapsed
    return None, None


def seed_summary(groups: dict, target_val_loss: float | None = None) -> pd.DataFrame:
    """One row per variant, over its seeds: the means the comparisons use, and the spread.

    Args:
        groups: ``{variant label: [RunRecord, ...]}``, the same variant with several seeds.
        target_val_loss: if given, adds how fast each variant reaches it (``time_to_reach``):
            mean epochs and seconds over the seeds that reach it, and how many do.
    Columns: seeds, learning rate, mean epochs to best, mean seconds per epoch, mean wall
    time to best, validation accuracy (mean, min, max, range in points), test accuracy
    (mean, min, max), parameters.
    Used in: notebooks 03-06.
    """
    rows = []
    for label, records in groups.items():
        records = list(records)
        if not records:
            raise ValueError(f"no records for {label!r}")
        valid = np.array([r.valid_accuracy for r in records])
        test = np.array([r.test_accuracy for r in records])
        rows.append({
            "variant": label, "seeds": len(records), "learning_rate": records[0].learning_rate,
            "best_epoch": float(np.mean([r.best_epoch for r in records])),
            "seconds_per_epoch": float(np.mean([r.seconds_per_epoch for r in records])),
            "wall_time_to_best": float(np.mean([r.wall_time_to_best for r in records])),
            "valid_mean": valid.mean(), "valid_min": valid.min(), "valid_max": valid.max(),
            "valid_range_points": 100 * (valid.max() - valid.min()),
            "test_mean": test.mean(), "test_min": test.min(), "test_max": test.max(),
            "first_epoch_seconds": float(np.mean([r.first_epoch_seconds for r in records])),
            "parameters": records[0].config.get("architecture", {}).get("parameters"),
        })
        if target_val_loss is not None:
            reached = [time_to_reach(r, target_val_loss) for r in records]
            reached = [t for t in reached if t[0] is not None]
            rows[-1] |= {"target_reached_by": len(reached),
                         "epochs_to_target": float(np.mean([e for e, _ in reached])) if reached else math.nan,
                         "seconds_to_target": float(np.mean([s for _, s in reached])) if reached else math.nan}
    return pd.DataFrame(rows)


def load_seeds(variant: str, seeds=("", "_seed1", "_seed2"), mode: str | None = None, directory=None) -> list:
    """The records ``variant``, ``variant_seed1``, ``variant_seed2`` (the series' naming of 3 seeds)."""
    return [load_run(variant + suffix, mode, directory) for suffix in seeds]


def markdown_table(frame: pd.DataFrame) -> str:
    """A frame as a GitHub markdown table, its index as the first column (for the README).

    Cells are written as they are: format numbers before (pandas' ``to_markdown`` would need
    the ``tabulate`` package).
    """
    header = [str(frame.index.name or "")] + [str(c) for c in frame.columns]
    rows = [[str(i)] + [str(v) for v in row] for i, row in zip(frame.index, frame.itertuples(index=False))]
    cells = [header, ["---"] + ["---:"] * len(frame.columns), *rows]
    return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells)
