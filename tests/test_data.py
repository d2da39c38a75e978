import dataclasses
import hashlib

import numpy as np
import pytest

from helpers import config, data
from helpers.data import DataError
from tests.synthetic import write_npz
from tests.backends import once  # noqa: E402

pytestmark = once  # no Keras backend involved: checked once


@pytest.fixture
def npz(tmp_path):
    return write_npz(tmp_path / "c10.npz")


def test_offline_file_loads_with_flat_labels_and_fingerprint(npz):
    (x_train, y_train), (x_test, y_test), digest = data.load_npz(npz)
    assert x_train.shape == (60, 32, 32, 3) and x_train.dtype == np.uint8
    assert y_train.shape == (60,) and y_test.shape == (20,)
    assert len(digest) == 64


def test_fingerprint_matches_the_documented_definition(npz):
    # the offline copy's documented fingerprint: sha256 over x_train, y_train, x_test, y_test bytes, as stored
    h = hashlib.sha256()
    with np.load(npz) as f:
        for k in ("x_train", "y_train", "x_test", "y_test"):
            h.update(np.ascontiguousarray(f[k]).tobytes())
    assert data.load_raw(npz)[1] == f"offline-npz sha256:{h.hexdigest()}"


def test_env_variable_selects_offline_file(npz, monkeypatch):
    monkeypatch.setenv("CIFAR10_NPZ", str(npz))
    assert data.offline_path() == npz


def test_cache_copy_found_without_env_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("CIFAR10_NPZ", raising=False)
    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path))
    assert data.offline_path() is None
    write_npz(tmp_path / "cifar10.npz")
    assert data.offline_path() == tmp_path / "cifar10.npz"


def test_missing_file_names_it_and_both_ways(tmp_path):
    with pytest.raises(DataError) as e:
        data.load_npz(tmp_path / "nope.npz")
    assert "nope.npz" in str(e.value) and "keras.datasets.cifar10" in str(e.value)
    assert "CIFAR10_NPZ" in str(e.value)


def test_unreadable_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(DataError, match="bad.npz: not a readable .npz"):
        data.load_npz(bad)


def test_wrong_keys(tmp_path):
    path = write_npz(tmp_path / "k.npz", y_test=None)
    with pytest.raises(DataError, match=r"missing arrays \['y_test'\]"):
        data.load_npz(path)


@pytest.mark.parametrize("override, message", [
    ({"x_train": np.zeros((60, 32, 32), np.uint8)}, "x_train must have shape"),
    ({"x_test": np.zeros((20, 32, 32, 3), np.float64)}, "x_test must be uint8"),
    ({"y_train": np.full(60, 10, np.uint8)}, "class ids 0..9"),
    ({"y_train": np.zeros(59, np.uint8)}, "60 images but y_train has 59"),
    ({"y_test": np.full(20, 0.5)}, "not whole numbers"),
])
def test_wrong_content_is_named(tmp_path, override, message):
    path = write_npz(tmp_path / "w.npz", **override)
    with pytest.raises(DataError, match=message) as e:
        data.load_npz(path)
    assert "w.npz" in str(e.value)


@pytest.mark.parametrize("labels", [np.array([[1], [2], [9]]), np.array([1, 2, 9]),
                                    np.array([1.0, 2.0, 9.0]), np.array([[1.0], [2.0], [9.0]], np.float32)])
def test_label_shapes_and_types_are_normalized(labels):
    y = data.normalize_labels(labels)
    assert y.shape == (3,) and y.dtype == np.int64 and y.tolist() == [1, 2, 9]


@pytest.mark.parametrize("labels", [np.array([-1, 2]), np.array([3, 10]), np.zeros((3, 2)),
                                    np.array(["a", "b"])])
def test_bad_labels_rejected(labels):
    with pytest.raises(DataError):
        data.normalize_labels(labels)


