"""Likelihood by the probability-flow ODE: ``log p(x)`` with an exact or Hutchinson trace, and bits/dim
with an explicit dequantisation offset."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import _checks
from .estimate import _check_count

DIGITS_BIN_WIDTH = 2.0 / 16.0  # 17 grey levels 0..16 mapped onto [-1, 1]


@dataclass(frozen=True)
class NLLResult:
    """Per-sample negative log-likelihoods.

    ``nll``: ``-log p(x)`` in nats of the model's continuous density (at ``t_index = 0``) at the
    (dequantised) points; ``bits_per_dim = nll / (D ln 2) + offset_bits`` with ``offset_bits = -log2(bin_width)``
    for discrete data (0 for continuous data)."""

    nll: torch.Tensor
    bits_per_dim: torch.Tensor
    offset_bits: float
    dim: int

    @property
    def mean_bits_per_dim(self) -> float:
        return float(self.bits_per_dim.mean())


def _divergence(f, y, probes):
    """Divergence of ``f(y)`` w.r.t. ``y`` per sample: exact (``probes=None``, one backward pass per
    dimension) or Hutchinson's estimate ``mean_k v_k^T (df/dy) v_k`` (Hutchinson 1989; Grathwohl et al. 2018)."""
    B = y.shape[0]
    if probes is None:
        flat = f.reshape(B, -1)
        D = flat.shape[1]
        div = 0.0
        for j in range(D):
            (g,) = torch.autograd.grad(flat[:, j].sum(), y, retain_graph=j < D - 1)
            div = div + g.reshape(B, -1)[:, j]
        return div
    div = 0.0
    for k, v in enumerate(probes):
        (g,) = torch.autograd.grad((f * v).sum(), y, retain_graph=k < len(probes) - 1)
        div = div + (g * v).reshape(B, -1).sum(1)
    return div / len(probes)


