"""Train several networks at once: seeds, learning rates, variants of one architecture.

Every comparison in the series rests on more than one run: three seeds per final model,
a grid of learning rates. ``train_many`` trains them together and returns ordinary
``RunRecord``s, one per network, each what ``training.train`` gives the network alone:

- ``"processes"`` (a CPU): joblib's process pool (``loky``), one worker process per
  network, as many at a time as there are cores. At batch 32 one training barely uses
  a second core, so K trainings on K cores cost about what one costs
  (``benchmarks/README.md``); 3 networks on 2 cores run all at once, sharing the cores
  (``plan_workers``). Each worker runs ``training.train``'s loop and writes its epochs,
  one JSON line each, to a file that this process reads as it grows: the progress bar
  and the lines come from there, whole. A network that fails is reported with its
  traceback; if a worker dies (killed, out of memory), joblib stops the whole pool, so
  the networks lost with it are trained again, one at a time (each resumes from its
  last checkpoint), and only one whose worker dies again is reported as failed. The
  workers stop when the call ends: none stays idle holding memory.
- ``"vmap"`` (a GPU under JAX): all networks in one compiled step (``helpers.vmapped``),
  a group per architecture or schedule.

Which one: ``method=``, else ``CIFAR10_TRAIN_MANY`` (``helpers.config``), else vmap on a
JAX GPU and processes anywhere else.
Used in: notebooks 02-06.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import tempfile
import threading
import time
import traceback
import warnings
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpers import config, progress

METHODS = config.TRAIN_MANY_METHODS


@dataclass(frozen=True)
class Run:
    """One network to train: its record's name, its seed, its learning rate, and options of its build.

    ``options`` go to ``build_model(seed, **options)``: a variant of the architecture (a
    dropout rate, say) trained beside the others.
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
    weights: dict = field(default_factory=dict, repr=False)  # variant -> best weights (model.get_weights() order)
    runs: tuple = ()  # the Runs asked for, learning rates filled in

    def model(self, variant: str, build_model, seed=None):
        """The trained network of one variant: ``build_model(seed, **options)`` with its best weights set."""
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
    """``CIFAR10_TRAIN_MANY`` if set; else ``"vmap"`` when Keras runs on JAX with a GPU, else ``"processes"``."""
    forced = config.train_many_method()
    if forced:
        return forced
    import keras

    if keras.backend.backend() == "jax":
        import jax

        if jax.default_backend() in ("gpu", "cuda", "rocm"):
            return "vmap"
    return "processes"


