"""Run times are measured, not typed: every notebook's "**Run time**" line and the README's course map say what
notebooks/runtimes.json (written by `make course`, i.e. scripts/run_course.py) measured."""
import importlib.util
import json
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("run_course", ROOT / "scripts" / "run_course.py")
run_course = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_course)
TABLE = json.loads((ROOT / "notebooks" / "runtimes.json").read_text())


def test_human_rounding():
    assert [run_course.human(s) for s in (0.2, 7.4, 59.4, 61, 72, 178, 180)] == \
        ["1 s", "7 s", "59 s", "1 min", "1 min 10 s", "3 min", "3 min"]


@pytest.mark.parametrize("path", run_course.course_notebooks(), ids=lambda p: p.name)
def test_header_states_the_measured_run_time(path):
    assert path.name in TABLE, f"{path.name} has no measured run time: run `make course`"
    entry = TABLE[path.name]
    assert entry["fast_s"] > 0 and entry["full_s"] > 0
    first = nbformat.read(path, as_version=4).cells[0].source
    lines = [ln for ln in first.splitlines() if run_course.RUNTIME_LINE.match(ln)]
    assert lines == [run_course.header_line(entry)], f"{path.name}: run-time line not written by scripts/run_course.py"


def test_readme_course_map_states_the_measured_run_times():
    readme = (ROOT / "README.md").read_text()
    for path in run_course.course_notebooks():
        row = [ln for ln in readme.splitlines() if f"(notebooks/{path.name})" in ln]
        assert len(row) == 1, f"{path.name} must appear exactly once in the README's course map"
        assert row[0].rstrip().endswith("| " + run_course.readme_cell(TABLE[path.name]) + " |"), row[0]


def test_write_replaces_a_hand_typed_time(tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 01 — X\n\n**Run time** about 10 s.\n\nMore.")])
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb, path)
    entry = {"fast_s": 12.3, "full_s": 95.0, "machine": "2 cores (test)"}
    assert run_course._set_header(path, entry)
    src = nbformat.read(path, as_version=4).cells[0].source
    assert run_course.header_line(entry) in src and "about 10 s" not in src and src.endswith("More.")
    assert not run_course._set_header(path, entry)  # idempotent
