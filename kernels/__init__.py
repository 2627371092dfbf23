"""minidiff.kernels: the compiled-kernel core (installed from the top-level ``kernels/`` folder).

* :mod:`.formulas` -- every update formula and Philox4x32-10 as plain scalar Python (no numba import).
* :mod:`.cpu` -- ``njit(parallel=True, cache=True)`` loops around them.
* :mod:`.trajectories` -- whole samplers per sample on an exact Gaussian-mixture score (plain Python, compiled
  into :mod:`.cpu` and :mod:`.cuda`; host side in :mod:`minidiff.trajectories`).
* :mod:`.cuda` -- ``cuda.jit`` grid-stride loops around them; the only module importing ``numba.cuda``.
* :mod:`._cache` -- the versioned on-disk cache directory for both.
* :mod:`.bench` -- ``python -m minidiff.kernels.bench`` (figures in kernels/BENCHMARKS.md).
* :mod:`.threads` -- ``python -m minidiff.kernels.threads``: numba's and torch's pools, one process and two at once.

Only :mod:`minidiff.backend` imports from here, inside functions, so ``import minidiff`` stays fast.
"""
