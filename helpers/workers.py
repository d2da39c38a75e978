"""The ``"processes"`` method of ``parallel.train_many``: joblib worker processes, one network each.

joblib's process pool (``loky``) runs one worker per network, at most as many at a time as
``parallel.plan_workers`` says. A worker that has a core to itself is pinned to it: two
trainings on two cores then run 12% faster per epoch than left to the scheduler
(``benchmarks/pinning.py``). Each worker runs ``training.train``'s loop and writes its epochs,
one JSON line each, to a file that the parent reads as it grows (``progress.FileReport``,
``progress.Follow``): the bar and the lines come from there, whole. If a worker dies (killed,
out of memory), joblib stops the whole pool: the networks lost with it are trained again, one
at a time in a fresh worker each (each resumes from its last checkpoint), and only one whose
worker dies again is reported as failed. The workers stop when the call ends: none stays idle
holding memory. Used by ``helpers.parallel``.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import traceback
import warnings
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from helpers import progress


class Finishes:
    """A report that passes epochs and notes on, and leaves ``finished`` to ``train_many``."""

    def __init__(self, display):
        self.epoch, self.note = display.epoch, display.note

    def finished(self, record):
        pass


def train_one(build_model, data, run, display, kwargs):
    """Train one network with ``training.train``'s loop: ``(variant, (record, weights))`` or ``(variant, traceback)``."""
    from helpers import training

    kwargs = dict(kwargs)
    compile_fn = kwargs.pop("compile_model", None) or training.compile_model
    if run.options:
        kwargs["extra_config"] = {**(kwargs.get("extra_config") or {}), "build_options": dict(run.options)}
    try:
        model = compile_fn(build_model(run.seed, **run.options), run.learning_rate)
        [record] = training.train_networks(training.Solo(model), data, [(run.variant, run.seed)],
                                           report=Finishes(display), **kwargs)
        return run.variant, (record, model.get_weights())
    except Exception:  # reported with its traceback; the other networks go on
        return run.variant, traceback.format_exc()


def train_in_processes(build_model, data, runs, workers, display, kwargs):
    """Train ``runs`` in joblib worker processes; ``{variant: (record, weights) or error}``."""
    import cloudpickle

    # the functions travel as bytes, unpickled in the worker only after TensorFlow's start-up
    # log is silenced (unpickling them imports Keras, which may load TensorFlow and print)
    compile_model = kwargs.pop("compile_model", None)
    functions = cloudpickle.dumps((build_model, compile_model))
    with tempfile.TemporaryDirectory(prefix="train_many_") as folder, progress.Follow(Path(folder), display):
        outcomes = _pool(functions, data, runs, workers, folder, kwargs,
                         while_starting=lambda: _precompile(build_model, compile_model, data, runs[0], kwargs))
        for run in [r for r in runs if r.variant not in outcomes]:  # lost when a worker died: again, alone
            display.note(run.variant, "its worker process died (or one beside it did): training it again, alone")
            outcomes |= _pool(functions, data, [run], 1, folder, kwargs) or {
                run.variant: "its worker process died, twice: killed, or out of memory"}
    return outcomes


def _pool(functions, data, runs, workers, folder, kwargs, while_starting=None):
    """One joblib pool over ``runs``; the outcomes it got before a worker died, if one did.

    ``while_starting()`` runs here once the jobs are dispatched, while the workers start.
    """
    from joblib import Parallel, delayed, parallel_config

    outcomes = {}
    jobs = (delayed(_in_worker)(functions, data, run, kwargs, folder) for run in runs)
    # n_jobs=1 would train here, in this process: a lone job gets a pool of 2. One worker per core
    # or fewer: each on its own core; more (sharing the cores, plan_workers): the scheduler's
    pin = hasattr(os, "sched_setaffinity") and workers <= len(os.sched_getaffinity(0))
    with parallel_config(backend="loky", initializer=_worker_environment, initargs=(pin,)), \
            warnings.catch_warnings():
        # loky replaces a worker whose memory grew by over 300 MB during a job (its guard against
        # leaks: a training's compiled code and caches grow that much) and warns; the job is done
        warnings.filterwarnings("ignore", category=UserWarning, module="joblib.externals.loky.process_executor")
        try:
            results = Parallel(n_jobs=max(workers, 2), return_as="generator_unordered", pre_dispatch="all")(jobs)
            if while_starting is not None:  # the call above has started the workers and sent them the jobs
                while_starting()
            for variant, outcome in results:
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


