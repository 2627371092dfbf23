"""Results with their uncertainty: :class:`Estimate` (a value, its standard error and ``n``), the
older :class:`MetricResult` (a value beside its real-vs-real floor), and the argument checks the
metrics share."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MetricResult:
    """A metric value beside its real-vs-real floor at the same sample size ``n``."""

    name: str
    value: float
    floor: float
    n: int

    @property
    def ratio(self) -> float:
        """``value / floor``: 1 means indistinguishable from real data at this sample size."""
        return self.value / self.floor

    def __str__(self) -> str:
        return f"{self.name} = {self.value:.4g} (real-vs-real floor {self.floor:.4g}, ratio {self.ratio:.2f}, n = {self.n})"


def _check_count(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (bools and floats refused), else a ValueError/TypeError naming it."""
    from .._checks import check_count

    return check_count(value, name, minimum)


def _check_z(z) -> float:
    if isinstance(z, bool) or not isinstance(z, (int, float, np.floating, np.integer)) or not (math.isfinite(z) and z > 0):
        raise ValueError(f"z must be a finite number > 0 (standard errors either side), got {z!r}")
    return float(z)


def _decimals_for(se: float) -> int:
    """Decimal places that show ``se`` to two significant figures (and the value to the same place)."""
    if se <= 0 or not math.isfinite(se):
        return 4
    return int(min(12, max(0, 1 - math.floor(math.log10(se)))))


@dataclass(frozen=True)
class Estimate:
    """A measured value with its standard error ``se`` from a sample of size ``n``.

    ``interval(z)`` is ``value +- z se`` (z = 2: about 95 % for a normal sampling distribution); two
    estimates whose intervals overlap are *not distinguishable at this n*.
    """

    name: str
    value: float
    se: float
    n: int

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        for field in ("value", "se"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v):
                raise ValueError(f"{field} must be a finite number, got {v!r}")
            object.__setattr__(self, field, float(v))
        if self.se < 0:
            raise ValueError(f"se must be >= 0, got {self.se!r}")
        object.__setattr__(self, "n", _check_count(self.n, "n"))

    def interval(self, z: float = 2.0) -> tuple[float, float]:
        """``(value - z se, value + z se)``."""
        z = _check_z(z)
        return (self.value - z * self.se, self.value + z * self.se)

    def overlaps(self, other: "Estimate", z: float = 2.0) -> bool:
        """Whether the ``z``-SE intervals of ``self`` and ``other`` overlap (then: not distinguishable)."""
        if not isinstance(other, Estimate):
            raise TypeError(f"other must be an Estimate, got {type(other).__name__}")
        lo, hi = self.interval(z)
        olo, ohi = other.interval(z)
        return lo <= ohi and olo <= hi

    def __str__(self) -> str:
        d = _decimals_for(self.se)
        return f"{self.name} {self.value:.{d}f} ± {self.se:.{d}f} (n = {self.n})"


def _features_2d(x, name: str) -> np.ndarray:
    """Feature matrix ``(N, d)`` as float64 numpy, finite, else a ValueError naming ``name``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"{name} must be a 2-D (N, d) feature matrix with d >= 1, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite: it holds NaN or inf (a sampler diverged?)")
    return a


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``(N, M)`` in float64."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.clip(d, 0.0, None)
