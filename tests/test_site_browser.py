"""The rendered course in a real browser with the network blocked (Debian's Chromium via playwright).

The site is served from 127.0.0.1; every request to any other host is aborted and recorded, and a
page that asked for one fails the test. On each page: equations are typeset by the local MathJax
(no raw ``$...$`` left in the rendered Markdown, no MathJax error), every step-through player
advances when its slider moves and when Play is pressed, parameter buttons switch the player shown,
and every internal link (the course bar included) resolves to a page and anchor that exist.

Two sites are checked: a small generated course with a chain player and a parameter player
(always), and the course itself (``site/`` when ``make course`` has rendered it, else rendered here from the
committed notebooks). The generated site loads MathJax exactly as a reader's browser does. The course's pages,
which hold hundreds of equations each, are typeset without MathJax's two content-independent extras, the fast
preview pass and the hidden assistive MathML (:data:`COURSE_MATHJAX`): the same TeX input and HTML-CSS output
typeset every equation, checked the same way, in about 40 % less time; that those extensions load offline without
error is checked on the generated site, which uses the same MathJax tree. Screenshots land in ``test-output/site/``.
"""
from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import nbformat
import pytest
from nbformat.v4 import new_markdown_cell

from browser_helpers import CHROMIUM, CHROMIUM_ARGS

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT_DIR = REPO / "test-output" / "site"
COURSE_SITE = REPO / "site"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _unavailable(reason: str):
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: the browser test must run in CI)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:  # pragma: no cover
        _unavailable(f"playwright is not installed ({e})")
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} not found; install it with `apt-get install -y chromium`")
    pw = sync_playwright().start()
    b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    try:
        yield b
    finally:
        b.close()
        pw.stop()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def serve():
    servers = []

    def start(root: Path) -> str:
        handler = functools.partial(_Quiet, directory=str(root))
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/"

    try:
        yield start
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


@pytest.fixture(scope="module")
def generated_site(tmp_path_factory):
    from test_render import _mathjax_installed, _player_course, rc  # noqa: F401

    try:
        import jupyter_server_mathjax  # noqa: F401
    except ImportError:
        _unavailable("jupyter-server-mathjax is not installed (pip install -e '.[test]')")
    tmp = tmp_path_factory.mktemp("site")
    src, _, _ = _player_course(tmp)
    nb = nbformat.read(src / "01_players.ipynb", as_version=4)
    nb.cells.insert(1, new_markdown_cell(
        "## Maths\n\nThe forward marginal $q(x_t \\mid x_0) = \\mathcal N(\\sqrt{\\bar\\alpha_t}\\, x_0,"
        " (1 - \\bar\\alpha_t) I)$ and\n$$\\mathbb E\\,\\|x_t\\|^2 = \\sum_{i=1}^d \\operatorname{Var}(x_{t,i}).$$\n\n"
        "Next: [the second page](02_more.ipynb#More)."))
    nbformat.write(nb, src / "01_players.ipynb")
    nbformat.write(nbformat.v4.new_notebook(cells=[new_markdown_cell(
        "# 02 — More\n\n## More\n\n\\begin{align} a &= b \\\\ c &= \\frac{d}{e} \\end{align}\n\n"
        "Back: [players](01_players.ipynb#Maths).")]), src / "02_more.ipynb")
    site = tmp / "out"
    rc.render_course(src, site)
    assert rc.check_links(site) == []
    return site


# ----------------------------------------------------------------------------------- page scripts
MATHJAX_DONE = """() => new Promise((resolve) => {
  if (!window.MathJax || !MathJax.Hub) { resolve('no MathJax'); return; }
  MathJax.Hub.Queue(() => resolve('done'));
})"""

