"""Open the built HTML book in headless Chromium, page by page.

Fails on a chapter page that is missing, an image that does not load, a Python traceback
shown on a page, mathematics left as raw LaTeX (MathJax must come from the build itself),
or a request for anything outside the build other than the Colab badge.  The API reference
page must show every rule with its constructor arguments and the docstrings' "Args:" sections
rendered as parameter lists; chapter figures must carry a caption or alt text that describes them.  A
reader must see every line of code without scrolling sideways, every display equation whole, each cell's
printed lines in one block, and multi-panel figures wider than the text column (book/_static holds
the CSS and script that make it so).  Every request
that leaves the local server is blocked, so the result is the same with or without a
network.  Screenshots of the introduction and chapter 5 are kept in _build/screenshots
(or $DFA_BOOK_SCREENSHOTS) for a person to look at.  Needs the built book (``make book``, or ``make html-check``
which renders the committed notebooks) and Debian's chromium (``apt-get install chromium``);
Playwright drives it and never downloads a browser of its own.  Outside CI it skips,
saying why, where either is missing; in CI (``CI=true``) a missing piece is a failure.
"""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HTML = Path(os.environ.get("DFA_BOOK_HTML", ROOT / "_build" / "html"))
SHOTS = Path(os.environ.get("DFA_BOOK_SCREENSHOTS", ROOT / "_build" / "screenshots"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# The one resource a page may ask for outside the build: the "Open in Colab" badge image.
ALLOWED_EXTERNAL = ("https://colab.research.google.com/assets/colab-badge.svg",)
MATHJAX_WAIT_MS = 30_000  # typesetting a chapter takes seconds on a busy 2-core machine
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def toc_pages() -> list[str]:
    """Every page listed in _toc.yml, as paths relative to the HTML root."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        pages += [c["file"] for c in part.get("chapters", [])]
    return [p + ".html" for p in pages]


def screenshot_pages() -> list[str]:
    """The introduction and chapter 5, the pages a person looks at in _build/screenshots."""
    pages = toc_pages()
    return [pages[0]] + [p for p in pages if Path(p).name.startswith("05_")]


# Wait until MathJax has typeset the page (its startup promise), or say why not.
WAIT_FOR_MATHJAX = """async (ms) => {
  const mj = window.MathJax;
  if (!mj || !mj.startup || !mj.startup.promise) return 'MathJax did not load';
  const timeout = new Promise(done => setTimeout(() => done('MathJax timed out'), ms));
  const typeset = mj.startup.promise.then(() => document.fonts.ready).then(() => 'typeset');
  return Promise.race([typeset, timeout]);
}"""

# Visible text, outside code, that still holds a TeX delimiter: math MathJax did not typeset.
RAW_TEX = r"""() => {
  const found = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const el = walker.currentNode.parentElement;
    if (!el || el.closest('pre, code, script, style, textarea, mjx-container')) continue;
    if (!el.checkVisibility({visibilityProperty: true})) continue;
    const text = walker.currentNode.textContent;
    if (/\\\(|\\\[|\$\$/.test(text)) found.push(text.trim().slice(0, 60));
  }
  return found;
}"""


def missing(reason: str):
    if IN_CI:
        pytest.fail(reason + " (required in CI)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def server():
    if not (HTML / "index.html").is_file():
        missing(f"no built book at {HTML}: run `make book` (or `make html-check`) first")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        missing("Chromium is not installed: `apt-get install chromium` (Debian), or run `make html-check`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed: `pip install playwright` (no browser download needed)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.mark.parametrize("page_path", toc_pages())
def test_page_renders_with_images_math_and_no_traceback(server, browser, page_path):
    assert (HTML / page_path).is_file(), f"{page_path} is listed in _toc.yml but was not built"
    page = browser.new_page()
    failed, external = [], []

    def local_only(route):
        url = route.request.url
        if url.startswith(server):
            route.continue_()
            return
        if not url.startswith(ALLOWED_EXTERNAL):
            external.append(url)
        route.abort()

    page.route("**/*", local_only)
    page.on("requestfailed", lambda r: failed.append(r.url) if r.url.startswith(server) else None)
    response = page.goto(f"{server}/{page_path}", wait_until="load")
    assert response is not None and response.ok, f"{page_path}: HTTP {response and response.status}"
    text = page.inner_text("main") if page.locator("main").count() else page.inner_text("body")
    assert "Traceback (most recent call last)" not in text, f"{page_path} shows a Python traceback"
    assert page.locator("div.output.error, div.output.traceback").count() == 0, f"{page_path} shows an error output"
    # The book's own images (figures, logos) must load; external ones such as the Colab badge
    # cannot load on an offline machine and are not the book's to serve.
    broken = page.eval_on_selector_all(
        "img",
        """imgs => imgs.filter(i => i.src.startsWith(location.origin) || i.src.startsWith('data:'))
                      .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'))""",
    )
    assert not broken, f"{page_path}: images that did not load: {broken}"

    # Mathematics: every math element typeset by MathJax, no TeX delimiters left in sight.
    n_math = page.locator(".math").count()
    state = page.evaluate(WAIT_FOR_MATHJAX, MATHJAX_WAIT_MS) if n_math else "no math"
    page.wait_for_load_state("networkidle")  # fonts and anything MathJax loads late
    raw = page.evaluate(RAW_TEX)
    assert not raw, f"{page_path}: math shown as raw LaTeX ({state}): {raw[:3]}"
    if n_math:
        untypeset = page.eval_on_selector_all(
            ".math", "els => els.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 60))"
        )
        assert page.locator("mjx-container").count() > 0 and not untypeset, (
            f"{page_path}: {len(untypeset)} of {n_math} math elements not typeset ({state}): {untypeset[:3]}"
        )
    if page_path in screenshot_pages():
        assert n_math, f"{page_path} should show equations"
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / (Path(page_path).stem + ".png")), full_page=True)

    assert not external, f"{page_path}: requests for resources outside the build: {external}"
    assert not failed, f"{page_path}: requests that failed: {failed}"
    page.close()


