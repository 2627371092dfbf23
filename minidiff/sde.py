"""Variance-preserving and variance-exploding SDEs (Song et al. 2021a, "Score-Based Generative
Modeling through Stochastic Differential Equations", eqs. 9-11 and App. B).

This is the only module that speaks continuous time ``t`` in ``(0, 1]``. Both SDEs have a drift that
is linear in ``x``, ``f(x, t) = f(t) x`` (:meth:`drift_coef`), a scalar diffusion ``g(t)``
(:meth:`diffusion`) and a Gaussian perturbation kernel ``x_t = mean_scale(t) x_0 + marginal_std(t) eps``.
Each also reports its noise level in the discrete coordinates of :mod:`minidiff.schedule`:
``alpha_bar(t)`` (signal fraction) and ``sigma(t) = sqrt((1 - alpha_bar) / alpha_bar)`` (VE noise level
after rescaling by ``1 / mean_scale``), so a VP and a VE process at equal ``sigma`` are the same
marginal up to scale (Karras et al. 2022, eq. 5).

Score functions here have the signature ``score_fn(x, t) -> score`` with ``x`` ``(B, ...)`` and ``t`` a
Python float; :func:`mixture_score` (exact) and :func:`score_from_eps_model` (a trained eps-network)
build them.

Defaults, chosen for 2-D mixtures (scale ~1) and 8x8 digits in ``[-1, 1]`` (64 dims, pairwise
distances up to ~16):

* ``VPSDE(beta_min=0.1, beta_max=20)``: Song et al.'s values, the continuum limit of DDPM's linear
  schedule (``beta_i = beta(t_i) / T`` with ``T = 1000`` gives betas ``1e-4 .. 0.02``);
  ``alpha_bar(1) = exp(-10.05) = 4.3e-5``, so the prior ``N(0, I)`` is reached.
* ``VESDE(sigma_min=0.01, sigma_max=50)``: ``sigma_max`` above the largest pairwise data distance
  (Song & Ermon 2020, Technique 1) so ``N(0, sigma_max^2 I)`` is a good prior; ``sigma_min`` below
  the digits' grey-level spacing (0.125) and far below the mixtures' component widths.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import _checks as _c

from .schedule import Schedule

__all__ = ["VPSDE", "VESDE", "mixture_score", "score_from_eps_model", "tweedie_x0", "check_t"]


def check_dt(dt, name: str = "dt") -> float:
    """A time step ``dt`` in ``(0, 1]`` (``discretize`` steps forward from ``t - dt`` to ``t``)."""
    dt = _c.check_positive(dt, name)
    if dt > 1.0:
        raise ValueError(f"{name} must lie in (0, 1] (a step of continuous SDE time), got {dt}")
    return dt


def check_t(t, name: str = "t") -> float:
    """``t`` as a float in ``[0, 1]``, else a ValueError naming ``name``."""
    try:
        tf = float(t)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a float in [0, 1], got {type(t).__name__}") from None
    if not 0.0 <= tf <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1] (continuous SDE time), got {tf}")
    return tf


def tweedie_x0(x, score, *, mean_scale: float = 1.0, std: float):
    """Tweedie's formula for ``x = mean_scale x_0 + std eps``:
    ``E[x_0 | x] = (x + std^2 score) / mean_scale`` (Efron 2011; Song et al. 2021a, App. B).
    With ``mean_scale = 1`` and ``std = sigma`` it is NCSN's denoiser ``x + sigma^2 score``."""
    return (x + std * std * score) / mean_scale


