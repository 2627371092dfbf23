"""The one dispatch point into the compiled kernels (``minidiff.kernels``).

Every fused update the course uses goes through a function here. Each takes torch tensors (numpy
arrays are accepted and returned as numpy), and a ``backend=`` argument: ``"numba"`` (the default:
fused Numba kernels for CPU, or CUDA for CUDA tensors) or ``"torch"`` (a plain torch reference that
mirrors the formula in eager ops). :func:`use_backend` changes the default in a ``with`` block.

Noise: pass ``noise=`` (a tensor shaped like ``x``) or ``seed=`` (an int) with a ``step`` counter.
With a seed, noise is a pure function of ``(seed, sample, element, step)`` (counter-based Philox);
both backends draw the same numbers.

Nothing here imports numba at module import time; kernels compile on first use.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

__all__ = [
    "BACKENDS", "get_backend", "set_backend", "use_backend", "normal",
    "q_sample", "ddpm_step", "ddim_step", "langevin_step", "reverse_sde_step",
    "pf_ode_euler_step", "pf_ode_heun_step", "ftcs_step_1d", "ftcs_step_2d", "walker_step",
]

BACKENDS = ("numba", "torch")
_default = "numba"


def get_backend() -> str:
    return _default


def set_backend(name: str) -> None:
    """Set the default backend for every call that does not pass ``backend=``."""
    global _default
    _default = _resolve(name)


@contextlib.contextmanager
def use_backend(name: str):
    """``with use_backend("torch"): ...`` -- temporarily change the default backend."""
    global _default
    old, _default = _default, _resolve(name)
    try:
        yield
    finally:
        _default = old


def _resolve(backend: str | None) -> str:
    name = _default if backend is None else backend
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


# ---------------------------------------------------------------------------- noise
def normal(shape, seed: int, step: int = 0, *, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Standard normals shaped ``(B, ...)``: element ``(b, i)`` is a pure function of
    ``(seed, b, i, step)``. TODO(kernels): Philox4x32-10 via minidiff.kernels."""
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step)) % (2**63))
    return torch.randn(tuple(shape), generator=g, dtype=torch.float64).to(dtype=dtype, device=device)


def _noise(x, noise, seed, step):
    if noise is not None:
        if noise.shape != x.shape:
            raise ValueError(f"noise must have shape {tuple(x.shape)}, got {tuple(noise.shape)}")
        return noise
    if seed is None:
        raise ValueError("pass either noise= (a tensor) or seed= (an int)")
    return normal(x.shape, seed, step, dtype=x.dtype, device=x.device)


# ---------------------------------------------------------------------------- diffusion updates
def q_sample(x0, t_index, noise, schedule, *, seed=None, step=0, backend=None):
    """``x_t = sqrt(ab[t_index]) x0 + sqrt(1-ab[t_index]) eps`` with per-sample ``t_index`` (B,) int64.
    ``noise`` may be a tensor, or an int used as ``seed``."""
    if isinstance(noise, (int, np.integer)):
        noise, seed = None, int(noise)
    _resolve(backend)
    eps = _noise(x0, noise, seed, step)
    a = schedule.at("sqrt_alpha_bar", t_index, x0)
    b = schedule.at("sqrt_one_minus_alpha_bar", t_index, x0)
    return a * x0 + b * eps


def ddpm_step(x, eps, t_index: int, schedule, *, noise=None, seed=None, step=0, clip_x0=None,
              backend=None):
    """One ancestral step (Ho et al. 2020, Alg. 2, in posterior-mean form eq. 7).
    Returns ``(x_prev, x0_hat)``. At ``t_index == 0`` no noise is added."""
    _resolve(backend)
    ab = float(schedule.alpha_bar[t_index])
    x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
    ab_prev, beta, alpha = float(schedule.alpha_bar_prev[t_index]), float(schedule.betas[t_index]), float(schedule.alphas[t_index])
    mean = (math.sqrt(ab_prev) * beta / (1 - ab)) * x0 + (math.sqrt(alpha) * (1 - ab_prev) / (1 - ab)) * x
    if t_index == 0:
        return mean, x0
    std = math.sqrt(float(schedule.posterior_variance[t_index]))
    return mean + std * _noise(x, noise, seed, step), x0


