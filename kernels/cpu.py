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
# Philox and Box-Muller inlined into the caller's numba IR with numpy's error model (no zero-division
# checks): then LLVM vectorises both passes of fill_normals (Box-Muller 5x, Philox 3.5x the numbers/s of
# the called, scalar versions).
_inlined = compile_device_functions(njit(inline="always", error_model="numpy"))
box_muller_angle, philox_words = _inlined["box_muller_angle"], _inlined["philox4x32_10"]
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
    pair = _PAIRS.get(kernel)
    if pair is None:
        k = globals()[kernel] if isinstance(kernel, str) else kernel
        twin = _SERIAL.get(k)
        if twin is None:
            twin = _SERIAL[k] = serial(k)
        pair = _PAIRS[kernel] = (k, twin)
    pair[size < (SERIAL_BELOW_NOISE if draws_noise else SERIAL_BELOW)](*args)


_SERIAL: dict = {}  # kernel -> its serial twin
_PAIRS: dict = {}  # kernel or its name -> (kernel, serial twin), resolved once


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
# Philox4x32-10 words of every block into four uint32 arrays, one per word (integer work; unit-stride
# stores, so LLVM vectorises the ten rounds: AVX2 ``vpmuludq``, ~1.6 G words/s a thread), then Box-Muller
# on both pairs of every block (float64 arithmetic only, :func:`formulas.box_muller_angle` inlined with
# numpy's error model: vectorised, ``vdivpd`` / ``vsqrtpd``, no libm call) writing the four normals of
# block ``j`` to elements ``4 j .. 4 j + 3`` -- and every kernel drawing noise reads that scratch as it
# reads a given noise array. So element ``i`` is ``normal4(k0, k1, g0 + i // 4, b, step)[i % 4]``.
@njit(cache=True)
def scratch(m):
    """Scratch for :func:`fill_normals` of up to ``m`` elements: the four Philox words of each block
    (uint32: converted to float64 exactly, with the cheap 32-bit vector conversion) and the normals."""
    blocks = (m + 3) // 4
    return (np.empty(blocks, np.uint32), np.empty(blocks, np.uint32), np.empty(blocks, np.uint32),
            np.empty(blocks, np.uint32), np.empty(4 * blocks))


@njit(cache=True)
def _philox_words(k0, k1, g0, b, step, w0, w1, w2, w3):
    """Pass 1: the four words of Philox blocks ``g0 .. g0 + len(w0) - 1`` of sample ``b`` at ``step``."""
    for j in range(w0.shape[0]):
        g = g0 + j
        w0[j], w1[j], w2[j], w3[j] = philox_words(g & MASK32, b & MASK32, step & MASK32, (g >> 32) & MASK32,
                                                   k0, k1)


@njit(cache=True, error_model="numpy")
def _box_muller_blocks(w0, w1, w2, w3, z):
    """Pass 2: :func:`formulas.normal4`'s Box-Muller on both pairs of every block, into ``z[4 j:4 j + 4]``."""
    for j in range(w0.shape[0]):
        a, c = w1[j], w3[j]
        z[4 * j], z[4 * j + 1] = box_muller_angle(w0[j], (a & 0x3FFFFFFF) * HALF_PI_2_30, a >> 30)
        z[4 * j + 2], z[4 * j + 3] = box_muller_angle(w2[j], (c & 0x3FFFFFFF) * HALF_PI_2_30, c >> 30)


@njit(cache=True)
def fill_normals(k0, k1, g0, b, step, m, scr):
    """The first ``m`` normals of sample ``b`` from Philox block ``g0`` on, into ``scr[4][:m]`` (returned)."""
    w0, w1, w2, w3, z = scr
    blocks = (m + 3) // 4
    w0, w1, w2, w3 = w0[:blocks], w1[:blocks], w2[:blocks], w3[:blocks]
    _philox_words(k0, k1, g0, b, step, w0, w1, w2, w3)
    _box_muller_blocks(w0, w1, w2, w3, z[:4 * blocks])
    return z[:m]


