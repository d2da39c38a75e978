"""CIFAR-10: load (offline file or Keras download), check, split, scale.

Labels are flattened to shape (N,) here, once, so that no later comparison can
broadcast (N, 1) against (N,) into an (N, N) matrix: the classic MC-dropout bug.

An offline copy for machines without internet: ``python -m helpers.data build-npz [PATH]`` (README, "Data").
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from helpers import config

N_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
N_VALID = 5000  # the first 5,000 training images, as in the reference solution
KEYS = ("x_train", "y_train", "x_test", "y_test")

HOW_TO_GET_DATA = (
    "Two ways to get CIFAR-10:\n"
    "  1. with internet: keras.datasets.cifar10.load_data() downloads it (about 170 MB),\n"
    "     or `python -m helpers.data build-npz PATH` downloads it once and saves an offline copy;\n"
    "  2. offline: point CIFAR10_NPZ at an .npz with x_train (N,32,32,3) uint8, y_train (N,),\n"
    "     x_test, y_test, or put it at $CIFAR10_CACHE/cifar10.npz (default ~/.cache/cifar10/cifar10.npz)."
)


class DataError(ValueError):
    """The data could not be loaded; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Dataset:
    """Train, validation and test arrays; ``source`` (for the Run record), what was done to the pixels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    preprocessing: str = "uint8"  # or "scaled", "standardized"

    def sizes(self) -> dict:
        return {"train": len(self.y_train), "valid": len(self.y_valid), "test": len(self.y_test)}


def normalize_labels(y, name: str = "labels", n_classes: int | None = N_CLASSES, count: int | None = None) -> np.ndarray:
    """Class ids as int64 of shape (N,), or a ``DataError`` that says what is wrong and what to do.

    Accepts (N,) and (N, 1) (as ``keras.datasets.cifar10.load_data()`` gives them), integers or whole-number
    floats, ids in ``0..n_classes - 1`` (None: any from 0), and ``count`` of them if given.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2 and n_classes and y.shape[1] == n_classes:
        raise DataError(f"{name} look one-hot, shape {y.shape}: give class ids of shape (N,), e.g. y.argmax(axis=1)")
    if y.ndim != 1:
        raise DataError(f"{name} must have shape (N,) or (N, 1), got {y.shape}; flatten them (y.ravel())")
    if count is not None and len(y) != count:
        raise DataError(f"{count} images but {len(y)} {name}: they must match one to one")
    if y.dtype.kind not in "iuf" or (y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all())):
        shown = f"e.g. {y[:3].tolist()}" if y.dtype.kind not in "iufb" else "values that are not whole numbers"
        raise DataError(f"{name} must be integer class ids 0..{(n_classes or 10) - 1}, got dtype {y.dtype} with "
                        f"{shown}: map them to ids first")
    if y.size and (y.min() < 0 or y.max() >= (n_classes or 2**31)):
        raise DataError(f"{name} must be class ids 0..{n_classes - 1 if n_classes else 'n'}, "
                        f"found values from {y.min()} to {y.max()}")
    return y.astype(np.int64)


