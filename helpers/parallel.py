"""Train several networks of one architecture at once: seeds, learning rates.

Every comparison in the series rests on more than one run: three seeds per final model,
a grid of learning rates. Two ways to train them together, both returning ordinary
``RunRecord``s, one per network:

- ``"processes"`` (a CPU): one worker process per network, as many at a time as there are
  cores, each pinned to its own core. At batch 32 a second core buys nothing inside one
  training (the matrices are too small), so K trainings on K cores cost about what one
  costs (``benchmarks/train_many.py``). When the networks would leave cores idle in a
  last round (3 on 2 cores: two, then one alone), every network gets its own worker at
  once, up to twice the cores, and the workers share all the cores unpinned: 3 on 2
  cores then cost about 1.5 trainings' time instead of 2. Each worker runs exactly ``training.train``, so a
  record equals the one training alone gives. The pool is joblib's ``loky`` backend,
  which shares the large arrays with the workers through memory maps; joblib's Dask or
  Ray backends spread the same call over a cluster.
- ``"vmap"`` (a GPU under JAX): all networks side by side in one compiled step,
  ``jax.vmap`` of the same stateless train step over the stacked weights and optimizer
  states, each network with its own batch order and learning rate, early stopping per
  network (a stopped network stops changing and gets its best weights back). Vmapped
  and solo runs take different float paths, so they agree closely over the first steps
  and then drift as any two float paths do (tests/test_parallel.py states the tolerance).

Used in: notebooks 02-06.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import os
import socket
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpers import config

METHODS = ("processes", "vmap")


@dataclass(frozen=True)
class Run:
    """One network to train: its record's name, its seed, its learning rate, and options of its build.

    ``options`` go to ``build_model(seed, **options)``: a variant of the architecture (a
    dropout rate, say) trained beside the others. The ``"processes"`` method trains any
    mix; ``"vmap"`` needs one architecture and refuses options that change it.
    """

    variant: str
    seed: int = config.SEED
    learning_rate: object = None  # a float or a LearningRateSchedule; None: train_many's learning_rate
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ManyRuns:
    """What ``train_many`` returns: the records that finished, the errors of those that did not."""

    records: tuple  # RunRecords, in the order of the runs asked for (failed ones left out)
    failures: dict = field(default_factory=dict)  # variant -> error message with its traceback
    seconds: float = 0.0  # wall time of the whole call
    method: str = "processes"
    workers: int = 1
    shared_cores: bool = False  # the workers ran unpinned, sharing every core (plan_workers)
    weights: dict = field(default_factory=dict, repr=False)  # variant -> best weights (model.get_weights() order)
    runs: tuple = ()  # the Runs asked for, learning rates filled in

    def model(self, variant: str, build_model, seed=None):
        """The trained network of one variant: ``build_model(seed, **options)`` with its best weights set.

        ``seed`` defaults to the record's; the weights replace whatever it drew.
        """
        record = self.record(variant)
        options = next((r.options for r in self.runs if r.variant == variant), {})
        model = build_model(record.config["seed"] if seed is None else seed, **options)
        model.set_weights(self.weights[variant])
        return model

    def record(self, variant: str):
        """The record of one variant (KeyError names the failures if it has none)."""
        for r in self.records:
            if r.variant == variant:
                return r
        raise KeyError(f"no record {variant!r}; failures: {sorted(self.failures)}")


def default_method() -> str:
    """``"vmap"`` when Keras runs on JAX with a GPU, else ``"processes"``."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        if jax.default_backend() in ("gpu", "cuda", "rocm"):
            return "vmap"
    return "processes"


