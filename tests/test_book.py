"""The book (`python -m helpers.book`): it builds strictly and offline, and reads in a real browser.

The build needs the `book` extra (`pip install -e ".[book]"`: Sphinx, myst-nb,
sphinx-book-theme, MathJax, Playwright); the browser test also needs Chromium
(`apt-get install -y chromium`, found at /usr/bin/chromium or through $CHROMIUM). Where
either is missing, its tests are skipped with that message. Playwright drives the system's
Chromium: nothing is downloaded (no `playwright install`).

BOOK_SCREENSHOTS=/some/folder also saves screenshots of the front page and of notebooks 05 and
06, at a laptop's width (1366x900) and a phone's (390x844), to look at.
"""
from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import re
import runpy
import shutil
import threading
from pathlib import Path

import pytest

from helpers import book
from helpers.config import PROJECT_ROOT
from tests.backends import once

pytestmark = [
    once,  # no Keras backend involved: checked once
    pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in book.NEEDED),
                       reason='the book needs its extra: pip install -e ".[book]"'),
]

CHAPTERS = runpy.run_path(str(PROJECT_ROOT / "book" / "conf.py"))["chapters"]
NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SEARCH_WORDS = ("AlphaDropout", "reliability")  # the first found in notebook 05 alone is searched
LAPTOP, PHONE = {"width": 1366, "height": 900}, {"width": 390, "height": 844}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The book built from this repository into a temporary folder: (html folder, Sphinx's result)."""
    out = tmp_path_factory.mktemp("book")
    result = book.build(PROJECT_ROOT, out)
    assert result.returncode == 0, f"the book does not build:\n{result.stderr}"
    return out / "html", result


def test_every_notebook_is_a_chapter_in_order():
    assert CHAPTERS == [f"notebooks/{p.stem}" for p in NOTEBOOKS]


def test_the_book_builds_with_no_warning(built):
    html, result = built
    assert "WARNING" not in result.stderr and "ERROR" not in result.stderr, result.stderr
    for page in ["index.html", "README.html", "search.html"] + [f"{c}.html" for c in CHAPTERS]:
        assert (html / page).is_file(), page
    for nb in NOTEBOOKS:  # the download link's file: the committed notebook, byte for byte
        assert (html / "_sources" / "notebooks" / nb.name).read_bytes() == nb.read_bytes()


def test_nothing_a_page_needs_comes_from_the_internet(built):
    html, _ = built
    remote = re.compile(r"""<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)=["']?(?:https?:)?//""", re.I)
    for page in html.rglob("*.html"):
        hits = remote.findall(page.read_text(encoding="utf-8"))
        assert not hits, f"{page.relative_to(html)} loads from the internet: {hits}"
    css = "\n".join(p.read_text(encoding="utf-8") for p in (html / "_static").rglob("*.css"))
    assert not re.search(r"""(?:url\(|@import)\s*["']?(?:https?:)?//""", css)
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()  # MathJax from the book itself


def test_a_warning_fails_the_build(tmp_path, capsys):
    """A notebook missing from the table of contents, a README image that is not there: both fail."""
    src = tmp_path / "src"
    for name in ("README.md", "book", "notebooks", "results/figures"):
        copy = shutil.copytree if (PROJECT_ROOT / name).is_dir() else shutil.copyfile
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        copy(PROJECT_ROOT / name, src / name)
    conf = src / "book" / "conf.py"
    dropped = CHAPTERS[2]
    conf.write_text(conf.read_text().replace(f'"{dropped}",', ""))
    readme = src / "README.md"
    image = re.search(r"\]\((results/figures/[^)]+\.png)\)", readme.read_text()).group(1)
    readme.write_text(readme.read_text().replace(image, image.replace(".png", "_missing.png")))

    assert book.main(["--source", str(src), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err  # --keep-going: both reported, then the build fails
    assert f"{dropped}.ipynb: WARNING: document isn't included in any toctree" in err
    assert f"WARNING: image file not readable: {image.replace('.png', '_missing.png')}" in err
    assert "book: FAILED" in err


# ---------------------------------------------------------------- in a real browser

def _chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    if importlib.util.find_spec("playwright") is None:
        pytest.skip('Playwright is missing: pip install -e ".[book]"')
    if _chromium() is None:
        pytest.skip("Chromium is missing: apt-get install -y chromium (Debian), or set CHROMIUM=/path/to/chrome")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:  # launch() gives it a new, empty profile (--user-data-dir) each time
        chromium = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def site(built):
    """The built book over http on localhost, as a reader's browser gets it."""
    html, _ = built

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join()


class Reader:
    """One browser tab that records what a reader would not see: console errors, failed loads."""

    def __init__(self, browser, base):
        self.base, self.problems = base, []
        self.context = browser.new_context(viewport=LAPTOP)
        self.context.route("**/*", self._only_local)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"script error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url} {r.failure}"))
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))

    def _only_local(self, route):
        if route.request.url.startswith(self.base) or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:  # the book must not need the internet: record and refuse
            self.problems.append(f"remote request: {route.request.url}")
            route.abort()

    def open(self, path):
        self.page.goto(self.base + path, wait_until="load")
        return self.page

    def close(self):
        self.context.close()


