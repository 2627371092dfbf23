"""Every update formula of the course, written once as plain scalar Python.

Nothing here imports numba (only numpy, for the float64 cast). :func:`compile_device_functions` compiles the scalar functions for a
target (``numba.njit`` in :mod:`minidiff.kernels.cpu`, ``numba.cuda.jit(device=True)`` in
:mod:`minidiff.kernels.cuda`); the kernels there are only loops that call them. The host helpers
(``*_coefficients``) turn a step's scalars into the float64 coefficients the kernels take.

Integers are int64 with explicit 32-bit masks, so the same text gives the same bits in CPython, in
numba on the CPU, on a GPU and in the CUDA simulator. Arithmetic is float64: array values pass through
``f64()`` (``numpy.float64``; numba's ``float()`` would keep float32, and NumPy's float32 scalars in the
simulator would compute in float32); a kernel rounds once when it stores into a float32 array.
"""
from __future__ import annotations

import math
import types

from numpy import float64 as f64  # a cast to float64 in CPython, numba CPU and CUDA alike

MASK32 = 0xFFFFFFFF
# Philox4x32 multipliers and Weyl key increments (Salmon et al. 2011, Sec. 4.2; Random123's philox.h).
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
HALF_PI_2_30 = 1.4629180792671596e-09  # (pi / 2) / 2**30
INV_2_32 = 2.3283064365386963e-10  # 2**-32

# noise modes of the kernels
NOISE_NONE = 0    # the update draws no noise
NOISE_GIVEN = 1   # caller-supplied noise array
NOISE_PHILOX = 2  # drawn in-kernel from (seed, sample, element, step)


