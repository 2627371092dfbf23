"""Layout and install: minidiff.kernels maps onto kernels/, nothing installs a top-level `kernels`,
import minidiff stays light, and environment.yml lists what pyproject.toml does."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")


def test_top_level_kernels_is_not_importable():
    # Run from / so the checkout's own kernels/ folder is not on sys.path.
    r = _run("import kernels")
    assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr


def test_minidiff_kernels_points_into_kernels_folder():
    r = _run("import minidiff.kernels as k; print(k.__file__)")
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).resolve().parent == (ROOT / "kernels").resolve()


def test_import_minidiff_does_not_import_numba_or_probe_cuda():
    r = _run("import sys, minidiff; import minidiff.forward, minidiff.data, minidiff.backend; "
             "print('numba' in sys.modules, 'numba.cuda' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]


def _names_and_specs(reqs):
    out = {}
    for req in reqs:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
        name = m.group(1).lower().replace("_", "-")
        out[{"pytorch": "torch"}.get(name, name)] = m.group(2).replace(" ", "")
    return out


def test_environment_yml_matches_pyproject_dependencies():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = lines.index("dependencies:")
    conda = []
    for line in lines[start + 1:]:
        m = re.match(r"^  - (.+)$", line)
        if m and not m.group(1).startswith(("python", "pip")):
            conda.append(m.group(1))
    assert "  - python=3.11" in lines and "      - -e ." in lines
    assert _names_and_specs(conda) == _names_and_specs(deps)


def test_torch_is_pinned_by_constraints():
    text = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^torch==\d+\.\d+\.\d+$", text, re.M)
    import torch

    pinned = re.search(r"^torch==(\S+)$", text, re.M).group(1)
    if not torch.__version__.startswith(pinned):
        pytest.skip(f"a different torch ({torch.__version__}) is installed in this environment")


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make lab" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_committed_notebooks_come_from_one_clean_run(path):
    import json

    nb = json.loads(path.read_text())
    counts = [c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c is not None for c in counts), "notebook has unexecuted code cells: run `make course`"
    assert counts == list(range(1, len(counts) + 1)), "execution counts are not one clean top-to-bottom run"
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"stored error output in {path.name}"