def log_likelihood(eps_model, x, schedule, *, n_steps: int | None = None, trace: str = "hutchinson",
                   n_probes: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """``log p(x)`` (nats, ``(N,)`` float64) of the model's marginal at ``t_index = 0`` by the
    probability-flow ODE (Song et al. 2021a, Sec. 4.3 and App. D; Chen et al. 2018 instantaneous change
    of variables; FFJORD, Grathwohl et al. 2018).

    The ODE is integrated in the VE coordinates of DDIM (Song et al. 2021b, eq. 14):
    ``y = x / sqrt(ab)``, ``sigma = sqrt((1 - ab)/ab)``, ``dy/dsigma = eps(sqrt(ab) y, t_index)``, so
    ``log p_0(y_0) = log p_T(y_T) + int div_y eps dsigma`` and ``div_y = sqrt(ab) div_x``. Heun's method runs
    on ``n_steps`` intervals of the ``t_index`` grid (``None``: every index ``0..T-1``), so the model is
    only evaluated at integer ``t_index``. The prior at ``t_index = T-1`` is ``N(0, I)``; ``x`` coordinates
    carry the Jacobians ``(D/2) log ab`` at both ends.

    ``trace``: ``"exact"`` (one backward pass per dimension: use for 2-D) or ``"hutchinson"`` with
    ``n_probes`` Rademacher vectors, fixed along each trajectory. ``eps_model(x, t_index (N,)) -> eps``
    must be differentiable in ``x`` (:func:`minidiff.unet.as_eps_model` is, when ``x`` requires grad).
    """
    if trace not in ("exact", "hutchinson"):
        raise ValueError(f"trace must be 'exact' or 'hutchinson', got {trace!r}")
    n_probes = _check_count(n_probes, "n_probes")
    if n_steps is not None:  # 0 intervals would return the prior density of x itself
        n_steps = _check_count(n_steps, "n_steps")
    x = torch.as_tensor(x)
    _checks.check_batch(x, "x")
    T = schedule.T
    grid = np.arange(T) if n_steps is None else np.unique(np.round(np.linspace(0, T - 1, int(n_steps) + 1)).astype(np.int64))
    ab = schedule.alpha_bar
    B, D = x.shape[0], x[0].numel()
    probes = None
    if trace == "hutchinson":
        g = generator or torch.Generator().manual_seed(0)
        probes = [(torch.randint(0, 2, x.shape, generator=g) * 2 - 1).to(x.dtype) for _ in range(n_probes)]

    def field(y, i):
        """``(dy/dsigma, div_y)`` at grid index ``i``."""
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            s = math.sqrt(ab[i])
            f = eps_model(s * y, _checks.t_index_vector(int(i), B))
            div = _divergence(f, y, probes)
        return f.detach(), div.detach().to(torch.float64)

    sig = np.sqrt((1.0 - ab) / ab)
    y = x.detach() / math.sqrt(ab[grid[0]])
    delta = torch.zeros(B, dtype=torch.float64)
    f0, d0 = field(y, grid[0])
    for i0, i1 in zip(grid[:-1], grid[1:]):
        h = float(sig[i1] - sig[i0])
        y_e = y + h * f0
        f1, d1 = field(y_e, i1)
        y = y + 0.5 * h * (f0 + f1)
        delta = delta + 0.5 * h * (d0 + d1)
        f0, d0 = field(y, i1)
    x_T = (math.sqrt(ab[grid[-1]]) * y).to(torch.float64).reshape(B, -1)
    log_prior = -0.5 * (x_T**2).sum(1) - 0.5 * D * math.log(2 * math.pi)
    log_py0 = log_prior + 0.5 * D * math.log(ab[grid[-1]]) + delta
    return log_py0 - 0.5 * D * math.log(ab[grid[0]])


def bits_per_dim(eps_model, x, schedule, *, bin_width: float | None = None,
                 generator: torch.Generator | None = None, **kwargs) -> NLLResult:
    """Negative log-likelihood in bits/dim.

    Continuous data (``bin_width=None``): ``bits/dim = -log p(x) / (D ln 2)``.
    Discrete data on a grid of spacing ``bin_width`` (uniform dequantisation, Theis et al. 2016; Ho et
    al. 2020, Sec. 3.3): ``x~ = x + u``, ``u ~ U(-bin_width/2, bin_width/2)^D``, and
    ``bits/dim = -log p(x~) / (D ln 2) - log2(bin_width)``; its expectation over ``u`` upper-bounds the
    discrete model's ``-log2 P(x) / D``. Remaining keyword arguments go to :func:`log_likelihood`.
    """
    x = torch.as_tensor(x)
    D = x[0].numel()
    offset = 0.0
    if bin_width is not None:
        if isinstance(bin_width, bool) or not isinstance(bin_width, (int, float, np.integer, np.floating)) \
                or not (math.isfinite(bin_width) and bin_width > 0):
            raise ValueError(f"bin_width must be a finite number > 0 (the data's grid spacing) or None, got {bin_width!r}")
        g = generator or torch.Generator().manual_seed(0)
        x = x + (torch.rand(x.shape, generator=g, dtype=x.dtype) - 0.5) * bin_width
        offset = -math.log2(bin_width)
        kwargs.setdefault("generator", g)
    logp = log_likelihood(eps_model, x, schedule, **kwargs)
    nll = -logp
    return NLLResult(nll=nll, bits_per_dim=nll / (D * math.log(2)) + offset, offset_bits=offset, dim=D)


def digits_bits_per_dim(eps_model, x, schedule, **kwargs) -> NLLResult:
    """Bits/dim of digits in ``[-1, 1]`` with 17 grey levels: uniform dequantisation with bin width
    ``2/16``, so the offset is ``-log2(1/8) = +3`` bits/dim; a uniform model over 17 levels scores
    ``log2(17) = 4.09`` bits/dim."""
    return bits_per_dim(eps_model, x, schedule, bin_width=DIGITS_BIN_WIDTH, **kwargs)
