"""Train the baseline network to the end at five learning rates, 1e-5 to 1e-3, and save each run.

Notebook 02 compares its searched rate with the best of this grid. Full mode only (the
grid is the yardstick, not a smoke test); about 6 minutes on a 2-core CPU under JAX.

    KERAS_BACKEND=jax python benchmarks/lr_grid.py
"""
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

from helpers import config, data, models, results, training  # noqa: E402

RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)  # log-spaced: 1, 3.16, 10, ... rounded as usual


def main():
    if config.MODE != "full":
        raise SystemExit("the grid is only meaningful on the full data: unset CIFAR10_MODE")
    cifar = data.scale(data.load_cifar10())
    rows = []
    for rate in RATES:
        model = training.compile_model(models.build_dnn(), rate)
        record = training.train(model, cifar, f"lr_grid_{rate:.0e}", verbose=0,
                                extra_config={"purpose": "5-point grid for notebook 02"})
        path = results.save_run(record)
        rows.append(record)
        print(f"lr {rate:.0e}: valid acc {record.valid_accuracy:.4f}, test acc {record.test_accuracy:.4f}, "
              f"best epoch {record.best_epoch} of {record.epochs}, {sum(record.history['epoch_seconds']):.0f} s "
              f"-> {path.relative_to(config.PROJECT_ROOT)}", flush=True)
    best = max(rows, key=lambda r: r.valid_accuracy)
    print(f"best: lr {best.learning_rate:.0e}, valid acc {best.valid_accuracy:.4f}")


if __name__ == "__main__":
    main()