class _LinearSDE:
    """What both SDEs share: everything follows from ``drift_coef``, ``diffusion``, ``mean_scale``
    and ``marginal_std``, which the subclasses define in closed form."""

    prior_std: float = 1.0

    # ------------------------------------------------------------------ noise coordinates
    def alpha_bar(self, t) -> float:
        """Signal fraction of the marginal after rescaling to unit total scale:
        ``mean_scale^2 / (mean_scale^2 + marginal_std^2)``."""
        m, s = self.mean_scale(t), self.marginal_std(t)
        return m * m / (m * m + s * s)

    def sigma(self, t) -> float:
        """VE-equivalent noise level ``marginal_std / mean_scale = sqrt((1 - alpha_bar) / alpha_bar)``."""
        return self.marginal_std(t) / self.mean_scale(t)

    # ------------------------------------------------------------------ drifts given a score
    def reverse_drift(self, x, score, t):
        """Drift of the reverse-time SDE ``f(x, t) - g(t)^2 score`` (Anderson 1982; Song et al. 2021a,
        eq. 6), to be integrated backwards in time: ``dx = [f - g^2 score] dt + g dw_bar``."""
        t = check_t(t)
        return self.drift_coef(t) * x - self.diffusion(t) ** 2 * score

    def pf_ode_drift(self, x, score, t):
        """Drift of the probability-flow ODE ``dx/dt = f(x, t) - g(t)^2 score / 2`` (Song et al. 2021a,
        eq. 13): its solutions have the same marginals as the SDE."""
        t = check_t(t)
        return self.drift_coef(t) * x - 0.5 * self.diffusion(t) ** 2 * score

    def x0_from_score(self, x, score, t):
        """Tweedie's denoised estimate ``E[x_0 | x_t] = (x_t + marginal_std^2 score) / mean_scale``
        (Efron 2011; Song et al. 2021a, App. B)."""
        t = check_t(t)
        return tweedie_x0(x, score, mean_scale=self.mean_scale(t), std=self.marginal_std(t))

    # ------------------------------------------------------------------ prior and time grid
    def prior_sample(self, shape, *, generator: torch.Generator | None = None, dtype=torch.float64,
                     device="cpu") -> torch.Tensor:
        """A sample of the prior ``N(0, prior_std^2 I)`` shaped ``(B, ...)``."""
        return self.prior_std * torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)

    @staticmethod
    def time_grid(n_steps: int, t_min: float = 1e-3) -> np.ndarray:
        """``n_steps + 1`` descending times, uniform from ``1`` to ``t_min`` (Song et al. 2021a's
        samplers); float64."""
        n_steps = _c.check_count(n_steps, "n_steps")
        if not 0.0 <= float(t_min) < 1.0:
            raise ValueError(f"t_min must lie in [0, 1), got {t_min}")
        return np.linspace(1.0, float(t_min), int(n_steps) + 1)

    def marginal(self, x0, t, noise):
        """``x_t = mean_scale(t) x_0 + marginal_std(t) noise``: the perturbation kernel in one jump."""
        t = check_t(t)
        return self.mean_scale(t) * x0 + self.marginal_std(t) * noise