# ============================================================================ Philox4x32-10
def philox_round(x0, x1, x2, x3, k0, k1):
    """One Philox S-box round: two 32x32->64 multiplies, hi/lo words xored with the key
    (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3", Sec. 4.2)."""
    p0 = PHILOX_M0 * x0
    p1 = PHILOX_M1 * x2
    hi0 = (p0 >> 32) & MASK32
    hi1 = (p1 >> 32) & MASK32
    return (hi1 ^ x1 ^ k0) & MASK32, p1 & MASK32, (hi0 ^ x3 ^ k1) & MASK32, p0 & MASK32


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10: the 128-bit counter ``(c0..c3)`` under the 64-bit key ``(k0, k1)`` -> four
    32-bit words (Salmon et al. 2011). Inputs are integers in ``[0, 2**32)``."""
    x0, x1, x2, x3 = c0, c1, c2, c3
    for r in range(10):
        if r > 0:
            k0 = (k0 + PHILOX_W0) & MASK32
            k1 = (k1 + PHILOX_W1) & MASK32
        x0, x1, x2, x3 = philox_round(x0, x1, x2, x3, k0, k1)
    return x0, x1, x2, x3


LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that e * LN2_HI is exact for |e| < 2**20 (fdlibm)
LN2_LO = 1.90821492927058770002e-10
SQRT2 = 1.4142135623730951


def log_unit(w):
    """``ln((w + 1) 2^-32)`` for an integer ``w`` in ``[0, 2**32)``, in float64 arithmetic only (no libm
    call, no branches: the comparisons become selects, so LLVM vectorises loops over it). ``n = w + 1``
    is scaled by exact powers of two into ``m`` in ``[1/sqrt 2, sqrt 2)`` with ``n = m 2^e``, then
    ``ln m = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...)`` with ``s = (m - 1)/(m + 1)``, ``|s| < 0.172``
    (eleven terms: truncation below 1e-19), and ``ln u = ln m + (e - 32) ln 2`` with ``ln 2`` in two parts
    (Cody & Waite 1980; the reduction of fdlibm's ``log``). Within a few ulp of ``math.log``."""
    m = f64(w) + 1.0
    e = 0.0
    big = m >= 65536.0
    m = m * 1.52587890625e-05 if big else m
    e = e + 16.0 if big else e
    big = m >= 256.0
    m = m * 0.00390625 if big else m
    e = e + 8.0 if big else e
    big = m >= 16.0
    m = m * 0.0625 if big else m
    e = e + 4.0 if big else e
    big = m >= 4.0
    m = m * 0.25 if big else m
    e = e + 2.0 if big else e
    big = m >= 2.0
    m = m * 0.5 if big else m
    e = e + 1.0 if big else e
    big = m >= SQRT2
    m = m * 0.5 if big else m
    e = e + 1.0 if big else e
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    p = 0.047619047619047616  # 1/21, Horner down to 1/1
    p = p * z + 0.05263157894736842
    p = p * z + 0.058823529411764705
    p = p * z + 0.06666666666666667
    p = p * z + 0.07692307692307693
    p = p * z + 0.09090909090909091
    p = p * z + 0.1111111111111111
    p = p * z + 0.14285714285714285
    p = p * z + 0.2
    p = p * z + 0.3333333333333333
    p = p * z + 1.0
    k = e - 32.0
    return k * LN2_HI + (k * LN2_LO + 2.0 * s * p)


def cos_sin_quarter(phi):
    """``(cos phi, sin phi)`` for ``phi`` in ``[0, pi/2)`` by their Taylor polynomials in ``phi^2``
    (Horner, to ``phi^24`` / ``phi^23``: truncation below 2e-17 on the interval), float64 arithmetic only
    so that loops over it vectorise. Within a few ulp of ``math.cos`` / ``math.sin`` (absolute error
    below 1e-16)."""
    z = phi * phi
    c = 1.6117375710961184e-24
    c = c * z - 8.896791392450574e-22
    c = c * z + 4.110317623312165e-19
    c = c * z - 1.5619206968586225e-16
    c = c * z + 4.779477332387385e-14
    c = c * z - 1.1470745597729725e-11
    c = c * z + 2.08767569878681e-09
    c = c * z - 2.755731922398589e-07
    c = c * z + 2.48015873015873e-05
    c = c * z - 0.001388888888888889
    c = c * z + 0.041666666666666664
    c = c * z - 0.5
    c = c * z + 1.0
    s = -3.868170170630684e-23
    s = s * z + 1.9572941063391263e-20
    s = s * z - 8.22063524662433e-18
    s = s * z + 2.8114572543455206e-15
    s = s * z - 7.647163731819816e-13
    s = s * z + 1.6059043836821613e-10
    s = s * z - 2.505210838544172e-08
    s = s * z + 2.7557319223985893e-06
    s = s * z - 0.0001984126984126984
    s = s * z + 0.008333333333333333
    s = s * z - 0.16666666666666666
    s = s * z + 1.0
    return c, s * phi


def box_muller_angle(w0, phi, q):
    """The two normals of :func:`box_muller` from the radius word ``w0``, the angle ``phi`` in
    ``[0, pi/2)`` and the quadrant ``q`` in ``0..3``: ``r (cos, sin)(phi)`` rotated by ``q`` quarter
    turns, ``(c, s) (-s, c) (-c, -s) (s, -c)``, by selects (no branches, no int-to-float casts)."""
    r = math.sqrt(-2.0 * log_unit(w0))
    cq, sq = cos_sin_quarter(phi)
    c = r * cq
    s = r * sq
    odd = q & 1
    a = s if odd else c
    b = c if odd else s
    return (-a if ((q + 1) >> 1) & 1 else a), (-b if q >> 1 else b)


def box_muller(w0, w1):
    """Two standard normals from two 32-bit words (Box & Muller 1958), in float64:
    radius ``sqrt(-2 ln u1)`` with ``u1 = (w0 + 1) 2^-32`` in ``(0, 1]`` (:func:`log_unit`), angle
    ``2 pi w1 2^-32`` taken as quadrant ``w1 >> 30`` plus ``phi`` in ``[0, pi/2)`` from the low 30 bits
    (:func:`cos_sin_quarter`). No libm call: the same bits on every target, and vectorisable."""
    return box_muller_angle(w0, (w1 & 0x3FFFFFFF) * HALF_PI_2_30, w1 >> 30)


def normal4(k0, k1, group, sample, step):
    """Normals for elements ``4 group .. 4 group + 3`` of ``sample`` at ``step``: one Philox block
    on the counter ``(group, sample, step, group >> 32)`` under the seed key ``(k0, k1)``."""
    w0, w1, w2, w3 = philox4x32_10(group & MASK32, sample & MASK32, step & MASK32,
                                   (group >> 32) & MASK32, k0, k1)
    z0, z1 = box_muller(w0, w1)
    z2, z3 = box_muller(w2, w3)
    return z0, z1, z2, z3


def lane(z0, z1, z2, z3, k):
    """``(z0, z1, z2, z3)[k]`` for a run-time ``k``."""
    if k == 0:
        return z0
    if k == 1:
        return z1
    if k == 2:
        return z2
    return z3


# ============================================================================ diffusion updates
def clip(v, c):
    """Clamp ``v`` to ``[-c, c]``; ``c = inf`` leaves it unchanged; NaN passes through."""
    if v > c:
        return c
    if v < -c:
        return -c
    return v


def q_sample_elem(x0, eps, a, s):
    """Forward noising ``a x0 + s eps``, ``a = sqrt(alpha_bar)``, ``s = sqrt(1 - alpha_bar)``
    (Ho et al. 2020, eq. 4)."""
    return a * f64(x0) + s * f64(eps)


def x0_from_eps(x, eps, inv_sa, s1, c):
    """``x0_hat = (x - sqrt(1-ab) eps) / sqrt(ab)``, clamped to ``[-c, c]`` (Ho et al. 2020, eq. 15).
    The division is a multiply by ``inv_sa = 1 / sqrt(ab)``: a vector divide costs as much as the
    memory traffic of the whole update on these CPUs (DDIM ran at 57 % of the speed with two)."""
    return clip((f64(x) - s1 * f64(eps)) * inv_sa, c)


def ddpm_elem(x, eps, z, inv_sa, s1, c, cx0, cx, std):
    """DDPM ancestral step (Ho et al. 2020, Alg. 2, posterior-mean form eq. 7):
    ``x_prev = cx0 x0_hat + cx x + std z``. Returns ``(x_prev, x0_hat)``."""
    x0 = x0_from_eps(x, eps, inv_sa, s1, c)
    return cx0 * x0 + cx * f64(x) + std * f64(z), x0


def ddim_elem(x, eps, z, sa, inv_sa, s1, inv_s1, c, recompute_eps, sap, cdir, ddim_sigma):
    """DDIM step (Song et al. 2021b, eq. 12):
    ``x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - ddim_sigma^2) eps + ddim_sigma z``; with clipping,
    ``eps`` is recomputed from the clipped ``x0_hat``, ``(x - sqrt(ab) x0_hat) / sqrt(1 - ab)``.
    Returns ``(x_prev, x0_hat)``."""
    x0 = x0_from_eps(x, eps, inv_sa, s1, c)
    e = (f64(x) - sa * x0) * inv_s1 if recompute_eps else f64(eps)
    return sap * x0 + cdir * e + ddim_sigma * f64(z), x0


def em_elem(x, score, z, cx, cs, cz):
    """Euler-Maruyama step of a linear-drift SDE, ``cx x + cs score + cz z``: Langevin,
    reverse VP/VE SDE, probability-flow Euler and Brownian walkers (see the ``*_coefficients``)."""
    return cx * f64(x) + cs * f64(score) + cz * f64(z)


def heun_elem(x, score, xe, se, cx, cs, cxe, cse):
    """Heun (trapezoidal) step of the PF ODE, ``cx x + cs score + cxe x_euler + cse score_euler``
    (Karras et al. 2022, Alg. 1, lines 9-11; coefficients from :func:`heun_coefficients`)."""
    return cx * f64(x) + cs * f64(score) + cxe * f64(xe) + cse * f64(se)


BC_PERIODIC, BC_DIRICHLET, BC_NEUMANN = 0, 1, 2  # boundary conditions of the stencils


def wrap_index(j, n, bc):
    """Index read for neighbour ``j`` in ``[-1, n]`` of an axis of length ``n``: periodic wrap, else
    the zero-flux ghost cell (``u[-1] = u[0]``, ``u[n] = u[n-1]``, which conserves ``sum(u)``).
    Dirichlet nodes on the boundary are held fixed and never need a neighbour."""
    if j < 0:
        return n - 1 if bc == BC_PERIODIC else 0
    if j >= n:
        return 0 if bc == BC_PERIODIC else n - 1
    return j


def ftcs_elem(c, left, right, r):
    """FTCS update of ``u_t = D u_xx``: ``u_i + r (u_{i-1} - 2 u_i + u_{i+1})``, ``r = D dt / dx^2``."""
    return f64(c) + r * (f64(left) - 2.0 * f64(c) + f64(right))


def ftcs2_elem(c, left, right, up, down, r):
    """5-point FTCS update of ``u_t = D (u_xx + u_yy)``: ``u + r (sum of 4 neighbours - 4 u)``."""
    return f64(c) + r * ((f64(left) + f64(right)) + (f64(up) + f64(down)) - 4.0 * f64(c))


DEVICE_FUNCTIONS = ("philox_round", "philox4x32_10", "log_unit", "cos_sin_quarter", "box_muller_angle", "box_muller", "normal4", "lane", "clip",
                    "q_sample_elem", "x0_from_eps", "ddpm_elem", "ddim_elem", "em_elem",
                    "heun_elem", "wrap_index", "ftcs_elem", "ftcs2_elem")


def compile_device_functions(jit) -> dict:
    """Compile every scalar function above with ``jit`` (e.g. ``numba.njit``), each calling the
    compiled versions of the others. Returns ``{name: compiled}``."""
    ns = dict(globals())
    out = {}
    for name in DEVICE_FUNCTIONS:
        f = globals()[name]
        g = types.FunctionType(f.__code__, ns, name, f.__defaults__, f.__closure__)
        g.__qualname__, g.__doc__, g.__module__ = f.__qualname__, f.__doc__, f.__module__
        out[name] = ns[name] = jit(g)
    return out


# ============================================================================ host coefficients
def seed_key(seed) -> tuple[int, int]:
    """The Philox key ``(k0, k1)``: the seed reduced modulo ``2**64``, low word first."""
    s = int(seed) % (1 << 64)
    return s & MASK32, s >> 32


def ddpm_coefficients(alpha_bar, alpha_bar_prev, beta, alpha, posterior_variance, add_noise=True):
    """``(inv_sa, s1, cx0, cx, std)`` for :func:`ddpm_elem` (Ho et al. 2020, eqs. 7 and 15)."""
    ab, abp = float(alpha_bar), float(alpha_bar_prev)
    std = math.sqrt(float(posterior_variance)) if add_noise else 0.0
    return (1.0 / math.sqrt(ab), math.sqrt(1.0 - ab), math.sqrt(abp) * float(beta) / (1.0 - ab),
            math.sqrt(float(alpha)) * (1.0 - abp) / (1.0 - ab), std)


def ddim_coefficients(alpha_bar, alpha_bar_prev, eta):
    """``(sa, inv_sa, s1, inv_s1, sap, cdir, ddim_sigma)`` for :func:`ddim_elem` (Song et al. 2021b,
    eqs. 12 and 16): ``ddim_sigma = eta sqrt((1 - ab_prev)/(1 - ab) (1 - ab/ab_prev))``."""
    ab, abp = float(alpha_bar), float(alpha_bar_prev)
    ddim_sigma = float(eta) * math.sqrt((1.0 - abp) / (1.0 - ab) * (1.0 - ab / abp))
    sa, s1 = math.sqrt(ab), math.sqrt(1.0 - ab)
    return sa, 1.0 / sa, s1, 1.0 / s1, math.sqrt(abp), math.sqrt(max(1.0 - abp - ddim_sigma**2, 0.0)), ddim_sigma


def langevin_coefficients(step_size):
    """``x + (h/2) score + sqrt(h) z`` (Song & Ermon 2019, Alg. 1) as ``(cx, cs, cz)``."""
    h = float(step_size)
    return 1.0, 0.5 * h, math.sqrt(h)


def reverse_sde_coefficients(drift_coef, diffusion, dt):
    """Euler-Maruyama for the reverse SDE ``dx = [f x - g^2 score] dt + g dw`` from ``t`` to ``t - dt``
    (Song et al. 2021a, eq. 6): ``(1 - f dt) x + g^2 dt score + g sqrt(dt) z``."""
    f, g, dt = float(drift_coef), float(diffusion), float(dt)
    return 1.0 - f * dt, g * g * dt, g * math.sqrt(dt)


def pf_ode_euler_coefficients(drift_coef, diffusion, dt):
    """Euler for the probability-flow ODE ``dx/dt = f x - g^2 score / 2`` from ``t`` to ``t - dt``
    (Song et al. 2021a, eq. 13): ``(1 - f dt) x + (g^2 dt / 2) score``."""
    f, g, dt = float(drift_coef), float(diffusion), float(dt)
    return 1.0 - f * dt, 0.5 * g * g * dt, 0.0


def heun_coefficients(drift_coef, diffusion, drift_coef_next, diffusion_next, dt):
    """``x - dt/2 (d(x, t) + d(x_euler, t - dt))``, ``d = f x - g^2 score / 2`` (Karras et al. 2022,
    Alg. 1) expanded into ``(cx, cs, cxe, cse)``."""
    f, g, fn, gn, dt = (float(v) for v in (drift_coef, diffusion, drift_coef_next, diffusion_next, dt))
    return 1.0 - 0.5 * dt * f, 0.25 * dt * g * g, -0.5 * dt * fn, 0.25 * dt * gn * gn


def walker_coefficients(D, dt, drift_coef):
    """Brownian walkers, Ornstein-Uhlenbeck when ``drift_coef != 0``, Euler-Maruyama:
    ``(1 + drift_coef dt) x + sqrt(2 D dt) z`` (Einstein 1905; Uhlenbeck & Ornstein 1930)."""
    return 1.0 + float(drift_coef) * float(dt), 0.0, math.sqrt(2.0 * float(D) * float(dt))


def ftcs_ratio(D, dt, dx) -> float:
    """The mesh ratio ``r = D dt / dx^2`` of the FTCS scheme."""
    return float(D) * float(dt) / float(dx) ** 2
