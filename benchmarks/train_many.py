"""Wall time of K trainings at once against K one after another, side by side.

    python benchmarks/train_many.py                           # K = 1, 2, 3, 5; baseline net (about 10 min)
    python benchmarks/train_many.py --epochs 2 --ks 1 2       # a fast smoke run

Each training is the baseline network of notebook 02 on the full training set (CIFAR-10
shaped synthetic data by default, or ``--cifar`` for the real one), batch 32, for a fixed
number of epochs (no early stopping, so every training does the same work). For each K:
``train_many(..., n_jobs=1)`` (one after another, in this process) and
``train_many(...)`` (at once: joblib's worker processes, one per core), timed from the call to the
last record, everything included (worker start-up, imports, compilation, data sharing).
Each measurement runs in a fresh process, one after another, never two at once, so that
"one training" is what a reader gets in a fresh kernel (compilation included) and workers
start cold too. Ratios are against one training alone (K = 1, one after another).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def measure(k, how, epochs, batch_norm, cifar):
    """In this process: K trainings one after another ("sequential") or at once; seconds of the call."""
    import numpy as np

    from helpers import config, models, parallel
    from helpers.data import Dataset

    if cifar:
        from helpers import data as data_module

        data = data_module.scale(data_module.load_cifar10(settings=config.FULL))
    else:
        rng = np.random.default_rng(0)
        x = rng.random((50_000, 32, 32, 3), dtype=np.float32)
        y = rng.integers(0, 10, size=50_000)
        data = Dataset(x[5000:], y[5000:], x[:5000], y[:5000], x[:1000], y[:1000], source="synthetic",
                       preprocessing="scaled")

    def build(seed):
        return models.build_dnn(batch_norm=batch_norm, seed=seed)

    runs = [parallel.Run(f"run{i}", seed=i + 1, learning_rate=1e-4) for i in range(k)]
    start = time.perf_counter()
    n_jobs = 1 if how == "sequential" else min(k, os.cpu_count())
    many = parallel.train_many(build, data, runs, n_jobs=n_jobs, verbose=0, max_epochs=epochs, patience=epochs,
                               evaluate_test=False, resume=False)
    seconds = time.perf_counter() - start
    if many.failures:
        raise SystemExit(f"failures: {many.failures}")
    return {"k": k, "how": how, "seconds": seconds, "workers": n_jobs, "data": data.source,
            "samples": len(data.y_train)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3, 5])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-norm", action="store_true", help="the BN network of notebook 03 instead")
    parser.add_argument("--cifar", action="store_true", help="the real data (needs the data cache)")
    parser.add_argument("--json", help="also write the measurements to this file")
    parser.add_argument("--one", nargs=2, metavar=("K", "HOW"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:
        print(json.dumps(measure(int(args.one[0]), args.one[1], args.epochs, args.batch_norm, args.cifar)))
        return 0

    network = "bn" if args.batch_norm else "baseline"
    print(f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, joblib worker processes; "
          f"{network} network, batch 32, {args.epochs} epochs a training, each measurement a fresh process",
          flush=True)

    def run(k, how):
        cmd = [sys.executable, __file__, "--one", str(k), how, "--epochs", str(args.epochs)] + \
            (["--batch-norm"] if args.batch_norm else []) + (["--cifar"] if args.cifar else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    rows, one = [], None
    for k in args.ks:
        sequential, together = run(k, "sequential"), run(k, "at_once")
        if k == 1:
            one = sequential["seconds"]
        row = {"k": k, "one_after_another_s": sequential["seconds"], "at_once_s": together["seconds"],
               "workers": together["workers"], "data": together["data"]}
        if one:
            row |= {"one_after_another_x_one": row["one_after_another_s"] / one,
                    "at_once_x_one": row["at_once_s"] / one,
                    "speedup": row["one_after_another_s"] / row["at_once_s"]}
        rows.append(row)
        ratios = (f"; {row['one_after_another_x_one']:.2f}x and {row['at_once_x_one']:.2f}x one training, "
                  f"{row['speedup']:.2f}x faster at once" if one else "")
        print(f"K={k}: one after another {row['one_after_another_s']:6.1f} s, at once {row['at_once_s']:6.1f} s "
              f"({row['workers']} workers){ratios}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.system()} {platform.machine()}",
                       "cores": os.cpu_count(), "python": platform.python_version(),
                       "network": network, "epochs": args.epochs, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
