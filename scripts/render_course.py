#!/usr/bin/env python
"""Render the executed course notebooks to a static HTML folder that works offline, in course order.

    python scripts/render_course.py [NOTEBOOK_DIR] [OUT_DIR]        (defaults: notebooks site)

* Course order is the file-name order of ``NN_*.ipynb`` (two-digit prefix); each page's title is the
  notebook's first Markdown heading. ``index.html`` lists the pages; every page has a bar linking the
  previous page, the index and the next page, above and below its content.
* Pages are exported with nbconvert's ``HTMLExporter`` (lab template). Nothing is loaded from the
  network: equations are typeset by the MathJax 2.7 that the ``jupyter-server-mathjax`` package
  ships (copied to ``OUT_DIR/mathjax/``; the same TeX coverage as JupyterLab and the MathJax major
  version nbconvert's templates are written for, where a build-time LaTeX-to-MathML converter such
  as latex2mathml covers only part of the notebooks' LaTeX), and require.js is not loaded.
* Players: a :class:`minidiff.widgets.ChainPlayer` or ``ParameterPlayer`` output whose widget state
  was saved with the notebook (``make course`` executes with ``store_widget_state=True``) becomes a
  small HTML player: the same pre-rendered frames, Play, slider, step label and parameter buttons,
  driven by ``OUT_DIR/minidiff-player.js`` (written by this script, no widget manager from a CDN).
  Any other widget output falls back to its static ``image/png`` (or a one-line note), and the saved
  widget state is dropped from the page.
* Links between notebooks (``04_ddpm.ipynb#Sampling``) are rewritten to the pages (``04_ddpm.html#...``).
* Every internal link of every page (relative ``href``/``src``, and ``#anchors``) is checked against
  the files and element ids of the rendered folder. Broken ones are listed and the exit status is 1.

Notebooks are rendered as stored: run ``make course`` (full mode, outputs written back) first.
"""
from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"
COURSE_GLOB = "[0-9][0-9]*.ipynb"


@dataclass(frozen=True)
class Page:
    source: Path       # the notebook
    html_name: str     # NN_name.html
    title: str


# ------------------------------------------------------------------------------ notebooks
def course_notebooks(src: Path) -> list[Path]:
    """The course's notebooks in course order (file-name order of the numeric prefix)."""
    return sorted(p for p in src.glob(COURSE_GLOB) if not p.name.startswith("."))


