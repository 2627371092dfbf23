"""Whole sampler trajectories on an exact Gaussian-mixture score, written once as plain Python.

For a target ``p_0 = sum_k w_k N(mu_k, S_k)`` and ``x = alpha_t x_0 + sigma_t eps`` the noised law is
``sum_k w_k N(alpha_t mu_k, alpha_t^2 S_k + sigma_t^2 I)`` exactly, so its score is closed-form:

    score(x) = -sum_k r_k(x) P_k (x - alpha_t mu_k),   P_k = (alpha_t^2 S_k + sigma_t^2 I)^-1,
    r_k(x)   = softmax_k(log w_k - 1/2 log det P_k^-1 - 1/2 (x - alpha_t mu_k)^T P_k (x - alpha_t mu_k))

(the same quantity as :meth:`minidiff.data.GaussianMixture.score` of ``gm.noised(alpha_t, sigma_t)``).
The host (:mod:`minidiff.trajectories`) computes ``P_k`` and the constants once per noise level
(tables ``alpha_t[L]``, ``sigma_t[L]``, ``prec[L, k]``, ``const[L, k]``); the kernels run a whole
sampler per sample, evaluating the score inside the loop.

The kernels work on a *block* of ``R`` samples at a time, stored transposed, ``X[j, r]`` (coordinate
``j`` of sample ``b0 + r``): every inner loop runs over the samples of the block, independent lanes,
so LLVM vectorises the score, the exponentials and the update across samples (one sample has only
``d`` coordinates -- two in the course -- too few to fill a vector). The CPU runs blocks of
``ROWS`` samples (``prange`` over blocks), CUDA one sample per thread (``R = 1``).

* :func:`gm_score_rows` -- isotropic components (``P_k = p_k I``), two passes over the components
  (logits and their maximum, then the weighted sum), ``K`` logits per lane of scratch: the CPU's path.
* :func:`gm_score` -- any covariances, one pass with an online softmax (a running maximum, O(d)
  scratch: any number of components): full covariances, and every mixture on CUDA.

The same responsibilities give the exact *velocity* of an interpolant ``x_t = alpha_t x_0 + sigma_t eps``
(:mod:`minidiff.interpolants`; :meth:`minidiff.data.GaussianMixture.velocity`), ``u(x) = E[alpha_t' x_0 +
sigma_t' eps | x_t = x]``. Per component (Gaussian conditioning, as
:meth:`~minidiff.data.GaussianMixture.posterior_means`) ``E[x_0 | x, k] = mu_k + alpha_t S_k P_k (x - alpha_t mu_k)``
and ``E[eps | x, k] = sigma_t P_k (x - alpha_t mu_k)``, so

    u(x) = sum_k r_k(x) (mu_c mu_k - W_k (x - alpha_t mu_k)),  mu_c = alpha_t',
    W_k = -(alpha_t' alpha_t S_k + sigma_t' sigma_t I) P_k

-- the score's loop with another matrix in the sum and a mean term (the score is ``W_k = P_k``, ``mu_c = 0``):
the *mixed field* of :func:`gm_score` / :func:`gm_score_rows` with ``field=True`` and host tables
``wacc[L, k] = W_k``, ``mu_c[L]``. Unlike ``u = (alpha_t'/alpha_t) x + (...) score`` it holds at ``alpha_t = 0``
(``t = 1``, where ``x_0`` cannot be read from the score) and at ``sigma_t = 0``.

Two trajectory shapes cover the samplers (coefficients per step from the host, each formula of
:mod:`.formulas` reused there):

* :func:`eps_rows` -- the eps/x0 form: ``eps = -sigma_t score``, ``x0 = clip((x - sigma_t eps) / alpha_t)``
  (Ho et al. 2020, eq. 15), optionally ``eps`` recomputed from the clipped ``x0`` (DDIM), then
  ``x <- cx x + cx0 x0 + ceps eps + cx0p x0_prev + cz z``: DDPM (Alg. 2, eq. 7), DDIM(eta) (Song et
  al. 2021b, eq. 12) and DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2) are three coefficient tables.
* :func:`score_rows` -- ``x_e = cx x + cs score + cz z`` (Euler-Maruyama of the reverse SDE, Song et
  al. 2021a eq. 6; Euler of the PF ODE, eq. 13; Langevin dynamics, Alg. 1 of Song & Ermon 2019), optionally the
  Heun correction ``x <- hx x + hs score + hxe x_e + hse score(x_e)`` (Karras et al. 2022, Alg. 1).
  With the velocity in place of the score: the flow-matching ODE solvers of :mod:`minidiff.flow` (Euler,
  Heun, and the explicit midpoint method as a "Heun" correction evaluated at the half step).

Predictor-corrector (Song et al. 2021a, Alg. 2/3) does not fit a per-sample kernel: its Langevin corrector's
step uses the batch means of ``||z||`` and ``||score||`` (:func:`langevin_corrector_step_size`), so both
drivers keep every block's state and run each step in phases: the predictor (:func:`euler_block` on the
reverse-diffusion coefficients), the corrector's score, noise and per-block norm sums, the batch means, the
Langevin update. The CPU driver (``kernels/cpu.py``, ``pc_trajectories``) folds them into one parallel pass per
corrector (the previous corrector's update, then the next predictor, score, noise and norm sums), with the batch
means between passes; the CUDA driver (``kernels/cuda.py``, ``pc_trajectories``) launches each phase on one
stream, the batch means in a one-block reduction, with no copy to the host.

Noise for element ``j`` of sample ``b`` at noise counter ``step`` is ``normal4(k0, k1, j // 4, b,
step)[j % 4]``: the numbers :func:`minidiff.backend.normal` draws, so a trajectory here sees exactly
the noise of the step-by-step samplers given the same seed. Nothing here imports numba.
"""
from __future__ import annotations

