"""Build the series as a static HTML book: the README, then notebooks 01-06 with their outputs.

Sphinx with myst-nb and sphinx-book-theme (`pip install -e ".[book]"`), configured in book/conf.py;
the notebooks are never executed: the book shows their committed outputs. Strict: any Sphinx warning
(a missing figure, a broken link, a notebook missing from the table of contents) fails the build.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

from helpers.config import PROJECT_ROOT

DEFAULT_OUT = PROJECT_ROOT / "build" / "book"
NEEDED = ("sphinx", "myst_nb", "sphinx_book_theme")  # the `book` extra of pyproject.toml


def build(source: Path = PROJECT_ROOT, out: Path = DEFAULT_OUT) -> subprocess.CompletedProcess:
    """Build the book from source (the repository root) into out/html; Sphinx's output captured.

    -E: no warning hidden by a previous build's cache; -W --keep-going: every warning reported, then fatal.
    """
    source, out = Path(source), Path(out)
    return subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-c", str(source / "book"),
                           "-d", str(out / "doctrees"), "-E", "-W", "--keep-going", "-n", "-q",
                           str(source), str(out / "html")], capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.book", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="build folder (default: build/book); the book is OUT/html/index.html")
    parser.add_argument("--source", type=Path, default=PROJECT_ROOT,
                        help="the repository to build from (default: this one)")
    args = parser.parse_args(argv)

    if missing := [m for m in NEEDED if importlib.util.find_spec(m) is None]:
        print(f"the book needs {', '.join(missing)}: pip install -e \".[book]\"", file=sys.stderr)
        return 2
    start = time.perf_counter()
    result = build(args.source, args.out)
    seconds = time.perf_counter() - start
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        print(f"book: FAILED after {seconds:.1f} s (Sphinx exit {result.returncode}; every warning "
              "is an error: see above)", file=sys.stderr)
        return result.returncode
    print(f"book: {args.out.resolve() / 'html' / 'index.html'} (built in {seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
