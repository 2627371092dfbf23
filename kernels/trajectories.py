"""Whole sampler trajectories on an exact Gaussian-mixture score, written once as plain Python.

For a target ``p_0 = sum_k w_k N(mu_k, S_k)`` and ``x = m x_0 + s eps`` the noised law is
``sum_k w_k N(m mu_k, m^2 S_k + s^2 I)`` exactly, so its score is closed-form:

    score(x) = -sum_k r_k(x) P_k (x - m mu_k),   P_k = (m^2 S_k + s^2 I)^-1,
    r_k(x)   = softmax_k(log w_k - 1/2 log det P_k^-1 - 1/2 (x - m mu_k)^T P_k (x - m mu_k))

(the same quantity as :meth:`minidiff.data.GaussianMixture.score` of ``gm.noised(m, s)``). The host
(:mod:`minidiff.trajectories`) computes ``P_k`` and the constants once per noise level; the kernels
evaluate the score inside the loop with an online softmax (one pass over the components, a running
maximum, O(d) scratch: any number of components), and run a whole sampler per sample.

Two trajectory shapes cover the samplers (coefficients per step from the host, each formula of
:mod:`.formulas` reused there):

* ``eps_trajectory`` -- the eps/x0 form: ``eps = -s score``, ``x0 = clip((x - s eps) / m)`` (Ho et al.
  2020, eq. 15), optionally ``eps`` recomputed from the clipped ``x0`` (DDIM), then
  ``x <- cx x + cx0 x0 + ceps eps + cx0p x0_prev + cz z``: DDPM (Alg. 2, eq. 7), DDIM(eta) (Song et
  al. 2021a, eq. 12) and DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) are three coefficient tables.
* ``score_trajectory`` -- ``x_e = cx x + cs score + cz z`` (Euler-Maruyama of the reverse SDE, Song et
  al. 2021b eq. 6; Euler of the PF ODE, eq. 13), optionally the Heun correction
  ``x <- hx x + hs score + hxe x_e + hse score(x_e)`` (Karras et al. 2022, Alg. 1).

Noise for element ``j`` of sample ``b`` at noise counter ``step`` is ``normal4(k0, k1, j // 4, b,
step)[j % 4]``: the numbers :func:`minidiff.backend.normal` draws, so a trajectory here sees exactly
the noise of the step-by-step samplers given the same seed. Nothing here imports numba.
"""
from __future__ import annotations

import math
import types

from numpy import float64 as f64

from . import formulas

MAX_DIM_CUDA = 64  # local-array length of the CUDA kernels (the CPU kernels take any dimension)
N_SCRATCH = 9      # d-vectors of scratch per sample


def gm_score(xs, m, L, means, prec, const, iso, diff, y, acc, score):
    """``score[:] = grad log q(xs)`` for ``q = sum_k w_k N(m mu_k, P[L, k]^-1)`` (see the module
    notes), by an online softmax over the components; ``diff``, ``y``, ``acc`` are scratch."""
    K = means.shape[0]
    d = xs.shape[0]
    mx = -math.inf
    tot = 0.0
    for j in range(d):
        acc[j] = 0.0
    for k in range(K):
        q = 0.0
        if iso:
            p = prec[L, k, 0, 0]
            for j in range(d):
                diff[j] = xs[j] - m * means[k, j]
                y[j] = p * diff[j]
                q += diff[j] * y[j]
        else:
            for j in range(d):
                diff[j] = xs[j] - m * means[k, j]
            for j in range(d):
                v = 0.0
                for i in range(d):
                    v += prec[L, k, j, i] * diff[i]
                y[j] = v
                q += diff[j] * v
        logit = const[L, k] - 0.5 * q
        if logit > mx:
            scale = math.exp(mx - logit)  # 0 on the first component
            for j in range(d):
                acc[j] *= scale
            tot *= scale
            mx = logit
        w = math.exp(logit - mx)
        for j in range(d):
            acc[j] += w * y[j]
        tot += w
    for j in range(d):
        score[j] = -acc[j] / tot


def gm_score_iso(xs, m, L, means, prec, const, logit, score):
    """:func:`gm_score` for isotropic components (``P[L, k] = p_k I``) in two passes over the components
    (logits and their maximum, then the weighted sum), no stored residuals: the CPU's fast path.
    ``logit`` is scratch of length ``K``."""
    K = means.shape[0]
    d = xs.shape[0]
    mx = -math.inf
    for k in range(K):
        q = 0.0
        for j in range(d):
            r = xs[j] - m * means[k, j]
            q += r * r
        v = const[L, k] - 0.5 * prec[L, k, 0, 0] * q
        logit[k] = v
        mx = max(mx, v)
    for j in range(d):
        score[j] = 0.0
    tot = 0.0
    for k in range(K):
        w = math.exp(logit[k] - mx)
        tot += w
        wp = w * prec[L, k, 0, 0]
        for j in range(d):
            score[j] -= wp * (xs[j] - m * means[k, j])
    inv = 1.0 / tot
    for j in range(d):
        score[j] *= inv


