"""The setup cell every notebook starts with: style, mode, seed and versions printed.

Import this module before Keras: it imports TensorFlow first with its C++ start-up log
silenced (Keras loads TensorFlow for some utilities even under JAX, and those log
lines would otherwise land in the output of whichever cell triggered it).
Used in: every notebook.
"""
from __future__ import annotations

import os


def _import_tensorflow_quietly():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import tensorflow  # noqa: F401
            except ImportError:
                pass
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_import_tensorflow_quietly()

from helpers import config, plotting, training  # noqa: E402


def setup(settings=None):
    """Apply the shared figure style and print what this run is; returns the mode's settings."""
    settings = settings or config.SETTINGS
    plotting.use_style()
    v = training.versions()
    note = ("full data, committed results" if settings.mode == "full"
            else "a small subset for smoke tests: numbers below are not meaningful")
    print(f"mode: {settings.mode} ({note})")
    print(f"seed: {config.SEED}   batch size: {settings.batch_size}   max epochs: {settings.max_epochs}   "
          f"patience: {settings.patience}")
    print("versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    folder = settings.results_dir
    shown = folder.relative_to(config.PROJECT_ROOT) if folder.is_relative_to(config.PROJECT_ROOT) else folder
    print(f"results folder: {shown}/")
    return settings
