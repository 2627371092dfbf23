"""Shared test settings.

The CUDA-simulator tests live in tests/cudasim and need NUMBA_ENABLE_CUDASIM=1 set before numba is
imported, so they run in their own pytest process (`make test-cudasim`); the main run skips them.

`make test` runs the unit tests, the browser tests and every notebook under nbval in one pytest-xdist session
(`-n 2 --dist loadscope --no-loadscope-reorder`, one thread each): each test module and each notebook is one
work unit (a notebook's cells run in order in one kernel; a browser module shares one JupyterLab server and one
Chromium; a module-scoped fixture is built once), handed out in collection order. In xdist workers
:func:`pytest_collection_modifyitems` puts the longest units first -- the browser modules, then the notebooks
by their measured fast-mode time (notebooks/runtimes.json, written by `make course`; a notebook not yet
measured counts as the longest), then the unit-test modules in their usual order -- so the quick unit tests
fill the end instead of one notebook running alone. (``--dist loadgroup`` cannot group nbval cells here: with
pytest 9 xdist's renamed node ids do not reach the scheduler.) A run without xdist keeps its order.
"""
import json
import os
from pathlib import Path

import pytest
import torch

collect_ignore = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else ["cudasim"]

RUNTIMES = Path(__file__).resolve().parents[1] / "notebooks" / "runtimes.json"


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


def _measured_fast_seconds() -> dict[str, float]:
    try:
        table = json.loads(RUNTIMES.read_text())
    except (OSError, ValueError):
        return {}
    return {name: float(entry.get("fast_s", 0.0)) for name, entry in table.items() if isinstance(entry, dict)}


def _unit_seconds(item, fast_s: dict[str, float]) -> float:
    """How long the work unit (module or notebook) of ``item`` is expected to run, for ordering: larger first."""
    path = Path(str(item.fspath))
    if path.suffix == ".ipynb":
        return fast_s.get(path.name, float("inf"))   # a notebook not measured yet counts as the longest
    if item.get_closest_marker("browser") is not None:
        return float("inf")
    return 0.0


def pytest_collection_modifyitems(config, items):
    # Only in pytest-xdist workers: their collection order is the order the controller hands out the units.
    if not hasattr(config, "workerinput"):
        return
    fast_s = _measured_fast_seconds()
    unit = {}
    for item in items:  # one unit per module or notebook: its longest-expected item speaks for it
        key = str(item.fspath)
        unit[key] = max(unit.get(key, 0.0), _unit_seconds(item, fast_s))
    # A stable sort: a notebook's cells and a module's tests keep their order and stay together.
    items.sort(key=lambda item: -unit[str(item.fspath)])
