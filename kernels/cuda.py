"""CUDA kernels: the one module that imports ``numba.cuda``.

Each kernel is a grid-stride loop around the same scalar formulas as the CPU kernels
(:mod:`minidiff.kernels.formulas`), so any launch configuration computes the same numbers, and tiny
grids run under the simulator (``NUMBA_ENABLE_CUDASIM=1``). The updates with noise share one loop
skeleton (:func:`_skeleton`, a thread per Philox block of 4 elements whatever the noise mode); Heun and
the stencils give a thread one element. Arrays are 2-D ``(B, n)`` views (3-D for the 2-D stencil).

Importing this module does not touch a GPU; :func:`is_available` does.
"""
from __future__ import annotations

import functools
import math
import types

import numba
from numba import cuda

from . import _cache  # noqa: F401
from .formulas import BC_DIRICHLET, NOISE_GIVEN, NOISE_PHILOX, compile_device_functions, f64
from .trajectories import MAX_DIM_CUDA, compile_trajectory_functions

_f = compile_device_functions(cuda.jit(device=True))
normal4, lane = _f["normal4"], _f["lane"]
q_sample_elem, ddpm_elem, ddim_elem = _f["q_sample_elem"], _f["ddpm_elem"], _f["ddim_elem"]
em_elem, heun_elem, ftcs_elem, ftcs2_elem = _f["em_elem"], _f["heun_elem"], _f["ftcs_elem"], _f["ftcs2_elem"]
wrap_index = _f["wrap_index"]

THREADS = 256
SIMULATOR = bool(numba.config.ENABLE_CUDASIM)


def is_available() -> bool:
    """True when a CUDA device (or the simulator) can run kernels."""
    try:
        return bool(cuda.is_available())
    except Exception:  # noqa: BLE001  (driver errors of every kind mean "no")
        return False


@functools.lru_cache(maxsize=None)
def _sm_count(device_id: int) -> int:
    return 1 if SIMULATOR else cuda.get_current_device().MULTIPROCESSOR_COUNT


def launch(kernel, work: int, *args, stream=0, blocks: int | None = None, threads: int | None = None):
    """Launch ``kernel`` over ``work`` items: by default enough blocks of ``THREADS`` for one item a
    thread, capped at 32 blocks per SM (the grid-stride loop covers the rest)."""
    if work <= 0:
        return
    threads = threads or THREADS
    if blocks is None:
        sms = _sm_count(0 if SIMULATOR else cuda.get_current_device().id)
        blocks = max(1, min(math.ceil(work / threads), 32 * sms))
    kernel[blocks, threads, stream](*args)


# ---------------------------------------------------------------------------- noise
@cuda.jit
def normal_fill(out, k0, k1, step):
    """``out[b, i] = N(0, 1)`` from Philox4x32-10 on ``(seed, b, i, step)`` (Salmon et al. 2011)."""
    B, n = out.shape
    ng = (n + 3) // 4
    for idx in range(cuda.grid(1), B * ng, cuda.gridsize(1)):
        b = idx // ng
        g = idx - b * ng
        z0, z1, z2, z3 = normal4(k0, k1, g, b, step)
        for k in range(min(4, n - 4 * g)):
            out[b, 4 * g + k] = lane(z0, z1, z2, z3, k)


# ---------------------------------------------------------------------------- the loop skeleton
# Every elementwise kernel's loop is one skeleton, :func:`_skeleton`, compiled per formula by
# :func:`_loop` as a device function: its code under its own name with the formula's element function
# ``ELEM`` injected as a global (as :func:`formulas.compile_device_functions` and the CPU kernels do). A
# thread takes one Philox block (4 elements) of one sample; its four normals come from
# :func:`_noise4` -- read from the noise array (NOISE_GIVEN), drawn (NOISE_PHILOX) or zeros
# (NOISE_NONE), the same three modes as on the CPU -- and ``ELEM(b, i, z, args)`` updates element
# ``i`` from the kernel's other arguments, passed on as one tuple.
def _noise4(noise, mode, k0, k1, b, g, n, step):
    """The noise of elements ``4 g .. 4 g + 3`` of sample ``b`` (zeros past ``n``)."""
    if mode == NOISE_PHILOX:
        return normal4(k0, k1, g, b, step)
    i = 4 * g
    if mode != NOISE_GIVEN:
        return 0.0, 0.0, 0.0, 0.0
    z1 = f64(noise[b, i + 1]) if i + 1 < n else 0.0
    z2 = f64(noise[b, i + 2]) if i + 2 < n else 0.0
    z3 = f64(noise[b, i + 3]) if i + 3 < n else 0.0
    return f64(noise[b, i]), z1, z2, z3


_noise4 = cuda.jit(device=True)(_noise4)


def _skeleton(x, noise, mode, k0, k1, step, args):
    B, n = x.shape
    ng = (n + 3) // 4
    for idx in range(cuda.grid(1), B * ng, cuda.gridsize(1)):
        b = idx // ng
        g = idx - b * ng
        z0, z1, z2, z3 = _noise4(noise, mode, k0, k1, b, g, n, step)
        for k in range(min(4, n - 4 * g)):
            ELEM(b, 4 * g + k, lane(z0, z1, z2, z3, k), args)


