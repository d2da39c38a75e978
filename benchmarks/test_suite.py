"""Wall time of the test suite (the README's ``pytest``) with and without the shared JAX compilation cache.

    python benchmarks/test_suite.py                        # the whole suite, 2 runs of each (about 30 min)
    python benchmarks/test_suite.py --repeats 1 -- notebooks   # only the notebooks (nbval, quick mode)

``conftest.py`` gives every process of a test run (xdist workers, notebook kernels,
train_many's workers, test subprocesses) one JAX compilation cache in a temporary folder,
so a network compiled once is loaded, not compiled again, by the others. Here the runs
alternate, with the cache and without it (``JAX_ENABLE_COMPILATION_CACHE=false``), one at
a time, each a fresh ``pytest``, so that both see the same machine: it varies from hour to
hour. Each row: wall seconds, and CPU seconds of pytest and of the processes it waited for.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_suite(cache: bool, pytest_args: list[str]) -> dict:
    """One fresh ``pytest`` run; its wall and CPU seconds and its summary line."""
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # conftest.py makes a fresh one per run
    if cache:
        env.pop("JAX_ENABLE_COMPILATION_CACHE", None)
    else:
        env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", *pytest_args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = proc.stdout.strip().splitlines()
    summary = lines[-1] if lines else proc.stderr.strip()[-300:]
    if proc.returncode != 0:
        raise SystemExit(f"pytest failed ({'with' if cache else 'without'} the cache): {summary}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cache": cache, "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "summary": summary}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs with the cache, and as many without")
    parser.add_argument("--json", help="write the measurements to this file")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --); default: the whole suite")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    print(f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores; "
          f"pytest {' '.join(args.pytest_args) or '(whole suite)'}", flush=True)
    rows = []
    for repeat in range(args.repeats):
        for cache in (True, False):
            row = run_suite(cache, args.pytest_args)
            rows.append(row)
            print(f"{'with' if cache else 'without':>7} the cache: {row['wall_seconds']:6.1f} s wall, "
                  f"{row['cpu_seconds']:6.1f} s CPU  ({row['summary']})", flush=True)
    mean = {cache: sum(r["wall_seconds"] for r in rows if r["cache"] == cache) / args.repeats
            for cache in (True, False)}
    print(f"mean wall: {mean[True]:.1f} s with the cache, {mean[False]:.1f} s without "
          f"({mean[True] / mean[False]:.2f}x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.system()} {platform.machine()}",
                       "cpu_cores": os.cpu_count(), "python": platform.python_version(),
                       "pytest_args": args.pytest_args, "runs": rows}, f, indent=1)


if __name__ == "__main__":
    main()
