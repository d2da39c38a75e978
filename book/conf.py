"""Sphinx configuration of the book: the README, then notebooks 01-06, as static HTML.

Build it with `python -m helpers.book` (see helpers/book.py), or by hand from the repository root:

    sphinx-build -b html -c book -E -W --keep-going -n . build/book/html

The source folder is the repository root (so the README's relative links to `notebooks/...`
and `results/figures/...` resolve as they do on GitHub); only README.md and notebooks/*.ipynb
are read. The notebooks are rendered with the outputs they were committed with: never executed.
Everything a page loads is in the built folder (MathJax included): it works with no internet.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the source folder: the repository root

project = "Too deep on purpose"
html_title = "Too deep on purpose"

extensions = [
    "myst_nb",                 # Markdown (README) and notebooks, with their outputs
    "sphinx.ext.mathjax",      # the notebooks' $...$ math...
    "sphinx-mathjax-offline",  # ...with MathJax copied into the book instead of a CDN
]

# The README is the front page; build/book/html/index.html redirects to it (_extra/index.html).
root_doc = "README"

# The book's table of contents, in order, after the README. A notebook missing here fails the
# build (Sphinx: "document isn't included in any toctree"); a name here without its notebook, too.
chapters = [
    "notebooks/01_deep_swish_network",
    "notebooks/02_nadam_early_stopping",
    "notebooks/03_batch_normalization",
    "notebooks/04_selu_self_normalizing",
    "notebooks/05_alpha_dropout_mc_dropout",
    "notebooks/06_one_cycle_and_summary",
]

# Read only the README and the notebooks; skip (without walking into) every other folder:
# .venv, build, results, tests, ... (results/figures/*.png are still found as the README's images).
include_patterns = ["README.md", "notebooks/*.ipynb"]
exclude_patterns = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and p.name != "notebooks")
exclude_patterns += ["**/.ipynb_checkpoints"]

# Never execute: the book shows the committed outputs.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath"]  # $x$ and $$x$$ in the notebooks' Markdown
myst_heading_anchors = 3                 # #quick-start style links to headings work

# Strict: python -m helpers.book also passes -W --keep-going (warnings are errors) and -n.
nitpicky = True

html_theme = "sphinx_book_theme"
html_theme_options = {
    "home_page_in_toc": True,       # the README first in the left-hand table of contents
    "show_navbar_depth": 1,
    "use_download_button": True,    # each notebook page: download the .ipynb (the committed file)
    "use_fullscreen_button": False,
    "show_toc_level": 2,
}
# Light or dark as the reader's system says. Unset, a first visit logs "Got invalid theme mode"
# to the browser's console (pydata-sphinx-theme, the theme underneath).
html_context = {"default_mode": "auto"}
html_static_path = ["_static"]
html_css_files = ["book.css"]      # wide outputs scroll inside their box, images fit the width
html_extra_path = ["_extra"]       # index.html, the redirect to README.html
html_sourcelink_suffix = ""        # the download link serves notebooks/NN_....ipynb, not .ipynb.txt
html_show_sphinx = False


def _add_table_of_contents(app, docname, source):
    """Append the hidden toctree of `chapters` to the root document (the README, left unedited)."""
    if docname == app.config.root_doc:
        entries = "\n".join(app.config.chapters)
        source[0] += f"\n\n```{{toctree}}\n:hidden:\n:caption: Notebooks\n\n{entries}\n```\n"


def setup(app):
    app.add_config_value("chapters", [], "env")
    app.connect("source-read", _add_table_of_contents)