def test_no_file_and_no_network_gives_instructions(tmp_path, monkeypatch):
    import keras

    monkeypatch.delenv("CIFAR10_NPZ", raising=False)
    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path))

    def offline():
        raise Exception("URL fetch failure on https://www.cs.toronto.edu/: None -- [Errno -3] "
                        "Temporary failure in name resolution")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(DataError, match="could not download CIFAR-10") as e:
        data.load_raw()
    assert "CIFAR10_NPZ" in str(e.value)


def test_keras_download_path_is_used_and_labeled(tmp_path, monkeypatch):
    import keras

    monkeypatch.delenv("CIFAR10_NPZ", raising=False)
    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path))
    fake = ((np.zeros((10, 32, 32, 3), np.uint8), np.arange(10).reshape(10, 1)),
            (np.zeros((5, 32, 32, 3), np.uint8), np.arange(5).reshape(5, 1)))
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", lambda: fake)
    ((x, y), (xt, yt)), source = data.load_raw()
    assert source == "keras-download" and y.shape == (10,) and yt.shape == (5,)


def test_split_takes_first_images_as_validation(npz):
    (x_train, y_train), (x_test, y_test), _ = data.load_npz(npz)
    ds = data.split(x_train, y_train, x_test, y_test, "s", config.FULL, n_valid=10)
    assert np.array_equal(ds.x_valid, x_train[:10]) and np.array_equal(ds.x_train, x_train[10:])
    assert ds.sizes() == {"train": 50, "valid": 10, "test": 20}


def test_quick_subset_is_class_balanced(npz):
    (x_train, y_train), (x_test, y_test), _ = data.load_npz(npz)
    small = dataclasses.replace(config.QUICK, train_per_class=2, valid_per_class=1, test_per_class=1)
    ds = data.split(x_train, y_train, x_test, y_test, "s", small, n_valid=10)
    assert np.bincount(ds.y_train, minlength=10).tolist() == [2] * 10
    assert np.bincount(ds.y_valid, minlength=10).tolist() == [1] * 10
    with pytest.raises(DataError, match="only"):
        data.class_balanced_subset(ds.y_valid, 2)


def test_scale_and_standardize_use_training_statistics_only(npz):
    (x_train, y_train), (x_test, y_test), _ = data.load_npz(npz)
    ds = data.split(x_train, y_train, x_test, y_test, "s", config.FULL, n_valid=10)
    scaled = data.scale(ds)
    assert scaled.x_train.dtype == np.float32 and 0 <= scaled.x_train.min() and scaled.x_train.max() <= 1
    std = data.standardize(ds)
    assert np.allclose(std.x_train.mean(axis=0), 0, atol=1e-4)
    assert np.allclose(std.x_train.std(axis=0), 1, atol=1e-3)
    mean = ds.x_train.astype(np.float32).mean(axis=0)
    sd = ds.x_train.astype(np.float32).std(axis=0) + 1e-7
    assert np.allclose(std.x_test, (ds.x_test - mean) / sd, atol=1e-5)  # test uses train stats
    assert not np.allclose(std.x_test.mean(axis=0), 0, atol=1e-3)
    with pytest.raises(ValueError, match="already scaled"):
        data.standardize(scaled)


def test_build_npz_command_writes_a_loadable_file(tmp_path, monkeypatch):
    import keras

    fake = ((np.zeros((10, 32, 32, 3), np.uint8), np.arange(10).reshape(10, 1)),
            (np.zeros((5, 32, 32, 3), np.uint8), np.arange(5).reshape(5, 1)))
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", lambda: fake)
    out = tmp_path / "sub" / "c.npz"
    assert data.main(["build-npz", str(out)]) == 0
    (x, y), (xt, yt), _ = data.load_npz(out)
    assert x.shape == (10, 32, 32, 3) and y.tolist() == list(range(10))


def test_check_command_reports_error_cleanly(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIFAR10_NPZ", str(tmp_path / "missing.npz"))
    assert data.main(["check"]) == 1
    assert "missing.npz" in capsys.readouterr().err
