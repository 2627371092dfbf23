"""Interpolants ``x_t = alpha_t x_0 + sigma_t eps`` and the one conversion module between what a network
may predict for them (stochastic interpolants: Albergo & Vanden-Eijnden 2023; flow matching: Lipman et
al. 2023; rectified flow: Liu et al. 2023).

Convention (the course's): ``x_0`` is the data, ``eps ~ N(0, I)`` the source, ``t`` runs from ``0``
(data) to ``1`` (noise), and sampling integrates ``dx/dt = u_t(x)`` from ``t = 1`` down to ``0``. Three
interpolants, each an immutable :class:`Interpolant`:

* ``linear`` -- rectified flow / conditional OT path: ``alpha_t = 1 - t``, ``sigma_t = t`` (Liu et al. 2023,
  eq. 1; Lipman et al. 2023, eq. 20 with ``sigma_min = 0``); conditional velocity ``eps - x_0``.
* ``trig`` -- ``alpha_t = cos(pi t / 2)``, ``sigma_t = sin(pi t / 2)`` (Albergo & Vanden-Eijnden 2023, Sec. 3):
  variance preserving with a constant angular speed.
* ``vp`` -- the DDPM/VP path in continuous time, ``alpha_t = exp(-B(t)/2)``, ``sigma_t = sqrt(1 - alpha_t^2)``,
  read from :class:`minidiff.sde.VPSDE` (Song et al. 2021a, eq. 29), so ``alpha_t^2`` is the DDPM
  ``alpha_bar`` of :meth:`minidiff.sde.VPSDE.to_schedule`.

Prediction kinds, one meaning each (all at the same ``(x_t, t)``):

* ``eps`` -- the noise; ``x0`` -- the data; ``score`` -- ``grad log p_t(x_t) = -E[eps | x_t] / sigma_t``
  (Vincent 2011);
* ``v`` -- ``alpha_t eps - sigma_t x_0`` (Salimans & Ho 2022, Sec. 4; for VP paths ``d x_t / d phi`` with
  ``phi = atan(sigma_t / alpha_t)``);
* ``velocity`` -- ``u = alpha_t' x_0 + sigma_t' eps`` (the time derivative of the path; its posterior mean is
  the marginal velocity field, Lipman et al. 2023, Thm. 1; Albergo & Vanden-Eijnden 2023, Prop. 1).

Every conversion goes through the pair ``(x_0, eps)``: :func:`to_x0_eps` solves the 2x2 linear system
``x_t = alpha_t x_0 + sigma_t eps``, ``pred = a x_0 + b eps`` once, :func:`from_x0_eps` forms the target.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .schedule import append_dims
from .sde import VPSDE, check_t

__all__ = ["Interpolant", "Coefficients", "KINDS", "PREDICTION_KINDS", "convert", "to_x0_eps", "from_x0_eps"]

KINDS = ("linear", "trig", "vp")
PREDICTION_KINDS = ("eps", "x0", "v", "score", "velocity")


@dataclass(frozen=True)
class Coefficients:
    """``alpha_t``, ``sigma_t`` and their time derivatives at one ``t`` (floats) or per sample (tensors)."""

    alpha_t: float | torch.Tensor
    sigma_t: float | torch.Tensor
    d_alpha_t: float | torch.Tensor
    d_sigma_t: float | torch.Tensor


@dataclass(frozen=True)
class Interpolant:
    """An immutable interpolant ``x_t = alpha_t x_0 + sigma_t eps`` on ``t in [t_min, 1]``.

    Build with :meth:`linear`, :meth:`trig` or :meth:`vp`. ``alpha_0 = 1, sigma_0 = 0`` (data at 0,
    for VP up to ``B(0) = 0``) and ``sigma_1 > 0`` (noise at 1; exactly ``N(0, I)`` for linear and trig,
    ``alpha_1 = exp(-B(1)/2)`` for VP).
    """

    kind: str = "linear"
    sde: VPSDE | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "vp" and self.sde is None:
            object.__setattr__(self, "sde", VPSDE())
        if self.kind == "vp" and not isinstance(self.sde, VPSDE):
            raise TypeError(f"sde must be a minidiff.sde.VPSDE for kind 'vp', got {type(self.sde).__name__}")
        if self.kind != "vp" and self.sde is not None:
            raise ValueError(f"sde is only used by kind 'vp', got one for kind {self.kind!r}")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def linear(cls) -> "Interpolant":
        """Rectified flow (Liu et al. 2023): ``alpha_t = 1 - t``, ``sigma_t = t``."""
        return cls("linear")

    @classmethod
    def trig(cls) -> "Interpolant":
        """``alpha_t = cos(pi t/2)``, ``sigma_t = sin(pi t/2)`` (Albergo & Vanden-Eijnden 2023)."""
        return cls("trig")

    @classmethod
    def vp(cls, sde: VPSDE | None = None) -> "Interpolant":
        """The VP SDE's perturbation kernel as an interpolant (Song et al. 2021a, eq. 29)."""
        return cls("vp", sde if sde is not None else VPSDE())

    @property
    def t_min(self) -> float:
        """The smallest time a velocity may be evaluated at: 0, except VP (``sigma_t' -> inf`` at 0)."""
        return 1e-3 if self.kind == "vp" else 0.0

    # ------------------------------------------------------------------ coefficients
    def _scalar(self, t: float) -> tuple[float, float, float, float]:
        if self.kind == "linear":
            return 1.0 - t, t, -1.0, 1.0
        if self.kind == "trig":
            c, s, w = math.cos(0.5 * math.pi * t), math.sin(0.5 * math.pi * t), 0.5 * math.pi
            return c, s, -w * s, w * c
        a, s = self.sde.mean_scale(t), self.sde.marginal_std(t)
        d_a = self.sde.drift_coef(t) * a                       # d/dt exp(-B/2) = -beta/2 alpha_t
        d_s = -a * d_a / s if s > 0 else math.inf              # sigma_t^2 = 1 - alpha_t^2
        return a, s, d_a, d_s

    def coefficients(self, t) -> Coefficients:
        """``(alpha_t, sigma_t, d_alpha_t, d_sigma_t)`` at ``t``: a float in ``[0, 1]`` (floats back) or a ``(B,)``
        tensor of times (float64 tensors back)."""
        if isinstance(t, torch.Tensor) and t.ndim > 0:
            vals = [self._scalar(check_t(ti)) for ti in t.detach().cpu().reshape(-1).tolist()]
            cols = torch.tensor(vals, dtype=torch.float64).reshape(*t.shape, 4).unbind(-1)
            return Coefficients(*cols)
        return Coefficients(*self._scalar(check_t(t)))

    def alpha_t(self, t):
        return self.coefficients(t).alpha_t

    def sigma_t(self, t):
        return self.coefficients(t).sigma_t

    def log_snr(self, t):
        """``log(alpha_t^2 / sigma_t^2)`` (Kingma et al. 2021); ``+inf`` at ``t = 0``."""
        c = self.coefficients(t)
        if isinstance(c.alpha_t, torch.Tensor):
            return 2.0 * (torch.log(c.alpha_t) - torch.log(c.sigma_t))
        if c.sigma_t == 0:
            return math.inf
        return -math.inf if c.alpha_t == 0 else 2.0 * math.log(c.alpha_t / c.sigma_t)

    # ------------------------------------------------------------------ the path and its target
    def sample(self, x0, t, noise):
        """``x_t = alpha_t x_0 + sigma_t eps``; ``t`` a float or ``(B,)`` times."""
        c = _like(self.coefficients(t), x0)
        return c.alpha_t * x0 + c.sigma_t * noise

    def conditional_velocity(self, x0, t, noise):
        """``d x_t / dt = alpha_t' x_0 + sigma_t' eps``: the regression target of conditional flow matching
        (Lipman et al. 2023, eq. 23; for linear, ``eps - x_0``, Liu et al. 2023, eq. 1)."""
        c = _like(self.coefficients(t), x0)
        return c.d_alpha_t * x0 + c.d_sigma_t * noise

    def convert(self, pred, x_t, t, *, source: str, target: str):
        """:func:`convert` with this interpolant."""
        return convert(pred, x_t, t, self, source=source, target=target)

    def __repr__(self) -> str:
        extra = f", beta_min={self.sde.beta_min:g}, beta_max={self.sde.beta_max:g}" if self.kind == "vp" else ""
        return f"Interpolant({self.kind!r}{extra})"


