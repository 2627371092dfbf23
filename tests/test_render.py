"""scripts/render_course.py: a tiny generated course rendered into tmp_path.

Checks the index lists pages in course order with their first headings as titles, that each page
links its neighbours in course order, that widget views without saved state fall back to their
static PNG while saved chain and parameter players become HTML players carrying every frame, that
nothing is loaded from the network (local MathJax, no CDN script), that links between notebooks
are rewritten and checked (files and anchors), and that a broken internal link makes the script
exit non-zero, naming the link. The rendered site in a real browser, offline: tests/test_site_browser.py.
"""
from __future__ import annotations

import base64
import importlib.util
import os
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


@pytest.fixture(autouse=True)
def _mathjax_installed():
    """The site needs MathJax from jupyter-server-mathjax (the test extra): skip here, fail in CI."""
    try:
        import jupyter_server_mathjax  # noqa: F401
    except ImportError:
        msg = "jupyter-server-mathjax is not installed (pip install -e '.[test]')"
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


def player_outputs(players):
    """Outputs and saved widget state of displayed players, as a kernel run with
    ``store_widget_state=True`` would leave them (the state comes from ipywidgets.embed, no kernel)."""
    from ipywidgets.embed import embed_data

    d = embed_data(views=[p.widget for p in players])
    outs = []
    for p in players:
        data, meta = p._repr_mimebundle_()
        outs.append(new_output("display_data", data=data, metadata=meta))
    return outs, d["manager_state"]


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


def _player_course(tmp_path):
    import numpy as np

    from minidiff.viz import digits_png
    from minidiff.widgets import ChainPlayer, ParameterPlayer

    frames = [np.full((8, 8), k / 4 - 0.5) for k in range(5)]
    chain = ChainPlayer(frames, lambda f: digits_png(f, scale=2), side=lambda f: digits_png(-f, scale=2),
                        labels=[f"t_index {k}" for k in range(5)], title="a <chain>", interval_ms=70)
    params = ParameterPlayer(lambda a, n: ChainPlayer([np.full((8, 8), a * k / n) for k in range(n + 1)],
                                                      lambda f: digits_png(f, scale=2)),
                             {"a": [0.5, 1.0], "n": [2, 3]}, value={"n": 3})
    outs, state = player_outputs([chain, params])
    src = tmp_path / "nb"
    src.mkdir()
    cell = new_code_cell("players", execution_count=1)
    cell.outputs = outs
    nb = new_notebook(cells=[new_markdown_cell("# 01 — Players\n\nInline $x_t$."), cell])
    nb.metadata["widgets"] = {rc.WIDGET_STATE_MIME: state}
    nbformat.write(nb, src / "01_players.ipynb")
    return src, chain, params


def test_saved_players_become_html_players_with_every_frame(tmp_path):
    src, chain, params = _player_course(tmp_path)
    site = tmp_path / "site"
    rc.render_course(src, site)
    page = (site / "01_players.html").read_text(encoding="utf-8")
    assert "widget-view+json" not in page and "widget-state+json" not in page
    assert page.count('class="md-player"') == 1 + 4           # the chain player, one per combination
    assert page.count('class="md-param-player"') == 1
    # every frame of both panels, byte for byte, shown at its display size
    for png in chain.frames_png + chain.side_png:
        assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in page
    assert page.count('width="20"') >= 10                    # (8 + 2) * 2 px displayed, drawn at 40
    for label in chain.labels:
        assert f">{label}</span>" in page
    assert 'data-interval="70"' in page and "a &lt;chain&gt;" in page
    # parameter player: one row of buttons per parameter, the stored choice marked
    assert re.findall(r'<div class="md-control" data-level="(\d)"><span class="md-desc">(\w)', page) == [
        ("0", "a"), ("1", "n")]
    on = re.findall(r'<button[^>]*class="md-opt md-on"[^>]*>([^<]*)</button>', page)
    assert on == ["0.5", "3"], on
    for p in params.players.values():
        assert base64.b64encode(p.frames_png[-1]).decode() in page
    assert (site / rc.PLAYER_JS_NAME).read_text() == rc.PLAYER_JS


def test_pages_load_nothing_from_the_network_and_link_in_course_order(course, tmp_path):
    site = tmp_path / "site"
    pages = rc.render_course(course, site)
    for k, p in enumerate(pages):
        text = (site / p.html_name).read_text(encoding="utf-8")
        srcs = re.findall(r'<script[^>]*\bsrc="([^"]*)"', text) + re.findall(r'<link[^>]*\bhref="([^"]*)"', text)
        assert srcs and all(not re.match(r"(https?:)?//", u) for u in srcs), srcs
        assert f'src="{rc.MATHJAX_URL}"' in text and (site / "mathjax" / "MathJax.js").is_file()
        prev = re.findall(r'class="md-prev" href="([^"]+)"', text)
        nxt = re.findall(r'class="md-next" href="([^"]+)"', text)
        assert prev == ([pages[k - 1].html_name] * 2 if k > 0 else [])
        assert nxt == ([pages[k + 1].html_name] * 2 if k + 1 < len(pages) else [])
    assert rc.check_links(site) == []


def test_player_with_incomplete_state_falls_back_to_its_strip(tmp_path):
    src, chain, _ = _player_course(tmp_path)
    nb = nbformat.read(src / "01_players.ipynb", as_version=4)
    st = nb.metadata["widgets"][rc.WIDGET_STATE_MIME]["state"]
    del st[chain.image_stack.children[2].model_id]           # one frame missing from the saved state
    nbformat.write(nb, src / "01_players.ipynb")
    site = tmp_path / "site"
    rc.render_course(src, site)
    page = (site / "01_players.html").read_text(encoding="utf-8")
    assert base64.b64encode(chain.static_strip()).decode() in page
    assert page.count('class="md-player"') == 4              # the parameter player's still render


def test_make_course_saves_widget_state_and_renders_the_site():
    """The committed notebooks carry their players: `make course` runs scripts/run_course.py, which stores widget
    state unless told not to, then renders the site."""
    make = (REPO / "Makefile").read_text()
    course = make.split("\ncourse:", 1)[1].split("\n\n", 1)[0]
    assert "scripts/run_course.py execute" in course and "--no-widget-state" not in course and "site" in course
    import inspect
    spec = importlib.util.spec_from_file_location("run_course", REPO / "scripts" / "run_course.py")
    run_course = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_course)
    assert "store_widget_state=not args.no_widget_state" in inspect.getsource(run_course.main)
    assert "scripts/render_course.py notebooks site" in make.split("\nsite:", 1)[1].split("\n\n", 1)[0]
