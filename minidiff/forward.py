"""The forward (noising) process and conversions between what a network may predict.

References: Ho et al. 2020 ("Denoising Diffusion Probabilistic Models"), eqs. 4, 6, 7;
Salimans & Ho 2022 ("Progressive Distillation"), Sec. 4 and App. D for ``v``.

Conversions take ``alpha_bar`` (a tensor broadcastable against ``x_t``) so each formula is written
once and serves every schedule; :meth:`minidiff.schedule.Schedule.at` gives it at a ``t_index``.
"""
from __future__ import annotations

import torch

from . import _checks as _c
from .schedule import Schedule, append_dims

__all__ = [
    "q_sample", "q_posterior", "check_batch",
    "eps_to_x0", "x0_to_eps", "v_to_eps", "eps_to_v", "v_to_x0", "eps_to_score", "score_to_eps",
    "convert",
]


def check_batch(x, name: str = "x", min_ndim: int = 1):
    """Raise unless ``x`` is a floating torch tensor with at least ``min_ndim`` dims (batch first)
    (:func:`minidiff._checks.check_batch`)."""
    return _c.check_batch(x, name, min_ndim)


def q_sample(x0, t_index, noise, schedule: Schedule, *, backend: str | None = None):
    """Sample ``x_t ~ q(x_t | x_0)`` in one jump (Ho et al. 2020, eq. 4):
    ``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps``.

    ``x0``: ``(B, ...)`` float tensor; ``t_index``: int or ``(B,)`` integers in ``[0, T)``;
    ``noise``: a tensor shaped like ``x0`` or an int seed (noise then drawn in-kernel from Philox).
    ``backend``: ``"numba"`` (default, fused kernel) or ``"torch"`` (reference).
    """
    from . import backend as _backend

    check_batch(x0, "x0")  # a torch tensor here; t_index and a noise tensor are checked by the backend, once
    if not isinstance(noise, torch.Tensor):
        _c.check_count(noise, "noise (a tensor shaped like x0, or an int seed)", low=0)  # True is no seed
    return _backend.q_sample(x0, t_index, noise, schedule, backend=backend)


def q_posterior(x0, x_t, t_index, schedule: Schedule):
    """Mean and variance of ``q(x_{t-1} | x_t, x_0)`` (Ho et al. 2020, eqs. 6-7):
    ``mu = sqrt(ab_{t-1}) beta_t / (1 - ab_t) x_0 + sqrt(alpha_t) (1 - ab_{t-1}) / (1 - ab_t) x_t``,
    ``var = (1 - ab_{t-1}) / (1 - ab_t) beta_t``. At ``t_index = 0`` the variance is 0 and the mean is ``x_0``.
    Returns ``(mean, variance)`` with variance shaped ``(B, 1, ..., 1)``.
    """
    check_batch(x0, "x0")
    check_batch(x_t, "x_t")
    if x0.shape != x_t.shape:
        raise ValueError(f"x0 and x_t must have the same shape, got {tuple(x0.shape)} and {tuple(x_t.shape)}")
    t_index = _c.t_index_vector(t_index, x0.shape[0], schedule.T).numpy()
    ab, ab_prev = schedule.at("alpha_bar", t_index, x0), schedule.at("alpha_bar_prev", t_index, x0)
    beta, alphas = schedule.at("betas", t_index, x0), schedule.at("alphas", t_index, x0)  # alphas = 1 - beta
    mean = (ab_prev.sqrt() * beta / (1 - ab)) * x0 + (alphas.sqrt() * (1 - ab_prev) / (1 - ab)) * x_t
    return mean, schedule.at("posterior_variance", t_index, x0)


# --------------------------------------------------------------------------- conversions
# x_t = sqrt(ab) x0 + sqrt(1-ab) eps;  v = sqrt(ab) eps - sqrt(1-ab) x0;  score = -eps / sqrt(1-ab)

def _ab(alpha_bar, like):
    ab = torch.as_tensor(alpha_bar, dtype=like.dtype, device=like.device)
    return append_dims(ab, like.ndim) if ab.ndim else ab


def eps_to_x0(x_t, eps, alpha_bar):
    """``x0 = (x_t - sqrt(1-ab) eps) / sqrt(ab)`` (Ho et al. 2020, eq. 15)."""
    ab = _ab(alpha_bar, x_t)
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


def x0_to_eps(x_t, x0, alpha_bar):
    """``eps = (x_t - sqrt(ab) x0) / sqrt(1-ab)``."""
    ab = _ab(alpha_bar, x_t)
    return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()


def v_to_eps(x_t, v, alpha_bar):
    """``eps = sqrt(1-ab) x_t + sqrt(ab) v`` (Salimans & Ho 2022, App. D)."""
    ab = _ab(alpha_bar, x_t)
    return (1 - ab).sqrt() * x_t + ab.sqrt() * v


def v_to_x0(x_t, v, alpha_bar):
    """``x0 = sqrt(ab) x_t - sqrt(1-ab) v`` (Salimans & Ho 2022, eq. 11)."""
    ab = _ab(alpha_bar, x_t)
    return ab.sqrt() * x_t - (1 - ab).sqrt() * v


def eps_to_v(x_t, eps, alpha_bar):
    """``v = sqrt(ab) eps - sqrt(1-ab) x0`` with ``x0`` from :func:`eps_to_x0`."""
    ab = _ab(alpha_bar, x_t)
    return ab.sqrt() * eps - (1 - ab).sqrt() * eps_to_x0(x_t, eps, alpha_bar)


def eps_to_score(eps, alpha_bar):
    """``grad log q_t(x_t) = -eps / sqrt(1-ab)`` (Vincent 2011; Song et al. 2021a, eq. 7 for VP)."""
    return -eps / (1 - _ab(alpha_bar, eps)).sqrt()


def score_to_eps(score, alpha_bar):
    """``eps = -sqrt(1-ab) score``."""
    return -(1 - _ab(alpha_bar, score)).sqrt() * score


def convert(pred, x_t, alpha_bar, *, source: str, target: str = "eps"):
    """Convert a network output ``pred`` of kind ``source`` to ``target``; kinds: eps, x0, v, score."""
    kinds = ("eps", "x0", "v", "score")
    if source not in kinds or target not in kinds:
        raise ValueError(f"source and target must be one of {kinds}, got {source!r} -> {target!r}")
    to_eps = {
        "eps": lambda: pred,
        "x0": lambda: x0_to_eps(x_t, pred, alpha_bar),
        "v": lambda: v_to_eps(x_t, pred, alpha_bar),
        "score": lambda: score_to_eps(pred, alpha_bar),
    }
    if source == target:
        return pred
    eps = to_eps[source]()
    from_eps = {
        "eps": lambda: eps,
        "x0": lambda: eps_to_x0(x_t, eps, alpha_bar),
        "v": lambda: eps_to_v(x_t, eps, alpha_bar),
        "score": lambda: eps_to_score(eps, alpha_bar),
    }
    return from_eps[target]()