def _like(c: Coefficients, x: torch.Tensor) -> Coefficients:
    """Coefficients as tensors of ``x``'s dtype/device, shaped ``(B, 1, ..., 1)`` for per-sample times."""
    def cast(v):
        if isinstance(v, torch.Tensor):
            return append_dims(v.to(dtype=x.dtype, device=x.device), x.ndim)
        return v
    return Coefficients(cast(c.alpha_t), cast(c.sigma_t), cast(c.d_alpha_t), cast(c.d_sigma_t))


# --------------------------------------------------------------------------- conversions
def _pair(kind: str, c: Coefficients):
    """``(a, b)`` with ``pred = a x_0 + b eps`` for a prediction of ``kind`` (score handled apart)."""
    return {"eps": (0.0, 1.0), "x0": (1.0, 0.0), "v": (-c.sigma_t, c.alpha_t), "velocity": (c.d_alpha_t, c.d_sigma_t)}[kind]


def to_x0_eps(pred, x_t, c: Coefficients, kind: str):
    """``(x_0, eps)`` from ``x_t`` and a prediction of ``kind``: solve ``x_t = alpha_t x_0 + sigma_t eps``,
    ``pred = a x_0 + b eps`` (Cramer's rule, determinant ``alpha_t b - sigma_t a``); ``score`` first becomes
    ``eps = -sigma_t score``."""
    if kind == "score":
        pred, kind = -c.sigma_t * pred, "eps"
    a, b = _pair(kind, c)
    det = c.alpha_t * b - c.sigma_t * a
    x0 = (b * x_t - c.sigma_t * pred) / det
    eps = (c.alpha_t * pred - a * x_t) / det
    return x0, eps