def test_every_chapter_page_has_a_figure_or_table(server, browser):
    """Chapters are results: each chapter page shows at least one figure or table."""
    page = browser.new_page()
    for path in [p for p in toc_pages() if Path(p).name[:2].isdigit()]:
        page.goto(f"{server}/{path}", wait_until="load")
        assert page.locator("main img, main table").count() > 0, f"{path} shows no figure and no table"
    page.close()


API_PAGE = "book/api.html"


def rule_classes() -> list:
    """Every rule make_rule knows, read from the library so a new rule is checked too."""
    from dfa_lib.rules import RULES

    return list(RULES.values())


def test_api_page_shows_every_rule_with_its_constructor_arguments(server, browser):
    """A reader looking up DFA finds its entry, the arguments it takes, and (where the class
    docstring has an "Args:" section) those arguments explained in a parameter list."""
    import inspect

    assert (HTML / API_PAGE).is_file(), f"{API_PAGE} was not built: is book/api in _toc.yml?"
    page = browser.new_page()
    page.goto(f"{server}/{API_PAGE}", wait_until="load")
    for rule in rule_classes():
        entry = page.locator(f'dt[id="dfa_lib.{rule.__name__}"]')
        assert entry.count() == 1 and entry.is_visible(), f"{API_PAGE} shows no entry for dfa_lib.{rule.__name__}"
        shown = " ".join(entry.locator(".sig-param").all_inner_texts())
        absent = [a for a in inspect.signature(rule).parameters if a not in shown]
        assert not absent, f"{API_PAGE}: {rule.__name__}'s signature does not show {absent} (shown: {shown})"
        if "Args:" in (rule.__doc__ or ""):
            fields = entry.locator("xpath=following-sibling::dd[1]/dl[contains(@class, 'field-list')]")
            assert fields.count() > 0, f"{API_PAGE}: {rule.__name__}'s Args section is not rendered as parameters"
    # MLP's Google-style "Args:" must come out as a parameter list naming its arguments.
    mlp_fields = page.locator('dt[id="dfa_lib.MLP"] + dd > dl.field-list').inner_text()
    assert "Parameters" in mlp_fields and "sizes" in mlp_fields and "hidden" in mlp_fields, mlp_fields
    page.close()


# A figure is described when it sits in a <figure> with a caption, or its alt text says something
# (myst-nb's default alt is the image's own hashed file path, which tells a reader nothing).
FIGURES_WITHOUT_DESCRIPTION = r"""() => Array.from(document.querySelectorAll('main img'))
  .filter(i => i.src.startsWith(location.origin) && i.getAttribute('src').includes('_images/'))
  .filter(i => {
    const fig = i.closest('figure');
    if (fig && fig.querySelector('figcaption') && fig.querySelector('figcaption').innerText.trim()) return false;
    const alt = (i.getAttribute('alt') || '').trim();
    return !alt || /_images\/|\.(png|jpe?g|svg|gif)$/i.test(alt);
  }).map(i => i.getAttribute('src'))"""


def test_every_chapter_figure_has_a_caption_or_alt_text(server, browser):
    page = browser.new_page()
    undescribed = {}
    for path in [p for p in toc_pages() if Path(p).name[:2].isdigit()]:
        page.goto(f"{server}/{path}", wait_until="load")
        if bad := page.evaluate(FIGURES_WITHOUT_DESCRIPTION):
            undescribed[path] = len(bad)
    page.close()
    assert not undescribed, f"{sum(undescribed.values())} figures without a caption or alt text: {undescribed}"


def chapter_pages() -> list[str]:
    return [p for p in toc_pages() if Path(p).name[:2].isdigit()]


# Code blocks (cell inputs and code in the text) whose lines run past the box: the reader would
# have to scroll sideways to see their end.  Printed outputs may scroll: wrapping a table's rows
# would break its columns.
CODE_RUNNING_PAST_ITS_BOX = r"""() => Array.from(document.querySelectorAll('main div.highlight pre'))
  .filter(p => !p.closest('div.cell_output') && p.scrollWidth > p.clientWidth + 1)
  .map(p => p.textContent.split('\n').reduce((a, b) => (b.length > a.length ? b : a)).trim().slice(0, 70))"""


