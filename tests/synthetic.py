"""Small synthetic datasets for fast tests."""
import numpy as np

from helpers.data import Dataset


def blobs(n_train=600, n_valid=200, n_test=200, n_features=20, n_classes=10, spread=0.5, seed=0):
    """Gaussian blobs, one per class: learnable in a few epochs by a small dense net."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, n_features)).astype(np.float32) * 2

    def make(n):
        y = rng.integers(0, n_classes, size=n)
        x = centers[y] + spread * rng.normal(size=(n, n_features)).astype(np.float32)
        return x.astype(np.float32), y.astype(np.int64)

    return Dataset(*make(n_train), *make(n_valid), *make(n_test), source="synthetic blobs",
                   preprocessing="scaled")


def write_npz(path, n_train=60, n_test=20, **overrides):
    """A CIFAR-shaped .npz with valid content unless ``overrides`` replace arrays."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, size=(n_train, 32, 32, 3), dtype=np.uint8),
        "y_train": (np.arange(n_train) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, size=(n_test, 32, 32, 3), dtype=np.uint8),
        "y_test": (np.arange(n_test) % 10).astype(np.uint8),
    }
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path
