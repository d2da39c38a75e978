"""What a reader sees for each wrong input: a message that says what is wrong and what to do.

Each case here is one row of the table in tests/README.md.
"""
import dataclasses
import os

import keras
import numpy as np
import pytest

from helpers import data, lr_finder, mc_dropout, results, training
from helpers.models import build_dnn
from tests.synthetic import blobs
from tests.test_results import make_record


def model_for(n_features=20, n_classes=10):
    return training.compile_model(build_dnn(n_hidden=2, n_neurons=8, input_shape=(n_features,), n_classes=n_classes,
                                            seed=0), 1e-3)


def train(d, **kw):
    return training.train(model_for(), d, "bad", max_epochs=1, patience=1, verbose=0, resume=False, **kw)


def with_train(d, x=None, y=None):
    return dataclasses.replace(d, **({"x_train": x} if x is not None else {}), **({"y_train": y} if y is not None else {}))


D = blobs(n_train=64, n_valid=16, n_test=16)
NAN = D.x_train.copy()
NAN[3, 5] = np.nan
INF = D.x_train.copy()
INF[0, 0] = np.inf


@pytest.mark.parametrize("bad, message", [
    (with_train(D, x=D.x_train[:, :10]), "the model expects"),                           # wrong image shape
    (with_train(D, x=(D.x_train * 50).astype(np.uint8)), "scale or standardize"),      # raw uint8 pixels
    (with_train(D, x=NAN), "NaN or infinite pixels"),
    (with_train(D, x=INF), "NaN or infinite pixels"),
    (with_train(D, y=D.y_train + 10), "class ids 0..9"),                                # labels out of range
    (with_train(D, y=-D.y_train - 1), "class ids 0..9"),
    (with_train(D, y=D.y_train[:-5]), "64 images but 59 train labels"),                 # wrong length
    (with_train(D, y=np.eye(10)[D.y_train]), "one-hot"),
    (with_train(D, y=np.stack([D.y_train, D.y_train], axis=1)), r"flatten them \(y.ravel\(\)\)"),
    (with_train(D, y=np.array(["cat"] * 64)), "integer class ids 0..9, got dtype <U3 with e.g."),
    (with_train(D, y=D.y_train + 0.5), "integer class ids 0..9, got dtype float64 with values that are not whole"),
        (with_train(D, x=np.round(D.x_train * 40 + 128)), "look like raw pixels"),            # 0-255 as floats
    (with_train(D, x=D.x_train[:0], y=D.y_train[:0]), "train images: no images"),
    (dataclasses.replace(D, x_valid=D.x_valid[:0], y_valid=D.y_valid[:0]), "valid images: no images"),
])
def test_bad_data_is_refused_before_training(bad, message):
    with pytest.raises(ValueError, match=message):
        train(bad)


def test_a_batch_larger_than_the_data_is_refused():
    with pytest.raises(ValueError, match="larger than the training set"):
        train(D, batch_size=65)


def test_random_flip_of_inputs_that_are_not_images_is_refused():
    with pytest.raises(ValueError, match=r"random_flip mirrors images of shape \(height, width, channels\)"):
        build_dnn(n_hidden=1, n_neurons=4, input_shape=(20,), random_flip=True)


@pytest.mark.parametrize("rate", [0.0, -1e-3, float("nan"), float("inf")])
def test_a_learning_rate_that_is_not_positive_and_finite_is_refused(rate):
    with pytest.raises(ValueError, match="positive, finite"):
        training.compile_model(build_dnn(n_hidden=1, n_neurons=4, input_shape=(20,)), rate)
    with pytest.raises(TypeError, match="a number or a keras LearningRateSchedule"):
        training.compile_model(build_dnn(n_hidden=1, n_neurons=4, input_shape=(20,)), "fast")


def test_the_lr_finder_checks_the_data_too_and_names_a_loss_nan_from_the_start():
    with pytest.raises(ValueError, match="NaN or infinite pixels"):
        lr_finder.find_learning_rate(model_for(), with_train(D, x=NAN), steps=5, batch_size=8)
    exploding = training.compile_model(build_dnn(n_hidden=2, n_neurons=8, input_shape=(20,), seed=0,
                                                 initializer=keras.initializers.RandomNormal(stddev=1e20)), 1e-3)
    with pytest.raises(FloatingPointError, match="not finite from the first steps"):  # NaN loss from step 1
        lr_finder.find_learning_rate(exploding, D, steps=5, batch_size=8)


def test_mc_dropout_of_a_model_without_dropout_is_refused():
    with pytest.raises(ValueError, match="no dropout layer"):
        mc_dropout.predict(model_for(), D.x_valid, 3)


def test_a_quick_subset_larger_than_the_data_says_what_to_do():
    with pytest.raises(data.DataError, match="larger than the data.*CIFAR10_MODE=full"):
        data.class_balanced_subset(np.arange(30) % 10, per_class=5)


def test_cifar10_npz_pointing_at_a_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_NPZ", str(tmp_path))
    with pytest.raises(data.DataError, match="is a directory; CIFAR10_NPZ must name the .npz file itself"):
        data.load_cifar10()


@pytest.mark.parametrize("content, message", [
    ('{"variant": "x", "mode": "full", "da', "not JSON, or cut short"),   # truncated by a crash
    ("<html>not json</html>", "not JSON, or cut short"),
    ("[1, 2, 3]", "a JSON list, not an object"),
    ('{"variant": "x", "mode": "full", "data": "d"}', "older or other format"),
])
def test_a_broken_run_record_says_how_to_make_it_again(tmp_path, content, message):
    (tmp_path / "x.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        results.load_run("x", "full", directory=tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_results_folder_that_cannot_be_written_read_only(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OSError, match="cannot write the Run record"):
            results.save_run(make_record(), directory=tmp_path / "sub")
    finally:
        tmp_path.chmod(0o700)


def test_a_results_folder_that_cannot_be_written(tmp_path):
    blocked = tmp_path / "results"
    blocked.write_text("a file where the folder should be")
    with pytest.raises(OSError, match="cannot write the Run record .* writable, or save elsewhere"):
        results.save_run(make_record(), directory=blocked)
