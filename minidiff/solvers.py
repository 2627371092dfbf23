"""Higher-order fast solvers of the diffusion ODE, as generators of :class:`minidiff.samplers.Step`.

DPM-Solver++(2M) (Lu, Zhou, Bao, Chen, Li & Zhu 2022b, "DPM-Solver++: Fast Solver for Guided Sampling
of Diffusion Probabilistic Models", Algorithm 2) integrates the probability-flow ODE written in the
half log-SNR ``lambda = log(alpha_t / sigma_t)`` with ``alpha_t = sqrt(alpha_bar)``, ``sigma_t = sqrt(1 - alpha_bar)``
(the coefficients of ``x_t = alpha_t x_0 + sigma_t eps``; ``_s`` marks the step's start, ``_t`` its end, as in the paper).
In data-prediction form the linear part is solved exactly (variation of constants) and only the
denoiser ``x0_hat(x, lambda)`` is approximated, by a line through the last two evaluations:

    x_t = (sigma_t / sigma_s) x_s - alpha_t expm1(-h) D,    h = lambda_t - lambda_s,
    D   = (1 + 1 / (2 r)) x0_hat_s - 1 / (2 r) x0_hat_prev,  r = h_prev / h.

With ``D = x0_hat_s`` (the first step) this is exactly DDIM (eta = 0) -- DDIM is DPM-Solver++(1).
One model evaluation per step (a multistep method reuses the previous one), second order in ``h``.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch

from . import _checks
from .samplers import Step, _check_count, _check_x, _checked, _evaluate, _t_index_vector
from .schedule import Schedule

__all__ = ["dpm_solver_2m"]


def dpm_solver_2m(model, x_T, schedule: Schedule, n_steps: int, *, generator: torch.Generator | None = None,
                  clip_x0: float | None = None) -> Iterator[Step]:
    """DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2; data prediction, multistep, second order) on the
    ``n_steps`` descending indices ``schedule.timesteps(n_steps)``, then to the data (``alpha_bar = 1``).

    ``model(x, t_index) -> eps`` with ``t_index`` a ``(B,)`` int64 tensor (as for :func:`minidiff.samplers.ddim`);
    ``x_T``: ``(B, ...)`` from ``N(0, I)``. The first step is first order (no previous evaluation yet);
    the last step, to ``sigma_t = 0`` where ``lambda = +inf``, is first order too, so ``x`` becomes the final
    denoised estimate (the "lower order final" step of the authors' code and of k-diffusion's
    ``sample_dpmpp_2m``). ``n_steps`` model evaluations; deterministic (``generator`` is accepted for a
    uniform sampler signature and not used). ``clip_x0``: clamp ``x0_hat`` to ``[-clip_x0, clip_x0]``
    (static thresholding, Lu et al. 2022b Sec. 5). Yields ``n_steps`` records with ``t_index`` and ``x0``.
    """
    x_T = _check_x(x_T, "x_T")
    n_steps = _check_count(n_steps, "n_steps", high=schedule.T)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if clip_x0 is not None:
        clip_x0 = _checks.check_positive(clip_x0, "clip_x0")
    return _dpm_solver_2m(model, x_T, schedule, n_steps, clip_x0)


def _alpha_t_sigma_t_lambda(schedule: Schedule, t_index: int) -> tuple[float, float, float]:
    """``(alpha_t, sigma_t, lambda)`` at ``t_index`` in float64; ``t_index = -1`` is the data (lambda = inf)."""
    if t_index < 0:
        return 1.0, 0.0, math.inf
    ab = float(schedule.alpha_bar[t_index])
    return math.sqrt(ab), math.sqrt(1.0 - ab), 0.5 * math.log(ab / (1.0 - ab))


def _dpm_solver_2m(model, x, schedule, n_steps, clip_x0):
    t_indices = schedule.timesteps(n_steps).tolist()
    t_indices_next = t_indices[1:] + [-1]
    x0_prev, h_prev = None, None
    for i, (t_index_s, t_index_t) in enumerate(zip(t_indices, t_indices_next)):
        alpha_s, sigma_s, lam_s = _alpha_t_sigma_t_lambda(schedule, t_index_s)
        alpha_t, sigma_t, lam_t = _alpha_t_sigma_t_lambda(schedule, t_index_t)
        eps = _evaluate(model, "model", x, _t_index_vector(t_index_s, x), index=i)  # (B, ...)
        x0 = (x - sigma_s * eps) / alpha_s                             # data prediction
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
        if t_index_t < 0:  # to the data: sigma_t = 0, expm1(-inf) = -1, first order
            x_next, h = x0, math.inf
        else:
            h = lam_t - lam_s
            if x0_prev is None:  # Alg. 2, line 3: first order (= DDIM)
                D = x0
            else:                # Alg. 2, lines 5-6
                r = h_prev / h
                D = (1.0 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
            x_next = (sigma_t / sigma_s) * x - (alpha_t * math.expm1(-h)) * D
        _checked(x_next, i, f"t_index={t_index_s}")
        yield Step(index=i, x=x_next, x0=x0, t_index=t_index_s)
        x, x0_prev, h_prev = x_next, x0, h