# Rendered Markdown text (innerText skips MathJax's <script type="math/tex"> sources).
RAW_MATH = r"""() => {
  const bad = [];
  document.querySelectorAll('.jp-RenderedMarkdown').forEach((el) => {
    const t = el.innerText;
    const m = t.match(/\$[^$\n]+\$|\\\(|\\\[|\\begin\{/);
    if (m) bad.push(m[0].slice(0, 80));
  });
  return {bad, typeset: document.querySelectorAll('.MathJax_CHTML, .MathJax_Display, .MathJax').length,
          sources: document.querySelectorAll('script[type^="math/tex"]').length,
          errors: document.querySelectorAll('.mjx-merror, .MathJax_Error').length};
}"""

# The reader's MathJax: the fast-preview extension loaded and on, the assistive-MathML extension run on every equation.
READER_EXTENSIONS = """() => ({preview: !!MathJax.Extension['fast-preview'] && !MathJax.Hub.config['fast-preview'].disabled,
  amml: !!MathJax.Extension.AssistiveMML, amml_nodes: document.querySelectorAll('.MJX_Assistive_MathML').length,
  jax: MathJax.Hub.getAllJax().length})"""

VISIBLE_FRAMES = """(player) => Array.from(player.querySelectorAll(
    ':scope > .md-panels > .md-stack, :scope > .md-controls > .md-stack'))
  .map((stack) => { const v = Array.from(stack.children).filter((c) => !c.hidden);
                    return v.length === 1 ? (v[0].src || v[0].textContent).slice(-60) : 'BAD:' + v.length; })
  .join('|')"""

LINKS = """() => Array.from(document.querySelectorAll('a[href]')).map((a) => a.getAttribute('href'))"""

# MathJax 2 reads a ``window.MathJax`` object present before MathJax.js loads as configuration (merged with the
# page's own): no fast preview pass before the real typesetting, no hidden assistive MathML beside each equation.
COURSE_MATHJAX = ('window.MathJax = {"fast-preview": {disabled: true}, AssistiveMML: {disabled: true}, '
                  'menuSettings: {assistiveMML: false}};')


def _visible(page, selector):
    return [h for h in page.query_selector_all(selector) if h.is_visible()]


def check_page(page, url: str, shot: Path, base: str, *, notebook: bool = True, fetched: dict | None = None,
               reader_mathjax: bool = True) -> dict:
    """Load ``url`` and check its maths, players and internal links. ``fetched`` maps each internal URL
    (without its fragment) already requested in this site run to its (status, body): every page links
    every other (the course bar), so each target is requested once per site, not once per link.
    ``reader_mathjax``: MathJax runs as in a reader's browser, so its extensions are checked too."""
    fetched = {} if fetched is None else fetched
    page.goto(url)
    if notebook:  # every notebook page loads the local MathJax; the index has no maths
        assert page.evaluate(MATHJAX_DONE) == "done", f"{url}: MathJax did not load"
    math = page.evaluate(RAW_MATH)
    assert not math["bad"], f"{url}: raw LaTeX left in the rendered text: {math['bad']}"
    assert math["errors"] == 0, f"{url}: {math['errors']} MathJax errors"
    assert math["typeset"] >= math["sources"], math
    if notebook and reader_mathjax:
        ext = page.evaluate(READER_EXTENSIONS)
        assert ext["preview"] and ext["amml"] and ext["jax"] >= math["sources"] and ext["amml_nodes"] == ext["jax"], (
            f"{url}: MathJax's fast-preview / assistive-MathML extensions did not run offline: {ext}")

    players = _visible(page, ".md-player")
    for player in players:
        player.scroll_into_view_if_needed()
        f0 = player.evaluate(VISIBLE_FRAMES)
        assert "BAD" not in f0, f"{url}: a player shows {f0}"
        slider = player.query_selector(".md-slider")
        slider.focus()
        page.keyboard.press("ArrowRight")
        f1 = player.evaluate(VISIBLE_FRAMES)
        assert f1 != f0 and "BAD" not in f1, f"{url}: the slider did not move the frames"
        player.query_selector(".md-play").click()
        page.wait_for_function(f"([p, old]) => ({VISIBLE_FRAMES})(p) !== old", arg=[player, f1], timeout=10_000)
        player.query_selector(".md-play").click()  # pause (or a no-op if it already reached the end)
    for pp in page.query_selector_all(".md-param-player"):
        row = pp.query_selector(".md-control")
        shown = [p for p in pp.query_selector_all(".md-player") if p.is_visible()]
        assert len(shown) == 1, f"{url}: a parameter player shows {len(shown)} players"
        other = row.query_selector(".md-opt:not(.md-on)")
        if other is not None:
            other.click()
            now = [p for p in pp.query_selector_all(".md-player") if p.is_visible()]
            assert len(now) == 1 and now[0].evaluate("(a) => a") is not None
            assert now[0].evaluate(VISIBLE_FRAMES) != shown[0].evaluate(VISIBLE_FRAMES) or \
                now[0].evaluate("(el) => el.outerHTML.length") != shown[0].evaluate("(el) => el.outerHTML.length")

    broken = []
    for href in page.evaluate(LINKS):
        target = urljoin(url, href)
        if not target.startswith(base):
            continue
        parts = urlsplit(target)
        bare = target.split("#")[0]
        if bare not in fetched:
            resp = page.request.get(bare)
            fetched[bare] = (resp.status, resp.text() if resp.status == 200 else "")
        status, body = fetched[bare]
        if status != 200:
            broken.append(f"{href}: HTTP {status}")
        elif parts.fragment:
            if f'id="{parts.fragment}"' not in body:
                broken.append(f"{href}: no anchor #{parts.fragment}")
    assert not broken, f"{url}: broken internal links: {broken}"
    page.screenshot(path=str(shot), full_page=False)
    return {"players": len(players), "math": math["sources"]}


