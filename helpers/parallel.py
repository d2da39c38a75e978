"""Train several networks at once (seeds, rate brackets, grids) with ``joblib.Parallel``.

Each network is one ``training.train`` call in a worker process: joblib's default backend
(loky) on this machine, or any other the caller chooses, a Dask cluster included (README,
"More networks than one machine"): ``with joblib.parallel_config(backend="dask"): ...``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import json
import multiprocessing
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import joblib
from joblib.externals.loky.process_executor import TerminatedWorkerError
from tqdm import tqdm

from helpers import config


@dataclass(frozen=True)
class Run:
    """One network to train: its record's name, its seed, its learning rate, options of its build."""

    variant: str
    seed: int = config.SEED
    learning_rate: object = None  # None: train_many's learning_rate
    options: dict = field(default_factory=dict)  # build_model(seed, **options): a variant of the architecture


@dataclass(frozen=True)
class ManyRuns:
    """What ``train_many`` returns: the records, the failures, and ``model(variant)`` for a trained network."""

    records: tuple  # RunRecords, in the order of the runs asked for (failed ones left out)
    failures: dict  # variant -> the error, with its traceback
    seconds: float  # wall time of the whole call
    runs: tuple  # the Runs, learning rates filled in
    build_model: object = field(repr=False)
    weights: dict = field(repr=False, default_factory=dict)  # variant -> trained weights (get_weights order)

    def record(self, variant: str):
        """The record of one variant (KeyError names the failures if it has none)."""
        for r in self.records:
            if r.variant == variant:
                return r
        raise KeyError(f"no record {variant!r}: it failed ({sorted(self.failures)} did) or was not asked for")

    def model(self, variant: str):
        """The trained network of ``variant``, built as it was trained (one built by hand is untrained)."""
        record = self.record(variant)
        run = next(r for r in self.runs if r.variant == variant)
        model = self.build_model(record.config["seed"], **run.options)
        model.set_weights(self.weights[variant])
        return model


def train_many(build_model, data, runs, *, learning_rate=None, compile_model=None, n_jobs: int | None = None,
               verbose: int = 1, **train_kwargs) -> ManyRuns:
    """Train one network per ``Run`` with ``joblib.Parallel``; return their records (``ManyRuns``).

    Args:
        build_model: ``build_model(seed, **run.options)`` returns a fresh, uncompiled model
            (a lambda is fine: joblib sends it to the workers with cloudpickle).
        runs: ``Run`` objects, or variant names for the default seed; names must be unique.
        learning_rate, compile_model: the rate of runs that set none; ``compile_model(model, rate)``.
        n_jobs: trainings at a time; default one per core (capped by ``CIFAR10_WORKERS``), or
            what ``joblib.parallel_config(n_jobs=...)`` says; 1: one after another, here.
        verbose: 1 one bar of the epochs done, then a line per network; 2 also a line per epoch; 0 only failures.
        train_kwargs: ``training.train``'s keywords (max_epochs, patience, batch_size, ...),
            except ``seed`` (each Run has its own). Checked before any worker starts.
    A network that fails is reported in ``failures`` and printed; the others' records are kept.
    """
    from helpers import training

    runs = [Run(r) if isinstance(r, str) else r for r in runs]
    runs = [r if r.learning_rate is not None else dataclasses.replace(r, learning_rate=learning_rate) for r in runs]
    _check(build_model, runs, train_kwargs, training.train)
    max_epochs = training.resolve_lengths(config.SETTINGS, train_kwargs.get("max_epochs"), 1, 1)[0]
    n_jobs = n_jobs or joblib.parallel.get_active_backend()[1] or config.max_workers() or -1
    start, outcomes = time.perf_counter(), {}
    with tempfile.TemporaryDirectory(prefix="train_many-", ignore_cleanup_errors=True) as folder, \
            _Progress(Path(folder), [r.variant for r in runs], max_epochs, verbose, n_jobs) as progress:
        jobs = (joblib.delayed(_train_one)(build_model, compile_model, data, run, train_kwargs, f"{folder}/{i}.jsonl")
                for i, run in enumerate(runs))
        try:
            for variant, outcome in joblib.Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs):
                outcomes[variant] = outcome
                progress.finished(variant, outcome)
        except TerminatedWorkerError as e:  # joblib stops the whole call when a worker dies
            for run in runs:
                outcomes.setdefault(run.variant, f"{type(e).__name__}: a worker process died (killed, or out of "
                                                 "memory) before this network finished; call train_many again: "
                                                 "each network resumes from its last backup")
    failures = {r.variant: outcomes[r.variant] for r in runs if isinstance(outcomes[r.variant], str)}
    for variant, message in failures.items():
        print(f"[{variant}] FAILED: {message.strip().splitlines()[-1]}", flush=True)
    done = [r.variant for r in runs if r.variant not in failures]
    return ManyRuns(records=tuple(outcomes[v][0] for v in done), failures=failures,
                    seconds=time.perf_counter() - start, runs=tuple(runs), build_model=build_model,
                    weights={v: outcomes[v][1] for v in done})