import math
import types

from numpy import float64 as f64
from numpy import int64 as i64

from . import formulas
from .formulas import HALF_PI_2_30, MASK32

MAX_DIM_CUDA = 64  # local-array length of the CUDA kernels (the CPU kernels take any dimension)
ROWS = 128         # samples per CPU block (the lanes of the vectorised loops)

# exp(v) for v <= 0 in arithmetic LLVM can vectorise (no libm call; Cody & Waite 1980 range reduction):
# v = n ln2 + y, |y| <= ln2 / 2, exp(y) by its Taylor polynomial to degree 13 (truncation < 1e-17
# relative), 2^n assembled in the exponent bits. Inputs below -700 are taken as -700 (exp = 1e-304,
# nothing next to the softmax's largest term, 1).
LOG2E = 1.4426950408889634
LN2_HI = 0.6931471803691238        # ln 2 to 32 bits: n * LN2_HI is exact for |n| < 2^20
LN2_LO = 1.9082149292705877e-10
ROUND_MAGIC = 6755399441055744.0   # 1.5 * 2^52: x + ROUND_MAGIC rounds x to an integer, held in the low bits
ROUND_MAGIC_BITS = 0x4338000000000000


def exp_rows_poly(w, tf, ti, R):
    """``w[:R] = exp(w[:R])`` for ``w <= 0`` (module notes); ``tf`` float64 scratch of length ``R``
    and ``ti`` the same memory viewed as int64 (the bit-level assembly of ``2^n``)."""
    for r in range(R):
        v = -700.0 if -700.0 > w[r] else w[r]  # max(w[r], -700.0); the two-argument max fails numba's CUDA typing
        t = v * LOG2E + ROUND_MAGIC
        tf[r] = t
        n = t - ROUND_MAGIC
        y = (v - n * LN2_HI) - n * LN2_LO
        p = 1.0 / 6227020800.0
        p = p * y + 1.0 / 479001600.0
        p = p * y + 1.0 / 39916800.0
        p = p * y + 1.0 / 3628800.0
        p = p * y + 1.0 / 362880.0
        p = p * y + 1.0 / 40320.0
        p = p * y + 1.0 / 5040.0
        p = p * y + 1.0 / 720.0
        p = p * y + 1.0 / 120.0
        p = p * y + 1.0 / 24.0
        p = p * y + 1.0 / 6.0
        p = p * y + 0.5
        p = p * y + 1.0
        w[r] = p * y + 1.0
    for r in range(R):
        ti[r] = (ti[r] - ROUND_MAGIC_BITS + 1023) << 52
    for r in range(R):
        w[r] *= tf[r]


