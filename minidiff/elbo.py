"""The terms of DDPM's variational bound, evaluated: ``L = L_T + sum_t L_{t-1} + L_0`` (Ho et al. 2020, eq. 5).

* ``L_T = KL(q(x_T | x_0) || N(0, I))`` has no parameters and is computed exactly (:func:`prior_kl`).
* ``L_{t-1} = E_q KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))`` for ``t_index >= 1``: a KL between
  two Gaussians (:func:`gaussian_kl`), one ``x_t`` drawn per example and step.
* ``L_0 = -E_q log p_theta(x_0 | x_1)`` with Ho et al.'s discretised Gaussian decoder (eq. 13) on the
  data's grid (:func:`discretized_gaussian_nll`), so the bound is on the *discrete* ``-log P(x_0)``: no
  dequantisation offset is needed.

All terms are in nats per example (summed over dimensions); :attr:`VLBTerms.bits_per_dim` divides by
``D ln 2``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .forward import eps_to_x0, q_posterior, q_sample
from .schedule import Schedule

__all__ = ["gaussian_kl", "prior_kl", "discretized_gaussian_nll", "VLBTerms", "vlb_terms"]


def gaussian_kl(mean_q, var_q, mean_p, var_p):
    """Elementwise ``KL(N(mean_q, var_q) || N(mean_p, var_p))`` in nats (Ho et al. 2020, eq. 5's terms)."""
    mean_q, var_q, mean_p, var_p = (torch.as_tensor(v, dtype=torch.float64) for v in (mean_q, var_q, mean_p, var_p))
    if torch.any(var_q <= 0) or torch.any(var_p <= 0):
        raise ValueError("var_q and var_p must be positive")
    return 0.5 * (torch.log(var_p / var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0)


def prior_kl(x0, schedule: Schedule) -> torch.Tensor:
    """``L_T = KL(q(x_T | x_0) || N(0, I))`` per example, in nats, exactly:
    ``q(x_T | x_0) = N(sqrt(ab_T) x_0, (1 - ab_T) I)`` (Ho et al. 2020, eqs. 4-5). ``x0``: ``(B, ...)`` -> ``(B,)``."""
    x0 = torch.as_tensor(x0, dtype=torch.float64)
    if x0.ndim < 1 or x0.shape[0] == 0:
        raise ValueError(f"x0 must be a non-empty batch (B, ...), got shape {tuple(x0.shape)}")
    ab = float(schedule.alpha_bar[-1])
    kl = gaussian_kl(math.sqrt(ab) * x0, torch.full_like(x0, 1.0 - ab), torch.zeros_like(x0), torch.ones_like(x0))
    return kl.reshape(x0.shape[0], -1).sum(1)


def _std_normal_cdf(x):
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def discretized_gaussian_nll(x0, mean, std, *, bin_width: float, low: float = -1.0, high: float = 1.0):
    """``-log P(x_0)`` elementwise (nats) for ``N(mean, std^2)`` integrated over the bin of width ``bin_width``
    around each grid value, the outermost bins extended to ``-inf`` / ``+inf`` (Ho et al. 2020, eq. 13)."""
    x0, mean, std = (torch.as_tensor(v, dtype=torch.float64) for v in (x0, mean, std))
    if bin_width <= 0:
        raise ValueError(f"bin_width must be positive, got {bin_width}")
    if torch.any(std <= 0):
        raise ValueError("std must be positive")
    half = 0.5 * bin_width
    upper = torch.where(x0 >= high - 1e-6, torch.ones_like(x0), _std_normal_cdf((x0 + half - mean) / std))
    lower = torch.where(x0 <= low + 1e-6, torch.zeros_like(x0), _std_normal_cdf((x0 - half - mean) / std))
    return -torch.log((upper - lower).clamp_min(1e-300))


@dataclass(frozen=True)
class VLBTerms:
    """The bound's terms per example, in nats: ``prior`` (L_T), ``steps`` (the estimate of sum_t L_{t-1}),
    ``decoder`` (L_0); ``dim`` = D, ``t_indices`` the steps evaluated (the sum is scaled from them)."""

    prior: torch.Tensor
    steps: torch.Tensor
    decoder: torch.Tensor
    dim: int
    t_indices: tuple

    @property
    def total(self) -> torch.Tensor:
        return self.prior + self.steps + self.decoder

    def bits_per_dim(self, term: str = "total") -> tuple[float, float]:
        """Mean and standard error over the examples of one term (``prior``, ``steps``, ``decoder``, ``total``)
        in bits/dim."""
        if term not in ("prior", "steps", "decoder", "total"):
            raise ValueError(f"term must be 'prior', 'steps', 'decoder' or 'total', got {term!r}")
        v = getattr(self, term) / (self.dim * math.log(2.0))
        se = float(v.std()) / math.sqrt(v.numel()) if v.numel() > 1 else float("nan")
        return float(v.mean()), se


def vlb_terms(eps_model, x0, schedule: Schedule, *, bin_width: float, n_steps: int | None = None,
              variance: str = "beta_tilde", generator: torch.Generator | None = None) -> VLBTerms:
    """Evaluate ``L_T``, ``sum_{t} L_{t-1}`` and ``L_0`` of Ho et al. (2020, eq. 5) for ``eps_model`` on ``x0``.

    ``eps_model(x_t, t_index (B,)) -> eps``. ``variance``: the model's ``sigma_t^2`` for ``t_index >= 1``,
    ``"beta_tilde"`` (what :func:`minidiff.samplers.ddpm` uses) or ``"beta"``; the decoder ``p(x_0 | x_1)``
    has mean ``x0_hat`` (the posterior mean at ``t_index = 0``) and variance ``beta_1`` (``beta~_1 = 0``).
    ``n_steps``: evaluate ``L_{t-1}`` on that many evenly spaced ``t_index`` in ``1..T-1`` and scale the
    mean up to the full sum (``None``: every step). One noise draw per example and step.
    """
    if variance not in ("beta_tilde", "beta"):
        raise ValueError(f"variance must be 'beta_tilde' or 'beta', got {variance!r}")
    x0 = torch.as_tensor(x0, dtype=torch.float64)
    if x0.ndim < 2 or x0.shape[0] == 0:
        raise ValueError(f"x0 must be a non-empty batch (B, ...), got shape {tuple(x0.shape)}")
    T, B, D = schedule.T, x0.shape[0], x0[0].numel()
    if n_steps is None:
        t_indices = np.arange(1, T)
    else:
        if not 1 <= int(n_steps) <= T - 1:
            raise ValueError(f"n_steps must be in 1..{T - 1}, got {n_steps}")
        t_indices = np.unique(np.round(np.linspace(1, T - 1, int(n_steps))).astype(np.int64))
    g = generator or torch.Generator().manual_seed(0)

    def x0_hat(i: int):
        noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        x_t = q_sample(x0, i, noise, schedule, backend="torch")
        eps = torch.as_tensor(eps_model(x_t.to(torch.float32), torch.full((B,), i)), dtype=torch.float64)
        return x_t, eps_to_x0(x_t, eps, float(schedule.alpha_bar[i]))

    per_step = []
    for i in t_indices:
        x_t, x0_est = x0_hat(int(i))
        mu_q, var_q = q_posterior(x0, x_t, int(i), schedule)
        mu_p, _ = q_posterior(x0_est, x_t, int(i), schedule)
        var_p = schedule.posterior_variance[i] if variance == "beta_tilde" else schedule.betas[i]
        kl = gaussian_kl(mu_q, var_q.expand_as(mu_q), mu_p, torch.full_like(mu_q, float(var_p)))
        per_step.append(kl.reshape(B, -1).sum(1))
    steps = torch.stack(per_step).mean(0) * (T - 1)
    _, x0_est = x0_hat(0)
    decoder = discretized_gaussian_nll(x0, x0_est, math.sqrt(schedule.betas[0]), bin_width=bin_width)
    return VLBTerms(prior=prior_kl(x0, schedule), steps=steps, decoder=decoder.reshape(B, -1).sum(1), dim=D,
                    t_indices=tuple(int(i) for i in t_indices))
