"""What a training shows while it runs: one progress bar per group of networks, or one line per epoch.

``training.train`` (one network) and ``parallel.train_many`` (several, in this process, in
worker processes or side by side) report the end of every epoch of every network as an
``EpochEnd``; a ``Display`` shows them:

- ``verbose=1``: one text progress bar for the group, advancing one step per epoch of any
  network, with the best validation accuracy so far; when the group is done, one line per
  network (a table for several). In a notebook the bar redraws in place;
  ``helpers.run_notebooks`` keeps only its last state in the saved notebook.
- ``verbose=2``: one whole line per epoch per network (for logs and terminals);
- ``verbose=0``: nothing.

Every line is printed whole, under a lock, so two networks' lines never share a line.
(``tqdm.auto`` would draw a widget in JupyterLab, but a saved notebook keeps a widget's
first state, an empty bar, which is what GitHub and the book would show.)
Used in: ``helpers.training``, ``helpers.parallel``.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

WIDTH = 96  # characters: output lines stay under about 100, unwrapped at a laptop's width


@dataclass(frozen=True)
class EpochEnd:
    """One network's numbers at the end of one epoch."""

    variant: str
    epoch: int
    max_epochs: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float
    improved: bool  # the best epoch so far
    stopped: str | None = None  # "early_stopping" or "nan" when this epoch ends the training


def epoch_line(e: EpochEnd) -> str:
    """'epoch  12/100  loss 1.2345  acc 0.5678 | val_loss ... | 2.3 s  *best'."""
    return (f"epoch {e.epoch:3d}/{e.max_epochs}  loss {e.loss:.4f}  acc {e.accuracy:.4f} | "
            f"val_loss {e.val_loss:.4f}  val_acc {e.val_accuracy:.4f} | {e.seconds:5.1f} s"
            f"{'  *best' if e.improved else ''}")


def nan_line(e: EpochEnd) -> str:
    """Why a training stopped on a loss that is not finite, and what to do."""
    return (f"stopped: the loss is {e.loss} at epoch {e.epoch}; the learning rate is too high for this "
            "network (try a lower one, or run the LR finder)")


def record_line(record) -> str:
    """One finished run in a sentence: best epoch, accuracies, speed."""
    stopped = record.stopped.replace("_", " ")
    return (f"{record.variant}: best epoch {record.best_epoch} of {record.epochs} ({stopped}); "
            f"valid {100 * record.valid_accuracy:.2f}%, test {_percent(record.test_accuracy)}; "
            f"{record.seconds_per_epoch:.1f} s/epoch")


def records_table(records) -> str:
    """Finished runs as a small fixed-width table: name, seed, rate, epochs, best validation loss, accuracies, speed."""
    width = max([len("run")] + [len(r.variant) for r in records])
    lines = [f"{'run':<{width}} {'seed':>4} {'rate':>8} {'best/epochs':>11} {'val loss':>8} {'valid':>7} "
             f"{'test':>7} {'s/epoch':>7}"]
    for r in records:
        rate = r.learning_rate
        lines.append(f"{r.variant:<{width}} {r.config.get('seed', ''):>4} "
                     f"{(f'{rate:.2e}' if math.isfinite(rate) else '-'):>8} "
                     f"{f'{r.best_epoch}/{r.epochs}':>11} {r.valid_loss:8.4f} {100 * r.valid_accuracy:6.2f}% "
                     f"{_percent(r.test_accuracy):>7} {r.seconds_per_epoch:6.2f}s")
    return "\n".join(lines)


def _percent(value) -> str:
    return f"{100 * value:.2f}%" if math.isfinite(value) else "-"


class Display:
    """Shows a group's epochs as they end (see the module's docstring); close it at the end."""

    def __init__(self, variants, max_epochs: int, verbose: int = 1, out=None):
        self.variants, self.max_epochs, self.verbose = list(variants), max_epochs, verbose
        self.out = out or sys.stdout
        self.done = {}  # variant -> epochs counted on the bar
        self.records = []
        self.best = (-1.0, "")
        self._lock = threading.Lock()
        self._bar = None
        if verbose == 1:
            from tqdm import tqdm

            label = self.variants[0] if len(self.variants) == 1 else f"{len(self.variants)} networks"
            self._bar = tqdm(total=len(self.variants) * max_epochs, desc=label, unit="epoch", file=self.out,
                             ncols=WIDTH, mininterval=0.5, dynamic_ncols=False,
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} epochs "
                                        "[{elapsed}{postfix}]")

    def _print(self, text):
        if self._bar is not None:
            self._bar.write(text, file=self.out)
        else:
            print(text, file=self.out, flush=True)

    def _prefix(self, variant):
        return f"[{variant}] " if len(self.variants) > 1 else ""

    def epoch(self, e: EpochEnd):
        with self._lock:
            # a network that stops early will not use its remaining epochs: counted now; a resumed one
            # counts the epochs its checkpoint held; one trained again after its worker died, none twice
            counted = self.done.get(e.variant, 0)
            self.done[e.variant] = max(counted, self.max_epochs if e.stopped else e.epoch)
            if e.val_accuracy > self.best[0]:
                self.best = (e.val_accuracy, e.variant)
            if self._bar is not None:
                self._bar.update(self.done[e.variant] - counted)
                who = f" ({self.best[1][:18]})" if len(self.variants) > 1 else ""
                self._bar.set_postfix_str(f"best val acc {100 * self.best[0]:.1f}%{who}", refresh=False)
            elif self.verbose >= 2:
                self._print(self._prefix(e.variant) + epoch_line(e))
        if e.stopped == "nan":
            self.note(e.variant, nan_line(e))

    def note(self, variant: str, text: str):
        """A whole line about one network (resumed from a checkpoint, a warning), shown at any verbosity but 0."""
        if self.verbose:
            with self._lock:
                self._print(self._prefix(variant) + text)

    def finished(self, record):
        """A network is done: its unused epochs are counted on the bar, its record kept for the summary."""
        with self._lock:
            if self._bar is not None:
                self._bar.update(max(0, self.max_epochs - self.done.get(record.variant, 0)))
            self.done[record.variant] = self.max_epochs
            self.records.append(record)

    def close(self):
        """Ends the bar; prints one line per network, or a table for several."""
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            if self.verbose and self.records:
                order = {v: i for i, v in enumerate(self.variants)}
                records = sorted(self.records, key=lambda r: order.get(r.variant, len(order)))
                text = record_line(records[0]) if len(records) == 1 else records_table(records)
                print(text, file=self.out, flush=True)


# How a worker process's epochs reach the display in the parent (helpers.parallel): each worker
# appends them, one JSON line each, to a file of its own; the parent reads the files as they grow.
# Files need no server, no extra process and no lock, and a worker that dies leaves its lines.

class FileReport:
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


class Lines(io.TextIOBase):
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


class Follow(threading.Thread):
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
                    self.display.epoch(EpochEnd(**event))
                else:
                    self.display.note(event["variant"], event["text"])
