"""Run mode, seed and folders, read once from the environment (README, "Environment variables").

Every notebook prints them in its setup cell: a reader always knows whether a figure came from the full
run or from CI's quick one. Unset or empty means the default; a value the variable does not take is an
error that names it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MODES = ("full", "quick")
SEED = 42
# Selection is not evaluation: every search (LR finder, brackets of full trainings, grids) runs at
# SEARCH_SEED; every final model is trained at SEEDS, five seeds none of which picked anything.
SEARCH_SEED = 0
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """What one mode trains on and for how long."""

    mode: str
    train_per_class: int | None  # None: every training image
    valid_per_class: int | None
    test_per_class: int | None
    max_epochs: int
    patience: int
    batch_size: int
    mc_samples: int
    seeds: tuple  # the final models' seeds

    @property
    def results_dir(self) -> Path:
        """Full-mode records live in ``results/`` (or ``CIFAR10_RESULTS``); quick ones in its ``quick/``."""
        base = Path(env("CIFAR10_RESULTS") or PROJECT_ROOT / "results").expanduser()
        return base if self.mode == "full" else base / "quick"


FULL = Settings("full", None, None, None, max_epochs=100, patience=20, batch_size=32, mc_samples=100,
                seeds=(42, 1, 2, 3, 4))
QUICK = Settings("quick", 200, 50, 100, max_epochs=3, patience=2, batch_size=32, mc_samples=10,
                 seeds=(42, 1))  # the code path of several seeds, at CI's cost


def env(name: str, environ=None) -> str | None:
    """A ``CIFAR10_*`` variable's value, spaces stripped; None when it is unset or empty (the default applies)."""
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or None


def read_mode(environ=os.environ) -> str:
    """The run mode from ``CIFAR10_MODE``; a typo is an error, not a silent full run."""
    mode = (env("CIFAR10_MODE", environ) or "full").lower()
    if mode not in MODES:
        raise ValueError(f"CIFAR10_MODE={mode!r} is not one of {MODES}")
    return mode


def settings_for(mode: str) -> Settings:
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    return FULL if mode == "full" else QUICK


def max_workers(environ=os.environ) -> int | None:
    """``CIFAR10_WORKERS`` as a positive int, or None when unset; anything else is an error."""
    value = env("CIFAR10_WORKERS", environ)
    if value and (not value.isdigit() or int(value) < 1):
        raise ValueError(f"CIFAR10_WORKERS={value!r} must be a whole number of trainings at a time, 1 or more")
    return int(value) if value else None


def reuse_finished(environ=os.environ) -> bool:
    """``CIFAR10_REUSE_FINISHED=1``: finished trainings are kept and read back (``training.read_finished``)."""
    value = env("CIFAR10_REUSE_FINISHED", environ)
    if value not in (None, "0", "1"):
        raise ValueError(f"CIFAR10_REUSE_FINISHED={value!r} must be 1 (read finished trainings back) or 0")
    return value == "1"


def cache_dir(environ=os.environ) -> Path:
    return Path(env("CIFAR10_CACHE", environ) or Path.home() / ".cache" / "cifar10").expanduser()


MODE = read_mode()
SETTINGS = settings_for(MODE)
SEEDS = SETTINGS.seeds
