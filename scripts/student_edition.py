#!/usr/bin/env python
"""Write the student edition of the course: every notebook without its worked solutions.

    python scripts/student_edition.py [NOTEBOOK_DIR] [OUT_DIR]      (defaults: notebooks student)

Each course notebook (``NN_*.ipynb``) goes through nbconvert's own preprocessors:
``TagRemovePreprocessor`` drops the cells tagged ``solution`` (the Markdown ``<details>`` solution,
the worked-solution code cell and the final ``exercises.assert_all_correct()``), and
``ClearOutputPreprocessor`` removes outputs and execution counts; saved widget state is dropped from
the notebook metadata. What stays of each exercise is its stub (returning ``None``) and its check
cell, which prints ``not yet: ...`` until the student fills the stub in. ``sanitize.cfg`` and
``conftest.py`` are copied along so the edition can be checked with nbval too.

``make student`` runs this; ``student/`` is not committed.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import nbformat

SOLUTION_TAG = "solution"
COURSE_GLOB = "[0-9][0-9]*.ipynb"
SUPPORT_FILES = ("sanitize.cfg", "conftest.py")


def student_exporter():
    """A ``NotebookExporter`` that removes solution-tagged cells and clears outputs."""
    from nbconvert import NotebookExporter
    from nbconvert.preprocessors import ClearOutputPreprocessor, TagRemovePreprocessor

    exporter = NotebookExporter()
    exporter.register_preprocessor(TagRemovePreprocessor(remove_cell_tags={SOLUTION_TAG}, enabled=True), enabled=True)
    exporter.register_preprocessor(ClearOutputPreprocessor(enabled=True), enabled=True)
    return exporter


def student_notebook(nb_path: Path, exporter=None) -> nbformat.NotebookNode:
    """The student edition of one notebook, as a notebook node."""
    exporter = exporter or student_exporter()
    nb = nbformat.read(nb_path, as_version=4)
    body, _ = exporter.from_notebook_node(nb)
    out = nbformat.reads(body, as_version=4)
    out.metadata.pop("widgets", None)
    return out


def solution_cells(nb) -> int:
    return sum(1 for c in nb.cells if SOLUTION_TAG in c.get("metadata", {}).get("tags", []))


def write_student_edition(src: Path, out: Path) -> list[tuple[Path, int]]:
    """Write the student edition of every course notebook in ``src`` to ``out``; return
    ``(written path, solution cells removed)`` per notebook."""
    notebooks = sorted(src.glob(COURSE_GLOB))
    if not notebooks:
        raise SystemExit(f"no course notebooks ({COURSE_GLOB}) in {src}")
    out.mkdir(parents=True, exist_ok=True)
    exporter = student_exporter()
    written = []
    for nb_path in notebooks:
        removed = solution_cells(nbformat.read(nb_path, as_version=4))
        target = out / nb_path.name
        nbformat.write(student_notebook(nb_path, exporter), target)
        written.append((target, removed))
    for name in SUPPORT_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="?", default="notebooks", type=Path)
    ap.add_argument("out", nargs="?", default="student", type=Path)
    args = ap.parse_args(argv)
    for target, removed in write_student_edition(args.notebooks, args.out):
        print(f"{target}: {removed} solution cell(s) removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