def _check(build_model, runs, train_kwargs, train):
    """Refuse what would make every worker fail, before any starts: names, rates, keywords, the builder."""
    if not runs:
        raise ValueError("no runs to train")
    names = [r.variant for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique, got {names}")
    if missing := [r.variant for r in runs if r.learning_rate is None]:
        raise ValueError(f"no learning rate for {missing}: pass learning_rate= or set it in each Run")
    if "seed" in train_kwargs:
        raise TypeError("train_many takes no seed=: each Run carries its own (Run(variant, seed, rate))")
    allowed = set(inspect.signature(train).parameters) - {"model", "data", "variant", "seed", "verbose"}
    if unknown := sorted(set(train_kwargs) - allowed):
        raise TypeError(f"train_many got unexpected keywords {unknown}; it takes train_many's own and "
                        f"training.train's: {sorted(allowed)}")
    import keras

    if not callable(build_model) or isinstance(build_model, keras.Model):
        raise TypeError(f"build_model must be a function build_model(seed, **options), got {build_model!r}")
    for run in runs:
        try:
            inspect.signature(build_model).bind(run.seed, **run.options)
        except TypeError as e:
            raise TypeError(f"build_model cannot be called as build_model(seed, **{run.options}) for run "
                            f"{run.variant!r} ({e}): it must take the seed as its first argument, e.g. "
                            "lambda seed: models.build_dnn(seed=seed)") from None


def _quiet_in_a_worker():
    """Swallow what ``train`` prints, in a worker process only: ``_Progress`` says it in its own line instead."""
    in_worker = multiprocessing.parent_process() is not None
    return contextlib.redirect_stdout(io.StringIO()) if in_worker else contextlib.nullcontext()


def _train_one(build_model, compile_model, data, run, train_kwargs, lines):
    """In a worker: build, compile, train one network; ``(variant, (record, weights))`` or ``(variant, traceback)``."""
    try:
        from helpers import notebook  # noqa: F401  (in a fresh worker: the backend and a quiet TensorFlow first)
        import keras
        from helpers import training

        def log_epoch(epoch, logs):  # one JSON line per epoch for _Progress; none on a machine without the folder
            if Path(lines).parent.is_dir():
                with open(lines, "a") as f:
                    f.write(json.dumps({"variant": run.variant, "epoch": epoch + 1,
                                        **{k: float(v) for k, v in (logs or {}).items()}}) + "\n")

        model = build_model(run.seed, **run.options)
        (compile_model or training.compile_model)(model, run.learning_rate)
        extra = {**(train_kwargs.get("extra_config") or {}), **({"build_options": run.options} if run.options else {})}
        log = keras.callbacks.LambdaCallback(on_epoch_end=log_epoch)
        kwargs = {**train_kwargs, "extra_config": extra, "callbacks": [*train_kwargs.get("callbacks", ()), log]}
        with _quiet_in_a_worker():  # a worker's own line would land in the middle of the parent's bar
            record = training.train(model, data, run.variant, seed=run.seed, verbose=0, **kwargs)
        return run.variant, (record, model.get_weights())
    except Exception:
        return run.variant, traceback.format_exc()


class _Progress(threading.Thread):
    """One bar of epochs done for all the networks, fed by the lines ``_train_one`` writes."""

    def __init__(self, folder: Path, variants, max_epochs: int, verbose: int, n_jobs: int):
        super().__init__(daemon=True)
        self.folder, self.verbose, self.max_epochs = folder, verbose, max_epochs
        self.read, self.done, self.counted, self.lock, self.stop = {}, {}, {}, threading.Lock(), threading.Event()
        if verbose:
            how = ("one after another, here" if n_jobs == 1 else
                   f"with joblib ({type(joblib.parallel.get_active_backend()[0]).__name__})")
            print(f"training {len(variants)} network{'s' * (len(variants) > 1)} {how}", flush=True)
        self.bar = tqdm(total=len(variants) * max_epochs, unit="epoch", file=sys.stdout, mininterval=1, ascii=True,
                        disable=not verbose, bar_format="{l_bar}{bar:30}| {n_fmt}/{total_fmt} epochs [{elapsed}]")

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join()
        self._poll()
        self.bar.close()

    def run(self):
        while not self.stop.wait(0.5):
            self._poll()

    def _poll(self):
        with self.lock:
            for path in sorted(self.folder.glob("*.jsonl")):
                text = path.read_text()
                lines = text[self.read.get(path, 0):text.rfind("\n") + 1]  # whole lines only
                self.read[path] = self.read.get(path, 0) + len(lines)
                for line in lines.splitlines():
                    e = json.loads(line)
                    if self.verbose >= 2:
                        nan = float("nan")
                        self.bar.write(f"[{e['variant']}] epoch {e['epoch']}: loss {e.get('loss', nan):.4f}, val_loss "
                                       f"{e.get('val_loss', nan):.4f}, val_accuracy {100 * e.get('val_accuracy', nan):.2f}%",
                                       sys.stdout)
                    if e["variant"] not in self.done:
                        self.bar.update(1)
                        self.counted[e["variant"]] = self.counted.get(e["variant"], 0) + 1

    def finished(self, variant, outcome):
        self._poll()
        with self.lock:
            self.done[variant] = outcome
            self.bar.update(self.max_epochs - self.counted.get(variant, 0))  # over: failed, stopped early or read back
            if isinstance(outcome, str):
                return
            record = outcome[0]
            if self.verbose:
                again = (" (read back)" if record.config.get("read_back") else
                         f" (resumed after epoch {record.config['resumed_after_epoch']})"
                         if record.config.get("resumed_after_epoch") else "")
                self.bar.write(f"[{variant}] {record.epochs} epochs, kept epoch {record.best_epoch}: validation "
                               f"accuracy {100 * record.valid_accuracy:.2f}%{again}", sys.stdout)
