"""The notebooks' first line picks the backend: JAX when it is installed, else TensorFlow, said in one line."""
import importlib.util

from helpers import notebook
from tests.backends import once

pytestmark = once  # no Keras backend involved: checked once


def test_without_jax_the_notebooks_run_on_tensorflow_and_say_so(monkeypatch, capsys):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a))
    notebook._choose_backend()
    assert notebook.os.environ["KERAS_BACKEND"] == "tensorflow"
    assert capsys.readouterr().out.startswith("JAX is not installed: Keras runs on TensorFlow here")


def test_with_jax_or_a_backend_already_chosen_nothing_is_said(monkeypatch, capsys):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    notebook._choose_backend()
    assert notebook.os.environ["KERAS_BACKEND"] == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    notebook._choose_backend()
    assert notebook.os.environ["KERAS_BACKEND"] == "tensorflow" and capsys.readouterr().out == ""


class BrokenTensorFlow:
    """An import finder for a TensorFlow that is installed but fails to load (a missing library, say)."""

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow":
            raise ImportError("libtensorflow_framework.so.2: cannot open shared object file")
        return None


def test_a_broken_tensorflow_is_shown_and_raised_only_where_keras_needs_it(monkeypatch, capfd):
    import sys

    import pytest

    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.setattr(sys, "meta_path", [BrokenTensorFlow(), *sys.meta_path])
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    notebook._import_tensorflow_quietly()
    assert "TensorFlow is installed but does not import (ImportError: libtensorflow_framework" in capfd.readouterr().err
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    with pytest.raises(ImportError, match="libtensorflow_framework"):
        notebook._import_tensorflow_quietly()
