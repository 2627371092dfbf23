"""minidiff: the machinery behind the diffusion course.

``import minidiff`` is fast and imports no numba: compiled kernels load on first use through
:mod:`minidiff.backend`, the one dispatch point into :mod:`minidiff.kernels`.
"""
import os as _os

# OpenMP threads sleep after a parallel region instead of spinning, so numba's and torch's pools and a
# second notebook don't fight for 2 cores: 3x faster steps with 2 threads on a loaded machine
# (kernels/threads.py, kernels/BENCHMARKS.md). libgomp reads it when it is loaded (torch's at
# ``import torch``): effective when minidiff is imported first; a value already set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from .schedule import Schedule, append_dims
from .forward import q_sample, q_posterior
from .data import GaussianMixture, load_digits, make_2d
from .backend import get_backend, set_backend, use_backend

__version__ = "0.1.0"

__all__ = [
    "Schedule", "append_dims", "q_sample", "q_posterior", "GaussianMixture", "load_digits", "make_2d",
    "get_backend", "set_backend", "use_backend", "__version__",
]