def check_images(x, name: str = "images", shape=None) -> np.ndarray:
    """Images a model can take, or a ``DataError``: a non-empty float array, finite, scaled or standardized.

    Refuses raw pixels, as uint8 or as floats 0..255 (whole numbers above 1.5): a network trained on
    scaled inputs gives numbers for them, all wrong. ``shape``: a model's ``input_shape[1:]``.
    """
    x = np.asarray(x)
    if x.ndim < 2 or len(x) == 0:
        raise DataError(f"{name}: no images (shape {x.shape}): nothing to train or evaluate on")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise DataError(f"{name} have shape {x.shape[1:]} each, the model expects {tuple(shape)}; load them with "
                        "helpers.data.load_cifar10() (N, 32, 32, 3), or build the model with input_shape=...")
    if x.dtype.kind != "f":
        raise DataError(f"{name} are {x.dtype}, not floats: scale or standardize them first "
                        "(helpers.data.scale(data) or helpers.data.standardize(data))")
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if not finite.all():
        raise DataError(f"{name} contain NaN or infinite pixels ({int((~finite).sum())} images): "
                        "fix or drop them first")
    sample = x.reshape(-1)[:: max(1, x.size // 100_000)]
    if sample.max() > 1.5 and (sample == np.round(sample)).all():
        raise DataError(f"{name} look like raw pixels, whole numbers from {sample.min():g} to {sample.max():g}: "
                        "scale or standardize them as for training (helpers.data.scale or standardize)")
    return x


def offline_path(environ=os.environ) -> Path | None:
    """The offline file to use: ``CIFAR10_NPZ`` if set, else the cache copy if present."""
    if config.env("CIFAR10_NPZ", environ):
        return Path(config.env("CIFAR10_NPZ", environ)).expanduser()
    default = config.cache_dir(environ) / "cifar10.npz"
    return default if default.exists() else None


def load_npz(path):
    """Load and check an offline copy: ``(x_train, y_train), (x_test, y_test), sha256``.

    The sha256 is of the arrays as stored, comparable with the one the publisher of an offline copy states.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory; CIFAR10_NPZ must name the .npz file itself "
                        f"(e.g. {path / 'cifar10.npz'})\n{HOW_TO_GET_DATA}")
    if not path.is_file():
        raise DataError(f"offline CIFAR-10 file not found: {path}\n{HOW_TO_GET_DATA}")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in KEYS if k not in f.files]
            if missing:
                raise DataError(f"{path}: missing arrays {missing} (has {sorted(f.files)})\n{HOW_TO_GET_DATA}")
            arrays, digest = {k: f[k] for k in KEYS}, hashlib.sha256()
            for k in KEYS:  # the fingerprint a Run record names its data by
                digest.update(np.ascontiguousarray(arrays[k]).tobytes())
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})\n{HOW_TO_GET_DATA}") from e
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
            raise DataError(f"{path}: x_{split} must have shape (N, 32, 32, 3), got {x.shape}\n{HOW_TO_GET_DATA}")
        if x.dtype != np.uint8:
            raise DataError(f"{path}: x_{split} must be uint8 pixels 0..255, got dtype {x.dtype}\n{HOW_TO_GET_DATA}")
        try:
            y = arrays[f"y_{split}"] = normalize_labels(y, f"y_{split}")
        except DataError as e:
            raise DataError(f"{path}: {e}\n{HOW_TO_GET_DATA}") from None
        if len(y) != len(x):
            raise DataError(f"{path}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels\n"
                            + HOW_TO_GET_DATA)
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"]), digest.hexdigest()


def _download():
    import keras  # imported here: loading an offline file needs no Keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as e:  # urllib, SSL, "URL fetch failure", a half-written archive
        raise DataError(f"could not download CIFAR-10 ({type(e).__name__}: {e}).\n{HOW_TO_GET_DATA}") from e
    return (x_train, normalize_labels(y_train, "y_train")), (x_test, normalize_labels(y_test, "y_test"))


def load_raw(path=None):
    """``((x_train, y_train), (x_test, y_test)), source``, uint8, from ``path`` or ``offline_path()``, else Keras.

    ``source``: ``"offline-npz sha256:<fingerprint>"`` or ``"keras-download"``.
    """
    path = Path(path) if path is not None else offline_path()
    if path is None:
        return _download(), "keras-download"
    train, test, digest = load_npz(path)
    return (train, test), f"offline-npz sha256:{digest}"


def class_balanced_subset(y, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` images of each class, in their original order."""
    y = normalize_labels(y)
    picks = []
    for c in range(N_CLASSES):
        idx = np.flatnonzero(y == c)[:per_class]
        if len(idx) < per_class:
            raise DataError(f"only {len(idx)} images of class {c}, {per_class} asked for: the subset is larger "
                            "than the data; ask for fewer per class, or use the full data (CIFAR10_MODE=full)")
        picks.append(idx)
    return np.sort(np.concatenate(picks))


def split(x_train, y_train, x_test, y_test, source, settings=None, n_valid=N_VALID) -> Dataset:
    """Split off the first ``n_valid`` training images; quick mode keeps a balanced subset."""
    settings = settings or config.SETTINGS
    if len(y_train) <= n_valid:
        raise DataError(f"need more than {n_valid} training images to split off validation, got {len(y_train)}")
    parts = {"train": (x_train[n_valid:], y_train[n_valid:]),
             "valid": (x_train[:n_valid], y_train[:n_valid]),
             "test": (x_test, y_test)}
    for name, (x, y) in parts.items():
        if (per_class := getattr(settings, f"{name}_per_class")) is not None:
            keep = class_balanced_subset(y, per_class)
            parts[name] = (x[keep], y[keep])
    return Dataset(*parts["train"], *parts["valid"], *parts["test"], source=source)


def load_cifar10(path=None, settings=None) -> Dataset:
    """CIFAR-10 split into train/valid/test (uint8), subset in quick mode."""
    ((x_train, y_train), (x_test, y_test)), source = load_raw(path)
    return split(x_train, y_train, x_test, y_test, source, settings)


def scale(data: Dataset) -> Dataset:
    """Pixels to float32 in [0, 1]."""
    _require_uint8(data)
    f = lambda x: x.astype(np.float32) / np.float32(255)  # noqa: E731
    return replace(data, x_train=f(data.x_train), x_valid=f(data.x_valid), x_test=f(data.x_test),
                   preprocessing="scaled")


def standardize(data: Dataset) -> Dataset:
    """Each input feature to mean 0, std 1, with statistics of the training set only.

    SELU's self-normalization assumes standardized inputs. Validation and test are
    transformed with the training mean and std: fitting on them would leak.
    """
    _require_uint8(data)
    x_train = data.x_train.astype(np.float32)
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0) + np.float32(1e-7)
    f = lambda x: ((x.astype(np.float32) - mean) / std).astype(np.float32)  # noqa: E731
    return replace(data, x_train=f(x_train), x_valid=f(data.x_valid), x_test=f(data.x_test),
                   preprocessing="standardized")


def _require_uint8(data):
    if data.preprocessing != "uint8":
        raise ValueError(f"data is already {data.preprocessing}; start again from load_cifar10()")


def build_npz(out) -> Path:
    """Download CIFAR-10 through Keras once and save it as an offline ``.npz``."""
    (x_train, y_train), (x_test, y_test) = _download()
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, x_train=x_train, y_train=y_train.astype(np.uint8),
             x_test=x_test, y_test=y_test.astype(np.uint8))
    os.replace(tmp, out)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m helpers.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build-npz", help="download through Keras and save an offline .npz")
    b.add_argument("out", nargs="?", default=str(config.cache_dir() / "cifar10.npz"))
    sub.add_parser("check", help="load the data the notebooks would use and print its source")
    args = parser.parse_args(argv)
    try:
        if args.command == "build-npz":
            print(f"wrote {build_npz(args.out)}")
        else:
            data = load_cifar10()
            print(f"{data.source}: {data.sizes()}")
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
