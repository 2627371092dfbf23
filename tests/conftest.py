"""Shared test settings.

The CUDA-simulator tests live in tests/cudasim and need NUMBA_ENABLE_CUDASIM=1 set before numba is
imported, so they run in their own pytest process (`make test-cudasim`); the main run skips them.
"""
import os

import pytest
import torch

collect_ignore = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else ["cudasim"]


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield
