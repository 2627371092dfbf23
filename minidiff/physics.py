"""Diffusion as physics: Fick's laws, the heat equation, Brownian walkers, Ornstein-Uhlenbeck.

Notebook 01 uses these. The updates themselves run in the compiled kernels through
:mod:`minidiff.backend` (``ftcs_step_1d``, ``ftcs_step_2d``, ``walker_step``); this module holds the
analytic answers they are checked against and small loops that drive them.

* Fick's first law ``J = -D grad u`` and mass conservation ``u_t + div J = 0`` give Fick's second
  law, the heat equation ``u_t = D lap u`` (Fick 1855).
* Its fundamental solution is the Gaussian kernel ``G(x, t) = (4 pi D t)^{-d/2} exp(-|x|^2 / 4Dt)``,
  the law of a Brownian walker with ``E|x_t - x_0|^2 = 2 d D t`` (Einstein 1905).
* The Ornstein-Uhlenbeck process ``dx = -theta x dt + sqrt(2 D) dW`` (Uhlenbeck & Ornstein 1930) has
  Fokker-Planck equation ``p_t = d/dx(theta x p) + D p_xx`` and stationary law ``N(0, D / theta)``.
  With ``theta = D = beta / 2`` it is the variance-preserving forward SDE of a diffusion model.

Units: ``D`` diffusion coefficient, ``dt`` time step, ``dx`` grid spacing; ``r = D dt / dx^2`` is the
FTCS mesh ratio (``t`` here is physical time, not a diffusion model's ``t_index``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _checks as _c

__all__ = [
    "gaussian_kernel", "periodic_grid", "heat_solution_periodic", "ftcs_ratio", "ftcs_amplification",
    "solve_heat_1d", "solve_heat_2d", "ConvergenceResult", "ftcs_convergence", "observed_orders",
    "simulate_walkers", "msd", "ou_mean", "ou_variance", "ou_em_stationary_variance", "ou_density",
]


# ---------------------------------------------------------------------------- analytic answers
def gaussian_kernel(x, t: float, D: float, *, center=0.0) -> np.ndarray:
    """The heat kernel in ``d`` dimensions, ``(4 pi D t)^{-d/2} exp(-|x - center|^2 / (4 D t))``.

    ``x``: ``(N,)`` for ``d = 1`` or ``(N, d)``. The law of a Brownian walker started at ``center``
    after time ``t`` (Einstein 1905); the Green's function of ``u_t = D lap u``."""
    if not t > 0 or not D > 0:
        raise ValueError(f"t and D must be > 0, got t={t}, D={D}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim <= 1:
        r2, d = (x - center) ** 2, 1
    else:
        r2, d = ((x - np.asarray(center, dtype=np.float64)) ** 2).sum(-1), x.shape[-1]
    return (4 * math.pi * D * t) ** (-d / 2) * np.exp(-r2 / (4 * D * t))


def periodic_grid(L: float, n: int) -> np.ndarray:
    """``n`` nodes ``x_i = -L/2 + i L / n`` of a periodic domain of length
    ``L`` (the node at ``+L/2`` is the node at ``-L/2``); spacing ``dx = L / n``."""
    if n < 3 or not L > 0:
        raise ValueError(f"need n >= 3 nodes and L > 0, got n={n}, L={L}")
    return -L / 2 + np.arange(n) * (L / n)


def heat_solution_periodic(x, t: float, D: float, L: float, *, images: int = 3) -> np.ndarray:
    """Exact solution of ``u_t = D u_xx`` on a periodic domain of length ``L`` from a unit point
    mass at 0: the Gaussian kernel summed over its periodic images ``x + k L``, ``|k| <= images``."""
    x = np.asarray(x, dtype=np.float64)
    return sum(gaussian_kernel(x + k * L, t, D) for k in range(-images, images + 1))


def ftcs_ratio(D: float, dt: float, dx: float) -> float:
    """The mesh ratio ``r = D dt / dx^2``."""
    from . import backend

    return backend.ftcs_ratio(D, dt, dx)


def ftcs_amplification(r: float, theta) -> np.ndarray:
    """Von Neumann amplification factor of FTCS for the Fourier mode ``exp(i k x)``, ``theta = k dx``:
    ``g = 1 - 4 r sin^2(theta / 2)``. ``|g| <= 1`` for every mode iff ``r <= 1/2``; the worst mode
    is the grid-scale zig-zag ``theta = pi`` with ``g = 1 - 4 r``."""
    return 1.0 - 4.0 * r * np.sin(np.asarray(theta, dtype=np.float64) / 2) ** 2


# ---------------------------------------------------------------------------- the PDE, via the kernel
def _as_batch(u0, spatial: int) -> tuple[np.ndarray, bool]:
    u = np.array(u0, dtype=np.float64, copy=True)
    squeeze = u.ndim == spatial
    if squeeze:
        u = u[None]
    if u.ndim != spatial + 1:
        raise ValueError(f"u0 must have {spatial} spatial dims (optionally a batch dim first), got shape {u.shape}")
    return np.ascontiguousarray(u), squeeze


def _solve(step_fn, u0, spatial, D, dt, dx, n_steps, every, bc, allow_unstable, backend):
    n_steps = _c.check_count(n_steps, "n_steps", low=0)
    u, squeeze = _as_batch(u0, spatial)
    snaps = [u.copy()] if every else None
    for k in range(1, int(n_steps) + 1):
        u = step_fn(u, D, dt, dx, bc=bc, allow_unstable=allow_unstable, backend=backend)
        if every and k % every == 0:
            snaps.append(np.asarray(u).copy())
    u = np.asarray(u)
    if every:
        out = np.stack(snaps)  # (n_snap, B, ...)
        return out[:, 0] if squeeze else out
    return u[0] if squeeze else u


def solve_heat_1d(u0, D: float, dt: float, dx: float, n_steps: int, *, every: int | None = None,
                  bc: str = "periodic", allow_unstable: bool = False, backend: str | None = None):
    """March ``u_t = D u_xx`` with the explicit FTCS kernel (:func:`minidiff.backend.ftcs_step_1d`)
    for ``n_steps`` steps of ``dt``. ``u0``: ``(N,)`` or ``(B, N)``. Returns the final state, or with
    ``every=k`` the snapshots at steps ``0, k, 2k, ...`` stacked on a new first axis. The kernel
    raises ``ValueError`` when ``r = D dt/dx^2 > 1/2`` unless ``allow_unstable=True``."""
    from . import backend as B

    return _solve(B.ftcs_step_1d, u0, 1, D, dt, dx, n_steps, every, bc, allow_unstable, backend)


def solve_heat_2d(u0, D: float, dt: float, dx: float, n_steps: int, *, every: int | None = None,
                  bc: str = "periodic", allow_unstable: bool = False, backend: str | None = None):
    """As :func:`solve_heat_1d` in two dimensions (5-point stencil, stable for ``r <= 1/4``).
    ``u0``: ``(H, W)`` or ``(B, H, W)``."""
    from . import backend as B

    return _solve(B.ftcs_step_2d, u0, 2, D, dt, dx, n_steps, every, bc, allow_unstable, backend)


@dataclass(frozen=True)
class ConvergenceResult:
    """Errors of FTCS against the exact solution on refined grids at a fixed ``r``."""

    n: np.ndarray          # grid points per refinement
    dx: np.ndarray
    dt: np.ndarray
    n_steps: np.ndarray
    max_error: np.ndarray  # max-norm error at t_end
    r: float

    @property
    def orders(self) -> np.ndarray:
        """Observed orders ``log(e_k / e_{k+1}) / log(dx_k / dx_{k+1})``."""
        return observed_orders(self.dx, self.max_error)


def observed_orders(h, err) -> np.ndarray:
    """``log(err_k / err_{k+1}) / log(h_k / h_{k+1})`` for successive refinements."""
    h, err = np.asarray(h, dtype=np.float64), np.asarray(err, dtype=np.float64)
    return np.log(err[:-1] / err[1:]) / np.log(h[:-1] / h[1:])


def ftcs_convergence(*, D: float = 1.0, L: float = 10.0, t0: float = 0.5, t_end: float = 0.64,
                     n0: int = 25, steps0: int = 10, levels: int = 4, r: float | None = None,
                     backend: str | None = None) -> ConvergenceResult:
    """Refine the grid ``levels`` times (``n = n0, 2 n0, 4 n0, ...``) holding ``r`` fixed.

    Start from the exact periodic solution at time ``t0`` (a Gaussian of variance ``2 D t0``), march
    to ``t0 + t_end`` and record the max error. With ``n_steps = steps0 * 4^level`` the mesh ratio is
    exactly ``r = D (t_end / steps0) / (L / n0)^2`` on every level (or pass ``r`` to set ``steps0``).
    FTCS's truncation error is ``O(dt) + O(dx^2) = O(dx^2)`` at fixed ``r``: expect order 2 --
    except at ``r = 1/6``, where the leading terms cancel (a student exercise)."""
    dx0 = L / n0
    if r is not None:
        steps0 = t_end * D / (r * dx0**2)
        if abs(steps0 - round(steps0)) > 1e-9:
            raise ValueError(f"r={r} needs a non-integer number of steps ({steps0}); adjust t_end or n0")
        steps0 = int(round(steps0))
    ns, dxs, dts, nsteps, errs = [], [], [], [], []
    for level in range(levels):
        n = n0 * 2**level
        steps = steps0 * 4**level
        x = periodic_grid(L, n)
        dx, dt = L / n, t_end / steps
        u0 = heat_solution_periodic(x, t0, D, L)
        u = solve_heat_1d(u0, D, dt, dx, steps, backend=backend)
        exact = heat_solution_periodic(x, t0 + t_end, D, L)
        ns.append(n), dxs.append(dx), dts.append(dt), nsteps.append(steps)
        errs.append(float(np.abs(u - exact).max()))
    return ConvergenceResult(np.array(ns), np.array(dxs), np.array(dts), np.array(nsteps), np.array(errs),
                             r=D * dts[0] / dxs[0] ** 2)


# ---------------------------------------------------------------------------- walkers
def simulate_walkers(n_walkers: int, D: float, dt: float, n_steps: int, *, dim: int = 1,
                     drift_coef: float = 0.0, x0=0.0, seed: int = 0, every: int = 1,
                     backend: str | None = None):
    """Brownian (``drift_coef = 0``) or Ornstein-Uhlenbeck (``drift_coef = -theta``) walkers,
    Euler-Maruyama ``x <- x + drift_coef x dt + sqrt(2 D dt) z`` through the walker kernel.

    Noise is counter-based (``seed``, walker, coordinate, step), so walker ``b``'s path does not
    depend on how many walkers run beside it. Returns ``(times, paths)``: ``times`` ``(S,)`` and
    ``paths`` ``(S, n_walkers, dim)`` float64 at steps ``0, every, 2 every, ...``."""
    from . import backend as B

    n_walkers, dim, every = (_c.check_count(v, k) for v, k in ((n_walkers, "n_walkers"), (dim, "dim"),
                                                               (every, "every")))
    n_steps = _c.check_count(n_steps, "n_steps", low=0)  # 2.7 steps is not 2 steps
    seed = _c.check_count(seed, "seed", low=0)
    x = np.empty((int(n_walkers), int(dim)), dtype=np.float64)
    x[...] = np.asarray(x0, dtype=np.float64)
    times, snaps = [0.0], [x.copy()]
    for k in range(1, int(n_steps) + 1):
        x = np.asarray(B.walker_step(x, D, dt, drift_coef=drift_coef, seed=seed, step=k, backend=backend))
        if k % every == 0:
            times.append(k * dt)
            snaps.append(x.copy())
    return np.array(times), np.stack(snaps)


def msd(x, x0=0.0) -> np.ndarray:
    """Mean squared displacement ``mean_b |x_b - x0|^2`` over walkers (axis -2), for ``x`` of shape
    ``(..., n_walkers, dim)``. For Brownian motion it is ``2 dim D t`` (Einstein 1905)."""
    x = np.asarray(x, dtype=np.float64)
    return ((x - x0) ** 2).sum(-1).mean(-1)


# ---------------------------------------------------------------------------- Ornstein-Uhlenbeck
def ou_mean(t, x0: float, theta: float):
    """``E[x_t] = x0 exp(-theta t)`` for ``dx = -theta x dt + sqrt(2D) dW``."""
    return x0 * np.exp(-theta * np.asarray(t, dtype=np.float64))


def ou_variance(t, D: float, theta: float, var0: float = 0.0):
    """``Var[x_t] = var0 e^{-2 theta t} + (D / theta)(1 - e^{-2 theta t})``; ``-> D / theta``."""
    e = np.exp(-2 * theta * np.asarray(t, dtype=np.float64))
    return var0 * e + (D / theta) * (1 - e)


def ou_em_stationary_variance(D: float, theta: float, dt: float) -> float:
    """Stationary variance of the Euler-Maruyama chain ``x' = (1 - theta dt) x + sqrt(2 D dt) z``:
    ``2 D dt / (1 - (1 - theta dt)^2) = (D / theta) / (1 - theta dt / 2)`` -- the time step's bias."""
    a = 1 - theta * dt
    if abs(a) >= 1:
        raise ValueError(f"theta*dt must lie in (0, 2) for a stationary chain, got {theta * dt}")
    return 2 * D * dt / (1 - a * a)


def ou_density(x, t, x0: float, D: float, theta: float):
    """The solution of the OU Fokker-Planck equation ``p_t = (theta x p)_x + D p_xx`` from a point
    mass at ``x0``: ``N(x0 e^{-theta t}, (D/theta)(1 - e^{-2 theta t}))``."""
    m, v = ou_mean(t, x0, theta), ou_variance(t, D, theta)
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-(x - m) ** 2 / (2 * v)) / np.sqrt(2 * math.pi * v)