@dataclass(frozen=True)
class VPSDE(_LinearSDE):
    """Variance-preserving SDE ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw`` with
    ``beta(t) = beta_min + t (beta_max - beta_min)`` (Song et al. 2021a, eq. 11; App. B): the
    continuum limit of the DDPM chain. Perturbation kernel (eq. 29):
    ``x_t = exp(-B(t)/2) x_0 + sqrt(1 - exp(-B(t))) eps`` with ``B(t) = int_0^t beta``."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self):
        if not 0.0 <= self.beta_min <= self.beta_max or not self.beta_max > 0:
            raise ValueError(f"need 0 <= beta_min <= beta_max and beta_max > 0, got "
                             f"beta_min={self.beta_min}, beta_max={self.beta_max}")

    def beta(self, t) -> float:
        """``beta(t) = beta_min + t (beta_max - beta_min)``."""
        return self.beta_min + check_t(t) * (self.beta_max - self.beta_min)

    def integrated_beta(self, t) -> float:
        """``B(t) = int_0^t beta(s) ds = beta_min t + (beta_max - beta_min) t^2 / 2``."""
        t = check_t(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def drift_coef(self, t) -> float:
        """``f(t) = -beta(t) / 2`` in ``f(x, t) = f(t) x``."""
        return -0.5 * self.beta(t)

    def diffusion(self, t) -> float:
        """``g(t) = sqrt(beta(t))``."""
        return math.sqrt(self.beta(t))

    def mean_scale(self, t) -> float:
        """``exp(-B(t) / 2) = sqrt(alpha_bar(t))``."""
        return math.exp(-0.5 * self.integrated_beta(t))

    def marginal_std(self, t) -> float:
        """``sqrt(1 - exp(-B(t)))`` (``-expm1`` keeps it accurate at small ``t``)."""
        return math.sqrt(-math.expm1(-self.integrated_beta(t)))

    def alpha_bar(self, t) -> float:
        """``alpha_bar(t) = exp(-B(t))``."""
        return math.exp(-self.integrated_beta(t))

    def discretize(self, t, dt):
        """The exact forward transition from ``t - dt`` to ``t`` as ``(drift_coef, diffusion)`` of a unit
        step ``x_t = (1 + drift_coef) x_{t-dt} + diffusion z``: DDPM's ``(sqrt(1 - beta_i) - 1, sqrt(beta_i))``
        with ``beta_i = 1 - exp(-int_{t-dt}^t beta) = beta(t) dt + O(dt^2)`` (Song et al. 2021a, eq. 10;
        their ``VPSDE.discretize`` uses the first-order ``beta(t) dt``, which exceeds 1 for coarse grids).
        The products of ``1 - beta_i`` telescope to :meth:`alpha_bar` exactly."""
        t, dt = check_t(t), check_dt(dt)
        t_prev = max(t - dt, 0.0)
        beta_i = -math.expm1(self.integrated_beta(t_prev) - self.integrated_beta(t))
        return math.sqrt(1.0 - beta_i) - 1.0, math.sqrt(beta_i)

    def to_schedule(self, T: int = 1000) -> Schedule:
        """The DDPM chain this SDE discretises: ``beta_i = beta(t_i) / T`` at ``t_i = (i + 1) / T``
        (Song et al. 2021a, App. B; ``t_index = i``). Its ``alpha_bar`` matches :meth:`alpha_bar` at
        ``t_i`` within ``O(1 / T)``."""
        from .schedule import _check_T

        T = _check_T(T)
        t = np.arange(1, T + 1, dtype=np.float64) / T
        betas = (self.beta_min + t * (self.beta_max - self.beta_min)) / T
        return Schedule.from_betas(betas, name=f"vp_sde(beta_min={self.beta_min:g}, beta_max={self.beta_max:g})")

    @classmethod
    def from_schedule(cls, schedule: Schedule, rtol: float = 1e-6) -> "VPSDE":
        """The VP SDE whose :meth:`to_schedule` gives ``schedule``: reads ``beta(t_i) = T beta_i`` and
        fits the line. Raises ValueError unless the betas are linear in ``t`` (e.g. cosine)."""
        T = schedule.T
        if T < 2:
            raise ValueError("from_schedule needs T >= 2 to read off a line")
        t = np.arange(1, T + 1, dtype=np.float64) / T
        b = schedule.betas * T
        slope, intercept = np.polyfit(t, b, 1)
        if np.max(np.abs(intercept + slope * t - b)) > rtol * np.max(b):
            raise ValueError(f"schedule {schedule.name!r} does not have betas linear in t, so it is not "
                             f"the discretisation of a VPSDE with linear beta(t)")
        return cls(beta_min=float(intercept), beta_max=float(intercept + slope))


@dataclass(frozen=True)
class VESDE(_LinearSDE):
    """Variance-exploding SDE ``dx = sqrt(d[sigma^2(t)]/dt) dw`` with geometric
    ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``, so ``g(t) = sigma(t) sqrt(2 log(sigma_max / sigma_min))``
    (Song et al. 2021a, eq. 9; App. B): the continuum limit of NCSN's noise levels.

    Convention (NCSN's, Song et al. 2021a App. B): ``x(0)`` is the data perturbed at ``sigma_min``, so
    the marginal at ``t`` is ``x_0 + sigma(t) eps`` exactly and the data's own noise level is
    ``sigma_min`` (0.01 by default, invisible at the scales used here)."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def __post_init__(self):
        if not 0.0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={self.sigma_min}, "
                             f"sigma_max={self.sigma_max}")

    @property
    def prior_std(self) -> float:
        """The prior is ``N(0, sigma_max^2 I)``."""
        return self.sigma_max

    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t) -> float:
        """``sigma(t) = sigma_min (sigma_max / sigma_min)^t``."""
        return self.sigma_min * math.exp(check_t(t) * self._log_ratio())

    def drift_coef(self, t) -> float:
        """``f(t) = 0``."""
        check_t(t)
        return 0.0

    def diffusion(self, t) -> float:
        """``g(t) = sigma(t) sqrt(2 log(sigma_max / sigma_min))``."""
        return self.sigma(t) * math.sqrt(2.0 * self._log_ratio())

    def mean_scale(self, t) -> float:
        check_t(t)
        return 1.0

    def marginal_std(self, t) -> float:
        """``sigma(t)``."""
        return self.sigma(t)

    def discretize(self, t, dt):
        """NCSN's step from ``t - dt`` to ``t``, ``x_t = x_{t-dt} + sqrt(sigma(t)^2 - sigma(t-dt)^2) z``,
        as ``(drift_coef, diffusion) = (0, sqrt(sigma(t)^2 - sigma(t - dt)^2))`` (Song et al. 2021a, eq. 8)."""
        s, s_prev = self.sigma(t), self.sigma(max(check_t(t) - check_dt(dt), 0.0))
        return 0.0, math.sqrt(s * s - s_prev * s_prev)

    def sigmas(self, n: int) -> np.ndarray:
        """NCSN's ``n`` noise levels: geometric from ``sigma_max`` down to ``sigma_min`` (Song & Ermon
        2019, Sec. 4.2) = ``sigma(t)`` on ``n`` uniform times from 1 to 0; float64, descending."""
        n = _c.check_count(n, "n", low=2)
        return np.array([self.sigma(t) for t in np.linspace(1.0, 0.0, int(n))])


