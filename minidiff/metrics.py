"""Sample-quality metrics. Always report a metric beside its real-vs-real floor: with small sample
sizes these estimators are biased upwards, so a value is only meaningful next to the value two
independent real samples of the same size give."""
from __future__ import annotations

import torch

__all__ = ["sliced_wasserstein"]


def sliced_wasserstein(x, y, n_projections: int = 256, p: int = 2, seed: int = 0) -> float:
    """Sliced p-Wasserstein distance between point clouds ``x (N, d)`` and ``y (M, d)``
    (Rabin et al. 2011; Bonneel et al. 2015): the 1-D Wasserstein distance along random unit
    directions, averaged, to the power ``1/p``. Quantiles are matched on a common grid so ``N != M`` works.
    Deterministic for a given ``seed``."""
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
