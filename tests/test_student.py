"""The student edition (scripts/student_edition.py, ``make student``): solutions out, stubs and checks in.

A small generated notebook in the course's exercise shape -- stub returning None, Markdown
``<details>`` solution and worked-solution cell (both tagged ``solution``), a check cell calling
``minidiff.exercises``, and a final solution-tagged ``exercises.assert_all_correct()`` -- is turned
into its student edition with nbconvert's own preprocessors. Executed by a real kernel, the student
edition runs top to bottom with every check recording "not yet", and the instructor edition with
every check "correct". Every course notebook's student edition keeps its checks and loses every worked
solution (static test); the quick ones (``EXECUTED_STUDENT_EDITIONS``) are also executed in fast mode, top
to bottom, with every check "not yet" (the instructor editions are executed by nbval).

The recorded results are read from the kernel itself: a final cell prints
``minidiff.exercises.results()`` as JSON.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from thorough import THOROUGH

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "student_edition.py"
NOTEBOOK_DIR = REPO / "notebooks"


def _load():
    spec = importlib.util.spec_from_file_location("student_edition", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


se = _load()

RESULTS_CELL = ("import json as _json\nfrom minidiff import exercises as _ex\n"
                "print('EXERCISE-RESULTS ' + _json.dumps({k: r.ok for k, r in _ex.results().items()}))")


def _tagged(cell, tag="solution"):
    cell.metadata["tags"] = [tag]
    return cell


def exercise_notebook() -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell("# 01 — Exercises\n\n**Exercise 1.** Return the squares of `x`, shape `(B, 2)`."),
        new_code_cell("import numpy as np\nfrom minidiff import exercises\nx = np.arange(6.0).reshape(3, 2)"),
        new_code_cell("def squares(x):\n    return None  # your answer here"),
        _tagged(new_markdown_cell("<details><summary>Solution</summary>\n\n`x ** 2`.\n</details>")),
        _tagged(new_code_cell("def squares(x):\n    return x ** 2")),
        new_code_cell("exercises.check_close('exercise 1', squares(x), x * x)"),
        new_markdown_cell("**Exercise 2.** The shape of `squares(x)` flattened, `(6,)`."),
        new_code_cell("flat = None  # your answer here"),
        _tagged(new_code_cell("flat = squares(x).reshape(-1)")),
        new_code_cell("exercises.check_shape('exercise 2', flat, (6,))"),
        _tagged(new_code_cell("exercises.assert_all_correct()")),
    ]
    return new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                              "language": "python"}})


def run_notebook(nb, cwd: Path, timeout: int = 600) -> dict:
    """Execute ``nb`` (plus the results cell) in a fresh kernel; return the exercise results."""
    from nbclient import NotebookClient

    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    nb.cells.append(new_code_cell(RESULTS_CELL))
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
    line = next(s for s in text.splitlines() if s.startswith("EXERCISE-RESULTS "))
    return json.loads(line[len("EXERCISE-RESULTS "):])


@pytest.fixture
def one_thread(monkeypatch):
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        monkeypatch.setenv(k, "1")
    monkeypatch.setenv("MINIDIFF_FAST", "1")


def test_student_edition_removes_solutions_keeps_stubs_and_checks(tmp_path):
    src = tmp_path / "notebooks"
    src.mkdir()
    nbformat.write(exercise_notebook(), src / "01_ex.ipynb")
    (src / "sanitize.cfg").write_text("regex: x\nreplace: y\n")
    written = se.write_student_edition(src, tmp_path / "student")
    assert [(p.name, n) for p, n in written] == [("01_ex.ipynb", 4)]
    student = nbformat.read(tmp_path / "student" / "01_ex.ipynb", as_version=4)
    sources = [c.source for c in student.cells]
    assert not any("solution" in c.metadata.get("tags", []) for c in student.cells)
    assert not any("<details>" in s or "x ** 2" in s or "assert_all_correct" in s for s in sources)
    assert "def squares(x):\n    return None  # your answer here" in sources
    assert sum("exercises.check_" in s for s in sources) == 2
    assert len(student.cells) == len(exercise_notebook().cells) - 4
    assert (tmp_path / "student" / "sanitize.cfg").is_file()


def test_student_edition_says_not_yet_and_instructor_edition_correct(tmp_path, one_thread):
    src = tmp_path / "notebooks"
    src.mkdir()
    nbformat.write(exercise_notebook(), src / "01_ex.ipynb")
    se.write_student_edition(src, tmp_path / "student")
    student = nbformat.read(tmp_path / "student" / "01_ex.ipynb", as_version=4)
    assert run_notebook(student, tmp_path) == {"exercise 1": False, "exercise 2": False}
    assert run_notebook(exercise_notebook(), tmp_path) == {"exercise 1": True, "exercise 2": True}


def _course_with_solutions(only=None):
    out = []
    for path in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]*.ipynb")):
        if (only is None or path.name in only) and se.solution_cells(nbformat.read(path, as_version=4)):
            out.append(pytest.param(path.name, id=path.stem))
    return out or [pytest.param(None, id="none", marks=pytest.mark.skip(
        reason="no course notebook has solution-tagged cells yet"))]


# Executing a student edition costs a whole fast-mode run of its notebook, on top of nbval's run of the
# instructor edition: the quick notebooks are executed here (every chapter's exercise shape is the same);
# the static test below covers every notebook.
# Executed: the two quickest by default, every quick one with MINIDIFF_THOROUGH=1 (tests/thorough.py); every
# notebook's student edition is checked statically above.
EXECUTED_STUDENT_EDITIONS = (("00_start_here.ipynb", "01_fick_brownian.ipynb", "02_markov_chains.ipynb",
                              "03_forward_process.ipynb", "12_discrete_diffusion.ipynb") if THOROUGH
                             else ("00_start_here.ipynb", "12_discrete_diffusion.ipynb"))


@pytest.mark.parametrize("name", _course_with_solutions())
def test_course_student_edition_keeps_checks_and_drops_every_solution(name):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    student = se.student_notebook(NOTEBOOK_DIR / name)
    checks = [c for c in student.cells if c.cell_type == "code" and "exercises.check_" in c.source]
    assert checks, f"{name}: the student edition has no minidiff.exercises check cell"
    assert not any("assert_all_correct" in c.source for c in student.cells), f"{name}: assert_all_correct kept"
    assert not any("<details>" in c.source for c in student.cells), f"{name}: a worked solution is kept"
    final = [c for c in nb.cells if "assert_all_correct" in c.source]
    assert final and all("solution" in c.metadata.get("tags", []) for c in final), \
        f"{name}: the instructor edition must end its exercises with a solution-tagged assert_all_correct()"


@pytest.mark.slow
@pytest.mark.parametrize("name", _course_with_solutions(EXECUTED_STUDENT_EDITIONS))
def test_course_student_edition_runs_with_every_check_not_yet(name, tmp_path, one_thread):
    student = se.student_notebook(NOTEBOOK_DIR / name)
    results = run_notebook(student, NOTEBOOK_DIR)
    assert results, f"{name}: no exercise check ran in the student edition"
    correct = sorted(k for k, ok in results.items() if ok)
    assert not correct, f"{name}: checks say 'correct' with the solutions removed: {correct}"
    print(f"{name}: student edition ran top to bottom; {len(results)} checks all say 'not yet'")


def test_make_student_uses_this_script():
    make = (REPO / "Makefile").read_text()
    recipe = make.split("\nstudent:", 1)[1].split("\n\n", 1)[0]
    assert "scripts/student_edition.py notebooks student" in recipe
    assert "/student/" in (REPO / ".gitignore").read_text().splitlines()
