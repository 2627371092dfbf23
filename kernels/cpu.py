"""CPU kernels: ``njit(parallel=True, cache=True)`` loops around the scalar formulas.

Every array is a C-contiguous 2-D view ``(B, n)`` (batch, elements per sample). Work is split into
tasks of about ``CHUNK`` elements: whole rows when rows are short, row pieces when they are long;
``prange`` runs over the tasks and each task walks contiguous memory. Noise for element ``(b, i)``
at ``step`` is ``normal4(k0, k1, i // 4, b, step)[i % 4]`` whatever the split, so it does not depend
on the number of threads. Row pieces start at multiples of 4 so a task owns whole Philox blocks.
Every kernel that draws noise takes it from :func:`fill_normals` (the one noise loop: Philox words, then
a vectorised Box-Muller) into per-task scratch, and reads it as it reads a given noise array.
:func:`run` calls a kernel's serial twin (:func:`serial`) below ``SERIAL_BELOW`` elements, so the
course's sizes never wake the thread pool.

Kernels check their index tables and never read or write out of bounds: a sample whose ``t_index``
lies outside the table gets NaN (the dispatcher raises before launching anyway).
"""
from __future__ import annotations

import types

import numpy as np
from numba import njit, prange

from . import _cache  # noqa: F401  (installs the versioned cache locator before any @njit(cache=True))
from .formulas import BC_DIRICHLET, HALF_PI_2_30, MASK32, NOISE_GIVEN, NOISE_PHILOX, compile_device_functions
from .trajectories import ROWS, compile_trajectory_functions

_f = compile_device_functions(njit)
normal4, lane = _f["normal4"], _f["lane"]
# Box-Muller inlined into the caller's numba IR with numpy's error model (no zero-division checks): then
# LLVM vectorises the pair loop of fill_normals (5x the normals/s of the called, scalar version).
box_muller_angle = compile_device_functions(njit(inline="always", error_model="numpy"))["box_muller_angle"]
q_sample_elem, ddpm_elem, ddim_elem = _f["q_sample_elem"], _f["ddpm_elem"], _f["ddim_elem"]
em_elem, heun_elem, ftcs_elem, ftcs2_elem = _f["em_elem"], _f["heun_elem"], _f["ftcs_elem"], _f["ftcs2_elem"]
philox4x32_10, wrap_index = _f["philox4x32_10"], _f["wrap_index"]

CHUNK = 16384  # elements per task; a multiple of 4
SERIAL_BELOW = 1 << 17  # elements: below this, one thread beats waking the pool (noise-free kernels)
SERIAL_BELOW_NOISE = 1 << 13  # the same for kernels drawing normals (about 20x more work an element)
_kernel = njit(parallel=True, cache=True)


def run(kernel, args, size: int, draws_noise: bool) -> None:
    """Call ``kernel(*args)`` (a kernel of this module or its name). Small problems run its serial twin
    (:func:`serial`) on the calling thread: a parallel region costs ~10 us even on one thread, and
    milliseconds when the cores are oversubscribed. Results do not depend on the path taken."""
    if isinstance(kernel, str):
        kernel = globals()[kernel]
    if size >= (SERIAL_BELOW_NOISE if draws_noise else SERIAL_BELOW):
        kernel(*args)
        return
    twin = _SERIAL.get(kernel)
    if twin is None:
        twin = _SERIAL[kernel] = serial(kernel)
    twin(*args)


_SERIAL: dict = {}


def serial(kernel):
    """The serial twin of a ``parallel=True`` kernel: the same code compiled without ``parallel``
    (``prange`` runs as ``range``, no thread pool is touched). Built as a ``types.FunctionType`` with
    its own ``__qualname__`` so numba's on-disk cache keeps the twins apart (its index is keyed by the
    qualified name and signature, not by the compile flags)."""
    f = getattr(kernel, "py_func", kernel)
    g = types.FunctionType(f.__code__, f.__globals__, f.__name__ + "_serial", f.__defaults__, f.__closure__)
    g.__qualname__, g.__doc__, g.__module__ = f.__qualname__ + "_serial", f.__doc__, f.__module__
    return njit(cache=True)(g)


