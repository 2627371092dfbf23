"""Discrete noise schedules.

One noise coordinate per name, its unit in the name:

* ``t_index`` -- integer step, ``0 .. T-1``. ``x`` at ``t_index = i`` has been noised ``i + 1`` times,
  so ``alpha_bar[0] = 1 - betas[0]`` (DDPM's ``t = 1``) and ``alpha_bar[T-1]`` is the prior end.
* ``t`` -- continuous time in ``(0, 1]`` used only by :mod:`minidiff.sde`; ``t = (t_index + 1) / T``.
* ``alpha_bar`` -- the signal fraction ``prod_{s<=i} (1 - beta_s)``: ``x_t = sqrt(alpha_bar) x_0 + sqrt(1-alpha_bar) eps``.
* ``sigma`` -- the variance-exploding noise level of the same marginal after rescaling,
  ``sigma = sqrt((1 - alpha_bar) / alpha_bar)`` (Karras et al. 2022, eq. 5 / Song et al. 2021a, App. B).

Everything is computed in float64 and cast to the data's dtype and device at use (:meth:`Schedule.at`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import _checks as _c

__all__ = ["Schedule", "append_dims"]


def append_dims(v, ndim: int):
    """Append trailing singleton axes to ``v`` (shape ``(B,)``) until it has ``ndim`` dimensions."""
    missing = ndim - v.ndim
    if missing < 0:
        raise ValueError(f"append_dims: input has {v.ndim} dims, more than the target {ndim}")
    return v[(...,) + (None,) * missing]


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Schedule:
    """An immutable discrete noise schedule (Ho et al. 2020, Sec. 2).

    Build it with a named constructor: :meth:`linear`, :meth:`cosine`, :meth:`sigmoid` or
    :meth:`from_betas`. All tables are read-only float64 numpy arrays of length ``T``.
    """

    betas: np.ndarray
    name: str = "custom"
    alphas: np.ndarray = field(init=False, repr=False)
    alpha_bar: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        betas = np.asarray(self.betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size < 1:
            raise ValueError(f"betas must be a 1-D array with T >= 1 entries, got shape {betas.shape}")
        if not np.all(np.isfinite(betas)) or np.any(betas <= 0.0) or np.any(betas >= 1.0):
            bad = betas[~((betas > 0) & (betas < 1))]
            raise ValueError(f"betas must lie in the open interval (0, 1); found {bad[:3].tolist()}")
        alphas = 1.0 - betas
        alpha_bar = np.cumprod(alphas)
        if not alpha_bar[-1] > 0:
            first = int(np.argmax(~(alpha_bar > 0)))
            raise ValueError(f"alpha_bar underflows to 0 in float64 at t_index {first} of T={betas.size}: "
                             f"the betas destroy the signal completely; use smaller betas or a smaller T")
        if np.any(np.diff(alpha_bar) >= 0):
            first = int(np.argmax(np.diff(alpha_bar) >= 0)) + 1
            raise ValueError(f"alpha_bar must be strictly decreasing, but alpha_bar[{first}] = "
                             f"alpha_bar[{first - 1}] in float64 (beta {betas[first]:.3g} is below its resolution)")
        object.__setattr__(self, "betas", _readonly(betas))
        object.__setattr__(self, "alphas", _readonly(alphas))
        object.__setattr__(self, "alpha_bar", _readonly(alpha_bar))

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_betas(cls, betas, name: str = "custom") -> "Schedule":
        return cls(np.asarray(betas, dtype=np.float64), name=name)

    @classmethod
    def from_alpha_bar(cls, alpha_bar, name: str = "custom", max_beta: float = 0.999) -> "Schedule":
        """Betas from a target ``alpha_bar`` curve, ``beta_i = 1 - alpha_bar_i / alpha_bar_{i-1}``,
        clipped to ``max_beta`` (Nichol & Dhariwal 2021, Sec. 3.2)."""
        ab = np.asarray(alpha_bar, dtype=np.float64)
        prev = np.concatenate([[1.0], ab[:-1]])
        return cls(np.clip(1.0 - ab / prev, 1e-8, max_beta), name=name)

    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "Schedule":
        """Linear betas (Ho et al. 2020, Sec. 4) from ``beta_start`` to ``beta_end``, times ``1000 / T``
        (the rescaling of Nichol & Dhariwal 2021's code), each capped at ``0.999``.

        The rescaling keeps the total noise ``sum(beta) = 500 (beta_start + beta_end)`` the same for
        every ``T`` whose betas stay below the cap (``T >= 21`` with the defaults); since
        ``log alpha_bar_T = sum log(1 - beta) < -sum(beta)`` and the gap grows with ``beta^2``, a
        smaller ``T`` ends at a *smaller* ``alpha_bar_T`` than ``T = 1000`` does; the two agree only as
        ``T`` grows (``alpha_bar_T -> exp(-sum beta)``). Below ``T = 21`` the cap binds and the sum is smaller.
        """
        T = _check_T(T)
        beta_start = _c.check_positive(beta_start, "beta_start")
        beta_end = _c.check_positive(beta_end, "beta_end")
        scale = 1000.0 / T
        return cls(np.linspace(beta_start * scale, min(beta_end * scale, 0.999), T), name="linear")

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "Schedule":
        """Cosine schedule (Nichol & Dhariwal 2021, eq. 17):
        ``alpha_bar(t) = f(t)/f(0)``, ``f(t) = cos(((t/T + s)/(1 + s)) * pi/2)^2``."""
        T = _check_T(T)
        s = _c.check_nonnegative(s, "s")
        max_beta = _check_max_beta(max_beta)
        f = lambda u: np.cos((u + s) / (1.0 + s) * math.pi / 2) ** 2  # noqa: E731
        u = np.arange(1, T + 1, dtype=np.float64) / T
        return cls.from_alpha_bar(f(u) / f(0.0), name="cosine", max_beta=max_beta)

    @classmethod
    def sigmoid(cls, T: int = 1000, start: float = -3.0, end: float = 3.0, tau: float = 1.0,
                max_beta: float = 0.999) -> "Schedule":
        """Sigmoid schedule (Jabri et al. 2022; Chen 2023, Alg. 1):
        ``alpha_bar(t) = (s(end/tau) - s((t(end-start)+start)/tau)) / (s(end/tau) - s(start/tau))``."""
        T = _check_T(T)
        start, end = _c.check_real(start, "start"), _c.check_real(end, "end")
        tau = _c.check_positive(tau, "tau")
        max_beta = _check_max_beta(max_beta)
        if not start < end:
            raise ValueError(f"start must be < end, got start={start}, end={end}")
        sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
        u = np.arange(0, T + 1, dtype=np.float64) / T
        v_start, v_end = sig(start / tau), sig(end / tau)
        ab = (v_end - sig((u * (end - start) + start) / tau)) / (v_end - v_start)
        ab = ab[1:] / ab[0]
        return cls.from_alpha_bar(ab, name="sigmoid", max_beta=max_beta)

    # ---------------------------------------------------------------- derived tables
    @property
    def T(self) -> int:
        return int(self.betas.shape[0])

    @property
    def alpha_bar_prev(self) -> np.ndarray:
        """``alpha_bar`` one step earlier; ``1`` before the first step."""
        return _readonly(np.concatenate([[1.0], self.alpha_bar[:-1]]))

    @property
    def sqrt_alpha_bar(self) -> np.ndarray:
        return _readonly(np.sqrt(self.alpha_bar))

    @property
    def sqrt_one_minus_alpha_bar(self) -> np.ndarray:
        return _readonly(np.sqrt(1.0 - self.alpha_bar))

    @property
    def sigma(self) -> np.ndarray:
        """VE-equivalent noise level ``sqrt((1 - alpha_bar) / alpha_bar)``."""
        return _readonly(np.sqrt((1.0 - self.alpha_bar) / self.alpha_bar))

    @property
    def snr(self) -> np.ndarray:
        """Signal-to-noise ratio ``alpha_bar / (1 - alpha_bar)`` (Kingma et al. 2021)."""
        return _readonly(self.alpha_bar / (1.0 - self.alpha_bar))

    @property
    def posterior_variance(self) -> np.ndarray:
        """``beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t`` (Ho et al. 2020, eq. 7)."""
        return _readonly((1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar) * self.betas)

    # ---------------------------------------------------------------- coordinates
    def check_t_index(self, t_index, name: str = "t_index"):
        """Raise ``IndexError`` unless every entry of ``t_index`` is an integer in ``[0, T)``; returns it as
        a numpy array (:func:`minidiff._checks.check_t_index_array`)."""
        return _c.check_t_index_array(t_index, self.T, name)

    def t_index_to_t(self, t_index):
        """Continuous time ``t = (t_index + 1) / T`` in ``(0, 1]``."""
        return (np.asarray(self.check_t_index(t_index), dtype=np.float64) + 1.0) / self.T

    def t_to_t_index(self, t):
        """Nearest ``t_index`` for continuous ``t`` in ``(0, 1]``."""
        t = np.asarray(t, dtype=np.float64)
        if not np.all((t > 0) & (t <= 1)):  # NaN fails this test too
            raise ValueError(f"t must lie in (0, 1], got {t.reshape(-1)[~((t > 0) & (t <= 1)).reshape(-1)][:3].tolist()}")
        return np.clip(np.rint(t * self.T - 1.0), 0, self.T - 1).astype(np.int64)

    def alpha_bar_to_t_index(self, alpha_bar):
        """The ``t_index`` whose ``alpha_bar`` is nearest (in log-SNR) to the given value."""
        ab = np.asarray(alpha_bar, dtype=np.float64)
        if not np.all((ab > 0) & (ab < 1)):  # NaN fails this test too
            raise ValueError(f"alpha_bar must lie in (0, 1), got {ab.reshape(-1)[~((ab > 0) & (ab < 1)).reshape(-1)][:3].tolist()}")
        log_snr = np.log(self.snr)
        target = np.log(ab / (1.0 - ab))
        return np.abs(log_snr[None, :] - target.reshape(-1, 1)).argmin(axis=1).reshape(ab.shape)

    def sigma_to_t_index(self, sigma):
        """The ``t_index`` whose VE-equivalent ``sigma`` is nearest (in log-SNR) to the given value."""
        s = np.asarray(sigma, dtype=np.float64)
        if not np.all((s > 0) & np.isfinite(s)):  # NaN fails this test too
            raise ValueError(f"sigma must be finite and > 0, got {s.reshape(-1)[~((s > 0) & np.isfinite(s)).reshape(-1)][:3].tolist()}")
        return self.alpha_bar_to_t_index(1.0 / (1.0 + s * s))

    def timesteps(self, n: int) -> np.ndarray:
        """``n`` unique, descending ``t_index`` values from ``T-1`` towards ``0`` for n-step sampling
        (evenly spaced, "trailing" spacing of Lin et al. 2024, Table 2, so sampling starts at ``T-1``)."""
        if not _c.is_int(n) or n < 1 or n > self.T:
            raise ValueError(f"n must be an integer in [1, T={self.T}], got {n!r}")
        # t_k = round(T (n - k) / n) - 1, k = 0 .. n-1, in exact integer arithmetic (round half to even,
        # as np.round); the points are T/n >= 1 apart, so they are distinct and t_0 = T - 1.
        T, n = self.T, int(n)
        q, r = np.divmod(T * (n - np.arange(n, dtype=np.int64)), n)
        q = q + ((2 * r > n) | ((2 * r == n) & (q % 2 == 1)))
        return (q - 1).astype(np.int64)

    # ---------------------------------------------------------------- use with data
    def at(self, table: str, t_index, like):
        """Table entries at ``t_index`` (int or ``(B,)``), as a torch tensor with ``like``'s dtype and
        device, shaped to broadcast against ``like``: ``(B, 1, ..., 1)``."""
        import torch

        values = getattr(self, table)
        idx = self.check_t_index(t_index)
        out = torch.as_tensor(np.asarray(values[idx]), dtype=like.dtype, device=like.device)
        return append_dims(out, like.ndim) if out.ndim else out

    def __repr__(self) -> str:
        return (f"Schedule(name={self.name!r}, T={self.T}, beta=[{self.betas[0]:.3g}..{self.betas[-1]:.3g}], "
                f"alpha_bar_T={self.alpha_bar[-1]:.3g})")


MAX_T = 100_000  # bounds what a loaded file can make us allocate (each table is 8 T bytes)


def _check_T(T) -> int:
    return _c.check_count(T, "T", 1, MAX_T)


def _check_max_beta(max_beta) -> float:
    max_beta = _c.check_real(max_beta, "max_beta")
    if not 0 < max_beta < 1:
        raise ValueError(f"max_beta must lie in (0, 1), got {max_beta}")
    return max_beta
