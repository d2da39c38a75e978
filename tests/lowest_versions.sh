#!/usr/bin/env bash
# The lowest versions pyproject.toml allows, checked: a fresh virtual environment gets the lowest
# release of each direct dependency (uv's --resolution lowest-direct; the indirect ones as they
# come), then the unit tests run there under both backends (not the notebooks: their outputs are
# the committed run's). Downloads a few GB the first time; about 15 minutes here. Run it before
# changing a lower bound; the README says when it last passed.
#
#     bash tests/lowest_versions.sh [VENV_FOLDER]        # default /tmp/lowest-versions
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-/tmp/lowest-versions}
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q uv
"$venv/bin/uv" pip install -q --python "$venv/bin/python" --resolution lowest-direct -e ".[jax,test]"
echo "== installed (lowest allowed of each direct dependency):"
"$venv/bin/python" -m pip list --format=freeze 2>/dev/null \
    | grep -iE '^(tensorflow|tensorboard|keras|numpy|pandas|matplotlib|seaborn|jupyterlab|pillow|tqdm|joblib|cloudpickle|jax|jaxlib|filelock|pytest|nbval|pytest-xdist)=='
"$venv/bin/python" -m pytest tests -p no:cacheprovider --ignore=tests/test_book.py -q
