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
import numpy as np
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


# ---------------------------------------------------------------------------- predictor-corrector trajectories
# Predictor-corrector (Song et al. 2021a, Alg. 2/3) couples the samples through the corrector's batch means of
# ||z|| and ||score|| (kernels/trajectories.py, langevin_corrector_step_size), so it runs as the CPU driver does,
# in phases, each a launch on one stream (no host synchronisation): the predictor; the corrector's score, noise and
# per-block norm sums; one block reducing those sums to the step's coefficients; the corrector update. The state,
# noise and score of every sample live in float64 ``(B, d, 1)`` device arrays (the ``(d, R = 1)`` block of a
# thread). Sums run in a fixed order for a given launch configuration (no atomics): deterministic.
_score_and_noise, _euler_block, _norm_sum = _t["score_and_noise"], _t["euler_block"], _t["norm_sum"]
_load_block, _store_block = _t["load_block"], _t["store_block"]
_corrector_step_size, _langevin_coefficients = _t["langevin_corrector_step_size"], _t["langevin_coefficients"]


@cuda.jit(device=True)
def _pc_score_and_noise(X, Z, SC, b, L, means, prec, const, iso, alpha_t, step, k0, k1):
    """The score of ``X`` (``(d, 1)``, sample ``b``) at level ``L`` into ``SC`` and its noise at counter ``step``
    into ``Z`` (the one-pass score, as the other CUDA trajectories)."""
    d = X.shape[0]
    vec = cuda.local.array((3, MAX_DIM_CUDA), numba.float64)
    lanes = cuda.local.array((4, 1), numba.float64)
    words = cuda.local.array((4, 1), numba.float64)
    quad = cuda.local.array((2, 1), numba.int64)
    _score_and_noise(X, 1, alpha_t[L], L, means, prec, const, iso, False, False, prec, alpha_t, step, k0, k1, b, Z,
                     SC, lanes[:1], lanes, quad[0], words[:2], words[2:], quad, vec[0, :d], vec[1, :d], vec[2, :d])


@cuda.jit(device=True)
def _block_sums(zs, ss):
    """The sums of every thread's ``(zs, ss)`` over the block, in thread order (valid on thread 0); every
    thread of the block must call it (it synchronises the block)."""
    sh = cuda.shared.array((2, THREADS), numba.float64)
    t = cuda.threadIdx.x
    sh[0, t] = zs
    sh[1, t] = ss
    cuda.syncthreads()
    if t == 0:
        for u in range(1, cuda.blockDim.x):
            zs += sh[0, u]
            ss += sh[1, u]
    return zs, ss


@cuda.jit
def pc_load(x, state):
    """``state[b, :, 0] = x[b]`` in float64."""
    for b in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        _load_block(x, b, 1, state[b])


@cuda.jit
def pc_store(state, out):
    for b in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        _store_block(state[b], b, 1, out)


@cuda.jit
def pc_predictor(state, means, prec, const, iso, lev, alpha_t, cx, cs, cz, i, step, k0, k1):
    """Step ``i``'s reverse-diffusion predictor ``x <- cx x + cs score + cz z`` at level ``lev[i]``."""
    B, d, _ = state.shape
    blk = cuda.local.array((2, MAX_DIM_CUDA, 1), numba.float64)
    for b in range(cuda.grid(1), B, cuda.gridsize(1)):
        X = state[b]
        _pc_score_and_noise(X, blk[0, :d], blk[1, :d], b, lev[i], means, prec, const, iso, alpha_t, step, k0, k1)
        _euler_block(X, X, 1, blk[1, :d], blk[0, :d], cx[i], cs[i], cz[i], True)


@cuda.jit
def pc_corrector_terms(state, noise, score, means, prec, const, iso, lev2, alpha_t, i, step, k0, k1, part):
    """The corrector's score and noise of every sample at level ``lev2[i]``, and per block the sums of their
    norms, ``part[block] = (sum ||z||, sum ||score||)`` (a thread's samples in order, then its block's threads)."""
    B = state.shape[0]
    zs = 0.0
    ss = 0.0
    for b in range(cuda.grid(1), B, cuda.gridsize(1)):
        _pc_score_and_noise(state[b], noise[b], score[b], b, lev2[i], means, prec, const, iso, alpha_t, step, k0, k1)
        zs += _norm_sum(noise[b], 1)
        ss += _norm_sum(score[b], 1)
    zs, ss = _block_sums(zs, ss)
    if cuda.threadIdx.x == 0:
        part[cuda.blockIdx.x, 0] = zs
        part[cuda.blockIdx.x, 1] = ss