def _loop(elem, name: str):
    """:func:`_skeleton` with ``elem`` injected, compiled as the device function ``name``."""
    f = _skeleton
    g = types.FunctionType(f.__code__, dict(f.__globals__, ELEM=elem), name, f.__defaults__, f.__closure__)
    g.__qualname__, g.__module__ = name, f.__module__
    return cuda.jit(device=True)(g)


@cuda.jit(device=True)
def _q_sample_at(b, i, z, args):
    x0, t_index, sqrt_ab, sqrt_1mab, out = args
    t = t_index[b]
    if t < 0 or t >= min(sqrt_ab.shape[0], sqrt_1mab.shape[0]):  # both tables are read at t (issue 14.23)
        out[b, i] = math.nan
    else:
        out[b, i] = q_sample_elem(x0[b, i], z, sqrt_ab[t], sqrt_1mab[t])


@cuda.jit(device=True)
def _ddpm_at(b, i, z, args):
    x, eps, inv_sa, s1, c, cx0, cx, std, out, x0_out = args
    out[b, i], x0_out[b, i] = ddpm_elem(x[b, i], eps[b, i], z, inv_sa, s1, c, cx0, cx, std)


@cuda.jit(device=True)
def _ddim_at(b, i, z, args):
    x, eps, sa, inv_sa, s1, inv_s1, c, recompute_eps, sap, cdir, ddim_sigma, out, x0_out = args
    out[b, i], x0_out[b, i] = ddim_elem(x[b, i], eps[b, i], z, sa, inv_sa, s1, inv_s1, c, recompute_eps, sap, cdir,
                                        ddim_sigma)


@cuda.jit(device=True)
def _em_at(b, i, z, args):
    x, score, cx, cs, cz, out = args
    out[b, i] = em_elem(x[b, i], score[b, i], z, cx, cs, cz)


_q_sample_loop, _ddpm_loop = _loop(_q_sample_at, "q_sample_loop"), _loop(_ddpm_at, "ddpm_loop")
_ddim_loop, _em_loop = _loop(_ddim_at, "ddim_loop"), _loop(_em_at, "em_loop")


# ---------------------------------------------------------------------------- forward process
@cuda.jit
def q_sample(x0, eps, t_index, sqrt_ab, sqrt_1mab, mode, k0, k1, step, out):
    """Forward noising with per-sample ``t_index`` (Ho et al. 2020, eq. 4); NaN for a bad index."""
    _q_sample_loop(x0, eps, mode, k0, k1, step, (x0, t_index, sqrt_ab, sqrt_1mab, out))


# ---------------------------------------------------------------------------- samplers
@cuda.jit
def ddpm(x, eps, noise, inv_sa, s1, c, cx0, cx, std, mode, k0, k1, step, out, x0_out):
    """DDPM ancestral step (Ho et al. 2020, Alg. 2); writes ``x_prev`` and ``x0_hat``."""
    _ddpm_loop(x, noise, mode, k0, k1, step, (x, eps, inv_sa, s1, c, cx0, cx, std, out, x0_out))


@cuda.jit
def ddim(x, eps, noise, sa, inv_sa, s1, inv_s1, c, recompute_eps, sap, cdir, ddim_sigma, mode, k0, k1, step, out,
         x0_out):
    """DDIM step (Song et al. 2021b, eq. 12); writes ``x_prev`` and ``x0_hat``."""
    _ddim_loop(x, noise, mode, k0, k1, step,
               (x, eps, sa, inv_sa, s1, inv_s1, c, recompute_eps, sap, cdir, ddim_sigma, out, x0_out))


@cuda.jit
def em(x, score, noise, cx, cs, cz, mode, k0, k1, step, out):
    """``cx x + cs score + cz z``: one Euler-Maruyama step (see ``formulas.*_coefficients``)."""
    _em_loop(x, noise, mode, k0, k1, step, (x, score, cx, cs, cz, out))


@cuda.jit
def heun(x, score, xe, se, cx, cs, cxe, cse, out):
    """PF-ODE Heun correction (Karras et al. 2022, Alg. 1, lines 9-11)."""
    B, n = x.shape
    for idx in range(cuda.grid(1), B * n, cuda.gridsize(1)):
        b = idx // n
        i = idx - b * n
        out[b, i] = heun_elem(x[b, i], score[b, i], xe[b, i], se[b, i], cx, cs, cxe, cse)


# ---------------------------------------------------------------------------- physics
@cuda.jit
def ftcs1d(u, r, bc, out):
    """FTCS step of the 1-D diffusion equation on rows of ``u`` (B, N)."""
    B, n = u.shape
    for idx in range(cuda.grid(1), B * n, cuda.gridsize(1)):
        b = idx // n
        i = idx - b * n
        if bc == BC_DIRICHLET and (i == 0 or i == n - 1):
            out[b, i] = u[b, i]
        else:
            out[b, i] = ftcs_elem(u[b, i], u[b, wrap_index(i - 1, n, bc)], u[b, wrap_index(i + 1, n, bc)], r)


