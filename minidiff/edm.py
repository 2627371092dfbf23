"""The EDM design space (Karras, Aittala, Aila & Laine 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models").

Every model of the course is, after rescaling ``x -> x / sqrt(alpha_bar)``, the variance-exploding
process ``x = x_0 + sigma eps`` (Karras et al. 2022, eq. 4 with ``s(t) = 1``; the rescaling is its
``s(t) = sqrt(alpha_bar)``), and its probability-flow ODE in the noise level itself is
``dx / dsigma = (x - D(x; sigma)) / sigma`` (eq. 4 with ``sigma(t) = t``, the score written with the denoiser by eq. 3)
where ``D(x; sigma) = E[x_0 | x]`` is the ideal denoiser. This module holds

* the coordinates, each conversion written once: ``t_index <-> alpha_bar <-> sigma = sqrt((1 - ab) / ab)``,
  VP time ``t <-> sigma``, log-SNR ``lambda = log(ab / (1 - ab)) = -log sigma^2``;
* the preconditioning of Table 1 (``c_skip``, ``c_out``, ``c_in``, ``c_noise``) and :class:`Precond`, the
  wrapper that turns any course network into ``D(x; sigma)`` (EDM's own column, or the VP column that
  reads an eps-network as a denoiser);
* the EDM training loss (log-normal ``sigma``, weight ``lambda(sigma)``; Table 1 and eq. 8) as
  :class:`EDMObjective`, registered in :data:`minidiff.train.OBJECTIVES` as ``"edm"``;
* time grids as descending ``sigma`` arrays ending in ``0``: the ``rho = 7`` grid (eq. 5), log-SNR uniform,
  uniform VP ``t``, and a schedule's own ``timesteps``;
* the deterministic Heun sampler in ``sigma`` (Alg. 1) and the stochastic sampler with churn (Alg. 2),
  generators of :class:`minidiff.samplers.Step` with ``sigma`` set;
* one conversion of a grid into what the other samplers read (:func:`grid_schedule` for
  :func:`minidiff.samplers.ddim` / :func:`~minidiff.samplers.ddpm` / :func:`minidiff.solvers.dpm_solver_2m`
  and the fused :mod:`minidiff.trajectories`, :func:`grid_vp_sde` for the PF-ODE and SDE samplers,
  :class:`SigmaODE` for the fused Heun-in-sigma), so every sampler of the course runs on one given grid
  and a race compares solvers, not grids;
* classifier-free guidance on an exact class-conditional mixture (:func:`guided_denoiser`, limited to an
  interval of noise levels as in Kynkäänniemi et al. 2024) and the tilted density it is often mistaken for.

A denoiser here is ``denoiser(x, sigma) -> x0_hat`` with ``x`` ``(B, ...)`` in the VE coordinate and
``sigma`` a Python float.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn

from . import _checks as _c
from .schedule import Schedule, append_dims

__all__ = [
    "sigma_from_alpha_bar", "alpha_bar_from_sigma", "log_snr_from_sigma", "sigma_from_log_snr",
    "sigma_from_t_index", "vp_t_from_sigma",
    "c_skip", "c_out", "c_in", "c_noise", "Precond", "EDMObjective", "edm_loss",
    "karras_sigmas", "log_snr_sigmas", "vp_uniform_t_sigmas", "t_index_sigmas",
    "heun", "stochastic", "grid_schedule", "grid_vp_sde", "SigmaODE",
    "mixture_denoiser", "eps_model_on_grid", "denoiser_as_eps_model", "euler", "precond_denoiser", "loss_weight",
    "component", "guided_denoiser", "tilted_log_density", "sample_on_grid", "load_edm_digits", "sample_heun",
]

SIGMA_DATA = 0.5   # Karras et al. 2022, Table 1 (their images in [-1, 1]; digits here too)
P_MEAN, P_STD = -1.2, 1.2   # log-normal training distribution of sigma, Table 1
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0   # sampling grid, Table 1


# ============================================================================ coordinates (each written once)
def sigma_from_alpha_bar(alpha_bar):
    """``sigma = sqrt((1 - alpha_bar) / alpha_bar)``: the VE level of ``sqrt(ab) x_0 + sqrt(1 - ab) eps``
    after dividing by ``sqrt(ab)`` (Karras et al. 2022, eq. 4 with ``s = sqrt(ab)`` / App. C.2; Song et al.
    2021b, eq. 14)."""
    ab = np.asarray(alpha_bar, dtype=np.float64)
    if not np.all((ab > 0) & (ab <= 1)):
        raise ValueError(f"alpha_bar must lie in (0, 1], got {ab.reshape(-1)[:3].tolist()}")
    return np.sqrt((1.0 - ab) / ab)


def alpha_bar_from_sigma(sigma):
    """``alpha_bar = 1 / (1 + sigma^2)``, the inverse of :func:`sigma_from_alpha_bar`."""
    s = _check_sigmas_nonneg(sigma, "sigma")
    return 1.0 / (1.0 + s * s)


def log_snr_from_sigma(sigma):
    """Log signal-to-noise ratio ``lambda = log(alpha_bar / (1 - alpha_bar)) = -log sigma^2``
    (Kingma et al. 2021, eq. 3; DPM-Solver's half log-SNR is ``lambda / 2``)."""
    s = _check_sigmas_nonneg(sigma, "sigma")
    with np.errstate(divide="ignore"):
        return -2.0 * np.log(s)


def sigma_from_log_snr(log_snr):
    """``sigma = exp(-lambda / 2)``, the inverse of :func:`log_snr_from_sigma`."""
    return np.exp(-0.5 * np.asarray(log_snr, dtype=np.float64))


def sigma_from_t_index(schedule: Schedule, t_index):
    """``schedule.sigma[t_index]``; ``t_index = -1`` is the data, ``sigma = 0``."""
    t = np.asarray(t_index, dtype=np.int64)
    if np.any(t < -1) or np.any(t >= schedule.T):
        raise IndexError(f"t_index must lie in [-1, {schedule.T - 1}], got {t.reshape(-1)[:3].tolist()}")
    return np.where(t < 0, 0.0, schedule.sigma[np.maximum(t, 0)])


def vp_t_from_sigma(sde, sigma):
    """VP time of a noise level, ``sigma^-1`` of Karras et al. 2022, Table 1 (VP column):
    ``B(t) = log(1 + sigma^2)`` solved for the linear ``beta(t)``:
    ``t = (sqrt(beta_min^2 + 2 beta_d log(1 + sigma^2)) - beta_min) / beta_d``, ``beta_d = beta_max - beta_min``.
    ``sde``: a :class:`minidiff.sde.VPSDE` (its ``sigma(t)`` is the inverse)."""
    s = _check_sigmas_nonneg(sigma, "sigma")
    b0, bd = float(sde.beta_min), float(sde.beta_max - sde.beta_min)
    B = np.log1p(s * s)
    t = B / b0 if bd == 0 else (np.sqrt(b0 * b0 + 2.0 * bd * B) - b0) / bd
    if np.any(t > 1.0 + 1e-12):
        raise ValueError(f"sigma {float(np.max(s)):.4g} lies beyond the SDE's t = 1 (sigma(1) = {sde.sigma(1.0):.4g})")
    return np.minimum(t, 1.0)


def _check_sigmas_nonneg(sigma, name: str) -> np.ndarray:
    s = np.asarray(sigma, dtype=np.float64)
    if not np.all(np.isfinite(s) & (s >= 0)):
        raise ValueError(f"{name} must be finite and >= 0, got {s.reshape(-1)[:3].tolist()}")
    return s


def _check_sigma(sigma, name: str = "sigma") -> float:
    return _c.check_positive(sigma, name)


# ============================================================================ preconditioning (Table 1)
def c_skip(sigma, sigma_data: float = SIGMA_DATA):
    """``c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)`` (Karras et al. 2022, Table 1, eq. 7)."""
    return sigma_data**2 / (sigma**2 + sigma_data**2)


def c_out(sigma, sigma_data: float = SIGMA_DATA):
    """``c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)`` (Table 1)."""
    return sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5


def c_in(sigma, sigma_data: float = SIGMA_DATA):
    """``c_in = 1 / sqrt(sigma^2 + sigma_data^2)`` (Table 1): unit-variance network input."""
    return 1.0 / (sigma**2 + sigma_data**2) ** 0.5


def c_noise(sigma):
    """``c_noise = log(sigma) / 4`` (Table 1), for networks that take a real noise input."""
    return 0.25 * math.log(sigma) if isinstance(sigma, (int, float)) else 0.25 * torch.log(sigma)


def loss_weight(sigma, sigma_data: float = SIGMA_DATA):
    """``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out^2`` (Table 1), so that
    the effective weight ``lambda c_out^2`` of the network's own regression is 1 at every level."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


class Precond(nn.Module):
    """``D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))`` (Karras et al. 2022,
    eq. 7 and Table 1) around any course network ``F(x, t_index, y)`` (U-Net or MLP).

    ``kind="edm"``: Table 1's EDM column with ``sigma_data``. ``kind="vp"``: Table 1's VP column for an
    eps-prediction network trained on ``schedule`` (``c_skip = 1``, ``c_out = -sigma``,
    ``c_in = 1 / sqrt(1 + sigma^2)``): ``D`` is then Tweedie's ``x0_hat`` of the existing code.

    The course's networks embed an integer ``t_index``, so ``c_noise`` is Table 1's VP column,
    ``(M - 1) sigma^-1(sigma)``: the ``t_index`` of ``schedule`` nearest to ``sigma`` (in log-SNR;
    :meth:`minidiff.schedule.Schedule.sigma_to_t_index`) -- the network sees one of ``T`` levels while
    ``c_skip``, ``c_out``, ``c_in`` use ``sigma`` exactly. Pass ``noise_input=c_noise`` for a network
    that takes ``log(sigma) / 4`` as a real number.

    ``forward(x (B, ...), sigma: float | (B,) tensor, y=None) -> x0_hat (B, ...)``.
    """

    def __init__(self, net: nn.Module, *, kind: str = "edm", sigma_data: float = SIGMA_DATA,
                 schedule: Schedule | None = None, noise_input=None):
        super().__init__()
        if kind not in ("edm", "vp"):
            raise ValueError(f"kind must be 'edm' or 'vp', got {kind!r}")
        if noise_input is None and schedule is None:
            raise ValueError("pass schedule= (the network embeds its t_index) or noise_input= (sigma -> input)")
        self.net, self.kind, self.schedule = net, kind, schedule
        self.sigma_data = _c.check_positive(sigma_data, "sigma_data")
        self.noise_input = noise_input

    @property
    def config(self):
        return self.net.config

    def _coefficients(self, sigma):  # (B,) float64 -> c_skip, c_out, c_in
        if self.kind == "vp":
            return torch.ones_like(sigma), -sigma, 1.0 / torch.sqrt(1.0 + sigma * sigma)
        return c_skip(sigma, self.sigma_data), c_out(sigma, self.sigma_data), c_in(sigma, self.sigma_data)

    def _net_noise(self, sigma):  # (B,) float64 -> the network's noise input
        if self.noise_input is not None:
            return self.noise_input(sigma)
        t_index = self.schedule.sigma_to_t_index(sigma.detach().cpu().numpy())
        return torch.as_tensor(t_index, dtype=torch.int64, device=sigma.device)

    def forward(self, x, sigma, y=None):
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1).expand(x.shape[0])
        if not bool(torch.all(torch.isfinite(sigma) & (sigma > 0))):
            raise ValueError(f"sigma must be finite and > 0, got {sigma[:3].tolist()}")
        cs, co, ci = (append_dims(c.to(x.dtype), x.ndim) for c in self._coefficients(sigma))
        return cs * x + co * self.net(ci * x, self._net_noise(sigma), y)  # (B, ...)


def precond_denoiser(precond: Precond, y=None, guidance_scale: float | None = None):
    """``denoiser(x, sigma) -> x0_hat`` from a :class:`Precond` (no gradients); ``y``: labels of a
    class-conditional network; ``guidance_scale = w``: classifier-free guidance on the denoiser,
    ``(1 + w) D(x; sigma, y) - w D(x; sigma, null)`` (Ho & Salimans 2022, eq. 6, in x0 form)."""
    K = getattr(precond.config, "num_classes", 0)

    def denoiser(x, sigma):
        with torch.no_grad():
            yv = None if y is None else torch.as_tensor(y, dtype=torch.int64, device=x.device).expand(x.shape[0])
            if not guidance_scale:
                return precond(x, sigma, yv)
            both = precond(torch.cat([x, x]), sigma, torch.cat([yv, torch.full_like(yv, K)]))
            cond, uncond = both.chunk(2)
            return (1 + guidance_scale) * cond - guidance_scale * uncond

    return denoiser


# ============================================================================ the EDM loss
def edm_loss(net: nn.Module, x0, sigma, noise, y=None, *, schedule: Schedule, sigma_data: float = SIGMA_DATA):
    """``E[lambda(sigma) ||D(x_0 + sigma n; sigma) - x_0||^2]`` (Karras et al. 2022, eq. 8 and Table 1)
    for ``sigma (B,)``, ``noise (B, ...)``, with ``D = Precond(net, kind="edm")``."""
    D = Precond(net, kind="edm", sigma_data=sigma_data, schedule=schedule)
    s = append_dims(sigma.to(x0.dtype), x0.ndim)                     # (B, 1, ..., 1)
    err = (D(x0 + s * noise, sigma, y) - x0) ** 2                    # (B, ...)
    return torch.mean(loss_weight(s, sigma_data) * err)


@dataclass(frozen=True)
class EDMObjective:
    """The EDM training objective (Karras et al. 2022, Table 1, "Training"): ``log sigma ~
    N(P_mean, P_std^2)``, ``n ~ N(0, I)``, loss :func:`edm_loss`. ``draw`` returns ``(sigma (B,), noise)``
    from the step's generator (the contract of :class:`minidiff.train.DDPMObjective`); the network is the
    raw ``F`` of :class:`Precond` (its ``t_index`` input is the schedule's level nearest ``sigma``)."""

    name: str = "edm"
    p_mean: float = P_MEAN
    p_std: float = P_STD
    sigma_data: float = SIGMA_DATA

    def draw(self, g: torch.Generator, batch_size: int, shape: tuple[int, ...], schedule: Schedule):
        sigma = torch.exp(self.p_mean + self.p_std * torch.randn(batch_size, generator=g))   # (B,)
        noise = torch.randn((batch_size,) + tuple(shape), generator=g)                     # (B, ...)
        return sigma, noise

    def loss(self, net: nn.Module, x0, sigma, noise, y, schedule: Schedule) -> torch.Tensor:
        return edm_loss(net, x0, sigma, noise.to(dtype=x0.dtype), y, schedule=schedule, sigma_data=self.sigma_data)


# ============================================================================ time grids (descending sigma, then 0)
def _check_range(sigma_min, sigma_max):
    sigma_min, sigma_max = _check_sigma(sigma_min, "sigma_min"), _check_sigma(sigma_max, "sigma_max")
    if not sigma_min < sigma_max:
        raise ValueError(f"need sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
    return sigma_min, sigma_max


def karras_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO) -> np.ndarray:
    """The ``rho`` grid (Karras et al. 2022, eq. 5): ``sigma_i = (sigma_max^(1/rho) + i / (n - 1)
    (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`` for ``i < n``, and ``sigma_n = 0``. ``n + 1`` values,
    float64, descending; ``n`` steps. ``rho = 1`` is uniform in sigma, ``rho -> inf`` uniform in log sigma."""
    n = _c.check_count(n, "n", 2)
    sigma_min, sigma_max = _check_range(sigma_min, sigma_max)
    rho = _check_sigma(rho, "rho")
    i = np.arange(n, dtype=np.float64)
    s = (sigma_max ** (1 / rho) + i / (n - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return np.append(s, 0.0)


def log_snr_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX) -> np.ndarray:
    """``n`` levels uniform in log-SNR (= in ``log sigma``) from ``sigma_max`` to ``sigma_min``, then 0
    (the ``rho -> inf`` limit of eq. 5; the grid of Lu et al. 2022a's "logSNR" spacing)."""
    n = _c.check_count(n, "n", 2)
    sigma_min, sigma_max = _check_range(sigma_min, sigma_max)
    lam = np.linspace(log_snr_from_sigma(sigma_max), log_snr_from_sigma(sigma_min), n)
    return np.append(sigma_from_log_snr(lam), 0.0)


def vp_uniform_t_sigmas(sde, n: int, t_min: float = 1e-3) -> np.ndarray:
    """``sde.sigma(t)`` on ``n`` times uniform from 1 to ``t_min`` (Song et al. 2021a's grid), then 0."""
    ts = sde.time_grid(_c.check_count(n, "n", 2) - 1, t_min)
    return np.append([sde.sigma(t) for t in ts], 0.0)


def t_index_sigmas(schedule: Schedule, n: int) -> np.ndarray:
    """The levels of ``schedule.timesteps(n)`` (DDIM's and DPM-Solver's default grid), then 0."""
    return np.append(sigma_from_t_index(schedule, schedule.timesteps(n)), 0.0)


def _check_grid(sigmas) -> np.ndarray:
    s = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if s.size < 2 or s[-1] != 0 or not np.all(np.isfinite(s)) or np.any(s[:-1] <= 0) or np.any(np.diff(s) >= 0):
        raise ValueError(f"sigmas must be a strictly decreasing grid of >= 2 finite levels ending in 0, "
                         f"got {s[:4].tolist()}{'...' if s.size > 4 else ''}")
    return s


# ============================================================================ one grid for every sampler
def grid_schedule(sigmas) -> Schedule:
    """The grid as a :class:`Schedule` with ``T = n`` levels, ``alpha_bar[T - 1 - i] = 1 / (1 + sigma_i^2)``
    (betas ``1 - ab_i / ab_{i-1}`` exactly, no clipping), so ``sampler(model, x_T, grid_schedule(s), T)``
    (DDIM, DDPM, DPM-Solver++(2M), their fused :mod:`minidiff.trajectories` versions) steps through exactly
    these levels, the last step to the data. A model must be evaluated at the grid's levels:
    :func:`eps_model_on_grid` or :func:`denoiser_as_eps_model`, or ``GaussianMixture.eps_model`` of it."""
    s = _check_grid(sigmas)
    ab = alpha_bar_from_sigma(s[:-1][::-1])                           # ascending t_index
    betas = 1.0 - ab / np.concatenate([[1.0], ab[:-1]])
    return Schedule.from_betas(betas, name=f"sigma_grid(n={ab.size})")


def grid_vp_sde(sde, sigmas):
    """A copy of the VP ``sde`` whose ``time_grid`` is the grid's VP times (:func:`vp_t_from_sigma`,
    ``t = 0`` for ``sigma = 0``), so :func:`minidiff.samplers.pf_ode_euler` / ``pf_ode_heun`` /
    ``euler_maruyama`` and their fused versions run on it with ``n_steps = len(sigmas) - 1``."""
    s = _check_grid(sigmas)
    return _GriddedVPSDE(beta_min=sde.beta_min, beta_max=sde.beta_max, t_grid=tuple(vp_t_from_sigma(sde, s).tolist()))


def _gridded_vpsde():
    from .sde import VPSDE

    @dataclass(frozen=True)
    class GriddedVPSDE(VPSDE):
        """A :class:`minidiff.sde.VPSDE` stepped on a fixed time grid (see :func:`grid_vp_sde`)."""

        t_grid: tuple = ()

        def time_grid(self, n_steps: int, t_min: float = 0.0) -> np.ndarray:
            if n_steps != len(self.t_grid) - 1:
                raise ValueError(f"this SDE carries a grid of {len(self.t_grid) - 1} steps; pass n_steps="
                                 f"{len(self.t_grid) - 1}, got {n_steps}")
            return np.array(self.t_grid, dtype=np.float64)

    return GriddedVPSDE


_GriddedVPSDE = _gridded_vpsde()


@dataclass(frozen=True)
class SigmaODE:
    """EDM's ODE ``dx/dsigma = (x - D) / sigma = -sigma score`` (Karras et al. 2022, eq. 4 with
    ``sigma(t) = t``, ``s(t) = 1``) written as the probability-flow ODE of a VE "SDE" in time ``t = sigma``:
    ``f = 0``, ``g(sigma)^2 = d sigma^2 / d sigma = 2 sigma``, marginal ``x_0 + sigma eps``, and the grid as
    its ``time_grid``. The backend's PF-ODE Euler and Heun updates (and the fused trajectories) then take
    Euler and Heun steps in sigma: one formula for both coordinates."""

    sigmas: tuple

    def __post_init__(self):
        object.__setattr__(self, "sigmas", tuple(_check_grid(self.sigmas).tolist()))

    def drift_coef(self, sigma) -> float:
        return 0.0

    def diffusion(self, sigma) -> float:
        return math.sqrt(2.0 * float(sigma))

    def mean_scale(self, sigma) -> float:
        return 1.0

    def marginal_std(self, sigma) -> float:
        return float(sigma)

    def time_grid(self, n_steps: int, t_min: float = 0.0) -> np.ndarray:
        if n_steps != len(self.sigmas) - 1:
            raise ValueError(f"this grid has {len(self.sigmas) - 1} steps; pass n_steps={len(self.sigmas) - 1}")
        return np.array(self.sigmas, dtype=np.float64)


# ============================================================================ models on a grid
def mixture_denoiser(gm):
    """The exact denoiser ``D(x; sigma) = x + sigma^2 grad log p_sigma(x)`` (Tweedie; Karras et al. 2022,
    eq. 3) of a :class:`minidiff.data.GaussianMixture` under ``x = x_0 + sigma eps``."""
    return lambda x, sigma: x + sigma * sigma * gm.at_sigma(sigma).score(x)


def eps_model_on_grid(eps_model, model_schedule: Schedule, sigmas):
    """An eps-network trained on ``model_schedule`` as a model for :func:`grid_schedule` ``(sigmas)``: grid
    level ``t_index`` is read as the network's ``t_index`` of nearest sigma (the network's levels; exact
    when the grid's sigmas are levels of ``model_schedule``). ``eps`` has the same meaning at equal sigma."""
    s = _check_grid(sigmas)[:-1][::-1]                                  # grid sigma by grid t_index
    to_net = torch.as_tensor(model_schedule.sigma_to_t_index(s), dtype=torch.int64)

    def model(x, t_index):
        return eps_model(x, to_net[t_index.cpu()].to(x.device))

    return model


def denoiser_as_eps_model(denoiser, sigmas):
    """A denoiser ``D(x; sigma)`` as the eps-model of :func:`grid_schedule` ``(sigmas)``: at grid level
    ``sigma`` the VP state is ``x = x_ve / sqrt(1 + sigma^2)`` and ``eps = (x_ve - D(x_ve; sigma)) / sigma``."""
    s = _check_grid(sigmas)[:-1][::-1]

    def model(x, t_index):
        levels = np.unique(t_index.cpu().numpy())
        if levels.size != 1:
            raise ValueError("denoiser_as_eps_model evaluates one level per call")
        sigma = float(s[int(levels[0])])
        x_ve = x * math.sqrt(1.0 + sigma * sigma)
        return (x_ve - denoiser(x_ve, sigma)) / sigma

    return model


# ============================================================================ samplers in sigma (Alg. 1, Alg. 2)
def heun(denoiser, x_T, sigmas, *, backend: str | None = None) -> Iterator:
    """EDM's deterministic sampler (Karras et al. 2022, Alg. 1): on the descending ``sigmas`` (ending in 0),
    ``d = (x - D(x; sigma_i)) / sigma_i``, Euler ``x' = x + (sigma_{i+1} - sigma_i) d``, then unless
    ``sigma_{i+1} = 0`` the Heun correction ``x + (sigma_{i+1} - sigma_i) (d + d') / 2``. ``x_T``: ``(B, ...)``
    from ``N(0, sigma_0^2 I)``. ``2 n - 1`` denoiser evaluations for ``n`` steps. Yields ``n`` records
    with ``sigma`` and ``x0 = D(x; sigma_i)``."""
    return stochastic(denoiser, x_T, sigmas, s_churn=0.0, backend=backend)


def euler(denoiser, x_T, sigmas, *, backend: str | None = None) -> Iterator:
    """Euler's method in sigma (Alg. 1 without lines 9-11; ``n`` evaluations). On ``x / sqrt(alpha_bar)`` it
    is DDIM with ``eta = 0`` on the same levels (Song et al. 2021b, eq. 14; Karras et al. 2022)."""
    from .samplers import _check_x

    s = _check_grid(sigmas)
    return _sample_sigma(denoiser, _check_x(x_T, "x_T"), s, 0.0, 0.0, math.inf, 1.0, None, False, backend)


def stochastic(denoiser, x_T, sigmas, *, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf,
               s_noise: float = 1.0, generator: torch.Generator | None = None, noise=None,
               backend: str | None = None) -> Iterator:
    """EDM's stochastic sampler (Karras et al. 2022, Alg. 2): before step ``i`` with ``sigma_i`` in
    ``[s_tmin, s_tmax]`` raise the level to ``sigma_hat = (1 + gamma) sigma_i``,
    ``gamma = min(s_churn / n, sqrt(2) - 1)``, by adding noise ``sqrt(sigma_hat^2 - sigma_i^2) s_noise z``
    ("churn"), then take the Heun step of Alg. 1 from ``sigma_hat`` to ``sigma_{i+1}``. ``s_churn = 0`` is
    Alg. 1. Noise counter: ``step = index`` (only the churned steps draw). Yields ``n`` records with ``sigma``
    (the grid level ``sigma_i``) and ``x0 = D(x_hat; sigma_hat)``."""
    from .samplers import _check_x, _noise_source

    s = _check_grid(sigmas)
    s_churn = _c.check_nonnegative(s_churn, "s_churn")
    s_noise = _c.check_nonnegative(s_noise, "s_noise")
    s_tmin = _c.check_nonnegative(s_tmin, "s_tmin")
    if not float(s_tmax) >= s_tmin:
        raise ValueError(f"s_tmax must be >= s_tmin, got {s_tmax} < {s_tmin}")
    src = _noise_source(generator, noise, needed=s_churn > 0)
    return _sample_sigma(denoiser, _check_x(x_T, "x_T"), s, s_churn, s_tmin, float(s_tmax), s_noise, src, True,
                         backend)


def _sample_sigma(denoiser, x, sigmas, s_churn, s_tmin, s_tmax, s_noise, src, second_order, backend):
    from . import backend as _backend
    from .samplers import Step, _checked, _evaluate

    n = len(sigmas) - 1
    ode = SigmaODE(tuple(sigmas.tolist()))
    for i, (sig, sig_next) in enumerate(zip(sigmas[:-1].tolist(), sigmas[1:].tolist())):
        gamma = min(s_churn / n, math.sqrt(2.0) - 1.0) if s_tmin <= sig <= s_tmax else 0.0  # Alg. 2, line 4
        sig_hat = sig * (1.0 + gamma)
        if gamma > 0:                                                                       # Alg. 2, lines 5-6
            x = x + math.sqrt(sig_hat**2 - sig**2) * s_noise * src.tensor(i, x)
        x0 = _evaluate(denoiser, "denoiser", x, sig_hat, index=i)                          # (B, ...)
        score = (x0 - x) / sig_hat**2                                                       # d = -sigma score
        coef = dict(drift_coef=0.0, diffusion=ode.diffusion(sig_hat))
        x_euler = _backend.pf_ode_euler_step(x, score, dt=sig_hat - sig_next, backend=backend, **coef)  # line 8
        if second_order and sig_next > 0:                                                   # Alg. 1, lines 9-11
            x0_next = _evaluate(denoiser, "denoiser", x_euler, sig_next, index=i)
            score_next = (x0_next - x_euler) / sig_next**2
            x_euler = _backend.pf_ode_heun_step(x, score, x_euler, score_next, **coef, drift_coef_next=0.0,
                                                diffusion_next=ode.diffusion(sig_next), dt=sig_hat - sig_next,
                                                backend=backend)
        x = _checked(x_euler, i, f"sigma={sig}, sigma_hat={sig_hat}")
        yield Step(index=i, x=x, x0=x0, sigma=sig)


# ============================================================================ guidance on an exact mixture
def component(gm, y: int):
    """Class ``y`` of a mixture whose classes are its components: ``p(x | y) = N(mu_y, S_y)``."""
    from .data import GaussianMixture

    y = _c.check_index(y, "y", gm.n_components)
    return GaussianMixture(torch.ones(1, dtype=torch.float64), gm.means[y:y + 1], gm.covs[y:y + 1])


def guided_denoiser(cond, uncond, w: float, sigma_range=(0.0, math.inf)):
    """Classifier-free guidance on denoisers, ``D_w = D(x; sigma | y) + w [D(x; sigma | y) - D(x; sigma)]``
    (Ho & Salimans 2022, eq. 6, in x0 form; equivalently the score ``grad log p_sigma(x | y) + w grad log
    p_sigma(y | x)``), applied only for ``sigma`` in ``sigma_range = (lo, hi]`` and plain conditional
    elsewhere: guidance limited to an interval of noise levels (Kynkäänniemi et al. 2024, eq. 2)."""
    w = _c.check_nonnegative(w, "w")
    lo, hi = (float(v) for v in sigma_range)
    if not 0.0 <= lo < hi:
        raise ValueError(f"sigma_range must be (lo, hi] with 0 <= lo < hi, got {sigma_range}")

    def denoiser(x, sigma):
        c = cond(x, sigma)
        return c + w * (c - uncond(x, sigma)) if lo < sigma <= hi else c

    return denoiser


def tilted_log_density(gm, y: int, w: float):
    """``log p(x | y) + w log p(y | x) = (1 + w) log p(x | y) - w log p(x)`` up to a constant: the density
    that guidance would sample if it acted on the data distribution alone (it does not: the guided score of
    each noise level is the tilt of *that* level's marginal, Ho & Salimans 2022, Sec. 3.1)."""
    w = _c.check_nonnegative(w, "w")
    cy = component(gm, y)
    return lambda x: (1.0 + w) * cy.log_prob(x) - w * gm.log_prob(x)


def sample_on_grid(log_density, n: int, *, lim=(-3.0, 3.0, -3.0, 3.0), bins: int = 400,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples ``(n, 2)`` of a 2-D density given by its unnormalised ``log_density``: a cell of a
    ``bins x bins`` grid over ``lim`` drawn with probability ``density x area`` (midpoint quadrature), then a
    uniform point inside it. Exact as ``bins -> inf`` for a density negligible outside ``lim``."""
    n = _c.check_count(n, "n")
    x0, x1, y0, y1 = (float(v) for v in lim)
    hx, hy = (x1 - x0) / bins, (y1 - y0) / bins
    gx = x0 + hx * (torch.arange(bins, dtype=torch.float64) + 0.5)
    gy = y0 + hy * (torch.arange(bins, dtype=torch.float64) + 0.5)
    pts = torch.stack(torch.meshgrid(gx, gy, indexing="ij"), -1).reshape(-1, 2)     # (bins^2, 2)
    logp = log_density(pts)
    p = torch.exp(logp - logp.max())
    cell = torch.multinomial(p / p.sum(), n, replacement=True, generator=generator)
    jitter = torch.rand(n, 2, generator=generator, dtype=torch.float64) - 0.5
    return pts[cell] + jitter * torch.tensor([hx, hy], dtype=torch.float64)


# ============================================================================ the shipped EDM digits model
def load_edm_digits() -> Precond:
    """The shipped ``edm_digits`` model (``minidiff/weights/edm_digits.*``): the digits U-Net trained as ``F``
    with :class:`EDMObjective`, wrapped as ``D(x; sigma) = Precond(net, kind="edm")``, eval mode.
    Sample with :func:`heun` on :func:`karras_sigmas` from ``x_T = sigma_max z``."""
    from .train import WEIGHTS_DIR, load_weights

    net, schedule, meta = load_weights(WEIGHTS_DIR / "edm_digits.safetensors")
    if meta.get("info", {}).get("preset") != "edm_digits":
        raise ValueError("edm_digits.safetensors does not hold the edm_digits preset's weights")
    return Precond(net, kind="edm", schedule=schedule).eval()


def sample_heun(denoiser, shape, n_steps: int, *, seed: int = 0, sigma_min: float = SIGMA_MIN,
                sigma_max: float = SIGMA_MAX, rho: float = RHO) -> torch.Tensor:
    """``final(heun(denoiser, sigma_max z, karras_sigmas(n_steps, ...)))`` with ``z ~ N(0, I)`` from
    ``torch.Generator().manual_seed(seed)``: ``2 n_steps - 1`` evaluations (Karras et al. 2022, Alg. 1)."""
    from .samplers import final

    z = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(_c.check_count(seed, "seed", 0)))
    sigmas = karras_sigmas(n_steps, sigma_min, sigma_max, rho)
    with torch.inference_mode():
        return final(heun(denoiser, float(sigmas[0]) * z, sigmas, backend="torch"))
