"""The true reverse kernel of the Gaussian chain on discrete 1-D data, and DDPM's Gaussian stand-in.

For data taking finitely many values ``s_k`` (weights ``w_k``) the true reverse kernel is a mixture
(Sohl-Dickstein et al. 2015; Ho et al. 2020, eqs. 6-7):

``q(x_{t-1} | x_t) = sum_k p(x_0 = s_k | x_t) N(x_{t-1}; mu~_t(x_t, s_k), beta~_t)``.

DDPM samples ``N(mu~_t(x_t, x0_hat), beta~_t)`` with ``x0_hat`` a network's estimate of ``x_0``; the best
possible network gives ``x0_hat = E[x_0 | x_t]`` (Tweedie). Because ``mu~_t`` is linear in ``x_0`` this
matches the true kernel's **mean** exactly, but not its variance: by the law of total variance

``Var q(x_{t-1} | x_t) = beta~_t + c_t^2 Var(x_0 | x_t)``, ``c_t = sqrt(ab_{t-1}) beta_t / (1 - ab_t)``,

and the kernel is a mixture, not a Gaussian. The missing part vanishes as ``beta_t -> 0`` (Feller 1949,
cited by Sohl-Dickstein et al. 2015), so DDPM's kernel is accurate for many small steps only.
"""
from __future__ import annotations

import math

import torch

from .forward import q_posterior
from .markov import _check_support, data_posterior
from .schedule import Schedule

__all__ = ["x0_posterior_moments", "true_reverse_moments", "plugin_reverse_moments", "plugin_reverse_step",
           "plugin_reverse_chain"]


def _as_1d(x_t) -> torch.Tensor:
    x = torch.as_tensor(x_t, dtype=torch.float64)
    if x.ndim != 1:
        raise ValueError(f"x_t must be a 1-D tensor of points (N,), got shape {tuple(x.shape)}")
    return x


def x0_posterior_moments(x_t, t_index: int, schedule: Schedule, support, weights):
    """``E[x_0 | x_t]`` and ``Var(x_0 | x_t)`` for discrete 1-D data, from :func:`minidiff.markov.data_posterior`.
    ``x_t``: ``(N,)`` -> two ``(N,)`` float64 tensors."""
    s, _ = _check_support(support, weights)
    x = _as_1d(x_t)
    post = data_posterior(x, t_index, schedule, support, weights)      # (N, K)
    mean = post @ s
    var = (post @ (s * s) - mean * mean).clamp_min(0.0)
    return mean, var


def _posterior_x0_coef(t_index: int, schedule: Schedule) -> float:
    """``c_t = sqrt(ab_{t-1}) beta_t / (1 - ab_t)``, the weight of ``x_0`` in ``mu~_t`` (Ho et al. 2020, eq. 7)."""
    return math.sqrt(schedule.alpha_bar_prev[t_index]) * schedule.betas[t_index] / (1.0 - schedule.alpha_bar[t_index])


def plugin_reverse_moments(x_t, t_index: int, schedule: Schedule, support, weights):
    """DDPM's reverse kernel with the Bayes-optimal estimate plugged in: mean ``mu~_t(x_t, E[x_0 | x_t])`` and
    variance ``beta~_t`` (Ho et al. 2020, eqs. 6-7 and Alg. 2 with ``sigma_t^2 = beta~_t``). ``(N,)`` each."""
    x = _as_1d(x_t)
    x0_hat, _ = x0_posterior_moments(x, t_index, schedule, support, weights)
    mean, var = q_posterior(x0_hat[:, None], x[:, None], t_index, schedule)
    return mean[:, 0], var[:, 0].expand(x.shape[0])


def true_reverse_moments(x_t, t_index: int, schedule: Schedule, support, weights):
    """Mean and variance of the true mixture kernel ``q(x_{t-1} | x_t)``: the plug-in mean (``mu~_t`` is linear
    in ``x_0``) and ``beta~_t + c_t^2 Var(x_0 | x_t)`` (law of total variance). ``(N,)`` each."""
    x = _as_1d(x_t)
    x0_mean, x0_var = x0_posterior_moments(x, t_index, schedule, support, weights)
    mean, var = q_posterior(x0_mean[:, None], x[:, None], t_index, schedule)
    return mean[:, 0], var[:, 0] + _posterior_x0_coef(t_index, schedule) ** 2 * x0_var


def plugin_reverse_step(x_t, t_index: int, schedule: Schedule, support, weights, *,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """One DDPM step with the exact ``x0_hat = E[x_0 | x_t]``: ``x_{t-1} ~ N(mu~_t(x_t, x0_hat), beta~_t)``.
    At ``t_index = 0`` returns ``x0_hat`` itself (no noise, Ho et al. 2020, Alg. 2)."""
    mean, var = plugin_reverse_moments(x_t, t_index, schedule, support, weights)
    if t_index == 0:
        return mean
    z = torch.randn(mean.shape, generator=generator, dtype=torch.float64)
    return mean + var.sqrt() * z


def plugin_reverse_chain(x_T, schedule: Schedule, support, weights, *,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Run :func:`plugin_reverse_step` from ``t_index = T-1`` to the data: DDPM with the Bayes-optimal network.
    Returns ``(T + 1, N)`` ordered like :func:`minidiff.markov.exact_reverse_chain` (row 0 = the samples)."""
    x = _as_1d(x_T)
    out = [x]
    for t_index in reversed(range(schedule.T)):
        x = plugin_reverse_step(x, t_index, schedule, support, weights, generator=generator)
        out.append(x)
    return torch.stack(out[::-1])