def score_into(xs, m, L, means, prec, const, iso, two_pass, diff, y, acc, score):
    """The mixture score into ``score``: :func:`gm_score_iso` when ``iso and two_pass`` (``acc`` then
    holds the ``K`` logits), else the one-pass :func:`gm_score` (any K in O(d) scratch)."""
    if iso and two_pass:
        gm_score_iso(xs, m, L, means, prec, const, acc, score)
    else:
        gm_score(xs, m, L, means, prec, const, iso, diff, y, acc, score)


def eps_trajectory(x_in, b, out, means, prec, const, iso, two_pass, lev, m_tab, s_tab, cx, cx0, ceps, cx0p, cz,
                   nstep, recompute, c, k0, k1, xs, x0p, diff, y, acc, sc):
    """Sample ``b``: the eps/x0-form sampler of the module notes over ``lev.shape[0]`` steps, from
    ``x_in[b]`` into ``out[b]``."""
    d = x_in.shape[1]
    for j in range(d):
        xs[j] = f64(x_in[b, j])
        x0p[j] = 0.0
    for i in range(lev.shape[0]):
        L = lev[i]
        m = m_tab[L]
        s = s_tab[L]
        score_into(xs, m, L, means, prec, const, iso, two_pass, diff, y, acc, sc)
        st = nstep[i]
        for g in range((d + 3) // 4):
            z0, z1, z2, z3 = 0.0, 0.0, 0.0, 0.0
            if st >= 0:
                z0, z1, z2, z3 = normal4(k0, k1, g, b, st)
            for kk in range(min(4, d - 4 * g)):
                j = 4 * g + kk
                e = -s * sc[j]
                x0 = clip((xs[j] - s * e) / m, c)
                if recompute:
                    e = (xs[j] - m * x0) / s
                xs[j] = cx[i] * xs[j] + cx0[i] * x0 + ceps[i] * e + cx0p[i] * x0p[j] + cz[i] * lane(z0, z1, z2, z3, kk)
                x0p[j] = x0
    for j in range(d):
        out[b, j] = xs[j]


def score_trajectory(x_in, b, out, means, prec, const, iso, two_pass, lev, lev2, m_tab, s_tab, cx, cs, cz, heun,
                     hx, hs, hxe, hse, nstep, k0, k1, xs, xe, diff, y, acc, sc, se):
    """Sample ``b``: Euler(-Maruyama) steps with an optional Heun correction (module notes)."""
    d = x_in.shape[1]
    for j in range(d):
        xs[j] = f64(x_in[b, j])
    for i in range(lev.shape[0]):
        L = lev[i]
        score_into(xs, m_tab[L], L, means, prec, const, iso, two_pass, diff, y, acc, sc)
        st = nstep[i]
        for g in range((d + 3) // 4):
            z0, z1, z2, z3 = 0.0, 0.0, 0.0, 0.0
            if st >= 0:
                z0, z1, z2, z3 = normal4(k0, k1, g, b, st)
            for kk in range(min(4, d - 4 * g)):
                j = 4 * g + kk
                xe[j] = cx[i] * xs[j] + cs[i] * sc[j] + cz[i] * lane(z0, z1, z2, z3, kk)
        if heun[i]:
            L2 = lev2[i]
            score_into(xe, m_tab[L2], L2, means, prec, const, iso, two_pass, diff, y, acc, se)
            for j in range(d):
                xs[j] = hx[i] * xs[j] + hs[i] * sc[j] + hxe[i] * xe[j] + hse[i] * se[j]
        else:
            for j in range(d):
                xs[j] = xe[j]
    for j in range(d):
        out[b, j] = xs[j]


TRAJECTORY_FUNCTIONS = ("gm_score", "gm_score_iso", "score_into", "eps_trajectory", "score_trajectory")


def compile_trajectory_functions(jit, device_functions: dict) -> dict:
    """Compile the functions above with ``jit``, calling the already compiled ``device_functions``
    of :func:`minidiff.kernels.formulas.compile_device_functions` (same construction: injected
    globals and the original ``__qualname__``, so numba's on-disk cache of the callers keeps working)."""
    ns = dict(globals())
    ns.update(device_functions)
    ns["f64"] = formulas.f64
    out = {}
    for name in TRAJECTORY_FUNCTIONS:
        f = globals()[name]
        g = types.FunctionType(f.__code__, ns, name, f.__defaults__, f.__closure__)
        g.__qualname__, g.__doc__, g.__module__ = f.__qualname__, f.__doc__, f.__module__
        out[name] = ns[name] = jit(g)
    return out


def flops_gm_score(K: int, d: int, iso: bool) -> int:
    """Floating-point operations of one :func:`gm_score` (exp counted as one): per component
    ``2d`` for the residual, ``2d`` (isotropic) or ``2d^2`` (full) for ``P (x - m mu)``, ``2d`` for
    the quadratic form, ~6 for the softmax bookkeeping and ``2d`` for the accumulation; ``2d`` at the end."""
    per = 2 * d + (2 * d if iso else 2 * d * d) + 2 * d + 6 + 2 * d
    return K * per + 2 * d