def notebook_title(nb, fallback: str) -> str:
    """The text of the first Markdown heading (``# Title`` or ``<h1>``), else ``fallback``."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            m = re.match(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", line)
            if m:
                return m.group(1).strip()
            m = re.search(r"<h[1-6][^>]*>(.*?)</h[1-6]>", line, re.I)
            if m:
                return re.sub(r"<[^>]+>", "", m.group(1)).strip()
    return fallback


def widget_state(nb) -> dict:
    """The saved widget models of a notebook, ``{model_id: {"model_name", "state", "buffers"}}``."""
    meta = nb.metadata.get("widgets") or {}
    return dict((meta.get(WIDGET_STATE_MIME) or {}).get("state") or {})


def strip_widgets(nb):
    """Replace each player's widget view by an HTML player built from the saved state; drop other
    widget views where a static fallback exists; drop the saved widget state. In place."""
    state = widget_state(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data")
            if not data or WIDGET_MIME not in data:
                if data:
                    data.pop(WIDGET_STATE_MIME, None)
                continue
            view = data[WIDGET_MIME] or {}
            player = player_html(state, view.get("model_id", ""))
            if player is not None:
                out["data"] = {"text/html": player, "text/plain": data.get("text/plain", "")}
                out.get("metadata", {}).pop("image/png", None)
                continue
            if any(k not in (WIDGET_MIME, "text/plain") for k in data):
                del data[WIDGET_MIME]
            else:
                # No static fallback: say so rather than print the widget's repr.
                del data[WIDGET_MIME]
                data["text/plain"] = "[interactive widget: open this notebook in JupyterLab]"
            data.pop(WIDGET_STATE_MIME, None)
    return nb


# ------------------------------------------------------------------------------ players from saved state
PLAYER_CLASS = "minidiff-chain-player"          # minidiff.widgets.PLAYER_CLASS
PARAMETER_PLAYER_CLASS = "minidiff-parameter-player"


def _ref(s: str) -> str:
    return s[len("IPY_MODEL_"):] if isinstance(s, str) and s.startswith("IPY_MODEL_") else s


def _kids(state: dict, mid: str) -> list[str]:
    m = state.get(mid)
    return [] if m is None else [_ref(c) for c in m["state"].get("children", [])]


def _walk(state: dict, mid: str):
    """Model ids under ``mid`` (itself first), depth first, in child order."""
    yield mid
    for c in _kids(state, mid):
        yield from _walk(state, c)


def _image_src(model: dict) -> str | None:
    for b in model.get("buffers", []):
        if b.get("path") == ["value"] and b.get("encoding") == "base64":
            fmt = model["state"].get("format", "png")
            return f"data:image/{fmt};base64,{b['data']}"
    return None


def _esc(s) -> str:
    return html.escape(str(s), quote=True)


def _title_html(state: dict, mid: str) -> str:
    for c in _kids(state, mid)[:1]:
        if state[c]["model_name"] == "HTMLModel":
            return f'<div class="md-title">{state[c]["state"].get("value", "")}</div>'
    return ""


def _stack_html(state: dict, stack_id: str, cls: str, sel: int) -> str | None:
    items = []
    for k, c in enumerate(_kids(state, stack_id)):
        m = state.get(c)
        if m is None:
            return None
        hidden = "" if k == sel else " hidden"
        if m["model_name"] == "ImageModel":
            src = _image_src(m)
            if src is None:
                return None
            w = m["state"].get("width") or ""
            width = f' width="{_esc(w)}"' if w else ""
            items.append(f'<img class="md-frame" alt="frame {k}" src="{src}"{width}{hidden}>')
        elif m["model_name"] == "LabelModel":
            items.append(f'<span class="md-frame"{hidden}>{_esc(m["state"].get("value", ""))}</span>')
        else:
            return None
    return f'<div class="md-stack {cls}">' + "".join(items) + "</div>"


def chain_player_html(state: dict, mid: str) -> str | None:
    """A saved ``ChainPlayer`` as static HTML the player script drives, or ``None`` if its state is
    incomplete."""
    ids = list(_walk(state, mid))
    models = {i: state.get(i) for i in ids}
    if any(m is None for m in models.values()):
        return None
    play = next((i for i in ids if models[i]["model_name"] == "PlayModel"), None)
    stacks = [i for i in ids if models[i]["model_name"] == "StackModel"]
    if play is None or not stacks:
        return None
    ps = models[play]["state"]
    n, start = int(ps.get("max", 0)) + 1, int(ps.get("value", 0))
    labels = [i for i in stacks if all(state[c]["model_name"] == "LabelModel" for c in _kids(state, i))]
    images = [i for i in stacks if i not in labels]
    label_html = _stack_html(state, labels[0], "md-labels", start) if labels else ""
    panels = [_stack_html(state, i, "md-panel", start) for i in images]
    if label_html is None or any(p is None for p in panels) or not panels:
        return None
    return (f'<div class="md-player" data-interval="{int(ps.get("interval", 200))}" '
            f'data-loop="{1 if ps.get("repeat") else 0}">' + _title_html(state, mid) +
            '<div class="md-controls"><button type="button" class="md-play" aria-label="Play">&#9654; Play</button>'
            f'<input type="range" class="md-slider" aria-label="step" min="0" max="{n - 1}" step="1" value="{start}">'
            f'{label_html}</div><div class="md-panels">{"".join(panels)}</div></div>')


def parameter_player_html(state: dict, mid: str) -> str | None:
    """A saved ``ParameterPlayer``: one row of buttons per control, nested stacks of players."""
    kids = _kids(state, mid)
    title = _title_html(state, mid)
    kids = kids[1:] if title else kids
    if len(kids) != 2:
        return None
    controls = [c for c in _kids(state, kids[0]) if state.get(c, {}).get("model_name") == "ToggleButtonsModel"]
    if not controls:
        return None
    rows = []
    for level, c in enumerate(controls):
        st = state[c]["state"]
        sel = st.get("index", 0)
        buttons = "".join(
            f'<button type="button" class="md-opt{" md-on" if k == sel else ""}" data-k="{k}">{_esc(lab)}</button>'
            for k, lab in enumerate(st.get("_options_labels", [])))
        rows.append(f'<div class="md-control" data-level="{level}"><span class="md-desc">{_esc(st.get("description", ""))}'
                    f'</span>{buttons}</div>')

    def nest(sid: str, level: int) -> str | None:
        m = state.get(sid)
        if m is None:
            return None
        if m["model_name"] != "StackModel":
            return chain_player_html(state, sid)
        sel = m["state"].get("selected_index") or 0
        parts = []
        for k, c in enumerate(_kids(state, sid)):
            inner = nest(c, level + 1)
            if inner is None:
                return None
            parts.append(f'<div class="md-pframe"{"" if k == sel else " hidden"}>{inner}</div>')
        return f'<div class="md-pstack" data-level="{level}">' + "".join(parts) + "</div>"

    body = nest(kids[1], 0)
    if body is None:
        return None
    return f'<div class="md-param-player">{title}{"".join(rows)}{body}</div>'


def player_html(state: dict, mid: str) -> str | None:
    """The HTML player for widget ``mid`` if it is a saved chain or parameter player, else ``None``."""
    m = state.get(mid)
    if m is None:
        return None
    classes = m["state"].get("_dom_classes", [])
    if PARAMETER_PLAYER_CLASS in classes:
        return parameter_player_html(state, mid)
    if PLAYER_CLASS in classes:
        return chain_player_html(state, mid)
    return None


PLAYER_CSS = """
.md-player, .md-param-player { font: 14px system-ui, sans-serif; margin: .5rem 0; }
.md-title { font-weight: bold; margin: .25rem 0; }
.md-controls { display: flex; align-items: center; gap: .6rem; margin: .25rem 0; }
.md-slider { width: 320px; }
.md-panels { display: flex; align-items: flex-start; gap: .5rem; }
.md-control { margin: .2rem 0; } .md-desc { display: inline-block; min-width: 4rem; }
.md-opt { margin-right: .2rem; } .md-opt.md-on { font-weight: bold; outline: 2px solid #1976d2; }
.md-nav { display: flex; justify-content: space-between; font: 14px system-ui, sans-serif;
          max-width: 1100px; margin: .6rem auto; padding: .3rem 1rem; border-bottom: 1px solid #ddd; }
.md-nav.md-bottom { border-top: 1px solid #ddd; border-bottom: none; }
"""

# Drives the players rendered above: the slider selects one frame of every stack; Play steps it.
PLAYER_JS = """(function () {
  function show(player, i) {
    player.querySelectorAll(':scope > .md-controls > .md-stack, :scope > .md-panels > .md-stack')
      .forEach(function (stack) {
        Array.prototype.forEach.call(stack.children, function (el, k) { el.hidden = (k !== i); });
      });
  }
  document.querySelectorAll('.md-player').forEach(function (player) {
    var slider = player.querySelector('.md-slider'), button = player.querySelector('.md-play');
    var n = parseInt(slider.max, 10) + 1, interval = parseInt(player.dataset.interval, 10) || 200;
    var loop = player.dataset.loop === '1', timer = null;
    function stop() { if (timer) { clearInterval(timer); timer = null; } button.innerHTML = '&#9654; Play'; }
    slider.addEventListener('input', function () { show(player, parseInt(slider.value, 10)); });
    button.addEventListener('click', function () {
      if (timer) { stop(); return; }
      if (parseInt(slider.value, 10) >= n - 1) { slider.value = 0; show(player, 0); }
      button.innerHTML = '&#10073;&#10073; Pause';
      timer = setInterval(function () {
        var i = parseInt(slider.value, 10) + 1;
        if (i >= n) { if (!loop) { stop(); return; } i = 0; }
        slider.value = i; show(player, i);
      }, interval);
    });
  });
  document.querySelectorAll('.md-param-player').forEach(function (pp) {
    pp.querySelectorAll('.md-control').forEach(function (row) {
      var level = row.dataset.level;
      row.querySelectorAll('.md-opt').forEach(function (b) {
        b.addEventListener('click', function () {
          var k = parseInt(b.dataset.k, 10);
          row.querySelectorAll('.md-opt').forEach(function (o) { o.classList.toggle('md-on', o === b); });
          pp.querySelectorAll('.md-pstack[data-level="' + level + '"]').forEach(function (st) {
            Array.prototype.forEach.call(st.children, function (el, j) { el.hidden = (j !== k); });
          });
        });
      });
    });
  });
})();
"""


def unexecuted_cells(nb) -> int:
    return sum(1 for c in nb.cells if c.cell_type == "code" and c.source.strip() and c.get("execution_count") is None)


_IPYNB_LINK = re.compile(r"""(?P<attr>\b(?:href|src)\s*=\s*)(?P<q>["'])(?P<url>[^"'#?]*?)\.ipynb(?P<rest>[#?][^"']*)?(?P=q)""")


def rewrite_notebook_links(text: str) -> str:
    """``href="04_ddpm.ipynb#x"`` -> ``href="04_ddpm.html#x"`` for relative links only."""
    def sub(m):
        url = m.group("url")
        if urlsplit(url).scheme or url.startswith("//"):
            return m.group(0)
        return f"{m.group('attr')}{m.group('q')}{url}.html{m.group('rest') or ''}{m.group('q')}"
    return _IPYNB_LINK.sub(sub, text)


MATHJAX_DIR = "mathjax"
MATHJAX_URL = f"{MATHJAX_DIR}/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"
PLAYER_JS_NAME = "minidiff-player.js"
# jupyter-server-mathjax ships the STIX-Web fonts (not MathJax's default TeX web font): use them, as
# the classic Jupyter Notebook did with this same MathJax.
MATHJAX_FONT_CONFIG = """<script type="text/x-mathjax-config">
MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], imageFont: null, preferredFont: null, webFont: "STIX-Web"}});
</script>
"""


def mathjax_source() -> Path:
    """The MathJax 2.7 tree that the ``jupyter-server-mathjax`` package ships."""
    try:
        import jupyter_server_mathjax
    except ImportError as e:
        raise SystemExit("the offline site needs MathJax from the jupyter-server-mathjax package: "
                         "pip install -e '.[test]' (or pip install jupyter-server-mathjax)") from e
    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    if not (static / "MathJax.js").is_file():
        raise SystemExit(f"jupyter-server-mathjax is installed but {static / 'MathJax.js'} is missing")
    return static


def install_assets(out: Path) -> None:
    """Copy MathJax into ``out/mathjax`` (once) and write the player script."""
    target = out / MATHJAX_DIR
    if not (target / "MathJax.js").is_file():
        shutil.copytree(mathjax_source(), target, dirs_exist_ok=True)
    (out / PLAYER_JS_NAME).write_text(PLAYER_JS, encoding="utf-8")


def make_exporter():
    from nbconvert import HTMLExporter

    # Local MathJax; no require.js (nothing on the pages needs it; the players use their own script).
    return HTMLExporter(template_name="lab", mathjax_url=MATHJAX_URL, require_js_url="")


def nav_html(prev: Page | None, nxt: Page | None, cls: str) -> str:
    left = f'<a class="md-prev" href="{_esc(prev.html_name)}">&larr; {_esc(prev.title)}</a>' if prev else "<span></span>"
    right = f'<a class="md-next" href="{_esc(nxt.html_name)}">{_esc(nxt.title)} &rarr;</a>' if nxt else "<span></span>"
    return f'<nav class="md-nav {cls}">{left}<a class="md-index" href="index.html">course index</a>{right}</nav>'


def finish_page(body: str, prev: Page | None, nxt: Page | None) -> str:
    """Links to notebooks -> pages; no empty script tags; the course bar above and below; the players'
    style and script."""
    body = rewrite_notebook_links(body)
    body = body.replace('<script src=""></script>', "")
    body = body.replace(f'<script src="{MATHJAX_URL}"', MATHJAX_FONT_CONFIG + f'<script src="{MATHJAX_URL}"', 1)
    body = body.replace("</head>", f"<style>{PLAYER_CSS}</style>\n</head>", 1)
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + nav_html(prev, nxt, "md-top"), body, count=1)
    tail = nav_html(prev, nxt, "md-bottom") + f'<script src="{PLAYER_JS_NAME}"></script>\n'
    i = body.rfind("</body>")
    return body[:i] + tail + body[i:] if i >= 0 else body + tail


def export_page(nb_path: Path, exporter) -> tuple[str, str]:
    nb = nbformat.read(nb_path, as_version=4)
    title = notebook_title(nb, nb_path.stem)
    n = unexecuted_cells(nb)
    if n:
        print(f"warning: {nb_path.name}: {n} code cells have not been executed (run `make course` first)",
              file=sys.stderr)
    strip_widgets(nb)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return title, body


INDEX_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
 body {{ font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5; }}
 ol {{ padding-left: 1.5rem; }} li {{ margin: .4rem 0; }} .file {{ color: #666; font-size: .85em; }}
</style>
</head>
<body>
<h1 id="top">{title}</h1>
<p>The course in order. Each page is a notebook rendered with its outputs; it works offline
(equations typeset by a local MathJax, step-through players play in the page). To run the code and
change it, open the notebooks in JupyterLab (<code>make lab</code>).</p>
<ol class="course">
{items}
</ol>
</body>
</html>
"""


