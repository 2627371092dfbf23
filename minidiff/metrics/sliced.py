"""Sliced Wasserstein distance for 2-D (and low-dimensional) point clouds, with its real-vs-real floor."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .estimate import MetricResult, _check_count


def sliced_wasserstein(x, y, n_projections: int = 256, p: int = 2, seed: int = 0) -> float:
    """Sliced p-Wasserstein distance between point clouds ``x (N, d)`` and ``y (M, d)``
    (Rabin et al. 2011; Bonneel et al. 2015): the 1-D Wasserstein distance along random unit
    directions, averaged, to the power ``1/p``. Quantiles are matched on a common grid so ``N != M`` works.
    Deterministic for a given ``seed``; ``p >= 1`` (below 1 it is not a distance)."""
    n_projections = _check_count(n_projections, "n_projections")
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not (math.isfinite(p) and p >= 1):
        raise ValueError(f"p must be a finite number >= 1 (the Wasserstein order), got {p!r}")
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (N, d) and (M, d) with the same d; got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] == 0 or y.shape[0] == 0:
        raise ValueError("x and y must each hold at least one point")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("x and y must be finite (a sampler diverged?)")
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(x.shape[1], n_projections, generator=g, dtype=torch.float64)
    dirs /= dirs.norm(dim=0, keepdim=True)
    n = max(x.shape[0], y.shape[0])
    q = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    px = torch.quantile(x @ dirs, q, dim=0) if x.shape[0] != n else torch.sort(x @ dirs, dim=0).values
    py = torch.quantile(y @ dirs, q, dim=0) if y.shape[0] != n else torch.sort(y @ dirs, dim=0).values
    return float(((px - py).abs() ** p).mean() ** (1.0 / p))


def sliced_wasserstein_floor(sampler: Callable[[int, torch.Generator], torch.Tensor], n: int, *,
                             n_projections: int = 256, p: int = 2, seed: int = 0) -> float:
    """The sliced Wasserstein distance between two independent real samples of size ``n``, drawn by
    ``sampler(n, generator) -> (n, d)`` (e.g. ``lambda n, g: make_2d("moons", n, generator=g)`` or
    ``mixture.sample``)."""
    g = torch.Generator().manual_seed(seed)
    a, b = sampler(n, g), sampler(n, g)
    return sliced_wasserstein(a, b, n_projections, p, seed=seed + 1)


def sliced_wasserstein_result(x, sampler, *, n_projections: int = 256, p: int = 2, seed: int = 0) -> MetricResult:
    """Sliced Wasserstein of ``x`` against a fresh real sample of the same size, with its floor."""
    x = torch.as_tensor(x)
    n = int(x.shape[0])
    ref = sampler(n, torch.Generator().manual_seed(seed + 10_007))
    value = sliced_wasserstein(x, ref, n_projections, p, seed=seed + 1)
    floor = sliced_wasserstein_floor(sampler, n, n_projections=n_projections, p=p, seed=seed)
    return MetricResult("sliced-W%d" % p, value, floor, n)
