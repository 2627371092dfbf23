"""Categorical draws by the Gumbel-max trick on counter-based Philox noise, CPU and CUDA.

For each row ``b`` of a probability table ``p`` ``(B, K)`` the kernels return

    argmax_k  log p[b, k] + G[b, k],    G = -log(-log u),  u = (w + 1/2) 2^-32 in (0, 1)

(Gumbel 1954; the Gumbel-max trick, e.g. Maddison et al. 2014, Sec. 2), an exact draw from
``p[b] / sum p[b]``; categories with ``p = 0`` are never drawn. ``w`` is word ``k % 4`` of the
Philox4x32-10 block on the counter ``(k // 4, b, step, k >> 32)`` keyed by the seed: the counter
layout of :func:`minidiff.kernels.formulas.normal4`, so draws depend on ``(seed, b, k, step)`` only,
never on threads or the launch grid. Ties keep the lowest ``k``. Arithmetic is float64.

* :func:`categorical` -- ``njit(parallel=True)``, ``prange`` over rows;
* :func:`gumbel_fill` -- the noise table itself (the torch reference path of
  :func:`minidiff.backend.categorical` uses it);
* :func:`cuda_kernels` -- the same loops as ``cuda.jit`` grid-stride kernels, built on first call
  (``numba.cuda`` is imported only then, so importing this module touches no GPU).
"""
from __future__ import annotations

import functools
import math

from numba import njit, prange

from . import _cache  # noqa: F401  (the versioned cache locator, before any @njit(cache=True))
from .formulas import INV_2_32, MASK32, compile_device_functions, f64


def gumbel_from_word(w):
    """A standard Gumbel variate from one 32-bit word: ``-log(-log u)``, ``u = (w + 1/2) 2^-32``."""
    u = (w + 0.5) * INV_2_32
    return -math.log(-math.log(u))


def _build(jit):
    """Philox, ``lane`` and :func:`gumbel_from_word` compiled with ``jit`` (CPU or CUDA device)."""
    f = compile_device_functions(jit)
    philox, lane = f["philox4x32_10"], f["lane"]
    gumbel = jit(gumbel_from_word)
    return philox, lane, gumbel


_philox, _lane, _gumbel = _build(njit)
cuda = None  # numba.cuda, bound by cuda_kernels() on first use


@njit(parallel=True, cache=True)
def categorical(p, k0, k1, step, out):
    """``out[b] = argmax_k log p[b, k] + G(seed, b, k, step)`` (-1 for a row without mass)."""
    B, K = p.shape
    for b in prange(B):
        best = -math.inf
        arg = -1
        for g in range((K + 3) // 4):
            w0, w1, w2, w3 = _philox(g & MASK32, b & MASK32, step & MASK32, (g >> 32) & MASK32, k0, k1)
            for j in range(min(4, K - 4 * g)):
                pk = f64(p[b, 4 * g + j])
                if pk > 0.0:
                    v = math.log(pk) + _gumbel(_lane(w0, w1, w2, w3, j))
                    if v > best:
                        best = v
                        arg = 4 * g + j
        out[b] = arg


@njit(parallel=True, cache=True)
def gumbel_fill(out, k0, k1, step):
    """``out[b, k] = G(seed, b, k, step)``: the noise :func:`categorical` adds."""
    B, K = out.shape
    for b in prange(B):
        for g in range((K + 3) // 4):
            w0, w1, w2, w3 = _philox(g & MASK32, b & MASK32, step & MASK32, (g >> 32) & MASK32, k0, k1)
            for j in range(min(4, K - 4 * g)):
                out[b, 4 * g + j] = _gumbel(_lane(w0, w1, w2, w3, j))


@functools.lru_cache(maxsize=None)
def cuda_kernels() -> dict:
    """``{"categorical": kernel}``: :func:`categorical` as a ``cuda.jit`` grid-stride loop over rows
    (launch with :func:`minidiff.kernels.cuda.launch`; any grid gives the same tokens)."""
    global cuda  # a module global: the simulator swaps ``cuda`` in a kernel's globals for its fake module
    from numba import cuda as _numba_cuda

    cuda = _numba_cuda
    philox, lane, gumbel = _build(cuda.jit(device=True))

    @cuda.jit
    def categorical_cuda(p, k0, k1, step, out):
        B, K = p.shape
        for b in range(cuda.grid(1), B, cuda.gridsize(1)):
            best = -math.inf
            arg = -1
            for g in range((K + 3) // 4):
                w0, w1, w2, w3 = philox(g & MASK32, b & MASK32, step & MASK32, (g >> 32) & MASK32, k0, k1)
                for j in range(min(4, K - 4 * g)):
                    pk = f64(p[b, 4 * g + j])
                    if pk > 0.0:
                        v = math.log(pk) + gumbel(lane(w0, w1, w2, w3, j))
                        if v > best:
                            best = v
                            arg = 4 * g + j
            out[b] = arg

    return {"categorical": categorical_cuda}