def cores() -> int:
    """How many CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def plan_workers(k: int, n_cores: int, n_jobs: int | None = None) -> int:
    """How many worker processes train ``k`` networks on ``n_cores`` at a time.

    One per core, in rounds, unless the last round would leave cores idle and one worker
    per network fits in twice the cores: then all ``k`` at once, sharing the cores (3
    networks on 2 cores: 1.5 rounds of work instead of 2). ``n_jobs`` is taken as it is.
    """
    if n_jobs is not None:
        return min(k, n_jobs)
    if k <= n_cores or k % n_cores == 0 or k > 2 * n_cores:
        return min(k, n_cores)
    return k


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
        n_jobs: worker processes at a time (``"processes"``); default ``plan_workers``, on at
            most ``CIFAR10_WORKERS`` cores when that is set (``helpers.config``); 1 trains one
            network after another in this process.
        verbose: 1 shows one progress bar for all of them, then a table; 2 one line per epoch
            per network; 0 only failures (``helpers.progress``).
        compile_model: ``compile_model(model, learning_rate)``; default
            ``helpers.training.compile_model`` (Nadam).
        train_kwargs: every keyword ``helpers.training.train`` takes (max_epochs, patience,
            batch_size, random_flip, resume, ...), with the same meaning, on either method.
    Returns:
        ``ManyRuns``. A network that fails is reported in ``failures`` and printed; the
        other records are kept.
    """
    from helpers import training

    runs = [Run(r) if isinstance(r, str) else r for r in runs]
    if not runs:
        raise ValueError("no runs to train")
    names = [r.variant for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique, got {names}")
    runs = [r if r.learning_rate is not None else dataclasses.replace(r, learning_rate=learning_rate) for r in runs]
    missing = [r.variant for r in runs if r.learning_rate is None]
    if missing:
        raise ValueError(f"no learning rate for {missing}: pass learning_rate= or set it in each Run")
    method = method or default_method()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if n_jobs is not None and n_jobs < 1:
        raise ValueError(f"n_jobs must be at least 1, got {n_jobs}")
    settings = settings or config.SETTINGS
    max_epochs = training.resolve_lengths(settings, train_kwargs.get("max_epochs"), train_kwargs.get("patience"),
                                          train_kwargs.get("batch_size"))[0]
    display = progress.Display(names, max_epochs, verbose)
    start = time.perf_counter()
    kwargs = dict(compile_model=compile_model, settings=settings, **train_kwargs)
    if method == "vmap":
        workers = 1
        _say(verbose, f"training {len(runs)} networks side by side in one compiled step (vmap)")
        records, weights = _vmapped(build_model, data, runs, display, kwargs)
        outcomes = {r.variant: (r, weights[r.variant]) for r in records}
    else:
        n_cores = min(cores(), config.max_workers() or cores())
        workers = plan_workers(len(runs), n_cores, n_jobs)
        if workers == 1:
            _say(verbose, f"training {len(runs)} networks one after another, in this process")
            outcomes = {r.variant: _train_one(build_model, data, r, display, kwargs)[1] for r in runs}
        else:
            _say(verbose, f"training {len(runs)} networks, {workers} at a time, in worker processes "
                          f"({n_cores} cores); the first epochs come after the workers start")
            outcomes = _in_processes(build_model, data, runs, workers, display, kwargs)
    for run in runs:
        if not isinstance(outcomes[run.variant], str):
            display.finished(outcomes[run.variant][0])
    display.close()
    failures = {r.variant: outcomes[r.variant] for r in runs if isinstance(outcomes[r.variant], str)}
    for variant, message in failures.items():
        print(f"[{variant}] FAILED: {message.strip().splitlines()[-1]}", flush=True)
    done = [outcomes[r.variant] for r in runs if r.variant not in failures]
    return ManyRuns(records=tuple(rec for rec, _ in done), failures=failures, seconds=time.perf_counter() - start,
                    method=method, workers=workers, weights={rec.variant: w for rec, w in done}, runs=tuple(runs))


def _say(verbose, text):
    if verbose:
        print(text, flush=True)


def _vmapped(build_model, data, runs, display, kwargs):
    from helpers import vmapped

    return vmapped.train_side_by_side(build_model, data, runs, report=_Finishes(display), **kwargs)


class _Finishes:
    """A report that passes epochs and notes on, and leaves ``finished`` to ``train_many``."""

    def __init__(self, display):
        self.epoch, self.note = display.epoch, display.note

    def finished(self, record):
        pass


def _train_one(build_model, data, run, display, kwargs):
    """Train one network with ``training.train``'s loop: ``(variant, (record, weights))`` or ``(variant, traceback)``."""
    from helpers import training

    kwargs = dict(kwargs)
    compile_fn = kwargs.pop("compile_model", None) or training.compile_model
    if run.options:
        kwargs["extra_config"] = {**(kwargs.get("extra_config") or {}), "build_options": dict(run.options)}
    try:
        model = compile_fn(build_model(run.seed, **run.options), run.learning_rate)
        [record] = training.train_networks(training.Solo(model), data, [(run.variant, run.seed)],
                                           report=_Finishes(display), **kwargs)
        return run.variant, (record, model.get_weights())
    except Exception:  # reported with its traceback; the other networks go on
        return run.variant, traceback.format_exc()


def _in_processes(build_model, data, runs, workers, display, kwargs):
    """Train ``runs`` in joblib worker processes; ``{variant: (record, weights) or error}``."""
    import cloudpickle

    # the functions travel as bytes, unpickled in the worker only after TensorFlow's start-up
    # log is silenced (unpickling them imports Keras, which may load TensorFlow and print)
    compile_model = kwargs.pop("compile_model", None)
    functions = cloudpickle.dumps((build_model, compile_model))
    with tempfile.TemporaryDirectory(prefix="train_many_") as folder, _Follow(Path(folder), display):
        _precompile(build_model, compile_model, data, runs[0], kwargs)
        outcomes = _pool(functions, data, runs, workers, folder, kwargs)
        for run in [r for r in runs if r.variant not in outcomes]:  # lost when a worker died: again, alone
            display.note(run.variant, "its worker process died (or one beside it did): training it again, alone")
            outcomes |= _pool(functions, data, [run], 1, folder, kwargs) or {
                run.variant: "its worker process died, twice: killed, or out of memory"}
    return outcomes


def _pool(functions, data, runs, workers, folder, kwargs):
    """One joblib pool over ``runs``; the outcomes it got before a worker died, if one did."""
    from joblib import Parallel, delayed, parallel_config

    outcomes = {}
    jobs = (delayed(_in_worker)(functions, data, run, kwargs, folder) for run in runs)
    # n_jobs=1 would train here, in this process: a lone job gets a pool of 2. One worker per core
    # or fewer: each on its own core; more (sharing the cores, plan_workers): the scheduler's
    pin = hasattr(os, "sched_setaffinity") and workers <= cores()
    with parallel_config(backend="loky", initializer=_worker_environment, initargs=(folder, pin)):
        try:
            for variant, outcome in Parallel(n_jobs=max(workers, 2), return_as="generator_unordered",
                                             pre_dispatch="all")(jobs):
                outcomes[variant] = outcome
        except BrokenProcessPool:  # a worker died; joblib stopped the others with it
            pass
        finally:
            _release_workers()
    return outcomes


def _release_workers():
    """Stop the idle workers now (about 1 GB each) instead of after joblib's 5 idle minutes.

    joblib keeps them for its next call and has no call of its own to stop them (joblib
    issue #881); ``get_reusable_executor`` is the pool joblib uses, from loky's public API.
    """
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor(reuse=True).shutdown(wait=True)


def _worker_environment(lock_folder, pin):
    """In each new worker, before JAX or TensorFlow start: its core, and its GPU memory.

    ``pin``: claim a core no other worker of this call holds (a lock file per core, held
    until the worker exits) and run every thread on it. Two trainings on two cores run
    about 14% faster per epoch that way than left to the scheduler, where each one's
    threads spill onto the other's core (``benchmarks/pinning.py``). On a GPU, memory is
    taken as needed rather than 75% of it up front by each worker.
    """
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # TensorFlow
    if not pin:
        return
    import fcntl  # Linux (pin is False where sched_setaffinity is missing)

    global _CORE_LOCK
    for core in sorted(os.sched_getaffinity(0)):
        lock = open(Path(lock_folder) / f"core{core}.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        _CORE_LOCK = lock  # held while this worker lives
        for thread in os.listdir("/proc/self/task"):  # loky's own threads too; JAX's inherit it
            os.sched_setaffinity(int(thread), {core})
        return


_CORE_LOCK = None


def _in_worker(functions, data, run, kwargs, folder):
    """A worker's job: one network, its epochs and lines written to ``folder``, its outcome returned."""
    import pickle

    import helpers.notebook  # noqa: F401 - imports TensorFlow with its start-up log silenced
    from helpers import engine

    build_model, compile_model = pickle.loads(functions)
    engine.enable_compilation_cache()
    report = _FileReport(Path(folder) / f"{os.getpid()}-{run.variant}.jsonl")
    lines = _Lines(lambda text: report.note(run.variant, text))
    try:
        with contextlib.redirect_stdout(lines), contextlib.redirect_stderr(lines):
            return _train_one(build_model, data, run, report, {**kwargs, "compile_model": compile_model})
    finally:
        lines.flush()
        report.close()


class _FileReport:
    """A worker's report: each epoch and note as one JSON line, appended to its own file."""

    def __init__(self, path):
        self.file = open(path, "a", encoding="utf-8")

    def _write(self, kind, content):
        self.file.write(json.dumps({"kind": kind, **content}) + "\n")
        self.file.flush()

    def epoch(self, e):
        self._write("epoch", dataclasses.asdict(e))

    def note(self, variant, text):
        self._write("note", {"variant": variant, "text": text})

    def close(self):
        self.file.close()


class _Lines(io.TextIOBase):
    """A stdout that hands on whole lines (a worker's prints and warnings)."""

    def __init__(self, put):
        self.put, self.buffer = put, ""

    def write(self, text):
        *lines, self.buffer = (self.buffer + text).split("\n")
        for line in lines:
            if line.strip():
                self.put(line)
        return len(text)

    def flush(self):
        if self.buffer.strip():
            self.put(self.buffer)
        self.buffer = ""


class _Follow(threading.Thread):
    """Reads the workers' files as they grow (every 0.2 s) and hands each whole line to the display."""

    def __init__(self, folder: Path, display):
        super().__init__(daemon=True)
        self.folder, self.display, self.read, self.stop = folder, display, {}, threading.Event()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join()
        self.poll()  # what came after the last look

    def run(self):
        while not self.stop.wait(0.2):
            self.poll()

    def poll(self):
        for path in sorted(self.folder.glob("*.jsonl")):
            with open(path, encoding="utf-8") as f:
                f.seek(self.read.get(path, 0))
                text = f.read()
            whole = text[: text.rfind("\n") + 1]  # a line still being written waits for the next look
            self.read[path] = self.read.get(path, 0) + len(whole.encode("utf-8"))
            for line in whole.splitlines():
                event = json.loads(line)
                if event.pop("kind") == "epoch":
                    self.display.epoch(progress.EpochEnd(**event))
                else:
                    self.display.note(event["variant"], event["text"])


def _precompile(build_model, compile_model, data, run, kwargs):
    """While the workers start, compile their steps here once, into the disk cache they read.

    A cold worker compiles the step on its one core in its first epoch (about 9 s here,
    against 2.3 s for later epochs); with the step in the disk cache it loads it instead
    (about 6 s, measured on a second run: benchmarks/README.md). If it fails, the workers
    compile for themselves, and a warning says why.
    """
    import keras

    if keras.backend.backend() != "jax":
        return
    from helpers import engine, training

    try:
        engine.enable_compilation_cache()
        model = (compile_model or training.compile_model)(build_model(run.seed, **run.options), run.learning_rate)
        batch_size = kwargs.get("batch_size") or kwargs["settings"].batch_size
        sizes = [len(data.y_valid)] + ([len(data.y_test)] if kwargs.get("evaluate_test", True) else [])
        engine.JaxStepper(model).precompile(len(data.y_train), data.x_train.shape[1:], batch_size, sizes)
    except Exception as e:  # noqa: BLE001 - an optimization: the workers would compile anyway
        warnings.warn(f"precompiling the workers' step failed ({type(e).__name__}: {e}); each worker "
                      "compiles it for itself", RuntimeWarning, stacklevel=2)


def summary_line(many: ManyRuns, key: str = "valid_accuracy") -> str:
    """'valid_accuracy over 3 runs: mean 0.5012, range 0.4996 to 0.5062 (0.66 points)'."""
    values = [getattr(r, key) for r in many.records]
    if not values:
        return f"{key}: no run finished"
    lo, hi = min(values), max(values)
    return (f"{key} over {len(values)} runs: mean {np.mean(values):.4f}, range {lo:.4f} to {hi:.4f} "
            f"({100 * (hi - lo):.2f} points)")
