"""Execute the notebook series headless, in order, with progress bars and wall times.

    python -m helpers.run_notebooks                          # full mode: executes notebooks/ in place
    python -m helpers.run_notebooks --quick                  # quick mode: writes to results/quick/notebooks/
    python -m helpers.run_notebooks 02                       # only the notebooks whose names contain "02"
    python -m helpers.run_notebooks --quick --backend tensorflow   # the series under TensorFlow
    python -m helpers.run_notebooks --reuse-finished 03      # trainings finished in an earlier run read back

The kernels get this process's environment plus the mode and backend asked for here. A saved
notebook keeps what a reader sees at the end (a progress bar at its last state), and the metadata
JupyterLab would fill in, so that opening it does not mark it modified.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from helpers import config
from helpers.config import PROJECT_ROOT

NOTEBOOKS = PROJECT_ROOT / "notebooks"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def notebooks(selection=()) -> list[Path]:
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    return [p for p in paths if any(s in p.name for s in selection)] if selection else paths


def last_state(text: str) -> str:
    """Each line as it was last drawn: what follows its last carriage return (a bar cleared with spaces is no state)."""
    return "\n".join(([p for p in line.split("\r") if p.strip()] or [""])[-1] for line in text.split("\n"))


def tidy_outputs(cell) -> None:
    """Adjacent stream outputs of one stream merged, and each line kept at its last drawn state."""
    outputs = []
    for out in cell.get("outputs", []):
        last = outputs[-1] if outputs else {}
        if out.get("output_type") == last.get("output_type") == "stream" and out.get("name") == last.get("name"):
            last["text"] += out["text"]
        else:
            outputs.append(out)
    for out in outputs:
        if out.get("output_type") == "stream":
            out["text"] = last_state(out["text"])
    cell["outputs"] = outputs


class NotebookFailed(RuntimeError):
    """A cell raised: the message names the notebook, the cell and the error, and where the partial outputs are."""


def execute(path: Path, out: Path, on_cell=None, env: dict | None = None, failed_dir: Path | None = None) -> float:
    """Run every cell of ``path`` in a fresh kernel (``env``: its environment), write the result to ``out``; seconds.

    A cell that raises stops the run: the notebook as far as it got goes to ``failed_dir``
    (default: ``failed/`` beside ``out``, which keeps its last good run), and ``NotebookFailed`` says where.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=None, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    with client.setup_kernel(env=dict(os.environ if env is None else env)):
        info = client.wait_for_reply(client.kc.kernel_info())
        nb.metadata["language_info"] = info["content"]["language_info"]
        for index, cell in enumerate(nb.cells):
            try:
                client.execute_cell(cell, index)
            except CellExecutionError as e:
                tidy_outputs(cell)
                partial = Path(failed_dir or Path(out).parent / "failed") / Path(out).name
                partial.parent.mkdir(parents=True, exist_ok=True)
                nbformat.write(nb, partial)
                first = cell.source.strip().splitlines()[0][:60] if cell.source.strip() else ""
                raise NotebookFailed(f"{path.name}, cell {index} ({first!r}): {e.ename}: {e.evalue}; "
                                     f"the outputs so far are in {partial}") from None
            if cell.cell_type == "code":
                tidy_outputs(cell)
            if on_cell is not None:
                on_cell()
    seconds = time.perf_counter() - start
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nbformat.write(nb, out)
    return seconds


def main(argv=None) -> int:
    import nbformat
    from tqdm import tqdm

    parser = argparse.ArgumentParser(prog="python -m helpers.run_notebooks", description=__doc__.split("\n")[0])
    parser.add_argument("select", nargs="*", help="run only notebooks whose file name contains one of these")
    parser.add_argument("--quick", action="store_true", help="quick mode, outputs to results/quick/notebooks/")
    parser.add_argument("--reuse-finished", action="store_true",
                        help="read back every training that finished in an earlier run (CIFAR10_REUSE_FINISHED=1)")
    parser.add_argument("--backend", choices=("jax", "tensorflow"),
                        help="Keras' backend in the kernels (default: KERAS_BACKEND, else JAX if installed)")
    args = parser.parse_args(argv)
    paths = notebooks(args.select)
    if not paths:
        print(f"no notebook matches {args.select}", file=sys.stderr)
        return 1
    # the kernels' environment only: a test that calls main() must not switch later notebook tests to full mode
    env = {**os.environ, "CIFAR10_MODE": "quick" if args.quick else "full",
           **({"KERAS_BACKEND": args.backend} if args.backend else {}),
           **({"CIFAR10_REUSE_FINISHED": "1"} if args.reuse_finished else {})}
    out_dir = config.settings_for("quick").results_dir / "notebooks" if args.quick else paths[0].parent
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = [len(nbformat.read(p, as_version=4).cells) for p in paths]
    times = {}
    try:
        with tqdm(total=sum(cells), desc="series", position=0) as overall:
            for path, n in zip(paths, cells):
                with tqdm(total=n, desc=path.stem[:28], position=1, leave=False) as bar:
                    times[path.name] = execute(path, out_dir / path.name, lambda: (bar.update(1), overall.update(1)),
                                               env, failed_dir=config.settings_for("quick").results_dir / "failed")
                tqdm.write(f"{path.name}: {times[path.name]:.0f} s")
    except NotebookFailed as e:  # the bars closed first
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    total = sum(times.values())
    backend = f", KERAS_BACKEND={env['KERAS_BACKEND']}" if env.get("KERAS_BACKEND") else ""
    print(f"{len(times)} notebooks, {env['CIFAR10_MODE']} mode{backend}: "
          f"{total:.0f} s ({total / 60:.1f} min) in all; written to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