def render_course(src: Path, out: Path, *, title: str = "minidiff — the course") -> list[Page]:
    """Render every course notebook in ``src`` to ``out``; write ``out/index.html``; return the pages."""
    notebooks = course_notebooks(src)
    if not notebooks:
        raise SystemExit(f"no course notebooks ({COURSE_GLOB}) in {src}")
    out.mkdir(parents=True, exist_ok=True)
    install_assets(out)
    exporter = make_exporter()
    exported = []
    for nb_path in notebooks:
        page_title, body = export_page(nb_path, exporter)
        exported.append((Page(nb_path, nb_path.stem + ".html", page_title), body))
    pages = [p for p, _ in exported]
    for k, (page, body) in enumerate(exported):
        prev = pages[k - 1] if k > 0 else None
        nxt = pages[k + 1] if k + 1 < len(pages) else None
        (out / page.html_name).write_text(finish_page(body, prev, nxt), encoding="utf-8")
        print(f"rendered {page.source} -> {out / page.html_name}  ({page.title})")
    items = "\n".join(
        f'<li><a href="{html.escape(p.html_name)}">{html.escape(p.title)}</a> '
        f'<span class="file">{html.escape(p.source.name)}</span></li>' for p in pages)
    (out / "index.html").write_text(INDEX_TEMPLATE.format(title=html.escape(title), items=items), encoding="utf-8")
    return pages


