"""CUDA kernels under the numba CUDA simulator.

Run as its own process: ``NUMBA_ENABLE_CUDASIM=1 pytest tests/cudasim`` (``make test-cudasim``).
The variable must be set before numba is imported, so this conftest refuses to run the tests when
numba was imported without it (the main run ignores this folder through tests/conftest.py).
"""
import os
import sys
import warnings

import pytest

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
if SIM and "numba" not in sys.modules:
    os.environ.setdefault("NUMBA_NUM_THREADS", "2")


def pytest_collection_modifyitems(config, items):
    if SIM:
        return
    skip = pytest.mark.skip(reason="run with NUMBA_ENABLE_CUDASIM=1 in a separate pytest process")
    for item in items:
        item.add_marker(skip)


@pytest.fixture(autouse=True)
def _quiet_uint_wraparound():
    """Philox's 32x32-bit products wrap in the simulator's int64 numpy scalars: that is intended."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
