"""Shared test settings.

The CUDA-simulator tests live in tests/cudasim and need NUMBA_ENABLE_CUDASIM=1 set before numba is
imported, so they run in their own pytest process (`make test-cudasim`); the main run skips them.

`make test` runs the unit tests, the browser tests and every notebook under nbval in one pytest-xdist session
(`-n 2 --dist loadscope --no-loadscope-reorder`, one thread each): each test module and each notebook is one
work unit (a notebook's cells run in order in one kernel; a browser module shares one JupyterLab server and one
Chromium; a module-scoped fixture is built once), handed out in collection order. In xdist workers
:func:`pytest_collection_modifyitems` puts the longest units first -- the browser modules, then the notebooks
by their measured fast-mode time (notebooks/runtimes.json, written by `make course`; a notebook not yet
measured counts as the longest), with each unit-test module placed by ``SLOW_TEST_S`` per test marked ``slow``
(test_weights.py's bars, about 25 of them, go before the notebooks instead of starting last, alphabetically,
while the other worker has run out of work), then the modules with no slow test in their usual order -- so the
quick unit tests fill the end instead of one notebook or one heavy module running alone. (``--dist loadgroup`` cannot group nbval cells here: with
pytest 9 xdist's renamed node ids do not reach the scheduler.) A run without xdist keeps its order.
"""
import json
import os
from pathlib import Path

import pytest
import torch

collect_ignore = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else ["cudasim"]

RUNTIMES = Path(__file__).resolve().parents[1] / "notebooks" / "runtimes.json"
# Expected seconds of one test marked `slow` (training, sampling a shipped model's bar), for ordering only.
SLOW_TEST_S = 10.0


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


def _item_seconds(item, fast_s: dict[str, float]) -> float:
    """What ``item`` adds to its work unit's expected time: a notebook cell stands for its whole notebook, a
    browser test for an unknown, long time; a unit test counts ``SLOW_TEST_S`` if marked slow, else 0."""
    path = Path(str(item.fspath))
    if path.suffix == ".ipynb":
        return fast_s.get(path.name, float("inf"))   # a notebook not measured yet counts as the longest
    if item.get_closest_marker("browser") is not None:
        return float("inf")
    return SLOW_TEST_S if item.get_closest_marker("slow") is not None else 0.0


def pytest_collection_modifyitems(config, items):
    # Only in pytest-xdist workers: their collection order is the order the controller hands out the units.
    if not hasattr(config, "workerinput"):
        return
    fast_s = _measured_fast_seconds()
    unit = {}
    for item in items:  # one unit per notebook (each cell stands for all of it) or per module (its tests add up)
        key, seconds = str(item.fspath), _item_seconds(item, fast_s)
        unit[key] = max(unit.get(key, 0.0), seconds) if key.endswith(".ipynb") else unit.get(key, 0.0) + seconds
    # A stable sort: a notebook's cells and a module's tests keep their order and stay together.
    items.sort(key=lambda item: -unit[str(item.fspath)])