# ------------------------------------------------------------------------------ link check
class _LinkParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []   # (attribute, url)
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value)
            elif name == "href" and tag in ("a", "area"):
                self.links.append((name, value))
            elif name == "src" and tag in ("img", "script", "iframe", "source", "video", "audio"):
                self.links.append((name, value))


def _is_internal(url: str) -> bool:
    if not url or url.startswith("//"):
        return False
    return not urlsplit(url).scheme   # http:, https:, mailto:, data:, javascript: are external


def check_links(site: Path) -> list[str]:
    """Every broken internal link in the HTML pages under ``site``, as readable lines."""
    parsed: dict[Path, _LinkParser] = {}
    for page in sorted(site.rglob("*.html")):
        p = _LinkParser()
        p.feed(page.read_text(encoding="utf-8", errors="replace"))
        parsed[page.resolve()] = p
    site_root = site.resolve()
    broken = []
    for page, p in parsed.items():
        rel_page = page.relative_to(site_root)
        for attr, url in p.links:
            if not _is_internal(url):
                continue
            parts = urlsplit(url)
            target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
            if parts.path.endswith("/") or (target.is_dir() and parts.path):
                target = target / "index.html"
            if not target.is_relative_to(site_root):
                broken.append(f"{rel_page}: {attr}=\"{url}\" points outside the site folder")
            elif not target.is_file():
                broken.append(f"{rel_page}: {attr}=\"{url}\" -> missing file {target.relative_to(site_root)}")
            elif parts.fragment and target.suffix == ".html":
                ids = parsed.get(target).ids if target in parsed else set()
                frag = unquote(parts.fragment)
                if frag not in ids and parts.fragment not in ids:
                    broken.append(f"{rel_page}: {attr}=\"{url}\" -> no anchor #{frag} in {target.relative_to(site_root)}")
    return broken


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="?", default="notebooks", type=Path)
    ap.add_argument("out", nargs="?", default="site", type=Path)
    ap.add_argument("--title", default="minidiff — the course")
    args = ap.parse_args(argv)
    pages = render_course(args.notebooks, args.out, title=args.title)
    broken = check_links(args.out)
    if broken:
        print(f"{len(broken)} broken internal link(s) in {args.out}/:", file=sys.stderr)
        for line in broken:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"{len(pages)} pages and {args.out / 'index.html'}; all internal links resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main())
