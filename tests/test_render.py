"""scripts/render_course.py: a tiny generated course rendered into tmp_path.

Checks the index lists pages in course order with their first headings as titles, that widget views
fall back to their static PNG, that links between notebooks are rewritten and checked (files and
anchors), and that a broken internal link makes the script exit non-zero, naming the link.
"""
from __future__ import annotations

import base64
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "render_course.py"

# A 1x1 PNG: the static fallback a chain player puts next to its widget view.
PNG_1x1 = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a5e0a7d40000000049454e44ae426082")).decode()


def _load_module():
    spec = importlib.util.spec_from_file_location("render_course", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses look their module up while it executes
    spec.loader.exec_module(mod)
    return mod


rc = _load_module()


def _write(path: Path, title: str, *, extra_md: str = "", widget: bool = False):
    cells = [new_markdown_cell(f"Some preamble without a heading.\n\n# {title}\n\nIntro.\n\n## Section two\n{extra_md}")]
    code = new_code_cell("1 + 1", execution_count=1)
    code.outputs = [new_output("execute_result", data={"text/plain": "2"}, execution_count=1)]
    cells.append(code)
    if widget:
        w = new_code_cell("player", execution_count=2)
        w.outputs = [new_output("display_data", data={
            "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2, "version_minor": 0},
            "image/png": PNG_1x1,
            "text/plain": "ChainPlayer(...)",
        })]
        cells.append(w)
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2,
                                                                              "version_minor": 0}}
    nbformat.write(nb, path)


@pytest.fixture
def course(tmp_path):
    src = tmp_path / "notebooks"
    src.mkdir()
    # Written out of order on purpose; not-a-course files are ignored.
    _write(src / "10_last.ipynb", "10 — Last", extra_md="Back to [the start](00_first.ipynb#Section-two).")
    _write(src / "00_first.ipynb", "00 — First", extra_md="Next: [the middle](02_middle.ipynb).", widget=True)
    _write(src / "02_middle.ipynb", "02 — Middle", extra_md="[Up](#Section-two) and [index](index.html).")
    _write(src / "scratch.ipynb", "Scratch")
    return src


def test_index_in_course_order_with_titles(course, tmp_path):
    site = tmp_path / "site"
    pages = rc.render_course(course, site)
    assert [p.html_name for p in pages] == ["00_first.html", "02_middle.html", "10_last.html"]
    assert [p.title for p in pages] == ["00 — First", "02 — Middle", "10 — Last"]
    index = (site / "index.html").read_text(encoding="utf-8")
    hrefs = re.findall(r'<li><a href="([^"]+)">([^<]+)</a>', index)
    assert hrefs == [("00_first.html", "00 — First"), ("02_middle.html", "02 — Middle"), ("10_last.html", "10 — Last")]
    assert not (site / "scratch.html").exists()
    assert rc.check_links(site) == []


def test_widget_falls_back_to_static_png(course, tmp_path):
    site = tmp_path / "site"
    rc.render_course(course, site)
    page = (site / "00_first.html").read_text(encoding="utf-8")
    assert f"data:image/png;base64,{PNG_1x1}" in page
    assert "widget-view+json" not in page and "ChainPlayer(...)" not in page
    assert "html-manager" not in page            # no widget JavaScript without saved state
    # Links between notebooks point at the rendered pages.
    assert 'href="02_middle.html"' in page and ".ipynb" not in re.sub(r"<title>.*?</title>", "", page)


def test_broken_internal_links_fail(course, tmp_path):
    nb = nbformat.read(course / "02_middle.ipynb", as_version=4)
    nb.cells[0].source += ("\n\nSee [a missing notebook](99_missing.ipynb), [a missing anchor](10_last.ipynb#Nowhere)"
                           " and [an outside file](../README.md).")
    nbformat.write(nb, course / "02_middle.ipynb")
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(course), str(site)], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr
    assert "3 broken internal link(s)" in err, err
    assert 'href="99_missing.html" -> missing file 99_missing.html' in err
    assert "no anchor #Nowhere in 10_last.html" in err
    assert 'href="../README.md" points outside the site folder' in err
    assert all(line.strip().startswith("02_middle.html:") for line in err.splitlines()[1:] if line.strip())


def test_good_course_exits_zero(course, tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(course), str(tmp_path / "site")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "3 pages" in proc.stdout and "all internal links resolve" in proc.stdout
