"""Execute the notebook series headless, in order, with progress bars and wall times.

    python -m helpers.run_notebooks            # full mode: executes notebooks/ in place
    python -m helpers.run_notebooks --quick    # quick mode: writes to results/quick/notebooks/
    python -m helpers.run_notebooks 02         # only the notebooks whose names contain "02"

Full mode writes the outputs into the notebooks themselves (what is committed); quick
mode never touches them. The kernels inherit this process's environment, so
KERAS_BACKEND chooses the backend (JAX when unset, as in the notebooks).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from helpers.config import PROJECT_ROOT

NOTEBOOKS = PROJECT_ROOT / "notebooks"


def notebooks(selection=()) -> list[Path]:
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if selection:
        paths = [p for p in paths if any(s in p.name for s in selection)]
    return paths


def execute(path: Path, out: Path, bar=None, env: dict | None = None) -> float:
    """Run every cell of ``path`` in a fresh kernel, write the result to ``out``; seconds.

    ``env``: the kernel's environment (default: this process's), e.g. with CIFAR10_MODE set.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=None, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    with client.setup_kernel(env=dict(os.environ if env is None else env)):
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
            if bar is not None:
                bar.update(1)
    seconds = time.perf_counter() - start
    nbformat.write(nb, out)
    return seconds


def main(argv=None) -> int:
    from tqdm import tqdm

    parser = argparse.ArgumentParser(prog="python -m helpers.run_notebooks", description=__doc__.split("\n")[0])
    parser.add_argument("select", nargs="*", help="run only notebooks whose file name contains one of these")
    parser.add_argument("--quick", action="store_true", help="quick mode, outputs to results/quick/notebooks/")
    args = parser.parse_args(argv)
    paths = notebooks(args.select)
    if not paths:
        print(f"no notebook matches {args.select}", file=sys.stderr)
        return 1
    # the kernels' environment only: this process's own stays as it was (a test that calls
    # main() must not switch later notebook tests to full mode)
    env = {**os.environ, "CIFAR10_MODE": "quick" if args.quick else "full"}
    env.setdefault("KERAS_BACKEND", "jax")
    out_dir = PROJECT_ROOT / "results" / "quick" / "notebooks" if args.quick else NOTEBOOKS
    out_dir.mkdir(parents=True, exist_ok=True)
    import nbformat

    cells = [len(nbformat.read(p, as_version=4).cells) for p in paths]
    times = {}
    with tqdm(total=sum(cells), desc="series", position=0) as overall:
        for path, n in zip(paths, cells):
            with tqdm(total=n, desc=path.stem[:28], position=1, leave=False) as bar:
                class Both:
                    @staticmethod
                    def update(k):
                        bar.update(k)
                        overall.update(k)

                times[path.name] = execute(path, out_dir / path.name, Both, env)
            tqdm.write(f"{path.name}: {times[path.name]:.0f} s")
    total = sum(times.values())
    print(f"{len(times)} notebooks, {env['CIFAR10_MODE']} mode, KERAS_BACKEND={env['KERAS_BACKEND']}: "
          f"{total:.0f} s ({total / 60:.1f} min) in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