def _heading(text: str) -> str:
    """The first level-1 Markdown heading, as it reads (no * or ` marks)."""
    line = next(line for line in text.splitlines() if line.startswith("# "))
    return re.sub(r"[*`]", "", line[2:]).strip()


def _notebook_heading(path: Path) -> str:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return _heading("\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown"))


def _count_figures(path: Path) -> int:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", []))


def _every_image_loaded(page) -> list[str]:
    """The src of every <img> of the article that did not load (empty: all did)."""
    page.wait_for_function("[...document.images].every(i => i.complete)", timeout=20_000)
    return page.evaluate("[...document.querySelectorAll('article img')]"
                         ".filter(i => !(i.naturalWidth > 0)).map(i => i.src)")


def _math_typeset(page):
    """Every $...$ of the page typeset by the book's own MathJax, with no MathJax error."""
    if page.locator("article .math").count():
        page.wait_for_function("[...document.querySelectorAll('article .math')]"
                               ".every(e => e.querySelector('mjx-container'))", timeout=30_000)
        assert page.locator("mjx-merror").count() == 0


def _fits_a_phone(page) -> bool:
    """At a phone's width the page does not scroll sideways (wide tables and outputs scroll in their box)."""
    page.set_viewport_size(PHONE)
    fits = page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth + 1")
    page.set_viewport_size(LAPTOP)
    return fits


def test_every_page_reads_in_a_browser(browser, site):
    reader = Reader(browser, site)
    try:
        page = reader.open("")  # index.html sends the reader to the README
        page.wait_for_url(re.compile(r"README\.html$"), timeout=10_000)
        readme_title = _heading((PROJECT_ROOT / "README.md").read_text(encoding="utf-8"))
        assert page.title().startswith(readme_title + " \u2014 "), page.title()
        assert not _every_image_loaded(page)
        assert page.locator("article img").count() >= len(re.findall(r"!\[[^\]]*\]\(results/figures/",
                                                                      (PROJECT_ROOT / "README.md").read_text()))
        assert page.get_attribute("a.right-next", "href") == f"{CHAPTERS[0]}.html"
        assert _fits_a_phone(page), "README.html scrolls sideways on a phone"
        # the table of contents: every notebook, in order
        toc = page.eval_on_selector_all("nav.bd-docs-nav a.reference", "as => as.map(a => a.getAttribute('href'))")
        assert [h for h in toc if h.startswith("notebooks/")] == [f"{c}.html" for c in CHAPTERS]

        for i, (chapter, nb) in enumerate(zip(CHAPTERS, NOTEBOOKS)):
            page = reader.open(f"{chapter}.html")
            assert page.title().startswith(_notebook_heading(nb) + " \u2014 "), page.title()
            missing = _every_image_loaded(page)
            assert not missing, f"{chapter}: images that did not load: {missing}"
            assert page.locator("article img").count() >= _count_figures(nb), f"{chapter}: a figure is missing"
            _math_typeset(page)
            # previous / next
            previous = "../README.html" if i == 0 else f"{Path(CHAPTERS[i - 1]).name}.html"
            assert page.get_attribute("a.left-prev", "href") == previous
            if i + 1 < len(CHAPTERS):
                assert page.get_attribute("a.right-next", "href") == f"{Path(CHAPTERS[i + 1]).name}.html"
            # the download button offers the notebook, and the server serves it, byte for byte
            page.click(".dropdown-download-buttons button")
            link = page.locator("a.btn-download-source-button")
            link.wait_for(state="visible", timeout=5_000)
            assert link.get_attribute("href").endswith(f"_sources/notebooks/{nb.name}")
            response = page.request.get(page.url.rsplit("/", 1)[0] + "/" + link.get_attribute("href"))
            assert response.ok and response.body() == nb.read_bytes()
            assert _fits_a_phone(page), f"{chapter} scrolls sideways on a phone"

        assert reader.problems == []
    finally:
        reader.close()