@njit(cache=True)
def noise_at(z, i):
    """Element ``i`` of a row piece's noise ``z``; ``z = None`` (NOISE_NONE) is the formula with ``z = 0``,
    read from no memory (numba prunes the branch for a ``None`` argument, so each row function compiles
    once with noise and once without)."""
    if z is None:
        return 0.0
    return z[i]


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


# ---------------------------------------------------------------------------- the loop skeleton
# Every elementwise kernel is one skeleton, :func:`_skeleton`, instantiated for one formula by
# :func:`instantiate`: the skeleton's code under the kernel's name with the formula's row function ``ROW``, its argument
# check ``CHECK`` and the positions of its arguments injected as globals (a ``types.FunctionType`` with
# its own ``__qualname__``: numba's on-disk cache is keyed by the qualified name, and a closure or a
# function argument would miss it, numba issue #6264). A kernel's arguments are
# ``(*arrays, [noise], *coefficients, [mode, k0, k1, step], *outputs)`` as the backend passes them; the
# skeleton reads them as one tuple and ``ROW(b, i0, i1, z, args)`` unpacks what its formula needs.
# Noise, the same on both targets: ``NOISE_GIVEN`` reads the noise array, ``NOISE_PHILOX`` draws it
# (:func:`fill_normals`), ``NOISE_NONE`` passes ``z = None``, which :func:`noise_at` reads as zeros (no
# scratch filled, no memory read); kernels without noise use :func:`_skeleton_no_noise` (``ROW(b, i0, i1, args)``).
def _skeleton(*args):
    CHECK(args)
    out, noise = args[OUT_AT], args[NOISE_AT]
    mode, k0, k1, step = args[MODE_AT], args[K0_AT], args[K1_AT], args[STEP_AT]
    B, n = out.shape
    ntask, per_row, rows = _tasks(B, n)
    for task in prange(ntask):
        b0, b1, i0, i1 = _bounds(task, B, n, per_row, rows)
        scr = scratch(i1 - i0 if mode == NOISE_PHILOX else 0)
        for b in range(b0, b1):
            if mode == NOISE_GIVEN:
                ROW(b, i0, i1, noise[b, i0:i1], args)
            elif mode == NOISE_PHILOX:
                ROW(b, i0, i1, fill_normals(k0, k1, i0 // 4, b, step, i1 - i0, scr), args)
            else:
                ROW(b, i0, i1, None, args)


def _skeleton_no_noise(*args):
    CHECK(args)
    out = args[OUT_AT]
    B, n = out.shape
    ntask, per_row, rows = _tasks(B, n)
    for task in prange(ntask):
        b0, b1, i0, i1 = _bounds(task, B, n, per_row, rows)
        for b in range(b0, b1):
            ROW(b, i0, i1, args)


def instantiate(row, check, name: str, noise_at: int, out_at: int):
    """The ``parallel=True`` kernel ``name``: :func:`_skeleton` with ``row`` and ``check`` injected, the
    noise array at position ``noise_at`` (``-1``: none; then ``mode, k0, k1, step`` follow the
    coefficients, just before the first output) and the first output at ``out_at``. Docstring: ``row``'s."""
    f = _skeleton if noise_at >= 0 else _skeleton_no_noise
    g = dict(f.__globals__, ROW=row, CHECK=check, NOISE_AT=noise_at, OUT_AT=out_at, MODE_AT=out_at - 4,
             K0_AT=out_at - 3, K1_AT=out_at - 2, STEP_AT=out_at - 1)
    k = types.FunctionType(f.__code__, g, name, f.__defaults__, f.__closure__)
    k.__qualname__, k.__module__, k.__doc__ = name, f.__module__, row.py_func.__doc__
    return _kernel(k)


# ---------------------------------------------------------------------------- forward process
@njit(cache=True)
def _q_sample_check(args):
    x0, eps, t_index, sqrt_ab, sqrt_1mab, _, _, _, _, out = args
    _same_shape(x0, eps)
    _same_shape(x0, out)
    if t_index.shape[0] != x0.shape[0]:
        raise ValueError("t_index must have one entry per sample")


@njit(cache=True)
def _q_sample_row(b, i0, i1, z, args):
    """``out = sqrt(ab[t]) x0 + sqrt(1-ab[t]) eps`` with per-sample ``t = t_index[b]``
    (Ho et al. 2020, eq. 4). ``mode``: NOISE_GIVEN reads ``eps``; NOISE_PHILOX draws it. A ``t`` outside
    either table gives NaN (both tables are read at t, issue 14.23)."""
    x0, _, t_index, sqrt_ab, sqrt_1mab, _, _, _, _, out = args
    xr, orow = x0[b, i0:i1], out[b, i0:i1]
    ti = t_index[b]
    if ti < 0 or ti >= min(sqrt_ab.shape[0], sqrt_1mab.shape[0]):
        orow[:] = np.nan
        return
    a, s = sqrt_ab[ti], sqrt_1mab[ti]
    for i in range(orow.shape[0]):
        orow[i] = q_sample_elem(xr[i], noise_at(z, i), a, s)


q_sample = instantiate(_q_sample_row, _q_sample_check, "q_sample", noise_at=1, out_at=9)


# ---------------------------------------------------------------------------- samplers
@njit(cache=True)
def _ddpm_check(args):
    x, eps, noise, _, _, _, _, _, _, _, _, _, _, out, x0_out = args
    _same_shapes(x, eps, noise, out, x0_out)


@njit(cache=True)
def _ddim_check(args):
    x, eps, noise, _, _, _, _, _, _, _, _, _, _, _, _, _, out, x0_out = args
    _same_shapes(x, eps, noise, out, x0_out)


@njit(cache=True)
def _em_check(args):
    x, score, noise, _, _, _, _, _, _, _, out = args
    _same_shapes(x, score, noise, out, out)


@njit(cache=True)
def _same_shapes(x, a, b, c, d):
    _same_shape(x, a)
    _same_shape(x, b)
    _same_shape(x, c)
    _same_shape(x, d)


@njit(cache=True)
def _ddpm_row(b, i0, i1, z, args):
    """DDPM ancestral step (Ho et al. 2020, Alg. 2); writes ``x_prev`` and ``x0_hat``."""
    x, eps, _, inv_sa, s1, c, cx0, cx, std, _, _, _, _, out, x0_out = args
    xr, er, orow, x0row = x[b, i0:i1], eps[b, i0:i1], out[b, i0:i1], x0_out[b, i0:i1]
    for i in range(orow.shape[0]):
        orow[i], x0row[i] = ddpm_elem(xr[i], er[i], noise_at(z, i), inv_sa, s1, c, cx0, cx, std)


@njit(cache=True)
def _ddim_row(b, i0, i1, z, args):
    """DDIM step (Song et al. 2021b, eq. 12); writes ``x_prev`` and ``x0_hat``."""
    x, eps, _, sa, inv_sa, s1, inv_s1, c, recompute_eps, sap, cdir, ddim_sigma, _, _, _, _, out, x0_out = args
    xr, er, orow, x0row = x[b, i0:i1], eps[b, i0:i1], out[b, i0:i1], x0_out[b, i0:i1]
    for i in range(orow.shape[0]):
        orow[i], x0row[i] = ddim_elem(xr[i], er[i], noise_at(z, i), sa, inv_sa, s1, inv_s1, c, recompute_eps, sap, cdir,
                                      ddim_sigma)


@njit(cache=True)
def _em_row(b, i0, i1, z, args):
    """``cx x + cs score + cz z``: one Euler-Maruyama step (Langevin, reverse SDE, PF-ODE Euler,
    walkers; see ``formulas.*_coefficients``)."""
    x, score, _, cx, cs, cz, _, _, _, _, out = args
    xr, sr, orow = x[b, i0:i1], score[b, i0:i1], out[b, i0:i1]
    for i in range(orow.shape[0]):
        orow[i] = em_elem(xr[i], sr[i], noise_at(z, i), cx, cs, cz)


@njit(cache=True)
def _heun_check(args):
    x, score, xe, se, _, _, _, _, out = args
    _same_shapes(x, score, xe, se, out)


@njit(cache=True)
def _heun_row(b, i0, i1, args):
    """PF-ODE Heun correction (Karras et al. 2022, Alg. 1, lines 9-11)."""
    x, score, xe, se, cx, cs, cxe, cse, out = args
    xr, sr, xer, ser, orow = x[b, i0:i1], score[b, i0:i1], xe[b, i0:i1], se[b, i0:i1], out[b, i0:i1]
    for i in range(orow.shape[0]):
        orow[i] = heun_elem(xr[i], sr[i], xer[i], ser[i], cx, cs, cxe, cse)


ddpm = instantiate(_ddpm_row, _ddpm_check, "ddpm", noise_at=2, out_at=13)
ddim = instantiate(_ddim_row, _ddim_check, "ddim", noise_at=2, out_at=16)
em = instantiate(_em_row, _em_check, "em", noise_at=2, out_at=10)
heun = instantiate(_heun_row, _heun_check, "heun", noise_at=-1, out_at=8)


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
_t = compile_trajectory_functions(njit, _f, vector_exp=True, box_muller_angle=box_muller_angle, philox=philox_words,
                                  noise_jit=njit(error_model="numpy"), score_jit=njit(fastmath={"contract"}))
_eps_rows, _score_rows = _t["eps_rows"], _t["score_rows"]
_score_and_noise, _euler_block, _norm_sum = _t["score_and_noise"], _t["euler_block"], _t["norm_sum_rows"]
_load_block, _store_block = _t["load_block"], _t["store_block"]
_corrector_step_size, _langevin_coefficients = _t["langevin_corrector_step_size"], _t["langevin_coefficients"]


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
def score_trajectories(x, means, prec, const, iso, field, wacc, mu_c, lev, lev2, alpha_t, sigma_t, cx, cs, cz, heun, hx,
                       hs, hxe, hse, nstep, k0, k1, out):
    """Euler-Maruyama / PF-ODE Euler / Heun / Langevin on the exact mixture score, or (``field``) the flow
    ODE solvers on the exact velocity (tables ``wacc``, ``mu_c``), one trajectory per sample."""
    _check_gm(x, out, means, prec, const, alpha_t, sigma_t, lev)
    _check_gm(x, out, means, prec, const, alpha_t, sigma_t, lev2)
    if wacc.shape[0] != prec.shape[0] or wacc.shape[1] != prec.shape[1] or mu_c.shape[0] != prec.shape[0] \
            or (field and wacc.shape[2] != prec.shape[2]):
        raise ValueError("trajectory field tables disagree with the level tables")
    B, d = x.shape
    for task in prange((B + ROWS - 1) // ROWS):
        blk, LG, lanes, ti, words, quad, vec = _block_scratch(5, d, means.shape[0])
        b0 = task * ROWS
        _score_rows(x, b0, min(ROWS, B - b0), out, means, prec, const, iso, True, field, wacc, mu_c, lev, lev2,
                    alpha_t, sigma_t, cx, cs, cz, heun, hx, hs, hxe, hse, nstep, k0, k1, blk[0], blk[1], blk[2], blk[3],
                    blk[4], LG, lanes, ti, words[:2], words[2:], quad, vec[0], vec[1], vec[2])


@_kernel
def pc_trajectories(x, means, prec, const, iso, lev, lev2, alpha_t, sigma_t, cx, cs, cz, alpha_c, n_corrector, snr, k0,
                    k1, out):
    """Predictor-corrector (Song et al. 2021a, Alg. 2/3) on the exact mixture score, every trajectory at once:
    step ``i`` runs the predictor ``x <- cx x + cs score + cz z`` at level ``lev[i]`` (noise counter ``i (1 +
    n_corrector)``), then ``n_corrector`` Langevin correctors at level ``lev2[i]`` (counter ``+ j``). One ``prange``
    pass over the blocks per corrector: the previous corrector's update, the predictor when one comes next, then the
    corrector's score, noise and per-block norm sums; between passes the batch means and the step
    :func:`~minidiff.kernels.trajectories.langevin_corrector_step_size` (``alpha_c[i]``) on one thread. The
    arithmetic is the phase-by-phase order's (load, predictor, score, norms, update), one region a step instead of
    two and one walk over the block state instead of two."""
    _check_gm(x, out, means, prec, const, alpha_t, sigma_t, lev)
    _check_gm(x, out, means, prec, const, alpha_t, sigma_t, lev2)
    B, d = x.shape
    nb = (B + ROWS - 1) // ROWS
    K = means.shape[0]
    blk = np.empty((nb, 3, d, ROWS))  # the state X, the noise Z and the score SC of every block
    LG = np.empty((nb, max(K, 1), ROWS))
    lanes = np.empty((nb, 4, ROWS))
    words = np.empty((nb, 4, ROWS))
    quad = np.empty((nb, 2, ROWS), np.int64)
    vec = np.empty((nb, 3, d))
    part = np.zeros((nb, 2))
    per = 1 + n_corrector
    total = lev.shape[0] * per  # evaluations g = i per + j: the predictor (j = 0), then the correctors
    g0 = 0
    c0 = c1 = c2 = 0.0
    pending = False  # a corrector update waits for its batch means (c0, c1, c2)
    while g0 < total:
        g1 = g0  # one pass: the pending update, then up to and including the next corrector's score and norms
        while g1 < total - 1 and g1 % per == 0:
            g1 += 1
        for task in prange(nb):
            b0 = task * ROWS
            R = min(ROWS, B - b0)
            X, Z, SC = blk[task, 0], blk[task, 1], blk[task, 2]
            v = vec[task]
            if g0 == 0:
                _load_block(x, b0, R, X)
            if pending:
                _euler_block(X, X, R, SC, Z, c0, c1, c2, True)
            for g in range(g0, g1 + 1):
                i = g // per
                j = g - i * per
                L = lev[i] if j == 0 else lev2[i]
                _score_and_noise(X, R, alpha_t[L], L, means, prec, const, iso, True, False, prec, alpha_t, g, k0, k1,
                                 b0, Z, SC, LG[task], lanes[task], lanes[task, 3].view(np.int64), words[task, :2],
                                 words[task, 2:], quad[task], v[0], v[1], v[2])
                if j == 0:
                    _euler_block(X, X, R, SC, Z, cx[i], cs[i], cz[i], True)
                else:
                    part[task, 0] = _norm_sum(Z, R, lanes[task, 0])
                    part[task, 1] = _norm_sum(SC, R, lanes[task, 0])
        pending = g1 % per != 0
        if pending:
            zs = 0.0
            ss = 0.0
            for task in range(nb):
                zs += part[task, 0]
                ss += part[task, 1]
            c0, c1, c2 = _langevin_coefficients(_corrector_step_size(zs / B, ss / B, snr, alpha_c[g1 // per]))
        g0 = g1 + 1
    for task in prange(nb):
        b0 = task * ROWS
        R = min(ROWS, B - b0)
        X = blk[task, 0]
        if total == 0:
            _load_block(x, b0, R, X)
        if pending:
            _euler_block(X, X, R, blk[task, 2], blk[task, 1], c0, c1, c2, True)
        _store_block(X, b0, R, out)