def _worker_environment(pin):
    """In each new worker, before JAX or TensorFlow start: its core, its GPU memory, TensorFlow's log.

    ``pin``: claim a core no other worker holds (a lock file per core, in one folder for the
    whole machine, so two calls at once share out the cores; held until the worker exits) and
    run every thread on it; with every core taken, the worker is left to the scheduler. Two trainings on two cores run
    12-14% faster per epoch that way than left to the scheduler, where each one's threads
    spill onto the other's core (``benchmarks/pinning.py``). On a GPU, memory is taken as
    needed rather than 75% of it up front by each worker.
    """
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # TensorFlow
    if pin:
        _pin_to_a_free_core()
    # TensorFlow imported with its start-up log held back, before the first job's arguments are
    # unpickled (a learning-rate schedule among them imports Keras, and Keras TensorFlow)
    import helpers.notebook  # noqa: F401


def _pin_to_a_free_core():
    import fcntl  # Linux (pin is False where sched_setaffinity is missing)

    global _CORE_LOCK
    folder = Path(tempfile.gettempdir()) / "cifar10-core-locks"
    for core in sorted(os.sched_getaffinity(0)):
        try:  # a folder another user made, say: left to the scheduler then, never a broken pool
            folder.mkdir(exist_ok=True)
            lock = open(folder / f"core{core}.lock", "w")
        except OSError:
            return
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        _CORE_LOCK = lock  # held while this worker lives
        for thread in os.listdir("/proc/self/task"):  # loky's own threads too; JAX's inherit it
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.sched_setaffinity(int(thread), {core})
        return


_CORE_LOCK = None


def _in_worker(functions, data, run, kwargs, folder):
    """A worker's job: one network, its epochs and lines written to ``folder``, its outcome returned."""
    import pickle

    from helpers import engine

    try:  # anything that fails here is this network's failure, not the whole call's
        build_model, compile_model = pickle.loads(functions)
        engine.enable_compilation_cache()
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run.variant)
        report = progress.FileReport(Path(folder) / f"{os.getpid()}-{safe}.jsonl")
    except Exception:
        return run.variant, traceback.format_exc()
    lines = progress.Lines(lambda text: report.note(run.variant, text))
    try:
        with contextlib.redirect_stdout(lines), contextlib.redirect_stderr(lines):
            return train_one(build_model, data, run, report, {**kwargs, "compile_model": compile_model})
    finally:
        lines.flush()
        report.close()


def _precompile(build_model, compile_model, data, run, kwargs):
    """While the workers start, compile their step here once, into the disk cache they load it from.

    A cold worker compiles it on its one core (about 9 s here, against 2.3 s for a later
    epoch); loading it takes about 6 s (benchmarks/README.md). If this fails, each worker
    compiles for itself, and a warning says why.
    """
    from helpers import engine, training

    try:
        model = (compile_model or training.compile_model)(build_model(run.seed, **run.options), run.learning_rate)
        engine.precompile_for_workers(model, data, kwargs.get("batch_size") or kwargs["settings"].batch_size,
                                      kwargs.get("evaluate_test", True), kwargs.get("random_flip", False))
    except Exception as e:  # noqa: BLE001 - an optimization: the workers would compile anyway
        warnings.warn(f"precompiling the workers' step failed ({type(e).__name__}: {e}); each worker "
                      "compiles it for itself", RuntimeWarning, stacklevel=2)
