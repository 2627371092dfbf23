"""Naive float64 references for the kernels: the papers' formulas written directly in numpy, with
explicit loops where the kernels have index logic (stencils, Philox counters). Slow and obvious on
purpose; nothing here shares code with minidiff.kernels except the scalar Philox function, which is
tested separately against the Random123 known-answer vectors."""
from __future__ import annotations

import math

import numpy as np

from minidiff.kernels import formulas as F


def f64(a):
    return np.asarray(a, dtype=np.float64)


def normals(shape, seed, step):
    """Element ``(b, i)`` of the flattened sample: lane ``i % 4`` of Philox block ``i // 4``."""
    B = shape[0]
    n = int(np.prod(shape[1:], dtype=np.int64))
    k0, k1 = F.seed_key(seed)
    out = np.empty((B, n))
    for b in range(B):
        for g in range((n + 3) // 4):
            w = F.philox4x32_10(g & F.MASK32, b, step, g >> 32, k0, k1)
            for k in range(min(4, n - 4 * g)):
                u1 = (w[2 * (k // 2)] + 1) / 2.0**32
                u2 = w[2 * (k // 2) + 1] / 2.0**32
                r = math.sqrt(-2 * math.log(u1))
                out[b, 4 * g + k] = r * (math.cos(2 * math.pi * u2) if k % 2 == 0 else math.sin(2 * math.pi * u2))
    return out.reshape(shape)


def bcast(v, ndim):
    return f64(v).reshape((-1,) + (1,) * (ndim - 1))


def q_sample(x0, t_index, eps, schedule):
    ab = bcast(schedule.alpha_bar[np.asarray(t_index)], np.ndim(x0))
    return np.sqrt(ab) * f64(x0) + np.sqrt(1 - ab) * f64(eps)


def ddpm(x, eps, t, schedule, z, clip=None):
    """Ho et al. 2020, eqs. 15 and 7, Alg. 2."""
    x, eps = f64(x), f64(eps)
    ab, ab_prev = schedule.alpha_bar[t], (schedule.alpha_bar[t - 1] if t > 0 else 1.0)
    beta = 1 - ab / ab_prev
    x0 = (x - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
    if clip is not None:
        x0 = np.clip(x0, -clip, clip)
    mean = np.sqrt(ab_prev) * beta / (1 - ab) * x0 + np.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab) * x
    var = (1 - ab_prev) / (1 - ab) * beta
    return (mean + np.sqrt(var) * f64(z) if t > 0 else mean), x0


def ddim(x, eps, t, t_prev, schedule, eta, z, clip=None):
    """Song et al. 2021a, eq. 12 with sigma from eq. 16."""
    x, eps = f64(x), f64(eps)
    ab = schedule.alpha_bar[t]
    abp = 1.0 if t_prev < 0 else schedule.alpha_bar[t_prev]
    x0 = (x - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
    if clip is not None:
        x0 = np.clip(x0, -clip, clip)
        eps = (x - np.sqrt(ab) * x0) / np.sqrt(1 - ab)
    sigma = eta * np.sqrt((1 - abp) / (1 - ab)) * np.sqrt(1 - ab / abp)
    out = np.sqrt(abp) * x0 + np.sqrt(max(1 - abp - sigma**2, 0)) * eps
    return (out + sigma * f64(z) if sigma > 0 else out), x0


def langevin(x, score, h, z):
    return f64(x) + h / 2 * f64(score) + np.sqrt(h) * f64(z)


def reverse_sde(x, score, f, g, dt, z):
    x = f64(x)
    return x - (f * x - g**2 * f64(score)) * dt + g * np.sqrt(dt) * f64(z)


def pf_euler(x, score, f, g, dt):
    x = f64(x)
    return x - (f * x - 0.5 * g**2 * f64(score)) * dt


def pf_heun(x, score, xe, se, f, g, fn, gn, dt):
    x, xe = f64(x), f64(xe)
    d1 = f * x - 0.5 * g**2 * f64(score)
    d2 = fn * xe - 0.5 * gn**2 * f64(se)
    return x - dt / 2 * (d1 + d2)


def walker(x, D, dt, drift, z):
    x = f64(x)
    return x + drift * x * dt + np.sqrt(2 * D * dt) * f64(z)


def _get(u, j, n, bc):
    """Neighbour ``j`` of a 1-D array with periodic wrap or zero-flux ghost cells."""
    if 0 <= j < n:
        return u[j]
    if bc == "periodic":
        return u[j % n]
    return u[0] if j < 0 else u[n - 1]


def ftcs1d(u, r, bc):
    u = f64(u)
    rows = u.reshape(-1, u.shape[-1])
    out = np.empty_like(rows)
    n = rows.shape[1]
    for b, row in enumerate(rows):
        for i in range(n):
            if bc == "dirichlet" and i in (0, n - 1):
                out[b, i] = row[i]
            else:
                out[b, i] = row[i] + r * (_get(row, i - 1, n, bc) - 2 * row[i] + _get(row, i + 1, n, bc))
    return out.reshape(u.shape)


def ftcs2d(u, r, bc):
    u = f64(u)
    H, W = u.shape[-2:]
    planes = u.reshape(-1, H, W)
    out = np.empty_like(planes)
    for b, p in enumerate(planes):
        for y in range(H):
            for x in range(W):
                if bc == "dirichlet" and (y in (0, H - 1) or x in (0, W - 1)):
                    out[b, y, x] = p[y, x]
                    continue
                col = p[:, x]
                nb = (_get(p[y], x - 1, W, bc) + _get(p[y], x + 1, W, bc)
                      + _get(col, y - 1, H, bc) + _get(col, y + 1, H, bc))
                out[b, y, x] = p[y, x] + r * (nb - 4 * p[y, x])
    return out.reshape(u.shape)
