"""Train several networks at once: seeds, learning rates, variants of one architecture.

Every comparison in the series rests on more than one run: three seeds per final model,
a grid of learning rates. ``train_many`` trains them together and returns ordinary
``RunRecord``s, one per network, each what ``training.train`` gives the network alone:

- ``"processes"`` (a CPU; ``helpers.workers``): one worker process per network, as many
  at a time as there are cores, each on a core of its own. At batch 32 one training
  barely uses a second core, so K trainings on K cores cost about what one costs
  (``benchmarks/README.md``); 3 networks on 2 cores run all at once, sharing the cores
  (``plan_workers``). A network that fails is reported with its traceback, and the
  others' records are kept, even when a worker dies.
- ``"vmap"`` (a GPU under JAX; ``helpers.vmapped``): all networks in one compiled step,
  a group per architecture or schedule.

Which one: ``method=``, else ``CIFAR10_TRAIN_MANY`` (``helpers.config``), else vmap on a
JAX GPU and processes anywhere else.
Used in: notebooks 02-06.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field

from helpers import config, progress, workers

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
            batch_size, random_flip, resume, ...), with the same meaning, on either method;
            not ``seed`` (each Run has its own). Another name is a TypeError, before any training.
    Returns:
        ``ManyRuns``. A network that fails is reported in ``failures`` and printed; the
        other records are kept. Under ``"vmap"`` the networks of a group share one step, so
        an error there stops the call (a diverging network is no error: it stops alone).
    """
    from helpers import training

    _check_train_kwargs(train_kwargs, training.train)
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
    start = time.perf_counter()
    kwargs = dict(compile_model=compile_model, settings=settings, **train_kwargs)
    networks = f"{len(runs)} network{'s' if len(runs) > 1 else ''}"
    n_cores = min(cores(), config.max_workers() or cores())
    n_workers = 1 if method == "vmap" else plan_workers(len(runs), n_cores, n_jobs)
    if method == "vmap":
        _say(verbose, f"training {networks} side by side in one compiled step (vmap)")
    elif n_workers == 1:
        _say(verbose, f"training {networks}, one after another, in this process")
    else:
        _say(verbose, f"training {networks}, {n_workers} at a time, in worker processes ({n_cores} cores); "
                      "epochs show once they start")
    display = progress.Display(names, max_epochs, verbose)  # its bar is drawn now: after the line above
    if method == "vmap":
        from helpers import vmapped

        records, weights = vmapped.train_side_by_side(build_model, data, runs, report=workers.Finishes(display),
                                                      **kwargs)
        outcomes = {r.variant: (r, weights[r.variant]) for r in records}
    elif n_workers == 1:
        outcomes = {r.variant: workers.train_one(build_model, data, r, display, kwargs)[1] for r in runs}
    else:
        outcomes = workers.train_in_processes(build_model, data, runs, n_workers, display, kwargs)
    for run in runs:
        if not isinstance(outcomes[run.variant], str):
            display.finished(outcomes[run.variant][0])
    display.close()
    failures = {r.variant: outcomes[r.variant] for r in runs if isinstance(outcomes[r.variant], str)}
    for variant, message in failures.items():
        print(f"[{variant}] FAILED: {message.strip().splitlines()[-1]}", flush=True)
    done = [outcomes[r.variant] for r in runs if r.variant not in failures]
    return ManyRuns(records=tuple(rec for rec, _ in done), failures=failures, seconds=time.perf_counter() - start,
                    method=method, workers=n_workers, weights={rec.variant: w for rec, w in done}, runs=tuple(runs))


def _check_train_kwargs(train_kwargs, train):
    """Refuse a keyword ``train`` doesn't take here, before any worker starts (else every network fails)."""
    import inspect

    allowed = set(inspect.signature(train).parameters) - {"model", "data", "variant", "seed", "verbose"}
    if "seed" in train_kwargs:
        raise TypeError("train_many takes no seed=: each Run carries its own (Run(variant, seed, rate))")
    unknown = sorted(set(train_kwargs) - allowed)
    if unknown:
        raise TypeError(f"train_many got unexpected keywords {unknown}; it takes train_many's own and "
                        f"training.train's: {sorted(allowed)}")


def _say(verbose, text):
    if verbose:
        print(text, flush=True)
