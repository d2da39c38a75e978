"""A reader's mistakes after training, and interruptions: the right number, or an error that says where and what to do."""
import dataclasses
import json
import os
import sys

import nbformat
import numpy as np
import pytest

from helpers import config, metrics, run_notebooks, training
from helpers.data import DataError, check_images, normalize_labels
from helpers.models import build_dnn
from helpers.results import RunRecord, load_run, save_run, write_json_atomic
from tests.backends import once
from tests.synthetic import blobs


def trained():
    data = blobs()
    model = training.compile_model(build_dnn(n_hidden=2, n_neurons=16, input_shape=(20,), seed=0), 1e-2)
    training.train(model, data, "faults", max_epochs=3, patience=3, verbose=0, resume=False)
    return model, data


def test_evaluate_reads_labels_of_shape_n_1_as_n_and_refuses_raw_pixels():
    model, data = trained()
    flat = training.evaluate(model, data.x_valid, data.y_valid)
    assert training.evaluate(model, data.x_valid, data.y_valid[:, None]) == flat  # never an (N, N) broadcast
    assert 0 <= flat[1] <= 1
    with pytest.raises(ValueError, match="not floats: scale or standardize"):
        training.evaluate(model, (data.x_valid * 10 + 128).clip(0, 255).astype(np.uint8), data.y_valid)
    with pytest.raises(ValueError, match="look like raw pixels"):
        training.evaluate(model, np.round(data.x_valid * 10 + 128), data.y_valid)
    with pytest.raises(ValueError, match="look one-hot"):
        training.evaluate(model, data.x_valid, np.eye(10)[data.y_valid])
    with pytest.raises(ValueError, match="integer class ids 0..9, got dtype <U"):
        training.evaluate(model, data.x_valid, np.array(["cat"] * len(data.y_valid)))


@once
def test_metrics_refuse_what_is_not_their_kind_of_input():
    y = np.arange(100) % 10
    p = np.eye(10)[y] * 0.9 + 0.01
    assert 0 <= metrics.expected_calibration_error(y, p) <= 1
    with pytest.raises(ValueError, match="apply keras.ops.softmax"):
        metrics.expected_calibration_error(y, np.log(p) * 5)  # logits, not probabilities
    with pytest.raises(ValueError, match="apply keras.ops.softmax"):
        metrics.reliability_bins(y, p * 100)  # percentages
    with pytest.raises(ValueError, match="yes/no flags"):
        metrics.mcnemar(y, y[::-1])  # class ids, not right/wrong flags
    with pytest.raises(ValueError, match="yes/no flags"):
        metrics.roc_auc(np.linspace(0, 1, 100), y)
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.roc_auc(np.full(100, np.nan), y < 5)
    with pytest.raises(ValueError, match="integer class ids"):
        metrics.accuracy(np.array(["cat", "dog"]), [0, 1])
    with pytest.raises(ValueError, match="NaN or infinite scores"):
        metrics.accuracy(y[:2], np.full((2, 10), np.nan))
    with pytest.raises(ValueError, match="at least 2 seeds"):
        metrics.compare_seeds([0.5], [0.4, 0.41])


@once
def test_shared_checks_say_what_is_wrong():
    with pytest.raises(DataError, match="64 images but 3 y"):
        normalize_labels([1, 2, 3], "y", count=64)
    assert normalize_labels(np.array([[1.0], [2.0]])).tolist() == [1, 2]
    with pytest.raises(DataError, match="no images"):
        check_images(np.zeros((0, 3), np.float32))
    assert check_images(np.full((2, 3), 0.5, np.float32)).shape == (2, 3)


@once
def test_a_record_refused_names_its_file_and_the_notebook_that_writes_it(tmp_path):
    from tests.test_results import make_record

    path = save_run(make_record("bn_seed3"), tmp_path)
    content = json.loads(path.read_text())
    path.write_text(json.dumps({**content, "surprise": 1}))
    with pytest.raises(ValueError, match=rf"{path}.*unknown keys.*run notebook 03 again"):
        load_run("bn_seed3", directory=tmp_path)
    content["history"]["loss"] = content["history"]["loss"][:-1]
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=rf"{path}.*history lists must all have.*notebook 03"):
        load_run("bn_seed3", directory=tmp_path)


@once
def test_a_record_write_killed_midway_leaves_no_file_a_later_write_keeps(tmp_path):
    target = tmp_path / "x.json"
    stale = tmp_path / ".x.json.abc123.tmp"
    stale.write_text('{"half": ')  # what a kill in the middle of a write leaves
    write_json_atomic(target, {"whole": True})
    assert json.loads(target.read_text()) == {"whole": True} and not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


@once
@pytest.mark.parametrize("value", [None, "", "   "])
def test_every_variable_treats_unset_and_empty_alike(value, tmp_path, monkeypatch):
    environ = {} if value is None else {name: value for name in ("CIFAR10_MODE", "CIFAR10_CACHE", "CIFAR10_WORKERS",
                                                                 "CIFAR10_NPZ", "CIFAR10_RESULTS")}
    from helpers import data

    assert config.read_mode(environ) == "full"
    assert config.cache_dir(environ) == config.cache_dir({})
    assert config.max_workers(environ) is None
    assert data.offline_path(environ) == data.offline_path({})
    monkeypatch.setenv("CIFAR10_RESULTS", value or "")
    assert config.FULL.results_dir == config.PROJECT_ROOT / "results"


@once
@pytest.mark.parametrize("name, value, call", [
    ("CIFAR10_MODE", "quik", lambda e: config.read_mode(e)),
    ("CIFAR10_WORKERS", "two", lambda e: config.max_workers(e)),
    ("CIFAR10_WORKERS", "0", lambda e: config.max_workers(e)),
])
def test_a_malformed_variable_is_an_error_that_names_it(name, value, call):
    with pytest.raises(ValueError, match=rf"{name}='{value}'"):
        call({name: value})


@once
def test_a_cifar10_npz_that_is_not_there_names_the_variable_and_the_path(tmp_path, monkeypatch):
    from helpers import data

    monkeypatch.setenv("CIFAR10_NPZ", str(tmp_path / "nowhere.npz"))
    with pytest.raises(DataError, match="nowhere.npz"):
        data.load_cifar10()


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)


@once
def test_a_failing_notebook_run_says_where_exits_non_zero_and_keeps_the_partial_outputs(tmp_path, monkeypatch,
                                                                                         capsys):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_fine.ipynb", "print('one')")
    _notebook(folder / "02_broken.ipynb", "print('before')", "x = 1\n1 / 0", "print('never')")
    good = nbformat.read(folder / "02_broken.ipynb", 4)
    monkeypatch.setattr(run_notebooks, "NOTEBOOKS", folder)
    monkeypatch.setenv("CIFAR10_RESULTS", str(tmp_path / "results"))
    assert run_notebooks.main([]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("FAILED: 02_broken.ipynb, cell 1 ('x = 1'): ZeroDivisionError: division by zero")
    partial = tmp_path / "results" / "quick" / "failed" / "02_broken.ipynb"
    assert str(partial) in err[-1]
    cells = nbformat.read(partial, 4).cells
    assert cells[0].outputs[0].text == "before\n" and cells[1].outputs[0].ename == "ZeroDivisionError"
    assert nbformat.read(folder / "02_broken.ipynb", 4) == good  # the notebook itself is left as it was