def from_x0_eps(x0, eps, c: Coefficients, kind: str):
    """The prediction of ``kind`` from ``(x_0, eps)``: ``a x_0 + b eps``, or ``-eps / sigma_t`` for ``score``."""
    if kind == "score":
        return -eps / c.sigma_t
    a, b = _pair(kind, c)
    return a * x0 + b * eps


def convert(pred, x_t, t, interpolant: Interpolant, *, source: str, target: str):
    """Convert a prediction of kind ``source`` at ``(x_t, t)`` into kind ``target`` for ``interpolant``;
    kinds: ``eps``, ``x0``, ``v``, ``score``, ``velocity``. For ``vp`` with ``alpha_bar = alpha_t^2`` the
    four DDPM kinds agree with :func:`minidiff.forward.convert`. ``t``: a float or ``(B,)`` times."""
    if source not in PREDICTION_KINDS or target not in PREDICTION_KINDS:
        raise ValueError(f"source and target must be one of {PREDICTION_KINDS}, got {source!r} -> {target!r}")
    if not isinstance(interpolant, Interpolant):
        raise TypeError(f"interpolant must be an Interpolant, got {type(interpolant).__name__}")
    if source == target:
        return pred
    c = _like(interpolant.coefficients(t), x_t)
    x0, eps = to_x0_eps(pred, x_t, c, source)
    return from_x0_eps(x0, eps, c, target)