def ddim_step(x, eps, t_index: int, t_index_prev: int, schedule, *, eta=0.0, noise=None, seed=None,
              step=0, clip_x0=None, backend=None):
    """One DDIM step from ``t_index`` to ``t_index_prev`` (``-1`` = to data) (Song et al. 2021a, eq. 12).
    Returns ``(x_prev, x0_hat)``."""
    _resolve(backend)
    ab = float(schedule.alpha_bar[t_index])
    ab_prev = 1.0 if t_index_prev < 0 else float(schedule.alpha_bar[t_index_prev])
    x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
        eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
    sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
    out = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
    if sigma > 0:
        out = out + sigma * _noise(x, noise, seed, step)
    return out, x0


def langevin_step(x, score, step_size: float, *, noise=None, seed=None, step=0, backend=None):
    """``x + (step_size/2) score + sqrt(step_size) z`` (Song & Ermon 2019, Alg. 1)."""
    _resolve(backend)
    return x + 0.5 * step_size * score + math.sqrt(step_size) * _noise(x, noise, seed, step)


def reverse_sde_step(x, score, *, drift_coef: float, diffusion: float, dt: float, noise=None,
                     seed=None, step=0, backend=None):
    """Euler-Maruyama step of the reverse SDE ``dx = [f - g^2 score] dt + g dw`` from ``t`` to ``t - dt``
    (Anderson 1982; Song et al. 2021b, eq. 6), with linear drift ``f(x, t) = drift_coef * x``:
    ``x - (drift_coef x - g^2 score) dt + g sqrt(dt) z``."""
    _resolve(backend)
    z = _noise(x, noise, seed, step)
    return x - (drift_coef * x - diffusion**2 * score) * dt + diffusion * math.sqrt(dt) * z


def pf_ode_euler_step(x, score, *, drift_coef: float, diffusion: float, dt: float, backend=None):
    """Euler step of the probability-flow ODE ``dx/dt = f - g^2 score / 2`` from ``t`` to ``t - dt``
    (Song et al. 2021b, eq. 13)."""
    _resolve(backend)
    return x - (drift_coef * x - 0.5 * diffusion**2 * score) * dt


def pf_ode_heun_step(x, score, x_euler, score_euler, *, drift_coef: float, diffusion: float,
                     drift_coef_next: float, diffusion_next: float, dt: float, backend=None):
    """Heun (trapezoidal) correction for the probability-flow ODE (Karras et al. 2022, Alg. 1, lines 9-11):
    ``x - dt/2 (d(x, t) + d(x_euler, t - dt))`` with ``d = f - g^2 score / 2``."""
    _resolve(backend)
    d1 = drift_coef * x - 0.5 * diffusion**2 * score
    d2 = drift_coef_next * x_euler - 0.5 * diffusion_next**2 * score_euler
    return x - 0.5 * dt * (d1 + d2)


# ---------------------------------------------------------------------------- physics
def ftcs_step_1d(u, D: float, dt: float, dx: float, *, bc: str = "periodic", backend=None):
    """Explicit (FTCS) step of ``u_t = D u_xx``: ``u + r (u_{i-1} - 2 u_i + u_{i+1})``, ``r = D dt/dx^2``.
    Stable only for ``r <= 1/2``. ``u``: ``(B, N)``. TODO(kernels): stability check, bc, numba kernel."""
    _resolve(backend)
    r = D * dt / dx**2
    return u + r * (torch.roll(u, 1, -1) - 2 * u + torch.roll(u, -1, -1))


def ftcs_step_2d(u, D: float, dt: float, dx: float, *, bc: str = "periodic", backend=None):
    """Explicit 5-point step of ``u_t = D (u_xx + u_yy)``, stable for ``D dt/dx^2 <= 1/4``. ``u``: ``(B, H, W)``."""
    _resolve(backend)
    r = D * dt / dx**2
    lap = torch.roll(u, 1, -1) + torch.roll(u, -1, -1) + torch.roll(u, 1, -2) + torch.roll(u, -1, -2) - 4 * u
    return u + r * lap


def walker_step(x, D: float, dt: float, *, drift_coef: float = 0.0, noise=None, seed=None, step=0,
                backend=None):
    """Brownian walkers (Ornstein-Uhlenbeck when ``drift_coef != 0``), Euler-Maruyama:
    ``x + drift_coef x dt + sqrt(2 D dt) z``. ``x``: ``(n_walkers, d)``."""
    _resolve(backend)
    return x + drift_coef * x * dt + math.sqrt(2 * D * dt) * _noise(x, noise, seed, step)