def cores() -> list[int]:
    """The CPU cores this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def plan_workers(k: int, n_cores: int, n_jobs: int | None = None) -> tuple[int, bool]:
    """How many worker processes train ``k`` networks on ``n_cores``, and whether they share the cores.

    One pinned worker per core, in rounds, unless the last round would leave cores idle
    and one worker per network fits in twice the cores: then all ``k`` at once, unpinned,
    sharing every core (3 networks on 2 cores: 1.5 rounds of work instead of 2). An
    explicit ``n_jobs`` is taken as it is, pinned while it does not exceed the cores.
    """
    if n_jobs is not None:
        workers = min(k, n_jobs)
        return workers, workers > n_cores
    if k <= n_cores or k % n_cores == 0 or k > 2 * n_cores:
        return min(k, n_cores), False
    return k, True


def train_many(build_model, data, runs, *, learning_rate=None, method: str | None = None,
               n_jobs: int | None = None, verbose: int = 1, compile_model=None, settings=None,
               **train_kwargs) -> ManyRuns:
    """Train one network per ``Run``, at once; return their Run records.

    Args:
        build_model: ``build_model(seed, **run.options)`` returns a fresh, uncompiled
            model, with its own seed (a lambda is fine: the workers receive it through
            cloudpickle).
        runs: ``Run`` objects (or variant names, for the default seed and rate); names must
            be unique.
        learning_rate: the rate of runs that do not set their own.
        method: ``"processes"`` or ``"vmap"``; default ``default_method()``.
        n_jobs: worker processes at a time (``"processes"``); default ``plan_workers``: one
            per core, pinned, or one per network sharing the cores (see the module's doc),
            on at most ``CIFAR10_WORKERS`` cores when that is set (``helpers.config``).
        verbose: 1 prints one line per finished epoch per network, prefixed with its
            name, and a final line each; 0 prints only failures.
        compile_model: ``compile_model(model, learning_rate)``; default
            ``helpers.training.compile_model`` (Nadam).
        train_kwargs: passed on to ``helpers.training.train`` (max_epochs, patience, ...).
    Returns:
        ``ManyRuns``. A network that fails (an exception, or its worker killed) is reported
        in ``failures`` and printed; the other records are kept.
    """
    runs = [Run(r) if isinstance(r, str) else r for r in runs]
    if not runs:
        raise ValueError("no runs to train")
    names = [r.variant for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique, got {names}")
    runs = [r if r.learning_rate is not None else Run(r.variant, r.seed, learning_rate, r.options) for r in runs]
    missing = [r.variant for r in runs if r.learning_rate is None]
    if missing:
        raise ValueError(f"no learning rate for {missing}: pass learning_rate= or set it in each Run")
    method = method or default_method()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    settings = settings or config.SETTINGS
    start = time.perf_counter()
    if method == "vmap":
        from helpers import vmapped

        records, failures, weights = vmapped.train_side_by_side(build_model, data, runs, verbose=verbose,
                                                                compile_model=compile_model, settings=settings,
                                                                **train_kwargs)
        workers, share = 1, False
    else:
        if n_jobs is not None and n_jobs < 1:
            raise ValueError(f"n_jobs must be at least 1, got {n_jobs}")
        n_cores = len(cores())
        workers, share = plan_workers(len(runs), min(n_cores, config.max_workers() or n_cores), n_jobs)
        records, failures, weights = _in_processes(build_model, data, runs, workers, share, verbose,
                                                   compile_model, settings, train_kwargs)
    for variant, message in failures.items():
        print(f"[{variant}] FAILED: {message.strip().splitlines()[-1]}", flush=True)
    return ManyRuns(records=tuple(records), failures=failures, seconds=time.perf_counter() - start,
                    method=method, workers=workers, shared_cores=share, weights=weights, runs=tuple(runs))


def _in_processes(build_model, data, runs, workers, share, verbose, compile_model, settings, train_kwargs):
    from joblib import Parallel, delayed
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    width = max(len(r.variant) for r in runs)
    results = {}
    if workers == 1:  # one at a time: here, in this process, unpinned (joblib would do the same)
        for run in runs:
            variant, record, error = _train_one(build_model, data, run, compile_model, settings, train_kwargs,
                                                _printer() if verbose else None, run.variant.ljust(width))
            results[variant] = record if error is None else error
    else:
        import cloudpickle

        # the functions travel as bytes, unpickled in the worker only after TensorFlow's start-up
        # log is silenced (unpickling them imports Keras, which loads TensorFlow, which would
        # print to the worker's stderr: in a notebook, into the cell's output)
        functions = cloudpickle.dumps((build_model, compile_model))
        with tempfile.TemporaryDirectory(prefix="train_many_") as tmp, _LineRelay(verbose, tmp) as relay:
            jobs = (delayed(_train_one)(functions, data, run, None, settings, train_kwargs,
                                        relay.sender(), run.variant.ljust(width), (tmp, cores(), share))
                    for run in runs)
            try:
                with warnings.catch_warnings():
                    # loky replaces workers that its idle timeout stopped between two calls, and says so;
                    # nothing is lost (a worker that dies during a job is reported below, per network)
                    warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given",
                                            category=UserWarning)
                    outputs = Parallel(n_jobs=workers, backend="loky", return_as="generator_unordered")(jobs)
                    _precompile(build_model, data, runs[0], compile_model, settings, train_kwargs)
                    for variant, record, error in outputs:
                        results[variant] = record if error is None else error
            except TerminatedWorkerError as e:  # a worker died (killed, out of memory): keep the others
                for run in runs:
                    results.setdefault(run.variant, f"worker process died before finishing: {e}")
    failures = {r.variant: results[r.variant] for r in runs if isinstance(results.get(r.variant), str)}
    done = [results[r.variant] for r in runs if r.variant not in failures]
    return [rec for rec, _ in done], failures, {rec.variant: w for rec, w in done}


def _precompile(build_model, data, run, compile_model, settings, train_kwargs):
    """While the workers start, compile their steps here once, into the disk cache they read.

    A cold worker compiles the step on its one core in its first epoch (about 9 s here,
    against 2.3 s for later epochs); with the step in the disk cache it loads it instead
    (about 6 s, measured on a second run: benchmarks/README.md). Best effort: any problem
    only means the workers compile for themselves.
    """
    import keras

    if keras.backend.backend() != "jax":
        return
    try:
        from helpers import engine, training

        engine.enable_compilation_cache()
        model = (compile_model or training.compile_model)(build_model(run.seed, **run.options), run.learning_rate)
        batch_size = train_kwargs.get("batch_size") or settings.batch_size
        sizes = [len(data.y_valid)] + ([len(data.y_test)] if train_kwargs.get("evaluate_test", True) else [])
        engine.JaxStepper(model).precompile(len(data.y_train), data.x_train.shape[1:], batch_size, sizes)
    except Exception:  # noqa: BLE001 - an optimization, never a failure
        pass


def _printer():
    import sys

    stdout = sys.stdout  # the real one, before redirect_stdout replaces it

    def put(line):
        print(line, file=stdout, flush=True)

    return put


def _train_one(build_model, data, run, compile_model, settings, train_kwargs, put, label, pin=None):
    """Train one network with ``training.train``; its lines go to ``put``, prefixed with ``label``.

    ``pin=(lock_dir, cores, share)``: in a worker process, first claim a free core and pin
    to it (or, sharing, run on all ``cores``), and load compiled steps from the disk cache
    the parent fills (``_precompile``).
    ``build_model`` may come as cloudpickled bytes of ``(build_model, compile_model)``.
    """
    if pin is not None:
        _pin_to_a_free_core(*pin)
    if isinstance(build_model, bytes):
        import pickle

        import helpers.notebook  # noqa: F401 - imports TensorFlow with its start-up log silenced

        build_model, compile_model = pickle.loads(build_model)
    from helpers import engine, training

    if pin is not None:
        engine.enable_compilation_cache()

    out = _LineWriter(put, label)
    try:
        with contextlib.redirect_stdout(out):
            compile_fn = compile_model or training.compile_model
            model = compile_fn(build_model(run.seed, **run.options), run.learning_rate)
            if run.options:
                train_kwargs = {**train_kwargs, "extra_config": {**(train_kwargs.get("extra_config") or {}),
                                                                 "build_options": dict(run.options)}}
            record = training.train(model, data, run.variant, seed=run.seed, settings=settings,
                                    verbose=1 if put is not None else 0, **train_kwargs)
        return run.variant, (record, model.get_weights()), None
    except Exception:  # reported with its traceback; the other networks go on
        return run.variant, None, traceback.format_exc()
    finally:
        out.flush()
        if hasattr(put, "close"):
            put.close()


_CORE_LOCK = None  # the open file whose lock holds this worker's core for its lifetime


def _pin_to_a_free_core(lock_dir, allowed, share=False):
    """Claim one core (a file lock per core, released when the process ends) and pin every thread to it.

    A reused worker keeps the core it claimed; two live workers never share one. With
    ``share``, release any core claimed in an earlier call and run on all ``allowed``.
    """
    global _CORE_LOCK
    if share:
        if _CORE_LOCK is not None:
            _CORE_LOCK.close()
            _CORE_LOCK = None
        _set_affinity(set(allowed))
        return
    if _CORE_LOCK is not None and Path(_CORE_LOCK.name).parent == Path(lock_dir):
        return
    for core in allowed:
        f = open(Path(lock_dir) / f"core{core}.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _CORE_LOCK = f
        _set_affinity({core})
        return


def _set_affinity(cores_):
    """Every thread the worker already has (XLA's pool too), then new ones inherit it."""
    try:
        for tid in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(tid), cores_)
    except (AttributeError, OSError):
        pass  # not Linux: run unpinned


class _LineWriter(io.TextIOBase):
    """A stdout for one training: each complete line goes to ``put``, prefixed with the network's name."""

    def __init__(self, put, label):
        self.put, self.label, self.buffer = put, label, ""

    def write(self, text):
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            if line and self.put is not None:
                self.put(f"[{self.label}] {line}")
        return len(text)

    def flush(self):
        if self.buffer:
            self.write("\n")


class _LineRelay:
    """Lines from the workers, printed here as they come: a Unix socket in a temporary folder.

    Workers connect to it and send their lines; a thread per connection prints them.
    (No multiprocessing Manager: it would start one more process, by fork, which can
    deadlock a process running JAX, or by spawn, which reruns an unguarded script.)
    """

    def __init__(self, verbose, directory):
        self.path = str(Path(directory) / "lines.sock") if verbose else None
        self._threads, self._stop = [], threading.Event()

    def __enter__(self):
        if self.path:
            self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._server.bind(self.path)
            self._server.listen()
            self._server.settimeout(0.1)
            self._threads.append(threading.Thread(target=self._accept, daemon=True))
            self._threads[0].start()
        return self

    def sender(self):
        return _SocketLines(self.path) if self.path else None

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except (socket.timeout, OSError):
                continue
            t = threading.Thread(target=self._print_lines, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    @staticmethod
    def _print_lines(conn):
        conn.settimeout(None)
        with conn, conn.makefile("r", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                print(line.rstrip("\n"), flush=True)

    def __exit__(self, *exc):
        if self.path:
            self._stop.set()
            for t in list(self._threads):
                t.join(timeout=5)
            self._server.close()
        return False


class _SocketLines:
    """``put(line)`` for a worker: sends each line to the parent's ``_LineRelay``."""

    def __init__(self, path):
        self.path, self._sock = path, None

    def __getstate__(self):
        return {"path": self.path, "_sock": None}

    def __call__(self, line):
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.connect(self.path)
        self._sock.sendall((line + "\n").encode("utf-8"))

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def summary_line(many: ManyRuns, key: str = "valid_accuracy") -> str:
    """'valid_accuracy over 3 runs: mean 0.5012, range 0.4996 to 0.5062 (0.66 points)'."""
    values = [getattr(r, key) for r in many.records]
    if not values:
        return f"{key}: no run finished"
    lo, hi = min(values), max(values)
    return (f"{key} over {len(values)} runs: mean {np.mean(values):.4f}, range {lo:.4f} to {hi:.4f} "
            f"({100 * (hi - lo):.2f} points)")
