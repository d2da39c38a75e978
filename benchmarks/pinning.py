"""Does pinning each worker to its own core pay? Two trainings at once, pinned against unpinned.

    python benchmarks/pinning.py --rounds 3 --json benchmarks/pinning_2026-11-30.json   # about 8 minutes
    python benchmarks/pinning.py --rounds 1 --epochs 2                                   # a smoke run

``helpers.workers`` pins every worker process that has a core to itself to that core (a
lock file per core, ``sched_setaffinity`` on every thread), on the idea that two trainings
on two cores would otherwise get in each other's way. This measured whether it pays, before
it was kept: two trainings of the baseline network (batch 32, CIFAR-shaped synthetic data of
the full size, a fixed number of epochs) through ``parallel.train_many`` with two workers,
either left to the operating system's scheduler (``train_many`` as it was then) or each
pinned to one core (by the model-building function, before the network is built, so that every thread
JAX starts inherits the pin). Each measurement is a fresh process; the two kinds run in
turn, A B A B, so that the shared machine's drift hits both alike; wall time of the whole
``train_many`` call. Needs at least 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
KINDS = ("unpinned", "pinned")


def pin_to(core):
    """Every thread of this process, and those it starts later, on one core."""
    for tid in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(tid), {core})


def pin_to_all(cores):
    for tid in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(tid), set(cores))


def measure(kind, epochs):
    import numpy as np

    from helpers import config, models, parallel
    from helpers.data import Dataset

    rng = np.random.default_rng(0)
    x = rng.random((50_000, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, size=50_000)
    data = Dataset(x[5000:], y[5000:], x[:5000], y[:5000], x[:1000], y[:1000], source="synthetic",
                   preprocessing="scaled")
    cores = sorted(os.sched_getaffinity(0))

    def build(seed):
        if kind == "pinned":
            pin_to(cores[(seed - 1) % len(cores)])  # seeds 1 and 2: one core each
        else:
            pin_to_all(cores)  # undo train_many's own pinning: the scheduler's choice
        return models.build_dnn(seed=seed)

    runs = [parallel.Run(f"run{i}", seed=i + 1, learning_rate=1e-4) for i in range(2)]
    start = time.perf_counter()
    many = parallel.train_many(build, data, runs, method="processes", n_jobs=2, verbose=0, max_epochs=epochs,
                               patience=epochs, evaluate_test=False, resume=False, settings=config.FULL)
    seconds = time.perf_counter() - start
    if many.failures:
        raise SystemExit(f"failures: {many.failures}")
    return {"kind": kind, "seconds": seconds, "epochs": epochs,
            "seconds_per_epoch": [r.seconds_per_epoch for r in many.records]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--json", help="also write the measurements to this file")
    parser.add_argument("--one", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.epochs)))
        return 0
    print(f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {len(os.sched_getaffinity(0))} cores; 2 trainings "
          f"of {args.epochs} epochs at once, {args.rounds} rounds of {' then '.join(KINDS)}", flush=True)
    rows = []
    for _ in range(args.rounds):
        for kind in KINDS:
            out = subprocess.run([sys.executable, __file__, "--one", kind, "--epochs", str(args.epochs)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  {kind:9s} {rows[-1]['seconds']:6.1f} s  (s/epoch of each: "
                  f"{', '.join(f'{s:.2f}' for s in rows[-1]['seconds_per_epoch'])})", flush=True)
    medians = {k: statistics.median(r["seconds"] for r in rows if r["kind"] == k) for k in KINDS}
    pairs = [b["seconds"] / a["seconds"] for a, b in zip(rows[::2], rows[1::2])]
    print(f"median: unpinned {medians['unpinned']:.1f} s, pinned {medians['pinned']:.1f} s; pinned / unpinned, "
          f"round by round: {', '.join(f'{p:.3f}' for p in pairs)} (median {statistics.median(pairs):.3f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.system()} {platform.machine()}",
                       "cpu_cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                       "epochs": args.epochs, "rounds": args.rounds, "rows": rows,
                       "pinned_over_unpinned": pairs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
