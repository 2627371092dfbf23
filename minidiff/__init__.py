"""minidiff: the machinery behind the diffusion course.

``import minidiff`` is fast and imports no numba: compiled kernels load on first use through
:mod:`minidiff.backend`, the one dispatch point into :mod:`minidiff.kernels`.

Glossary -- one name per noise coordinate, everywhere (arguments, records, docstrings):

* ``t_index`` -- an integer noise index ``0 .. T-1`` of a discrete :class:`Schedule` (``-1``: the data,
  in samplers' "previous index"); ``t_index_prev`` the one a step goes to.
* ``t`` -- continuous time in ``[0, 1]`` (SDEs, interpolants, flows); ``Schedule.t_index_to_t`` converts.
* ``alpha_bar`` -- the signal fraction ``alpha_bar_t = prod (1 - beta)`` of ``x_t = sqrt(alpha_bar) x_0 +
  sqrt(1 - alpha_bar) eps`` (Ho et al. 2020); ``betas``/``alphas`` (``= 1 - betas``) are its per-step tables.
* ``alpha_t``, ``sigma_t`` -- the coefficients of a general ``x_t = alpha_t x_0 + sigma_t eps``
  (interpolants; for VP ``alpha_t = sqrt(alpha_bar)``, ``sigma_t = sqrt(1 - alpha_bar)``).
* ``sigma`` -- only a variance-exploding noise level, ``x = x_0 + sigma eps`` (NCSN, EDM:
  Song & Ermon 2019, Karras et al. 2022); a VP state has ``sigma = sigma_t / alpha_t``.
* ``ddim_sigma`` -- DDIM's fresh-noise standard deviation ``sigma_t(eta)`` (Song et al. 2021b, eq. 16).
* ``step`` -- an optimizer step or a noise-counter position, never a noise level.
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