def test_no_code_block_runs_past_its_box(server, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    cut = {}
    for path in toc_pages():
        page.goto(f"{server}/{path}", wait_until="load")
        if lines := page.evaluate(CODE_RUNNING_PAST_ITS_BOX):
            cut[path] = lines
    page.close()
    assert not cut, f"code blocks wider than their box (a reader sees them cut): {cut}"


# Display equations wider than their box, once fit-equations.js has had its turn.
EQUATIONS_CUT_OFF = r"""() => Array.from(document.querySelectorAll('main mjx-container[display="true"]'))
  .filter(m => m.scrollWidth > m.clientWidth + 1)
  .map(m => (m.getAttribute('aria-label') || m.textContent).slice(0, 60) + ` (${m.scrollWidth} px in ${m.clientWidth})`)"""


def test_no_display_equation_is_cut_off(server, browser):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    cut = {}
    for path in toc_pages():
        page.goto(f"{server}/{path}", wait_until="load")
        if page.locator("div.math").count() == 0:
            continue
        state = page.evaluate(WAIT_FOR_MATHJAX, MATHJAX_WAIT_MS)
        assert state == "typeset", f"{path}: {state}"
        try:  # book/_static/fit-equations.js marks the page once it has fitted the equations
            page.wait_for_function("document.documentElement.dataset.equationsFitted === 'true'", timeout=10_000)
        except PlaywrightTimeout:
            pass  # not loaded: the measure below says which equations are cut
        if wide := page.evaluate(EQUATIONS_CUT_OFF):
            cut[path] = wide
    page.close()
    assert not cut, f"display equations cut off at the right edge: {cut}"


def test_each_cell_prints_one_block_of_text(server, browser):
    """A cell that prints a table row by row between glue() calls shows the table in one box."""
    page = browser.new_page()
    split = {}
    for path in chapter_pages():
        page.goto(f"{server}/{path}", wait_until="load")
        counts = page.eval_on_selector_all(
            "div.cell_output", "outs => outs.map(o => o.querySelectorAll(':scope > div.output.stream').length)"
        )
        if any(n > 1 for n in counts):
            split[path] = max(counts)
    page.close()
    assert not split, f"cells whose printed text is split into several boxes (most boxes in one cell): {split}"


# Each chapter figure drawn wider than the widest text column (about 790 px; tests/
# test_figure_captions.py asks the same figures to be marked full-width): its rendered width,
# the column's, and whether it stays inside the window.
WIDE_FIGURE_PX = 1000
WIDE_FIGURES = r"""(widePx) => {
  const column = document.querySelector('main article section').getBoundingClientRect().width;
  return Array.from(document.querySelectorAll('main div.cell_output img'))
    .filter(i => i.naturalWidth > widePx)
    .map(i => ({src: i.getAttribute('src').split('/').pop().slice(0, 12), shown: Math.round(i.getBoundingClientRect().width),
                column: Math.round(column), inside: i.getBoundingClientRect().right <= innerWidth}));
}"""


@pytest.mark.parametrize("window", [1280, 1440, 1920])
def test_wide_figures_use_the_margin_and_stay_in_the_window(server, browser, window):
    """Multi-panel figures (chapters 10 and 11 most of all) are shown wider than the text column,
    so that their tick labels can be read, and never past the window's edge."""
    page = browser.new_page(viewport={"width": window, "height": 900})
    narrow, outside, sideways = {}, {}, []
    for path in chapter_pages():
        page.goto(f"{server}/{path}", wait_until="load")
        for fig in page.evaluate(WIDE_FIGURES, WIDE_FIGURE_PX):
            if fig["shown"] <= fig["column"] * 1.2:
                narrow.setdefault(path, []).append(f"{fig['shown']} px in a {fig['column']} px column")
            if not fig["inside"]:
                outside.setdefault(path, []).append(fig["src"])
        if page.evaluate("document.documentElement.scrollWidth > innerWidth"):
            sideways.append(path)
    page.close()
    assert not narrow, f"wide figures squeezed into the text column at {window} px: {narrow}"
    assert not outside and not sideways, f"at {window} px, figures past the window: {outside}; pages scrolling sideways: {sideways}"


def test_wide_figures_fit_a_window_without_margin(server, browser):
    """Below the width where the theme shows its right-hand sidebar there is no margin to take:
    wide figures keep to the column and the page does not scroll sideways."""
    page = browser.new_page(viewport={"width": 1024, "height": 800})
    sideways = []
    for path in chapter_pages():
        page.goto(f"{server}/{path}", wait_until="load")
        if page.evaluate("document.documentElement.scrollWidth > innerWidth"):
            sideways.append(path)
    page.close()
    assert not sideways, f"pages that scroll sideways in a 1024 px window: {sideways}"