@cuda.jit
def ftcs2d(u, r, bc, out):
    """5-point FTCS step of the 2-D diffusion equation on ``u`` (B, H, W)."""
    B, H, W = u.shape
    for idx in range(cuda.grid(1), B * H * W, cuda.gridsize(1)):
        b = idx // (H * W)
        rem = idx - b * (H * W)
        y = rem // W
        x = rem - y * W
        if bc == BC_DIRICHLET and (y == 0 or y == H - 1 or x == 0 or x == W - 1):
            out[b, y, x] = u[b, y, x]
        else:
            out[b, y, x] = ftcs2_elem(u[b, y, x], u[b, y, wrap_index(x - 1, W, bc)], u[b, y, wrap_index(x + 1, W, bc)],
                                      u[b, wrap_index(y - 1, H, bc), x], u[b, wrap_index(y + 1, H, bc), x], r)


def launch_on_stream(kernel, work: int, args, stream_ptr: int, device_index: int = 0):
    """Launch on device ``device_index`` and a foreign stream (torch's ``current_stream().cuda_stream``);
    arguments exporting ``__cuda_array_interface__`` (torch CUDA tensors) are wrapped without a copy
    or a sync."""
    with cuda.gpus[device_index]:
        stream = cuda.external_stream(stream_ptr)
        dev = [cuda.as_cuda_array(a, sync=False) if hasattr(a, "__cuda_array_interface__") else a for a in args]
        launch(kernel, work, *dev, stream=stream)


# ---------------------------------------------------------------------------- exact-score trajectories
# A thread per sample (grid-stride over samples; the block code of kernels/trajectories.py with one lane),
# the one-pass online-softmax score (any number of components in O(d) local memory); d <= MAX_DIM_CUDA
# (checked on the host).
_t = compile_trajectory_functions(cuda.jit(device=True), _f, vector_exp=False)
_eps_rows, _score_rows = _t["eps_rows"], _t["score_rows"]


@cuda.jit
def eps_trajectories(x, means, prec, const, iso, lev, alpha_t, sigma_t, cx, cx0, ceps, cx0p, cz, nstep, recompute,
                     c, k0, k1, out):
    """DDPM / DDIM(eta) / DPM-Solver++(2M) on the exact mixture score, a thread per sample."""
    B, d = x.shape
    blk = cuda.local.array((5, MAX_DIM_CUDA, 1), numba.float64)  # the (d, 1) blocks of one lane
    vec = cuda.local.array((3, MAX_DIM_CUDA), numba.float64)     # the one-pass score's d-vectors
    lanes = cuda.local.array((4, 1), numba.float64)              # unused by the one-pass score (also its logits)
    words = cuda.local.array((4, 1), numba.float64)              # noise words and angles of one Philox block
    quad = cuda.local.array((2, 1), numba.int64)                 # their quadrants (row 0 also the unused int lane)
    for b in range(cuda.grid(1), B, cuda.gridsize(1)):
        _eps_rows(x, b, 1, out, means, prec, const, iso, False, lev, alpha_t, sigma_t, cx, cx0, ceps, cx0p, cz,
                  nstep, recompute, c, k0, k1, blk[0, :d], blk[1, :d], blk[2, :d], blk[3, :d], lanes[:1], lanes,
                  quad[0], words[:2], words[2:], quad, vec[0, :d], vec[1, :d], vec[2, :d])


@cuda.jit
def score_trajectories(x, means, prec, const, iso, field, wacc, mu_c, lev, lev2, alpha_t, sigma_t, cx, cs, cz, heun, hx,
                       hs, hxe, hse, nstep, k0, k1, out):
    """Euler-Maruyama / PF-ODE Euler / Heun / Langevin on the exact mixture score, or (``field``) the flow
    ODE solvers on the exact velocity, a thread per sample."""
    B, d = x.shape
    blk = cuda.local.array((5, MAX_DIM_CUDA, 1), numba.float64)
    vec = cuda.local.array((3, MAX_DIM_CUDA), numba.float64)
    lanes = cuda.local.array((4, 1), numba.float64)
    words = cuda.local.array((4, 1), numba.float64)
    quad = cuda.local.array((2, 1), numba.int64)
    for b in range(cuda.grid(1), B, cuda.gridsize(1)):
        _score_rows(x, b, 1, out, means, prec, const, iso, False, field, wacc, mu_c, lev, lev2, alpha_t, sigma_t, cx,
                    cs, cz, heun, hx, hs, hxe, hse, nstep, k0, k1, blk[0, :d], blk[1, :d], blk[2, :d], blk[3, :d],
                    blk[4, :d], lanes[:1], lanes, quad[0], words[:2], words[2:], quad, vec[0, :d], vec[1, :d],
                    vec[2, :d])