def test_search_finds_a_word_of_notebook_05(browser, site):
    nb05 = next(p for p in NOTEBOOKS if p.name.startswith("05_"))
    others = [p.read_text(encoding="utf-8").lower() for p in NOTEBOOKS if p != nb05]
    others.append((PROJECT_ROOT / "README.md").read_text(encoding="utf-8").lower())
    words = [w for w in SEARCH_WORDS if w.lower() in nb05.read_text(encoding="utf-8").lower()
             and not any(w.lower() in text for text in others)]
    assert words, f"none of {SEARCH_WORDS} is in notebook 05 alone any more: pick another word for this test"

    reader = Reader(browser, site)
    try:
        page = reader.open(f"search.html?q={words[0]}")
        assert page.title().startswith("Search")
        page.wait_for_selector("#search-results ul.search li a", timeout=30_000)
        hrefs = page.eval_on_selector_all("#search-results ul.search li a", "as => as.map(a => a.getAttribute('href'))")
        assert hrefs and all(h.split("?")[0].split("#")[0] == f"notebooks/{nb05.stem}.html" for h in hrefs), hrefs
        page.click("#search-results ul.search li a")
        page.wait_for_url(re.compile(re.escape(nb05.stem) + r"\.html"))
        assert page.title().startswith(_notebook_heading(nb05))
        assert reader.problems == []
    finally:
        reader.close()


def test_screenshots(browser, site):
    """Only with BOOK_SCREENSHOTS=folder: the pages to look at, at a laptop's and a phone's width.

    Someone has to look at them (issue: cut-off or unreadable parts); this only checks they were taken.
    """
    folder = os.environ.get("BOOK_SCREENSHOTS")
    if not folder:
        pytest.skip("set BOOK_SCREENSHOTS=/some/folder to save screenshots of the book")
    Path(folder).mkdir(parents=True, exist_ok=True)
    pages = {"front": "README.html"}
    pages.update({p.stem[:2]: f"notebooks/{p.stem}.html" for p in NOTEBOOKS if p.stem[:2] in ("05", "06")})
    for width, viewport in {"laptop": LAPTOP, "phone": PHONE}.items():
        context = browser.new_context(viewport=viewport)
        page = context.new_page()
        for name, path in pages.items():
            page.goto(site + path, wait_until="load")
            page.screenshot(path=str(Path(folder) / f"{name}-{width}.png"))
            # the widest table of the page, scrolled to: how a reader meets it
            if page.locator("article table").count():
                page.evaluate("""() => { const t = [...document.querySelectorAll('article table')]
                                   .sort((a, b) => b.parentElement.scrollWidth - a.parentElement.scrollWidth)[0];
                                 t.scrollIntoView({block: 'start'}); window.scrollBy(0, -120); }""")
                page.screenshot(path=str(Path(folder) / f"{name}-widest-table-{width}.png"))
        context.close()
        for shot in Path(folder).glob(f"*-{width}.png"):  # PNG header: the width is bytes 16-20
            assert int.from_bytes(shot.read_bytes()[16:20], "big") == viewport["width"], shot