@cuda.jit
def pc_corrector_coefficients(part, B, snr, alpha_c, i, coef):
    """One block: the batch means of the norms from the per-block ``part`` sums (a thread's rows in order, then
    the block's threads), the Langevin step :func:`langevin_corrector_step_size` and ``coef = (cx, cs, cz)`` of
    ``x + step/2 score + sqrt(step) z``."""
    t = cuda.threadIdx.x
    zs = 0.0
    ss = 0.0
    for r in range(t, part.shape[0], cuda.blockDim.x):
        zs += part[r, 0]
        ss += part[r, 1]
    zs, ss = _block_sums(zs, ss)
    if t == 0:
        c0, c1, c2 = _langevin_coefficients(_corrector_step_size(zs / B, ss / B, snr, alpha_c[i]))
        coef[0] = c0
        coef[1] = c1
        coef[2] = c2


@cuda.jit
def pc_corrector_update(state, noise, score, coef):
    """The Langevin corrector ``x <- x + step/2 score + sqrt(step) z`` with the batch's ``coef``."""
    for b in range(cuda.grid(1), state.shape[0], cuda.gridsize(1)):
        X = state[b]
        _euler_block(X, X, 1, score[b], noise[b], coef[0], coef[1], coef[2], True)


def _pc_check(x, means, prec, const, lev, lev2, alpha_t, sigma_t, cx, cs, cz, alpha_c, n_corrector, out, threads):
    """The CPU driver's table checks (``kernels/cpu.py``, ``_check_gm``), on the host: a ValueError, not a
    read out of bounds."""
    if len(x.shape) != 2 or tuple(x.shape) != tuple(out.shape) or x.shape[1] != means.shape[1]:
        raise ValueError("trajectory arrays: x and out must be (B, d) with d = means.shape[1]")
    if x.shape[1] > MAX_DIM_CUDA:
        raise ValueError(f"the CUDA trajectory kernels take dimension <= {MAX_DIM_CUDA}, got {x.shape[1]}")
    L, K = const.shape
    if prec.shape[0] != L or prec.shape[1] != K or K != means.shape[0] or alpha_t.shape[0] != L \
            or sigma_t.shape[0] != L:
        raise ValueError("trajectory tables disagree in the number of levels or components")
    n = lev.shape[0]
    if any(a.shape[0] != n for a in (lev2, cx, cs, cz, alpha_c)):
        raise ValueError("predictor-corrector step tables (lev, lev2, cx, cs, cz, alpha_c) differ in length")
    for levels in (lev, lev2):
        h = levels.copy_to_host()
        if h.size and (h.min() < 0 or h.max() >= L):
            raise ValueError("trajectory level index out of range")
    if isinstance(n_corrector, bool) or int(n_corrector) != n_corrector or n_corrector < 0:
        raise ValueError(f"n_corrector must be an int >= 0, got {n_corrector!r}")
    if threads > THREADS:
        raise ValueError(f"pc_trajectories: at most {THREADS} threads a block, got {threads}")


def _pc_run(blocks, threads, stream, x, means, prec, const, iso, lev, lev2, alpha_t, sigma_t, cx, cs, cz, alpha_c,
            n_corrector, snr, k0, k1, out):
    """Predictor-corrector on the exact mixture score, the CPU ``pc_trajectories``' arguments and noise counters
    (step ``i``: predictor ``i (1 + n_corrector)``, corrector ``j`` that ``+ j``), as the launches of the section
    notes on ``stream``."""
    _pc_check(x, means, prec, const, lev, lev2, alpha_t, sigma_t, cx, cs, cz, alpha_c, n_corrector, out, threads)
    B, d = x.shape
    state, noise, score = (cuda.device_array((B, d, 1), np.float64, stream=stream) for _ in range(3))
    part = cuda.device_array((blocks, 2), np.float64, stream=stream)
    coef = cuda.device_array(3, np.float64, stream=stream)
    grid = (blocks, threads, stream)
    per = 1 + int(n_corrector)
    pc_load[grid](x, state)
    for i in range(lev.shape[0]):
        pc_predictor[grid](state, means, prec, const, iso, lev, alpha_t, cx, cs, cz, i, i * per, k0, k1)
        for j in range(1, per):
            pc_corrector_terms[grid](state, noise, score, means, prec, const, iso, lev2, alpha_t, i, i * per + j,
                                     k0, k1, part)
            pc_corrector_coefficients[1, threads, stream](part, B, snr, alpha_c, i, coef)
            pc_corrector_update[grid](state, noise, score, coef)
    pc_store[grid](state, out)


class _Phases:
    """A host driver launched like a kernel, ``k[blocks, threads, stream](*args)`` (as :func:`launch` and
    :func:`launch_on_stream` do), that runs its phases as kernels on that stream with that grid."""

    def __init__(self, run):
        self._run = run
        self.__doc__ = run.__doc__

    def __getitem__(self, config):
        blocks, threads, stream = (tuple(config) + (0,))[:3]
        return functools.partial(self._run, int(blocks), int(threads), stream)


pc_trajectories = _Phases(_pc_run)