def exp_rows_libm(w, tf, ti, R):
    """``w[:R] = exp(w[:R])`` with the target's own exp (CUDA: one lane, libdevice)."""
    for r in range(R):
        w[r] = math.exp(w[r])


def gm_score(xs, a, L, means, prec, const, iso, field, wacc, mu_c, diff, y, acc, score):
    """``score[:] = grad log q(xs)`` for ``q = sum_k w_k N(a mu_k, P[L, k]^-1)`` (see the module
    notes), by an online softmax over the components; ``diff``, ``y``, ``acc`` are scratch. With
    ``field``: the mixed field ``sum_k r_k (mu_c[L] mu_k - W[L, k] (xs - a mu_k))`` instead, ``W = wacc``
    (the score is ``W = P``, ``mu_c = 0``; the flow velocity, module notes)."""
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
                diff[j] = xs[j] - a * means[k, j]
                y[j] = p * diff[j]
                q += diff[j] * y[j]
        else:
            for j in range(d):
                diff[j] = xs[j] - a * means[k, j]
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
        if field:
            c = mu_c[L]
            for j in range(d):
                if iso:
                    v = wacc[L, k, 0, 0] * diff[j]
                else:
                    v = 0.0
                    for i in range(d):
                        v += wacc[L, k, j, i] * diff[i]
                acc[j] += w * (v - c * means[k, j])
        else:
            for j in range(d):
                acc[j] += w * y[j]
        tot += w
    for j in range(d):
        score[j] = -acc[j] / tot


def gm_score_rows(X, R, a, L, means, prec, const, field, wacc, mu_c, LG, mx, tot, w, tf, ti, SC):
    """``SC[:, r] = grad log q(X[:, r])`` for ``r < R``, isotropic components ``P[L, k] = p_k I``: pass
    one the logits ``LG[k, r]`` and their maximum ``mx[r]``; pass two ``exp(LG - mx)`` for all lanes at
    once (:func:`exp_rows`) and the weighted sum. ``tot``, ``w``, ``tf``, ``ti``: lane scratch. With
    ``field``: the mixed field of :func:`gm_score` (``W[L, k] = wacc[L, k, 0, 0] I``)."""
    K = means.shape[0]
    d = X.shape[0]
    for r in range(R):
        mx[r] = -math.inf
    for k in range(K):
        for r in range(R):
            w[r] = 0.0
        for j in range(d):
            xj = X[j]
            mu = a * means[k, j]
            for r in range(R):
                e = xj[r] - mu
                w[r] += e * e
        c = const[L, k]
        hp = 0.5 * prec[L, k, 0, 0]
        lk = LG[k]
        for r in range(R):
            v = c - hp * w[r]
            lk[r] = v
            mx[r] = v if v > mx[r] else mx[r]  # max(mx[r], v), as Python's max orders it
    for r in range(R):
        tot[r] = 0.0
    for j in range(d):
        sj = SC[j]
        for r in range(R):
            sj[r] = 0.0
    for k in range(K):
        lk = LG[k]
        for r in range(R):
            w[r] = lk[r] - mx[r]
        exp_rows(w, tf, ti, R)
        if field:
            p = wacc[L, k, 0, 0]
            for r in range(R):
                tf[r] = w[r]  # the unscaled weights (the exp's scratch is free again)
        else:
            p = prec[L, k, 0, 0]
        for r in range(R):
            tot[r] += w[r]
            w[r] *= p
        for j in range(d):
            xj = X[j]
            sj = SC[j]
            mu = a * means[k, j]
            if field:
                cm = mu_c[L] * means[k, j]
                for r in range(R):
                    sj[r] += tf[r] * cm - w[r] * (xj[r] - mu)
            else:
                for r in range(R):
                    sj[r] -= w[r] * (xj[r] - mu)
    for r in range(R):
        tot[r] = 1.0 / tot[r]
    for j in range(d):
        sj = SC[j]
        for r in range(R):
            sj[r] *= tot[r]


def score_block(X, R, a, L, means, prec, const, iso, two_pass, field, wacc, mu_c, LG, lanes, ti, diff, y, acc, SC):
    """The mixture score of the block into ``SC``: :func:`gm_score_rows` when ``iso and two_pass``,
    else :func:`gm_score` lane by lane (any K in O(d) scratch). ``lanes``: ``(4, R)`` lane scratch,
    ``ti`` its last row viewed as int64."""
    if iso and two_pass:
        gm_score_rows(X, R, a, L, means, prec, const, field, wacc, mu_c, LG, lanes[0], lanes[1], lanes[2], lanes[3],
                      ti, SC)
    else:
        for r in range(R):
            gm_score(X[:, r], a, L, means, prec, const, iso, field, wacc, mu_c, diff, y, acc, SC[:, r])


