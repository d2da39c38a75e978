"""The progress display: a bar that counts each network's epochs once, whole lines, and workers' files."""
import io
import json
import threading

from helpers import progress
from helpers.progress import Display, EpochEnd
from tests.backends import once

pytestmark = once  # no Keras backend involved: checked once


def epoch(variant, n, stopped=None, val_accuracy=0.5):
    return EpochEnd(variant, n, 10, 1.0, 0.5, 1.0, val_accuracy, 0.1, True, stopped)


def test_the_bar_counts_resumed_repeated_and_stopped_epochs_once():
    out = io.StringIO()
    display = Display(["a", "b"], max_epochs=10, verbose=1, out=out)
    display.epoch(epoch("a", 4))  # resumed from a checkpoint after epoch 3: its 3 epochs count too
    assert display._bar.n == 4
    display.epoch(epoch("a", 4))  # the same epoch again (trained again after its worker died)
    assert display._bar.n == 4
    display.epoch(epoch("b", 1))
    display.epoch(epoch("b", 2, stopped="early_stopping"))  # its 8 unused epochs are counted now
    assert display._bar.n == 14
    display.epoch(epoch("b", 2, stopped="early_stopping"))  # never past the whole
    assert display._bar.n == 14
    display.close()
    assert "14/20 epochs" in out.getvalue()


def test_lines_from_threads_are_never_glued_together():
    out = io.StringIO()
    display = Display([f"n{i}" for i in range(4)], max_epochs=50, verbose=2, out=out)

    def train(variant):
        for n in range(1, 51):
            display.epoch(epoch(variant, n))

    threads = [threading.Thread(target=train, args=(f"n{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = out.getvalue().splitlines()
    assert len(lines) == 200
    assert all(line.count("epoch") == 1 and line.startswith("[n") for line in lines)


def test_a_workers_file_reaches_the_display_whole(tmp_path):
    """A line still being written waits for the next look; notes and epochs both arrive."""
    out = io.StringIO()
    display = Display(["a"], max_epochs=10, verbose=2, out=out)
    follow = progress.Follow(tmp_path, display)
    report = progress.FileReport(tmp_path / "1-a.jsonl")
    report.epoch(epoch("a", 1))
    report.note("a", "resumed from a checkpoint")
    with open(tmp_path / "1-a.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"kind": "note", "variant": "a", "text": "half"})[:20])  # no newline yet
    follow.poll()
    assert out.getvalue().splitlines() == ["epoch   1/10  loss 1.0000  acc 0.5000 | val_loss 1.0000  "
                                           "val_acc 0.5000 |   0.1 s  *best", "resumed from a checkpoint"]
    report.close()


def test_a_worker_stdout_hands_on_whole_lines():
    got = []
    lines = progress.Lines(got.append)
    lines.write("warn")
    lines.write("ing: x\nsecond ")
    assert got == ["warning: x"]
    lines.flush()
    assert got == ["warning: x", "second "]