@njit(cache=True)
def _tasks(B, n):
    """``(n_tasks, pieces_per_row, rows_per_task)``: exactly one of the last two is > 1 or both 1."""
    if n >= CHUNK:
        per_row = (n + CHUNK - 1) // CHUNK
        return B * per_row, per_row, 1
    rows = max(1, CHUNK // max(n, 1))
    return (B + rows - 1) // rows, 1, rows


@njit(cache=True)
def _bounds(task, B, n, per_row, rows):
    """Rows ``[b0, b1)`` and elements ``[i0, i1)`` of one task."""
    if per_row > 1:
        b = task // per_row
        j = task - b * per_row
        return b, b + 1, j * CHUNK, min(n, (j + 1) * CHUNK)
    b0 = task * rows
    return b0, min(B, b0 + rows), 0, n


@njit(cache=True)
def _same_shape(a, b):
    """Kernels do not trust their callers: arrays that would be read or written out of bounds raise."""
    if a.shape != b.shape:
        raise ValueError("kernel arrays must all have the same shape")


# Inside a task, each row piece is sliced into 1-D views (``xr = x[b, i0:i1]``) and walked with
# ``range(m)``: numba then knows the index is non-negative, skips wraparound checks and vectorizes
# (twice as fast as indexing ``x[b, i]`` with ``i`` in ``range(i0, i1)``). Philox block ``i0 // 4 + j``
# covers elements ``4 j .. 4 j + 3`` of the piece (``i0`` is a multiple of 4).

# ---------------------------------------------------------------------------- noise
# The noise loop, once: the normals of a row piece go into float64 scratch in two passes -- the
# Philox4x32-10 words of every block (integer work), then Box-Muller on every pair (float64 arithmetic
# only, :func:`formulas.box_muller_angle`: LLVM vectorises it) -- and every kernel drawing noise reads
# that scratch as it reads a given noise array. Pair ``p`` of a piece is words ``(2p, 2p+1)`` of block
# ``p // 2``, so element ``i`` is ``normal4(k0, k1, g0 + i // 4, b, step)[i % 4]``.
@njit(cache=True)
def scratch(m):
    """Scratch for :func:`fill_normals` of up to ``m`` elements: radius words, angles, quadrants, the
    cosine and sine normals of each pair, the interleaved normals."""
    pairs = (m + 3) // 4 * 2
    return (np.empty(pairs), np.empty(pairs), np.empty(pairs, np.int64), np.empty(pairs), np.empty(pairs),
            np.empty(2 * pairs))


@njit(cache=True)
def _philox_pairs(k0, k1, g0, b, step, m, wr, phi, quad):
    """Pass 1: the words of Philox blocks ``g0 ..`` as Box-Muller pairs (radius word, angle, quadrant)."""
    for j in range((m + 3) // 4):
        g = g0 + j
        w0, w1, w2, w3 = philox4x32_10(g & MASK32, b & MASK32, step & MASK32, (g >> 32) & MASK32, k0, k1)
        wr[2 * j], phi[2 * j], quad[2 * j] = w0, (w1 & 0x3FFFFFFF) * HALF_PI_2_30, w1 >> 30
        wr[2 * j + 1], phi[2 * j + 1], quad[2 * j + 1] = w2, (w3 & 0x3FFFFFFF) * HALF_PI_2_30, w3 >> 30


@njit(cache=True, error_model="numpy")
def _box_muller_pairs(wr, phi, quad, za, zb):
    """Pass 2: Box-Muller on every pair, indexed by the loop variable alone (vectorised)."""
    for p in range(za.shape[0]):
        za[p], zb[p] = box_muller_angle(wr[p], phi[p], quad[p])


@njit(cache=True)
def fill_normals(k0, k1, g0, b, step, m, scr):
    """The first ``m`` normals of sample ``b`` from Philox block ``g0`` on, into ``scr[5][:m]`` (returned)."""
    wr, phi, quad, za, zb, z = scr
    pairs = (m + 1) // 2
    _philox_pairs(k0, k1, g0, b, step, m, wr, phi, quad)
    _box_muller_pairs(wr[:pairs], phi[:pairs], quad[:pairs], za[:pairs], zb[:pairs])
    for p in range(pairs):  # interleave: element 2p is the cosine of pair p, 2p + 1 its sine
        z[2 * p] = za[p]
        z[2 * p + 1] = zb[p]
    return z[:m]


@njit(cache=True)
def noise_row(mode, k0, k1, g0, b, step, m, scr):
    """Float64 noise for a row piece that is not given: Philox normals, or zeros (NOISE_NONE)."""
    if mode == NOISE_PHILOX:
        return fill_normals(k0, k1, g0, b, step, m, scr)
    z = scr[5][:m]
    z[:] = 0.0
    return z


@_kernel
def normal_fill(out, k0, k1, step):
    """``out[b, i] = N(0, 1)`` from Philox4x32-10 on ``(seed, b, i, step)`` (Salmon et al. 2011)."""
    B, n = out.shape
    ntask, per_row, rows = _tasks(B, n)
    for task in prange(ntask):
        b0, b1, i0, i1 = _bounds(task, B, n, per_row, rows)
        scr = scratch(i1 - i0)
        for b in range(b0, b1):
            orow = out[b, i0:i1]
            z = fill_normals(k0, k1, i0 // 4, b, step, orow.shape[0], scr)
            for i in range(orow.shape[0]):
                orow[i] = z[i]


@njit(cache=True)
def philox_block(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of one counter, compiled (for the known-answer tests)."""
    return philox4x32_10(c0, c1, c2, c3, k0, k1)


# ---------------------------------------------------------------------------- forward process
@njit(cache=True)
def _q_sample_row(xr, er, a, s, orow):
    for i in range(orow.shape[0]):
        orow[i] = q_sample_elem(xr[i], er[i], a, s)


@_kernel
def q_sample(x0, eps, t_index, sqrt_ab, sqrt_1mab, mode, k0, k1, step, out):
    """``out = sqrt(ab[t]) x0 + sqrt(1-ab[t]) eps`` with per-sample ``t = t_index[b]``
    (Ho et al. 2020, eq. 4). ``mode``: NOISE_GIVEN reads ``eps``; NOISE_PHILOX draws it."""
    _same_shape(x0, eps)
    _same_shape(x0, out)
    if t_index.shape[0] != x0.shape[0]:
        raise ValueError("t_index must have one entry per sample")
    B, n = x0.shape
    T = min(sqrt_ab.shape[0], sqrt_1mab.shape[0])  # both tables are read at t (issue 14.23)
    ntask, per_row, rows = _tasks(B, n)
    for task in prange(ntask):
        b0, b1, i0, i1 = _bounds(task, B, n, per_row, rows)
        scr = scratch(i1 - i0)
        for b in range(b0, b1):
            xr, er, orow = x0[b, i0:i1], eps[b, i0:i1], out[b, i0:i1]
            m = orow.shape[0]
            ti = t_index[b]
            if ti < 0 or ti >= T:
                orow[:] = np.nan
                continue
            if mode == NOISE_GIVEN:
                _q_sample_row(xr, er, sqrt_ab[ti], sqrt_1mab[ti], orow)
            else:
                _q_sample_row(xr, fill_normals(k0, k1, i0 // 4, b, step, m, scr), sqrt_ab[ti], sqrt_1mab[ti], orow)


# ---------------------------------------------------------------------------- samplers
@njit(cache=True)
def _ddpm_row(xr, er, zr, inv_sa, s1, c, cx0, cx, std, orow, x0row):
    for i in range(orow.shape[0]):
        orow[i], x0row[i] = ddpm_elem(xr[i], er[i], zr[i], inv_sa, s1, c, cx0, cx, std)


@_kernel
def ddpm(x, eps, noise, inv_sa, s1, c, cx0, cx, std, mode, k0, k1, step, out, x0_out):
    """DDPM ancestral step (Ho et al. 2020, Alg. 2); writes ``x_prev`` and ``x0_hat``."""
    _same_shape(x, eps)
    _same_shape(x, noise)
    _same_shape(x, out)
    _same_shape(x, x0_out)
    B, n = x.shape
    ntask, per_row, rows = _tasks(B, n)
    for task in prange(ntask):
        b0, b1, i0, i1 = _bounds(task, B, n, per_row, rows)
        scr = scratch(i1 - i0)
        for b in range(b0, b1):
            xr, er, zr, orow, x0row = x[b, i0:i1], eps[b, i0:i1], noise[b, i0:i1], out[b, i0:i1], x0_out[b, i0:i1]
            if mode == NOISE_GIVEN:
                _ddpm_row(xr, er, zr, inv_sa, s1, c, cx0, cx, std, orow, x0row)
            else:
                _ddpm_row(xr, er, noise_row(mode, k0, k1, i0 // 4, b, step, orow.shape[0], scr), inv_sa, s1, c,
                          cx0, cx, std if mode == NOISE_PHILOX else 0.0, orow, x0row)


@njit(cache=True)
def _ddim_row(xr, er, zr, sa, inv_sa, s1, inv_s1, c, recompute_eps, sap, cdir, ddim_sigma, orow, x0row):
    for i in range(orow.shape[0]):
        orow[i], x0row[i] = ddim_elem(xr[i], er[i], zr[i], sa, inv_sa, s1, inv_s1, c, recompute_eps, sap, cdir,
                                      ddim_sigma)


@_kernel
def ddim(x, eps, noise, sa, inv_sa, s1, inv_s1, c, recompute_eps, sap, cdir, ddim_sigma, mode, k0, k1, step, out,
         x0_out):
    """DDIM step (Song et al. 2021b, eq. 12); writes ``x_prev`` and ``x0_hat``."""
    _same_shape(x, eps)
    _same_shape(x, noise)
    _same_shape(x, out)
    _same_shape(x, x0_out)
    B, n = x.shape
    ntask, per_row, rows = _tasks(B, n)
    for task in prange(ntask):
        b0, b1, i0, i1 = _bounds(task, B, n, per_row, rows)
        scr = scratch(i1 - i0)
        for b in range(b0, b1):
            xr, er, zr, orow, x0row = x[b, i0:i1], eps[b, i0:i1], noise[b, i0:i1], out[b, i0:i1], x0_out[b, i0:i1]
            if mode == NOISE_GIVEN:
                _ddim_row(xr, er, zr, sa, inv_sa, s1, inv_s1, c, recompute_eps, sap, cdir, ddim_sigma, orow, x0row)
            else:
                _ddim_row(xr, er, noise_row(mode, k0, k1, i0 // 4, b, step, orow.shape[0], scr), sa, inv_sa, s1,
                          inv_s1, c, recompute_eps, sap, cdir, ddim_sigma if mode == NOISE_PHILOX else 0.0, orow,
                          x0row)


@njit(cache=True)
def _em_row(xr, sr, zr, cx, cs, cz, orow):
    for i in range(orow.shape[0]):
        orow[i] = em_elem(xr[i], sr[i], zr[i], cx, cs, cz)


@_kernel
def em(x, score, noise, cx, cs, cz, mode, k0, k1, step, out):
    """``cx x + cs score + cz z``: one Euler-Maruyama step (Langevin, reverse SDE, PF-ODE Euler,
    walkers; see ``formulas.*_coefficients``)."""
    _same_shape(x, score)
    _same_shape(x, noise)
    _same_shape(x, out)
    B, n = x.shape
    ntask, per_row, rows = _tasks(B, n)
    for task in prange(ntask):
        b0, b1, i0, i1 = _bounds(task, B, n, per_row, rows)
        scr = scratch(i1 - i0)
        for b in range(b0, b1):
            xr, sr, zr, orow = x[b, i0:i1], score[b, i0:i1], noise[b, i0:i1], out[b, i0:i1]
            if mode == NOISE_GIVEN:
                _em_row(xr, sr, zr, cx, cs, cz, orow)
            else:
                _em_row(xr, sr, noise_row(mode, k0, k1, i0 // 4, b, step, orow.shape[0], scr), cx, cs,
                        cz if mode == NOISE_PHILOX else 0.0, orow)


@_kernel
def heun(x, score, xe, se, cx, cs, cxe, cse, out):
    """PF-ODE Heun correction (Karras et al. 2022, Alg. 1, lines 9-11)."""
    _same_shape(x, score)
    _same_shape(x, xe)
    _same_shape(x, se)
    _same_shape(x, out)
    B, n = x.shape
    ntask, per_row, rows = _tasks(B, n)
    for task in prange(ntask):
        b0, b1, i0, i1 = _bounds(task, B, n, per_row, rows)
        for b in range(b0, b1):
            xr, sr, xer, ser, orow = x[b, i0:i1], score[b, i0:i1], xe[b, i0:i1], se[b, i0:i1], out[b, i0:i1]
            for i in range(orow.shape[0]):
                orow[i] = heun_elem(xr[i], sr[i], xer[i], ser[i], cx, cs, cxe, cse)


# ---------------------------------------------------------------------------- physics
@njit(cache=True)
def _ftcs_edge(u, b, i, n, r, bc, out):
    if bc == BC_DIRICHLET:
        out[b, i] = u[b, i]
    else:
        out[b, i] = ftcs_elem(u[b, i], u[b, wrap_index(i - 1, n, bc)], u[b, wrap_index(i + 1, n, bc)], r)


@_kernel
def ftcs1d(u, r, bc, out):
    """FTCS step of the 1-D diffusion equation on rows of ``u`` (B, N)."""
    _same_shape(u, out)
    B, n = u.shape
    ntask, per_row, rows = _tasks(B, n)
    for task in prange(ntask):
        b0, b1, i0, i1 = _bounds(task, B, n, per_row, rows)
        lo, hi = max(i0, 1), max(min(i1, n - 1), 1)
        for b in range(b0, b1):
            left, mid, right, orow = u[b, lo - 1:hi - 1], u[b, lo:hi], u[b, lo + 1:hi + 1], out[b, lo:hi]
            for i in range(orow.shape[0]):
                orow[i] = ftcs_elem(mid[i], left[i], right[i], r)
            if i0 == 0:
                _ftcs_edge(u, b, 0, n, r, bc, out)
            if i1 == n and n > 1:
                _ftcs_edge(u, b, n - 1, n, r, bc, out)


@njit(cache=True)
def _ftcs2_row(u, b, y, r, bc, out):
    """One row ``y`` of the 5-point FTCS step on ``u`` (B, H, W)."""
    H, W = u.shape[1], u.shape[2]
    if bc == BC_DIRICHLET and (y == 0 or y == H - 1):
        out[b, y, :] = u[b, y, :]
        return
    ym, yp = wrap_index(y - 1, H, bc), wrap_index(y + 1, H, bc)
    if W > 2:
        left, mid, right = u[b, y, 0:W - 2], u[b, y, 1:W - 1], u[b, y, 2:W]
        up, down, orow = u[b, ym, 1:W - 1], u[b, yp, 1:W - 1], out[b, y, 1:W - 1]
        for x in range(orow.shape[0]):
            orow[x] = ftcs2_elem(mid[x], left[x], right[x], up[x], down[x], r)
    for x in (0, W - 1):
        if bc == BC_DIRICHLET:
            out[b, y, x] = u[b, y, x]
        else:
            xm, xp = wrap_index(x - 1, W, bc), wrap_index(x + 1, W, bc)
            out[b, y, x] = ftcs2_elem(u[b, y, x], u[b, y, xm], u[b, y, xp], u[b, ym, x], u[b, yp, x], r)


@_kernel
def ftcs2d(u, r, bc, out):
    """5-point FTCS step of the 2-D diffusion equation on ``u`` (B, H, W); prange over rows."""
    _same_shape(u, out)
    B, H = u.shape[0], u.shape[1]
    for task in prange(B * H):
        b = task // H
        _ftcs2_row(u, b, task - b * H, r, bc, out)


# ---------------------------------------------------------------------------- exact-score trajectories
# A whole sampler per sample on a Gaussian mixture's exact score (kernels/trajectories.py): prange over
# blocks of ROWS samples, each block with its own transposed (d, ROWS) scratch, the loops over the block's
# samples vectorised (the score, a libm-free exp, the update); any d, any K.
_t = compile_trajectory_functions(njit, _f, vector_exp=True, box_muller_angle=box_muller_angle)
_eps_rows, _score_rows = _t["eps_rows"], _t["score_rows"]


@njit(cache=True)
def _check_gm(x, out, means, prec, const, alpha_t, sigma_t, lev):
    if x.shape != out.shape or x.shape[1] != means.shape[1]:
        raise ValueError("trajectory arrays: x and out must be (B, d) with d = means.shape[1]")
    L, K = const.shape
    if prec.shape[0] != L or prec.shape[1] != K or K != means.shape[0] or alpha_t.shape[0] != L \
            or sigma_t.shape[0] != L:
        raise ValueError("trajectory tables disagree in the number of levels or components")
    for i in range(lev.shape[0]):
        if lev[i] < 0 or lev[i] >= L:
            raise ValueError("trajectory level index out of range")


@njit(cache=True)
def _block_scratch(n_blocks, d, K):
    """``(blocks, logits, lanes, lane ints, noise words, quadrants, vectors)``: ``n_blocks`` ``(d, ROWS)``
    blocks, the ``(K, ROWS)`` logits, ``(4, ROWS)`` lane scratch (its last row also viewed as int64),
    ``(4, ROWS)`` and ``(2, ROWS)`` int64 for the noise, three d-vectors."""
    lanes = np.empty((4, ROWS))
    return (np.empty((n_blocks, d, ROWS)), np.empty((max(K, 1), ROWS)), lanes, lanes[3].view(np.int64),
            np.empty((4, ROWS)), np.empty((2, ROWS), np.int64), np.empty((3, d)))


@_kernel
def eps_trajectories(x, means, prec, const, iso, lev, alpha_t, sigma_t, cx, cx0, ceps, cx0p, cz, nstep, recompute,
                     c, k0, k1, out):
    """DDPM / DDIM(eta) / DPM-Solver++(2M) on the exact mixture score, one trajectory per sample."""
    _check_gm(x, out, means, prec, const, alpha_t, sigma_t, lev)
    B, d = x.shape
    for task in prange((B + ROWS - 1) // ROWS):
        blk, LG, lanes, ti, words, quad, vec = _block_scratch(4, d, means.shape[0])
        b0 = task * ROWS
        _eps_rows(x, b0, min(ROWS, B - b0), out, means, prec, const, iso, True, lev, alpha_t, sigma_t, cx, cx0,
                  ceps, cx0p, cz, nstep, recompute, c, k0, k1, blk[0], blk[1], blk[2], blk[3], LG, lanes, ti,
                  words[:2], words[2:], quad, vec[0], vec[1], vec[2])


@_kernel
def score_trajectories(x, means, prec, const, iso, lev, lev2, alpha_t, sigma_t, cx, cs, cz, heun, hx, hs, hxe, hse,
                       nstep, k0, k1, out):
    """Euler-Maruyama / PF-ODE Euler / Heun / Langevin on the exact mixture score, one trajectory per sample."""
    _check_gm(x, out, means, prec, const, alpha_t, sigma_t, lev)
    _check_gm(x, out, means, prec, const, alpha_t, sigma_t, lev2)
    B, d = x.shape
    for task in prange((B + ROWS - 1) // ROWS):
        blk, LG, lanes, ti, words, quad, vec = _block_scratch(5, d, means.shape[0])
        b0 = task * ROWS
        _score_rows(x, b0, min(ROWS, B - b0), out, means, prec, const, iso, True, lev, lev2, alpha_t, sigma_t, cx,
                    cs, cz, heun, hx, hs, hxe, hse, nstep, k0, k1, blk[0], blk[1], blk[2], blk[3], blk[4], LG,
                    lanes, ti, words[:2], words[2:], quad, vec[0], vec[1], vec[2])