def _offline_page(browser, base: str, init_script: str | None = None):
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    if init_script:
        context.add_init_script(init_script)
    blocked: list[str] = []

    def route(r):
        if r.request.url.startswith(base) or r.request.url.startswith("data:"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return context, page, blocked, errors


def _run_site(browser, serve, site: Path, name: str, init_script: str | None = None):
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    base = serve(site)
    context, page, blocked, errors = _offline_page(browser, base, init_script)
    try:
        pages = sorted(p.name for p in site.glob("[0-9][0-9]*.html"))
        assert pages, f"no pages in {site}"
        seen, fetched = {}, {}
        for html_name in ["index.html"] + pages:
            shot = SCREENSHOT_DIR / f"{name}-{Path(html_name).stem}.png"
            seen[html_name] = check_page(page, base + html_name, shot, base, notebook=html_name != "index.html",
                                         fetched=fetched, reader_mathjax=init_script is None)
            print(f"site test: {name}/{html_name}: {seen[html_name]['players']} players, "
                  f"{seen[html_name]['math']} equations; screenshot {shot}")
        assert not blocked, f"pages asked for the network: {sorted(set(blocked))[:10]}"
        assert not errors, f"JavaScript errors: {errors[:5]}"
        return seen
    finally:
        context.close()


def test_generated_site_offline(browser, serve, generated_site):
    seen = _run_site(browser, serve, generated_site, "generated")
    assert seen["01_players.html"]["players"] == 2      # the chain player + the parameter player's shown one
    assert seen["01_players.html"]["math"] >= 2 and seen["02_more.html"]["math"] >= 1


def test_course_site_offline(browser, serve, tmp_path):
    """The committed course rendered (site/ if `make course` made it, else rendered here from the committed
    notebooks): every page offline, and every notebook that builds a player shows working players from its
    saved widget state."""
    site = COURSE_SITE
    if not (site / "index.html").is_file():
        import importlib.util

        spec = importlib.util.spec_from_file_location("render_course", REPO / "scripts" / "render_course.py")
        rc = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(rc)
        site = tmp_path / "site"
        rc.render_course(REPO / "notebooks", site)
    seen = _run_site(browser, serve, site, "course", COURSE_MATHJAX)
    from test_browser import STEP_THROUGH_NOTEBOOKS

    silent = [n for n in STEP_THROUGH_NOTEBOOKS if seen[n.replace(".ipynb", ".html")]["players"] < 1]
    assert not silent, f"pages whose saved players did not come back: {silent}"
