"""The setup cell every notebook starts with: the backend, the style, the mode, seed and versions printed.

Import this module before Keras. Unless ``KERAS_BACKEND`` is set, it chooses JAX (faster on a CPU),
or TensorFlow when JAX is not installed. It imports TensorFlow first with its start-up log held back
(Keras loads it even under JAX), shown only if the import fails; after that, TensorFlow logs errors only.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile


def _choose_backend():
    if not os.environ.get("KERAS_BACKEND"):
        os.environ["KERAS_BACKEND"] = "jax" if importlib.util.find_spec("jax") is not None else "tensorflow"
        if os.environ["KERAS_BACKEND"] == "tensorflow":
            print("JAX is not installed: Keras runs on TensorFlow here, about 4x slower on a CPU "
                  "(pip install -e \".[jax]\" for JAX)")


def _import_tensorflow_quietly():
    # 3: no C++ log below fatal (on a machine without a GPU, TensorFlow logs "failed call to cuInit"
    # as an error when it starts its devices); set it yourself to see them
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as log:
        os.dup2(log.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException as e:
            if not (isinstance(e, ModuleNotFoundError) and e.name == "tensorflow"):  # not installed: optional under JAX
                os.dup2(saved, 2)  # what TensorFlow said before its import failed
                log.seek(0)
                sys.stderr.write(log.read())
                if os.environ.get("KERAS_BACKEND") == "tensorflow" or not isinstance(e, ImportError):
                    raise  # Keras needs it, or something else broke
                print(f"TensorFlow is installed but does not import ({type(e).__name__}: {e}); "
                      "Keras runs on JAX and does not need it", file=sys.stderr)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    if "tensorflow" in sys.modules:  # its Python warnings about retraced functions: noise here
        logging.getLogger("tensorflow").setLevel(logging.ERROR)


_choose_backend()
_import_tensorflow_quietly()

import pandas as pd  # noqa: E402

from helpers import config, plotting, training  # noqa: E402


def show(function):
    """The source of ``function``, highlighted: the Keras under a helper, without leaving the notebook."""
    import inspect
    from IPython.display import Code

    return Code(inspect.getsource(function), language="python")


def setup(settings=None):
    """Apply the shared figure style and print what this run is; returns the mode's settings."""
    settings = settings or config.SETTINGS
    plotting.use_style()
    pd.set_option("display.width", 100)  # tables' text wraps at the 100 characters the outputs keep to
    v = training.versions()
    note = ("full data, committed results" if settings.mode == "full"
            else "a small subset for smoke tests: numbers below are not meaningful")
    print(f"mode: {settings.mode} ({note})")
    print(f"seeds: {config.SEARCH_SEED} for searches, {', '.join(map(str, config.SEEDS))} for final models")
    print(f"batch size {settings.batch_size}, at most {settings.max_epochs} epochs, patience {settings.patience}")
    print("versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if k != "machine"))
    print(f"machine: {v['machine']}")
    folder = settings.results_dir
    shown = folder.relative_to(config.PROJECT_ROOT) if folder.is_relative_to(config.PROJECT_ROOT) else folder
    print(f"results folder: {shown}/")
    return settings