# ============================================================================ score functions
def mixture_score(mixture, sde):
    """The exact score of the SDE's marginal at ``t`` when the data are ``mixture``
    (a :class:`minidiff.data.GaussianMixture`): ``score_fn(x, t)`` with ``x`` ``(N, d)``, ``t`` a float.
    The marginal is ``mixture.noised(mean_scale(t), marginal_std(t))``."""

    def score_fn(x, t):
        t = check_t(t)
        return mixture.noised(sde.mean_scale(t), sde.marginal_std(t)).score(x)

    return score_fn


def score_from_eps_model(model, schedule: Schedule):
    """``score_fn(x, t)`` from an eps-prediction network ``model(x, t_index_tensor)`` trained on
    ``schedule``: the nearest ``t_index`` to ``t`` (``t = (t_index + 1) / T``) and
    ``score = -eps / sqrt(1 - alpha_bar)`` (Song et al. 2021a, eq. 7 / Vincent 2011).
    Use with ``VPSDE.from_schedule(schedule)`` so the SDE and the network agree on ``alpha_bar``."""
    from .forward import eps_to_score

    def score_fn(x, t):
        t = check_t(t)
        t_index = int(schedule.t_to_t_index(t)) if t > 0 else 0
        t_vec = _c.t_index_vector(t_index, x.shape[0], device=x.device)
        eps = model(x, t_vec)
        return eps_to_score(eps, float(schedule.alpha_bar[t_index]))

    return score_fn
