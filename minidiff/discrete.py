"""Discrete diffusion: Markov chains on K categories, per token (Austin et al. 2021, D3PM).

Notebook 12 uses these; notebook 02's finite chains are the same objects.

A sequence ``x`` of ``L`` tokens in ``{0..K-1}`` is corrupted token by token by a row-stochastic
matrix per step, ``q(x_t | x_{t-1}) = Cat(x_{t-1} Q_t)`` (rows = from, columns = to, as in
:mod:`minidiff.markov`). Both kernels here have the D3PM form

    Q_t = (1 - beta_t) I + beta_t 1 pi^T                                    (Austin et al. 2021, App. A.2)

with ``pi`` the uniform law (``"uniform"``) or the point mass on the mask token ``K-1``
(``"absorbing"``). Because ``pi^T 1 = 1`` a product of such matrices keeps the form, so

    Qbar_t = Q_1 ... Q_t = alpha_bar_t I + (1 - alpha_bar_t) 1 pi^T,    alpha_bar_t = prod (1 - beta_s)

and ``q(x_t | x_0) = alpha_bar_t onehot(x_0) + (1 - alpha_bar_t) pi`` (:func:`q_probs`), ``pi`` being
the stationary law: ``pi Q_t = pi`` for every ``t``. Time indices follow :mod:`minidiff.schedule`:
``t_index = i`` is the state after ``i + 1`` steps, with ``alpha_bar[i]``; ``alpha_bar_prev`` is 1 at
``t_index = 0`` (the data).

The posterior ``q(x_{t-1} | x_t, x_0) = Q_t[:, x_t] * Qbar_{t-1}[x_0, :] / Qbar_t[x_0, x_t]``
(Austin et al. 2021, eq. 3) is :func:`posterior_probs`; the model's reverse step mixes it over its
prediction of ``x_0``, ``p(x_{t-1} | x_t) = sum_k p(x_0 = k | x_t) q(x_{t-1} | x_t, x_0 = k)``
(:func:`reverse_probs`; with the exact ``p(x_0 | x_t)`` this is the exact one-token reverse kernel).

Losses: the bound's term ``KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))`` (:func:`vb_kl`, D3PM
eq. 1) and, for the absorbing kernel, its closed form: at a masked token the KL equals
``w_t (-log p(x_0 | x_t))`` with ``w_t = (alpha_bar_{t-1} - alpha_bar_t) / (1 - alpha_bar_t)``,
and 0 at an unmasked one (:func:`masked_weight`, :func:`masked_diffusion_loss`; Sahoo et al. 2024,
eq. 8-11; Shi et al. 2024, eq. 5). For ``alpha_bar_t = 1 - t / T``
(step ``t = t_index + 1``), ``w_t = 1 / t``: as an average over a uniform step the bound weighs the cross-entropy by
``T w_t = T / t = 1 / tau`` at the continuous time ``tau = t / T``, MDLM's and MD4's ``1 / tau``.

Samplers are generators of frozen :class:`minidiff.samplers.Step` records: :func:`ancestral` (any
kernel, D3PM Alg. of eq. 4) and :func:`unmask` (absorbing: reveal masked tokens in a chosen order,
a chosen number per step). Categorical draws go through :func:`minidiff.backend.categorical`
(Gumbel-max on counter-based Philox noise, so both backends give the same tokens).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from . import _checks as _c
from .samplers import Step

__all__ = [
    "KINDS", "ORDERS", "DiscreteSchedule", "stationary", "transition_matrix", "q_probs", "q_sample",
    "posterior_probs", "reverse_probs", "vb_kl", "masked_weight", "masked_diffusion_loss",
    "MaskedDiffusionObjective", "ancestral", "unmask", "TokenTable", "tv_interval", "tv_floor", "wilson_interval",
]

KINDS = ("uniform", "absorbing")
ORDERS = ("random", "confidence", "left_to_right")


# ============================================================================ kernels and schedule
def stationary(kind: str, K: int) -> np.ndarray:
    """``pi`` of a kernel: uniform ``1/K``, or the point mass on the mask token ``K-1`` (absorbing)."""
    _check_kind(kind)
    _check_K(K, kind)
    if kind == "uniform":
        return np.full(K, 1.0 / K)
    pi = np.zeros(K)
    pi[K - 1] = 1.0
    return pi


def transition_matrix(kind: str, K: int, beta: float) -> np.ndarray:
    """``Q = (1 - beta) I + beta 1 pi^T`` (Austin et al. 2021, App. A.2.1 uniform, A.2.2 absorbing):
    ``Q[i, j] = q(x_t = j | x_{t-1} = i)``, float64 ``(K, K)``."""
    if not (0.0 <= float(beta) <= 1.0):
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    return (1.0 - beta) * np.eye(K) + beta * np.outer(np.ones(K), stationary(kind, K))


def _check_kind(kind):
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _check_K(K, kind):
    """``K`` states: at least 2, or 3 for the absorbing kernel (which counts the mask token)."""
    return _c.check_count(K, "K", 3 if kind == "absorbing" else 2)


@dataclass(frozen=True, eq=False)
class DiscreteSchedule:
    """A corruption schedule on ``K`` categories: ``alpha_bar[t_index]`` (float64 ``(T,)``, strictly
    decreasing from at most 1) and the kernel ``kind``. For ``"absorbing"`` the last category
    ``K-1`` is the mask token and the data use ``0..K-2``."""

    kind: str
    K: int
    alpha_bar: np.ndarray

    def __post_init__(self):
        _check_kind(self.kind)
        _check_K(self.K, self.kind)
        ab = np.asarray(self.alpha_bar, dtype=np.float64)
        if ab.ndim != 1 or ab.size < 1:
            raise ValueError(f"alpha_bar must be a 1-d array with T >= 1 entries, got shape {ab.shape}")
        prev = np.concatenate([[1.0], ab[:-1]])
        if not (np.all(np.isfinite(ab)) and ab.min() >= 0 and np.all(ab <= prev) and ab[0] < 1):
            raise ValueError("alpha_bar must be finite, in [0, 1), non-increasing (alpha_bar[0] < 1)")
        object.__setattr__(self, "alpha_bar", ab)

    @classmethod
    def linear(cls, T: int, K: int, kind: str = "absorbing") -> "DiscreteSchedule":
        """``alpha_bar_t = 1 - t/T``, ``t = t_index + 1``: for the absorbing kernel this is
        ``beta_t = 1 / (T - t + 1)`` (Austin et al. 2021, Sec. 4; Sohl-Dickstein et al. 2015),
        every token masked at ``t = T``."""
        T = _check_int(T, "T")
        return cls(kind, K, 1.0 - np.arange(1, T + 1) / T)

    @classmethod
    def cosine(cls, T: int, K: int, kind: str = "uniform", s: float = 0.008) -> "DiscreteSchedule":
        """``alpha_bar_t = cos(pi/2 (t/T + s)/(1 + s)) / cos(pi/2 s/(1 + s))`` (Nichol & Dhariwal 2021,
        eq. 17, used by D3PM for the uniform kernel), ending at 0."""
        T = _check_int(T, "T")
        f = np.cos(0.5 * np.pi * (np.arange(1, T + 1) / T + s) / (1 + s))
        ab = f / math.cos(0.5 * math.pi * s / (1 + s))
        return cls(kind, K, np.where(ab < 1e-12, 0.0, ab))  # cos(pi/2) rounds to 6e-17: make it 0

    @property
    def T(self) -> int:
        return self.alpha_bar.size

    @property
    def mask_id(self) -> int | None:
        return self.K - 1 if self.kind == "absorbing" else None

    @property
    def data_K(self) -> int:
        """The number of data categories (``K - 1`` for absorbing: the mask is not data)."""
        return self.K - 1 if self.kind == "absorbing" else self.K

    @property
    def pi(self) -> np.ndarray:
        return stationary(self.kind, self.K)

    def alpha_bar_prev(self, t_index: int) -> float:
        return 1.0 if t_index == 0 else float(self.alpha_bar[t_index - 1])

    def beta(self, t_index: int) -> float:
        """``beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}`` (1 once ``alpha_bar_{t-1} = 0``)."""
        t_index = self._t_index(t_index)
        prev = self.alpha_bar_prev(t_index)
        return 1.0 if prev == 0 else 1.0 - float(self.alpha_bar[t_index]) / prev

    def Q(self, t_index: int) -> np.ndarray:
        """The one-step matrix ``Q_t`` from the previous state to ``t_index``."""
        return transition_matrix(self.kind, self.K, self.beta(t_index))

    def Q_bar(self, t_index: int) -> np.ndarray:
        """``Qbar_t = alpha_bar_t I + (1 - alpha_bar_t) 1 pi^T``; ``t_index = -1`` gives ``I``."""
        ab = 1.0 if t_index == -1 else float(self.alpha_bar[self._t_index(t_index)])
        return ab * np.eye(self.K) + (1.0 - ab) * np.outer(np.ones(self.K), self.pi)

    def _t_index(self, t_index) -> int:
        return _c.check_index(t_index, "t_index", self.T)


def _check_int(n, name, low=1):
    return _c.check_count(n, name, low)


# ============================================================================ closed forms
def _tokens(x, K: int, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(x).__name__}")
    if x.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16):
        raise TypeError(f"{name} must hold integer token ids, got {x.dtype}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= K):
        raise ValueError(f"{name} must hold token ids in [0, {K - 1}], got range [{int(x.min())}, {int(x.max())}]")
    return x.long()


def _probs(p, K: int, name: str) -> torch.Tensor:
    if not isinstance(p, torch.Tensor) or not p.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor of probabilities")
    if p.shape[-1] != K:
        raise ValueError(f"{name} must have K = {K} probabilities on its last axis, got shape {tuple(p.shape)}")
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
        raise ValueError(f"{name} must be finite and non-negative")
    return p


def q_probs(x0, t_index: int, schedule: DiscreteSchedule) -> torch.Tensor:
    """``q(x_t | x_0) = alpha_bar_t onehot(x_0) + (1 - alpha_bar_t) pi``: float64 ``(..., K)`` for
    token ids ``x0`` (``(...)``) or for a distribution over ``x_0`` (float ``(..., K)``: ``p Qbar_t``)."""
    t_index = schedule._t_index(t_index)
    ab, pi = float(schedule.alpha_bar[t_index]), torch.as_tensor(schedule.pi)
    p0 = (torch.nn.functional.one_hot(_tokens(x0, schedule.K, "x0"), schedule.K).double()
          if not x0.is_floating_point() else _probs(x0, schedule.K, "x0").double())
    return ab * p0 + (1.0 - ab) * pi.to(p0.device) * p0.sum(-1, keepdim=True)


def q_sample(x0, t_index: int, schedule: DiscreteSchedule, *, generator: torch.Generator) -> torch.Tensor:
    """A draw of ``x_t ~ q(x_t | x_0)`` token by token: keep ``x_0`` with probability ``alpha_bar_t``,
    else draw from ``pi`` (the same law as :func:`q_probs`)."""
    x0 = _tokens(x0, schedule.K, "x0")
    ab = float(schedule.alpha_bar[schedule._t_index(t_index)])
    keep = torch.rand(x0.shape, generator=generator, dtype=torch.float64) < ab
    if schedule.kind == "absorbing":
        other = torch.full_like(x0, schedule.K - 1)
    else:
        other = torch.randint(0, schedule.K, x0.shape, generator=generator)
    return torch.where(keep, x0, other)


def posterior_probs(x_t, x0, t_index: int, schedule: DiscreteSchedule) -> torch.Tensor:
    """``q(x_{t-1} | x_t, x_0) = Q_t[:, x_t] * Qbar_{t-1}[x_0, :] / Qbar_t[x_0, x_t]`` (Austin et al.
    2021, eq. 3): float64 ``(..., K)`` for token ids ``x_t`` and ``x0`` of the same shape. At
    ``t_index = 0`` it is ``onehot(x_0)``. Pairs with ``q(x_t | x_0) = 0`` (impossible) raise."""
    t_index = schedule._t_index(t_index)
    x_t, x0 = _tokens(x_t, schedule.K, "x_t"), _tokens(x0, schedule.K, "x0")
    if x_t.shape != x0.shape:
        raise ValueError(f"x_t and x0 must have the same shape, got {tuple(x_t.shape)} and {tuple(x0.shape)}")
    Q = torch.as_tensor(schedule.Q(t_index)).to(x_t.device)            # (K, K)
    Qb_prev = torch.as_tensor(schedule.Q_bar(t_index - 1)).to(x_t.device)
    num = Q.T[x_t] * Qb_prev[x0]                                  # (..., K): Q[j, x_t] Qbar_{t-1}[x0, j]
    den = num.sum(-1, keepdim=True)                               # = Qbar_t[x0, x_t] (Chapman-Kolmogorov)
    if bool((den == 0).any()):
        raise ValueError("x_t is impossible given x0 at this t_index (q(x_t | x_0) = 0)")
    return num / den


def _posterior_table(x_t, t_index: int, schedule: DiscreteSchedule) -> torch.Tensor:
    """``post[..., k, j] = q(x_{t-1} = j | x_t, x_0 = k)`` for every ``k`` (rows of impossible ``k``
    are 0): float64 ``(..., K, K)``."""
    K = schedule.K
    ks = torch.arange(K, device=x_t.device).expand(*x_t.shape, K)             # (..., K)
    xt = x_t.unsqueeze(-1).expand(*x_t.shape, K)
    t_index = schedule._t_index(t_index)
    Q = torch.as_tensor(schedule.Q(t_index)).to(x_t.device)
    Qb_prev = torch.as_tensor(schedule.Q_bar(t_index - 1)).to(x_t.device)
    num = Q.T[xt] * Qb_prev[ks]                                               # (..., K, K)
    den = num.sum(-1, keepdim=True)                                           # Qbar_t[k, x_t]
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)


def reverse_probs(x_t, p_x0, t_index: int, schedule: DiscreteSchedule) -> torch.Tensor:
    """``p(x_{t-1} | x_t) = sum_k p(x_0 = k | x_t) q(x_{t-1} | x_t, x_0 = k)`` (the x_0-parameterisation
    of Austin et al. 2021, Sec. 3.3, as a mixture of :func:`posterior_probs`): float64 ``(..., K)``.
    ``p_x0``: ``(..., K)`` probabilities (``(..., K-1)`` is accepted for absorbing: no mass on the mask).
    Mass the denoiser puts on an ``x_0`` that cannot have produced ``x_t`` is dropped and the rest
    renormalised."""
    x_t = _tokens(x_t, schedule.K, "x_t")
    p = _pad_mask(p_x0, schedule, "p_x0")
    if p.shape[:-1] != x_t.shape:
        raise ValueError(f"p_x0 must have shape {tuple(x_t.shape) + (schedule.K,)}, got {tuple(p_x0.shape)}")
    out = torch.einsum("...k,...kj->...j", p, _posterior_table(x_t, t_index, schedule))
    total = out.sum(-1, keepdim=True)
    if bool((total <= 0).any()):
        raise ValueError("p_x0 puts no mass on any x_0 that can produce x_t")
    return out / total


def _pad_mask(p_x0, schedule, name):
    if schedule.kind == "absorbing" and isinstance(p_x0, torch.Tensor) and p_x0.shape[-1] == schedule.K - 1:
        p_x0 = torch.cat([p_x0, torch.zeros_like(p_x0[..., :1])], -1)
    return _probs(p_x0, schedule.K, name).double()


def vb_kl(x0, x_t, p_x0, t_index: int, schedule: DiscreteSchedule) -> torch.Tensor:
    """``KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))`` per token (the bound's ``L_{t-1}``, Austin et
    al. 2021, eq. 1), float64 ``(...)``, in nats. At ``t_index = 0`` it is ``-log p(x_0 | x_1)``
    (``L_0``), since the posterior is then ``onehot(x_0)``."""
    q = posterior_probs(x_t, x0, t_index, schedule)
    p = reverse_probs(x_t, p_x0, t_index, schedule)
    safe_q = torch.where(q > 0, q, 1.0)
    terms = torch.where(q > 0, q * (torch.log(safe_q) - torch.log(torch.where(q > 0, p, 1.0))), 0.0)
    return terms.sum(-1)


def masked_weight(t_index, schedule: DiscreteSchedule):
    """``w_t = (alpha_bar_{t-1} - alpha_bar_t) / (1 - alpha_bar_t)``: the probability that a token
    masked at ``t`` is unmasked at ``t-1`` -- and the weight of ``-log p(x_0 | x_t)`` that the
    absorbing bound's KL reduces to at a masked token (Sahoo et al. 2024, eq. 8; Shi et al. 2024,
    eq. 5). Derivation: at a masked token both ``q(. | x_t, x_0)`` and ``p(. | x_t)`` keep the mask
    with probability ``1 - w_t``; ``q`` puts ``w_t`` on ``x_0``, ``p`` puts ``w_t p(x_0 | x_t)`` there,
    so ``KL = w_t log(w_t / (w_t p(x_0 | x_t)))``. ``t_index``: an int or an int tensor."""
    if schedule.kind != "absorbing":
        raise ValueError("masked_weight is the absorbing kernel's weight; use vb_kl for other kernels")
    ab = torch.as_tensor(schedule.alpha_bar)
    ab_prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
    t_index = torch.as_tensor(t_index)
    return (ab_prev[t_index] - ab[t_index]) / (1.0 - ab[t_index])


def masked_diffusion_loss(logits, x0, x_t, weight, mask_id: int) -> torch.Tensor:
    """The absorbing bound as a weighted cross-entropy (Sahoo et al. 2024, eq. 11; Shi et al. 2024,
    eq. 5): ``mean_b sum_l weight_b [x_t^l = mask] (-log p(x_0^l | x_t))``, nats per sequence.
    ``logits``: ``(B, L, V)`` over the data tokens; ``x0``, ``x_t``: ``(B, L)``; ``weight``: ``(B,)``
    (``T w_t`` with ``t_index`` uniform estimates the sum over steps)."""
    if logits.ndim != 3 or logits.shape[:2] != x0.shape or x_t.shape != x0.shape:
        raise ValueError(f"logits must be (B, L, V) with x0 and x_t (B, L); got {tuple(logits.shape)}, "
                         f"{tuple(x0.shape)}, {tuple(x_t.shape)}")
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), x0.clamp_max(logits.shape[-1] - 1),
                                            reduction="none")                 # (B, L)
    masked = (x_t == mask_id).to(nll.dtype)
    return (weight.to(nll.dtype) * (nll * masked).sum(1)).mean()


@dataclass(frozen=True)
class MaskedDiffusionObjective:
    """The training objective of a masked-diffusion model for :func:`minidiff.train.train_steps`:
    ``t_index ~ U{0..T-1}``, each token masked with probability ``1 - alpha_bar_t``, and the loss
    :func:`masked_diffusion_loss` with weight ``T w_t`` (an unbiased estimate of the bound's sum
    over ``t``, in nats per sequence). ``schedule``: a :class:`DiscreteSchedule` with kind
    ``"absorbing"``; the network maps ``(B, L)`` token ids (mask = ``K-1``) to ``(B, L, K-1)`` logits
    and ignores time (for the absorbing kernel ``p(x_0 | x_t)`` does not depend on ``t``: Sahoo et al.
    2024, Sec. 3.2; Ou et al. 2024). Data: ``(N, L)`` int64 tokens."""

    name: str = "masked"

    def draw(self, g: torch.Generator, batch_size: int, shape: tuple[int, ...], schedule: DiscreteSchedule):
        if not isinstance(schedule, DiscreteSchedule) or schedule.kind != "absorbing":
            raise TypeError("the masked objective needs an absorbing DiscreteSchedule")
        t_index = torch.randint(0, schedule.T, (batch_size,), generator=g)       # (B,)
        u = torch.rand((batch_size,) + tuple(shape), generator=g)                # (B, L): masking draws
        return t_index, u

    def loss(self, net, x0, time, noise, y, schedule: DiscreteSchedule) -> torch.Tensor:
        ab = torch.as_tensor(schedule.alpha_bar, dtype=torch.float32, device=x0.device)[time]   # (B,)
        x_t = torch.where(noise < (1.0 - ab)[:, None], torch.full_like(x0, schedule.mask_id), x0)
        weight = schedule.T * masked_weight(time.cpu(), schedule).to(torch.float32).to(x0.device)
        return masked_diffusion_loss(net(x_t), x0, x_t, weight, schedule.mask_id)


# ============================================================================ samplers
def _seed(generator) -> int:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


def _denoise(fn, x, *args, K):
    p = fn(x, *args)
    if not isinstance(p, torch.Tensor) or p.shape[:-1] != x.shape or p.shape[-1] not in (K, K - 1):
        raise ValueError(f"denoiser must return (..., K) probabilities shaped {tuple(x.shape)} + (K,), got "
                         f"{getattr(p, 'shape', type(p).__name__)}")
    return p


def ancestral(denoiser: Callable, x_T, schedule: DiscreteSchedule, *, generator: torch.Generator,
              backend: str | None = None) -> Iterator[Step]:
    """D3PM ancestral sampling (Austin et al. 2021, Sec. 3.3): for ``t_index = T-1 .. 0``,
    ``p0 = denoiser(x, t_index)`` (``(B, L, K)`` probabilities of ``x_0``), then
    ``x <- Cat(reverse_probs(x, p0, t_index))`` (at ``t_index = 0`` this draws ``x_0`` from ``p0``).
    ``x_T``: ``(B, L)`` token ids, e.g. all masks or uniform tokens. Yields ``T`` records with
    ``t_index`` and ``x0 = argmax p0``. Draw counter: ``step = index``."""
    from . import backend as _backend

    x = _tokens(x_T, schedule.K, "x_T")
    seed = _seed(generator)
    for i, t_index in enumerate(range(schedule.T - 1, -1, -1)):
        p0 = _denoise(denoiser, x, t_index, K=schedule.K)
        probs = reverse_probs(x, p0, t_index, schedule)
        x = _backend.categorical(probs, seed=seed, step=i, backend=backend)
        yield Step(index=i, x=x, x0=p0.argmax(-1), t_index=t_index)


def _reveal_counts(masked: torch.Tensor, steps_left: int, per_step: int | None) -> torch.Tensor:
    """How many tokens each row reveals now: ``min(k, m)`` for a fixed ``k``, else ``ceil(m / steps_left)``."""
    m = masked.sum(1)
    if per_step is not None:
        return torch.clamp(m, max=per_step)
    return (m + steps_left - 1) // steps_left


def unmask(denoiser: Callable, x, mask_id: int, *, steps: int | None = None, tokens_per_step: int | None = None,
           order: str = "random", generator: torch.Generator, backend: str | None = None) -> Iterator[Step]:
    """Masked-diffusion sampling by revealing tokens (Austin et al. 2021 absorbing; Chang et al. 2022,
    MaskGIT, for the confidence order; Shi et al. 2024, Sec. 5): at each step ``p0 = denoiser(x)``
    (``(B, L, V)`` probabilities of the data tokens), a candidate token is drawn at every position,
    and some masked positions take their candidate. Tokens that are not masks in ``x`` are kept:
    give a partly masked ``x`` to infill.

    ``steps`` (reveal ``ceil(m / steps_left)`` each step, ``m`` the row's masks: with ``steps >= L``
    one token a step) or ``tokens_per_step`` (reveal ``k`` a step until none is left). ``order``:
    ``"random"`` (uniform among the masked -- with one token a step and the exact ``p(x_0 | x_t)`` this
    samples the data law exactly, by the chain rule in a random order), ``"confidence"`` (highest
    probability of the drawn candidate first) or ``"left_to_right"``. Yields one record per step
    with ``x`` and ``x0`` (the candidates), ``t`` = fraction of tokens still masked before the step.
    Draw counter: ``step = index``."""
    from . import backend as _backend

    if (steps is None) == (tokens_per_step is None):
        raise ValueError("pass exactly one of steps= or tokens_per_step=")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.is_floating_point():
        raise ValueError(f"x must be a (B, L) integer tensor of token ids, got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    x = x.long().clone()
    B, L = x.shape
    if steps is not None:
        steps = _check_int(steps, "steps")
        n_steps = steps
    else:
        tokens_per_step = _check_int(tokens_per_step, "tokens_per_step")
        n_steps = math.ceil(int((x == mask_id).sum(1).max()) / tokens_per_step) if x.numel() else 0
    seed = _seed(generator)
    order_seed = torch.Generator().manual_seed(seed % (2**63))
    pos = torch.arange(L, dtype=torch.float64).expand(B, L)
    for i in range(n_steps):
        masked = x == mask_id
        frac = float(masked.double().mean())
        if not bool(masked.any()):
            break
        p0 = _denoise(denoiser, x, K=mask_id + 1)
        if p0.shape[-1] != mask_id:
            p0 = p0[..., :mask_id]
        cand = _backend.categorical(p0.reshape(B * L, -1), seed=seed, step=i, backend=backend).reshape(B, L)
        if order == "random":
            score = torch.rand((B, L), generator=order_seed, dtype=torch.float64)
        elif order == "confidence":
            score = torch.gather(p0.double(), -1, cand.unsqueeze(-1)).squeeze(-1)
        else:
            score = -pos
        score = torch.where(masked, score, -torch.inf)
        rank = torch.argsort(torch.argsort(score, dim=1, descending=True, stable=True), dim=1)
        n = _reveal_counts(masked, n_steps - i, tokens_per_step)
        reveal = masked & (rank < n[:, None])
        x = torch.where(reveal, cand, x)
        yield Step(index=i, x=x, x0=cand, t=frac)


# ============================================================================ exact ground truth
class TokenTable:
    """A data law given by a table: strings ``(N, L)`` of tokens in ``0..V-1`` with probabilities
    ``(N,)``. Small enough to enumerate, so the exact ``p(x_0^l | x_t)`` (the ideal denoiser) and the
    exact law of any sampler's output can be compared with a model's."""

    def __init__(self, strings, probs):
        s = torch.as_tensor(strings).long()
        p = torch.as_tensor(probs, dtype=torch.float64)
        if s.ndim != 2 or p.ndim != 1 or s.shape[0] != p.shape[0]:
            raise ValueError(f"strings must be (N, L) and probs (N,), got {tuple(s.shape)} and {tuple(p.shape)}")
        if bool((p < 0).any()) or not abs(float(p.sum()) - 1.0) < 1e-9:
            raise ValueError("probs must be non-negative and sum to 1")
        if int(s.min()) < 0:
            raise ValueError("strings must hold token ids >= 0")
        if torch.unique(s, dim=0).shape[0] != s.shape[0]:
            raise ValueError("strings must be distinct")
        self.strings, self.probs = s, p
        self.V = int(s.max()) + 1
        self.L = s.shape[1]

    @classmethod
    def random(cls, V: int, L: int, n: int, *, seed: int, concentration: float = 1.0) -> "TokenTable":
        """``n`` distinct strings of length ``L`` over ``V`` tokens with Dirichlet probabilities."""
        rng = np.random.default_rng(seed)
        codes = rng.choice(V ** L, size=n, replace=False)
        strings = np.stack([(codes // V ** (L - 1 - l)) % V for l in range(L)], 1)
        return cls(strings, rng.dirichlet(np.full(n, concentration)))

    def sample(self, n: int, *, generator: torch.Generator) -> torch.Tensor:
        idx = torch.multinomial(self.probs, n, replacement=True, generator=generator)
        return self.strings[idx]

    def _posterior_weights(self, lik: torch.Tensor) -> torch.Tensor:
        w = lik * self.probs                                                   # (B, N)
        total = w.sum(1, keepdim=True)
        if bool((total <= 0).any()):
            raise ValueError("x_t is impossible under this table")
        return w / total

    def _marginals(self, w: torch.Tensor, K: int) -> torch.Tensor:
        onehot = torch.nn.functional.one_hot(self.strings, K).double()          # (N, L, K)
        return torch.einsum("bn,nlk->blk", w, onehot)

    def x0_probs(self, x_t, t_index: int, schedule: DiscreteSchedule) -> torch.Tensor:
        """The exact ``p(x_0^l = k | x_t)`` per position: float64 ``(B, L, K)``, from
        ``p(x_0 | x_t) ∝ p(x_0) prod_l Qbar_t[x_0^l, x_t^l]`` summed over the table."""
        x_t = _tokens(x_t, schedule.K, "x_t")
        Qb = torch.as_tensor(schedule.Q_bar(schedule._t_index(t_index)))
        lik = Qb[self.strings.unsqueeze(0), x_t.unsqueeze(1)].prod(-1)          # (B, N)
        return self._marginals(self._posterior_weights(lik), schedule.K)

    def masked_x0_probs(self, x, mask_id: int) -> torch.Tensor:
        """The exact ``p(x_0^l = k | x)`` for a partly masked ``x`` (time-free: the unmasked tokens are
        the evidence): float64 ``(B, L, V)`` over the data tokens."""
        x = torch.as_tensor(x).long()
        match = (self.strings.unsqueeze(0) == x.unsqueeze(1)) | (x.unsqueeze(1) == mask_id)   # (B, N, L)
        return self._marginals(self._posterior_weights(match.all(-1).double()), self.V)

    def codes(self, x) -> torch.Tensor:
        """Integer code of each string (base ``V`` with an extra digit for out-of-alphabet tokens)."""
        base = max(self.V, int(torch.as_tensor(x).max()) + 1) + 1
        w = base ** torch.arange(self.L - 1, -1, -1)
        return (torch.as_tensor(x).long() * w).sum(-1)

    def tv(self, samples) -> float:
        """Total variation between the empirical law of ``samples`` ``(n, L)`` and the table,
        ``0.5 sum |p_hat - p|`` over every string (mass off the table counts fully)."""
        return _tv_counts(*self._count(samples))

    def _count(self, samples):
        s = torch.as_tensor(samples).long()
        base = max(self.V, int(s.max()) + 1, 1) + 1
        w = base ** torch.arange(self.L - 1, -1, -1)
        table = (self.strings * w).sum(-1).numpy()
        codes = (s * w).sum(-1).numpy()
        order = {int(c): i for i, c in enumerate(table)}
        idx = np.array([order.get(int(c), -1) for c in codes])
        return idx, self.probs.numpy()


def _tv_counts(idx, p, weights=None):
    n = len(idx) if weights is None else weights.sum()
    on = idx >= 0
    counts = np.bincount(idx[on], weights=None if weights is None else weights[on], minlength=p.size)
    off = (n - counts.sum()) / n
    return 0.5 * float(np.abs(counts / n - p).sum() + off)


def tv_interval(table: TokenTable, samples, *, n_boot: int = 200, level: float = 0.95, seed: int = 0):
    """``(tv, low, high)``: the plug-in total variation of ``samples`` to ``table`` and a basic
    bootstrap interval ``[2 tv - q_hi, 2 tv - q_lo]`` (Davison & Hinkley 1997, eq. 5.6), which
    corrects the plug-in's upward bias to first order (``low`` clipped at 0). At small ``n`` compare
    with the same statistic on ``n`` exact draws from the table (the noise floor)."""
    idx, p = table._count(samples)
    rng = np.random.default_rng(seed)
    n = len(idx)
    boots = [_tv_counts(idx, p, np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64))
             for _ in range(n_boot)]
    q_lo, q_hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    tv = _tv_counts(idx, p)
    return tv, max(0.0, 2 * tv - float(q_hi)), 2 * tv - float(q_lo)


def tv_floor(table: TokenTable, n: int, *, n_draws: int = 200, seed: int = 0) -> np.ndarray:
    """The noise floor of :meth:`TokenTable.tv` at sample size ``n``: the plug-in total variation of
    ``n_draws`` independent sets of ``n`` exact draws from ``table`` (multinomial counts), sorted.

    The plug-in TV is biased upwards (it is positive even for exact samples), and near zero the basic
    bootstrap of :func:`tv_interval` under-covers (for exact draws its interval can exclude the true 0).
    So the question "does a sampler reproduce the table, at this ``n``?" is answered against these
    values, the statistic's law when the answer is yes (a parametric-bootstrap test, Davison & Hinkley
    1997, Sec. 4.2): the sampler's TV above their 95th percentile is evidence of a gap."""
    n = _check_int(n, "n")
    n_draws = _check_int(n_draws, "n_draws", 2)
    p = table.probs.numpy()
    counts = np.random.default_rng(seed).multinomial(n, p / p.sum(), size=n_draws)   # (n_draws, N)
    return np.sort(0.5 * np.abs(counts / n - p).sum(1))


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion ``k / n`` (Wilson 1927; Brown, Cai & DasGupta 2001):
    ``(center ± z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with ``center = p + z^2/2n``."""
    k, n = int(k), _check_int(n, "n")
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, n], got k={k}, n={n}")
    p = k / n
    center = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (center - half) / (1 + z * z / n), (center + half) / (1 + z * z / n)
