#!/usr/bin/env python
"""Render the executed course notebooks to a static HTML folder, with an index in course order.

    python scripts/render_course.py [NOTEBOOK_DIR] [OUT_DIR]        (defaults: notebooks site)

* Course order is the file-name order of ``NN_*.ipynb`` (two-digit prefix); each page's title is the
  notebook's first Markdown heading.
* Pages are exported with nbconvert's ``HTMLExporter`` (lab template). Widgets have no live kernel
  there, so every output that carries a static fallback (e.g. the chain player's ``image/png`` strip)
  has its ``application/vnd.jupyter.widget-view+json`` entry removed before export, and saved widget
  state is dropped from the notebook metadata (no widget JavaScript is loaded).
* Links between notebooks (``04_ddpm.ipynb#Sampling``) are rewritten to the pages (``04_ddpm.html#...``).
* Every internal link of every page (relative ``href``/``src``, and ``#anchors``) is checked against
  the files and element ids of the rendered folder. Broken ones are listed and the exit status is 1.

Notebooks are rendered as stored: run ``make course`` (full mode, outputs written back) first.
"""
from __future__ import annotations

import argparse
import html
import re
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


def strip_widgets(nb):
    """Drop widget views where a static fallback exists, and the saved widget state. In place."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data")
            if data and WIDGET_MIME in data and any(k not in (WIDGET_MIME, "text/plain") for k in data):
                del data[WIDGET_MIME]
            elif data and WIDGET_MIME in data:
                # No static fallback: say so rather than print the widget's repr.
                del data[WIDGET_MIME]
                data["text/plain"] = "[interactive widget: open this notebook in JupyterLab]"
            if data:
                data.pop(WIDGET_STATE_MIME, None)
    return nb


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


def export_page(nb_path: Path, exporter) -> tuple[str, str]:
    nb = nbformat.read(nb_path, as_version=4)
    title = notebook_title(nb, nb_path.stem)
    n = unexecuted_cells(nb)
    if n:
        print(f"warning: {nb_path.name}: {n} code cells have not been executed (run `make course` first)",
              file=sys.stderr)
    strip_widgets(nb)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return title, rewrite_notebook_links(body)


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
<p>The course in order. Each page is a notebook rendered with its outputs; interactive widgets appear
as static strips of frames. To run and drive them, open the notebooks in JupyterLab (<code>make lab</code>).</p>
<ol class="course">
{items}
</ol>
</body>
</html>
"""


def render_course(src: Path, out: Path, *, title: str = "minidiff — the course") -> list[Page]:
    """Render every course notebook in ``src`` to ``out``; write ``out/index.html``; return the pages."""
    from nbconvert import HTMLExporter

    notebooks = course_notebooks(src)
    if not notebooks:
        raise SystemExit(f"no course notebooks ({COURSE_GLOB}) in {src}")
    out.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab")
    pages = []
    for nb_path in notebooks:
        page_title, body = export_page(nb_path, exporter)
        page = Page(nb_path, nb_path.stem + ".html", page_title)
        (out / page.html_name).write_text(body, encoding="utf-8")
        pages.append(page)
        print(f"rendered {nb_path} -> {out / page.html_name}  ({page_title})")
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