def noise_block(k0, k1, b0, R, step, Z, wr, phi, quad):
    """``Z[j, r] = normal4(k0, k1, j // 4, b0 + r, step)[j % 4]``, the backend's noise of sample
    ``b0 + r``, in two passes per Philox block as :func:`minidiff.kernels.cpu.fill_normals` (the words
    of every lane, then Box-Muller on every lane, :func:`formulas.box_muller_angle`: vectorised).
    ``wr``, ``phi``: ``(2, >= R)`` float64 scratch, ``quad``: ``(2, >= R)`` int64."""
    d = Z.shape[0]
    for g in range((d + 3) // 4):
        for r in range(R):
            b = b0 + r
            w0, w1, w2, w3 = philox4x32_10(g & MASK32, b & MASK32, step & MASK32, (g >> 32) & MASK32, k0, k1)
            wr[0, r], phi[0, r], quad[0, r] = w0, (w1 & 0x3FFFFFFF) * HALF_PI_2_30, w1 >> 30
            wr[1, r], phi[1, r], quad[1, r] = w2, (w3 & 0x3FFFFFFF) * HALF_PI_2_30, w3 >> 30
        for h in range(2):
            j = 4 * g + 2 * h
            if j < d:
                wh, ph, qh, za = wr[h], phi[h], quad[h], Z[j]
                if j + 1 < d:
                    zb = Z[j + 1]
                    for r in range(R):
                        za[r], zb[r] = box_muller_angle(wh[r], ph[r], qh[r])
                else:
                    for r in range(R):
                        za[r] = box_muller_angle(wh[r], ph[r], qh[r])[0]


def load_block(x_in, b0, R, X):
    """``X[j, r] = x_in[b0 + r, j]`` in float64."""
    for r in range(R):
        for j in range(X.shape[0]):
            X[j, r] = f64(x_in[b0 + r, j])


def store_block(X, b0, R, out):
    for r in range(R):
        for j in range(X.shape[0]):
            out[b0 + r, j] = X[j, r]


def score_and_noise(X, R, a, L, means, prec, const, iso, two_pass, field, wacc, mu_c, step, k0, k1, b0, Z, SC, LG,
                    lanes, ti, wr, phi, quad, diff, y, acc):
    """The first half of every step: the block's score at level ``L`` into ``SC`` (:func:`score_block`)
    and, when the step draws noise (``step >= 0``), its normals into ``Z`` (:func:`noise_block`).
    Returns whether it drew noise."""
    score_block(X, R, a, L, means, prec, const, iso, two_pass, field, wacc, mu_c, LG, lanes, ti, diff, y, acc, SC)
    if step >= 0:
        noise_block(k0, k1, b0, R, step, Z, wr, phi, quad)
    return step >= 0


def eps_rows(x_in, b0, R, out, means, prec, const, iso, two_pass, lev, alpha_t, sigma_t, cx, cx0, ceps, cx0p, cz,
             nstep, recompute, c, k0, k1, X, X0P, Z, SC, LG, lanes, ti, wr, phi, quad, diff, y, acc):
    """Samples ``b0 .. b0 + R - 1``: the eps/x0-form sampler of the module notes over ``lev.shape[0]``
    steps, from ``x_in`` into ``out``. ``X``, ``X0P``, ``Z``, ``SC``: ``(d, >= R)`` block scratch."""
    d = X.shape[0]
    load_block(x_in, b0, R, X)
    for j in range(d):
        for r in range(R):
            X0P[j, r] = 0.0
    for i in range(lev.shape[0]):
        L = lev[i]
        a = alpha_t[L]
        s = sigma_t[L]
        noisy = score_and_noise(X, R, a, L, means, prec, const, iso, two_pass, False, prec, alpha_t, nstep[i], k0, k1,
                                b0, Z, SC, LG, lanes, ti, wr, phi, quad, diff, y, acc)
        ci, c0, ce, cp, czi = cx[i], cx0[i], ceps[i], cx0p[i], cz[i]
        for j in range(d):
            xj = X[j]
            pj = X0P[j]
            sj = SC[j]
            zj = Z[j]
            for r in range(R):
                xv = xj[r]
                e = -s * sj[r]
                x0 = clip((xv - s * e) / a, c)
                if recompute:
                    e = (xv - a * x0) / s
                v = ci * xv + c0 * x0 + ce * e + cp * pj[r]
                if noisy:
                    v += czi * zj[r]
                xj[r] = v
                pj[r] = x0
    store_block(X, b0, R, out)


def euler_block(X, XE, R, SC, Z, ci, csi, czi, noisy):
    """``XE[:, r] = ci X[:, r] + csi SC[:, r] (+ czi Z[:, r] when noisy)`` for ``r < R``: the Euler(-Maruyama)
    / Langevin update of :func:`score_rows` (``XE`` may be ``X``: the update is elementwise)."""
    for j in range(X.shape[0]):
        xj = X[j]
        ej = XE[j]
        sj = SC[j]
        zj = Z[j]
        for r in range(R):
            v = ci * xj[r] + csi * sj[r]
            if noisy:
                v += czi * zj[r]
            ej[r] = v


def norm_sum(V, R):
    """``sum_r ||V[:, r]||`` over the block's ``R`` lanes (the per-sample norms of the corrector's batch means)."""
    tot = 0.0
    for r in range(R):
        q = 0.0
        for j in range(V.shape[0]):
            q += V[j, r] * V[j, r]
        tot += math.sqrt(q)
    return tot


def norm_sum_rows(V, R, q):
    """:func:`norm_sum` with the lanes' norms first computed into the lane scratch ``q`` (the square roots
    vectorise across lanes; the scalar loop's square root of each lane waited on the serial sum), then summed in
    the same order: bitwise :func:`norm_sum`."""
    for r in range(R):
        q[r] = 0.0
    for j in range(V.shape[0]):
        vj = V[j]
        for r in range(R):
            q[r] += vj[r] * vj[r]
    for r in range(R):
        q[r] = math.sqrt(q[r])
    tot = 0.0
    for r in range(R):
        tot += q[r]
    return tot


def langevin_corrector_step_size(z_norm, score_norm, snr, alpha):
    """The Langevin corrector's step of predictor-corrector sampling (Song et al. 2021a, Alg. 2 line 8,
    Alg. 3 line 7; norms per sample averaged over the batch, as in the authors' code):
    ``e = 2 alpha (snr ||z|| / ||score||)^2``, returned as ``2 e``, the ``step_size`` of ``x + step/2 score +
    sqrt(step) z`` (:func:`minidiff.kernels.formulas.langevin_coefficients`). ``z_norm``, ``score_norm``:
    the batch means of the norms (``score_norm`` floored at 1e-30)."""
    floored = 1e-30 if 1e-30 > score_norm else score_norm  # max(score_norm, 1e-30), written for CUDA too
    e = 2.0 * alpha * (snr * z_norm / floored) ** 2
    return 2.0 * e


def score_rows(x_in, b0, R, out, means, prec, const, iso, two_pass, field, wacc, mu_c, lev, lev2, alpha_t, sigma_t, cx,
               cs, cz, heun, hx, hs, hxe, hse, nstep, k0, k1, X, XE, Z, SC, SE, LG, lanes, ti, wr, phi, quad, diff, y,
               acc):
    """Samples ``b0 .. b0 + R - 1``: Euler(-Maruyama) or Langevin steps with an optional Heun correction
    (module notes), on the score or, with ``field``, on the mixed field (the flow velocity).
    ``X``, ``XE``, ``Z``, ``SC``, ``SE``: ``(d, >= R)`` block scratch."""
    d = X.shape[0]
    load_block(x_in, b0, R, X)
    for i in range(lev.shape[0]):
        L = lev[i]
        noisy = score_and_noise(X, R, alpha_t[L], L, means, prec, const, iso, two_pass, field, wacc, mu_c, nstep[i], k0,
                                k1, b0, Z, SC, LG, lanes, ti, wr, phi, quad, diff, y, acc)
        euler_block(X, XE, R, SC, Z, cx[i], cs[i], cz[i], noisy)
        if heun[i]:
            L2 = lev2[i]
            score_block(XE, R, alpha_t[L2], L2, means, prec, const, iso, two_pass, field, wacc, mu_c, LG, lanes, ti,
                        diff, y, acc, SE)
            a0, a1, a2, a3 = hx[i], hs[i], hxe[i], hse[i]
            for j in range(d):
                xj = X[j]
                ej = XE[j]
                sj = SC[j]
                tj = SE[j]
                for r in range(R):
                    xj[r] = a0 * xj[r] + a1 * sj[r] + a2 * ej[r] + a3 * tj[r]
        else:
            for j in range(d):
                xj = X[j]
                ej = XE[j]
                for r in range(R):
                    xj[r] = ej[r]
    store_block(X, b0, R, out)


TRAJECTORY_FUNCTIONS = ("gm_score", "gm_score_rows", "score_block", "noise_block", "score_and_noise", "load_block",
                        "store_block", "eps_rows", "euler_block", "norm_sum", "norm_sum_rows",
                        "langevin_corrector_step_size", "score_rows")


def compile_trajectory_functions(jit, device_functions: dict, vector_exp: bool, box_muller_angle=None, philox=None,
                                 noise_jit=None, score_jit=None) -> dict:
    """Compile the functions above with ``jit``, calling the already compiled ``device_functions``
    of :func:`minidiff.kernels.formulas.compile_device_functions` (same construction: injected
    globals and the original ``__qualname__``, so numba's on-disk cache of the callers keeps working).
    ``vector_exp``: :func:`exp_rows_poly` (the CPU: vectorised across lanes) or :func:`exp_rows_libm`;
    ``box_muller_angle``: a variant of that device function to use in :func:`noise_block` (the CPU's
    inlined one, which LLVM vectorises); ``philox``: likewise a variant of ``philox4x32_10`` (the CPU's inlined
    one: the ten rounds vectorised across the lanes); ``noise_jit``: the decorator for :func:`noise_block`
    (the CPU's numpy error model, without which the division checks keep Box-Muller scalar); ``score_jit``: the
    decorator for the isotropic two-pass score and its exp (:func:`gm_score_rows`, ``exp_rows``; the CPU's
    contraction of ``a * b + c`` into fused multiply-adds, which the one-pass :func:`gm_score` shared with CUDA and
    the updates do not get, so those stay bitwise the simulator's)."""
    ns = dict(globals())
    ns.update(device_functions)
    if box_muller_angle is not None:
        ns["box_muller_angle"] = box_muller_angle
    if philox is not None:
        ns["philox4x32_10"] = philox
    ns["f64"] = formulas.f64
    ns["langevin_coefficients"] = jit(formulas.langevin_coefficients)
    out = {"langevin_coefficients": ns["langevin_coefficients"]}
    exp_impl = exp_rows_poly if vector_exp else exp_rows_libm
    names = [("exp_rows", exp_impl)] + [(n, globals()[n]) for n in TRAJECTORY_FUNCTIONS]
    for name, f in names:
        g = types.FunctionType(f.__code__, ns, name, f.__defaults__, f.__closure__)
        g.__qualname__, g.__doc__, g.__module__ = f.__qualname__, f.__doc__, f.__module__
        deco = jit
        if name == "noise_block" and noise_jit is not None:
            deco = noise_jit
        elif name in ("exp_rows", "gm_score_rows") and score_jit is not None:
            deco = score_jit
        out[name] = ns[name] = deco(g)
    return out


def flops_gm_score(K: int, d: int, iso: bool, field: bool = False) -> int:
    """Floating-point operations of one mixture score (exp counted as one): per component ``2d`` for
    the residual, ``2d`` (isotropic) or ``2d^2`` (full) for ``P (x - alpha_t mu)``, ``2d`` for the
    quadratic form, ~6 for the softmax bookkeeping and ``2d`` for the accumulation; ``2d`` at the end.
    ``field`` (the velocity): per component ``2d`` more for the mean term, and for full covariances
    ``2d^2`` more for ``W_k (x - alpha_t mu_k)``."""
    per = 2 * d + (2 * d if iso else 2 * d * d) + 2 * d + 6 + 2 * d
    if field:
        per += 2 * d + (0 if iso else 2 * d * d)
    return K * per + 2 * d
