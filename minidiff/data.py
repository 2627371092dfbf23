"""Data for the course, all offline: scikit-learn's bundled 8x8 digits, 2-D toys, and Gaussian
mixtures whose noised marginals and scores are exact at every noise level.

The Gaussian mixture is what lets the course score every sampler against a known answer: if
``x_0 ~ sum_k w_k N(mu_k, S_k)`` and ``x_t = a x_0 + s eps``, then
``x_t ~ sum_k w_k N(a mu_k, a^2 S_k + s^2 I)`` exactly, so the density and the score
``grad log p_t`` are closed-form at every ``alpha_bar`` (VP: ``a = sqrt(ab), s = sqrt(1-ab)``) or
``sigma`` (VE: ``a = 1, s = sigma``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from . import _checks as _c

__all__ = [
    "GaussianMixture", "load_digits", "digits_split", "make_2d", "TOYS_2D",
    "to_unit_interval", "from_unit_interval", "standardize", "augment_shift",
    "load_glyphs", "GlyphLabels", "glyph_caption",
]


# ============================================================================ Gaussian mixtures
@dataclass(frozen=True, eq=False)
class GaussianMixture:
    """``p(x) = sum_k weights[k] N(x; means[k], covs[k])`` in ``d`` dimensions, in float64.

    ``weights``: ``(K,)`` positive, summing to 1; ``means``: ``(K, d)``; ``covs``: ``(K, d, d)``
    symmetric positive definite. Build with :meth:`isotropic` or :meth:`grid_2d`.
    """

    weights: torch.Tensor
    means: torch.Tensor
    covs: torch.Tensor

    def __post_init__(self):
        w = torch.as_tensor(self.weights, dtype=torch.float64)
        m = torch.as_tensor(self.means, dtype=torch.float64)
        c = torch.as_tensor(self.covs, dtype=torch.float64)
        if w.ndim != 1 or m.ndim != 2 or m.shape[0] != w.shape[0]:
            raise ValueError(f"weights must be (K,) and means (K, d); got {tuple(w.shape)} and {tuple(m.shape)}")
        K, d = m.shape
        if c.shape != (K, d, d):
            raise ValueError(f"covs must be (K, d, d) = {(K, d, d)}, got {tuple(c.shape)}")
        if not (bool(torch.all(w > 0)) and abs(float(w.sum()) - 1.0) <= 1e-6):  # NaN fails too
            raise ValueError(f"weights must be positive and sum to 1, got {w.tolist()}")
        if not (bool(torch.isfinite(m).all()) and bool(torch.isfinite(c).all())):
            raise ValueError("means and covs must be finite (no NaN or inf)")
        w = w / w.sum()  # exact normalisation in float64 (weights given in float32 sum to 1 only to ~1e-7)
        if not torch.allclose(c, c.transpose(-1, -2)):
            raise ValueError("covs must be symmetric")
        chol, info = torch.linalg.cholesky_ex(c)
        if torch.any(info != 0):
            raise ValueError("covs must be positive definite")
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "means", m)
        object.__setattr__(self, "covs", c)
        object.__setattr__(self, "_chol", chol)

    @classmethod
    def isotropic(cls, means, std, weights=None) -> "GaussianMixture":
        """Components ``N(means[k], std_k^2 I)``; ``std`` a float or ``(K,)``; equal weights by default."""
        m = torch.as_tensor(means, dtype=torch.float64)
        K, d = m.shape
        s = torch.as_tensor(std, dtype=torch.float64).expand(K)
        w = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        return cls(w, m, (s**2)[:, None, None] * torch.eye(d, dtype=torch.float64))

    @classmethod
    def grid_2d(cls, n: int = 3, spacing: float = 1.0, std: float = 0.1, weights=None) -> "GaussianMixture":
        """``n x n`` equal components on a grid centred at the origin (a classic mode-coverage test)."""
        g = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * spacing
        means = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
        return cls.isotropic(means, std, weights)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def n_components(self) -> int:
        return int(self.means.shape[0])

    # ------------------------------------------------------------------ moments
    def mean(self) -> torch.Tensor:
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        mu = self.mean()
        dm = self.means - mu
        return torch.einsum("k,kij->ij", self.weights, self.covs) + torch.einsum("k,ki,kj->ij", self.weights, dm, dm)

    # ------------------------------------------------------------------ noising
    def noised(self, scale: float, noise_std: float) -> "GaussianMixture":
        """The exact law of ``scale * x_0 + noise_std * eps``: ``sum_k w_k N(scale mu_k, scale^2 S_k + noise_std^2 I)``."""
        eye = torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(self.weights, scale * self.means, scale**2 * self.covs + noise_std**2 * eye)

    def at_alpha_bar(self, alpha_bar: float) -> "GaussianMixture":
        """VP marginal ``q_t`` at signal fraction ``alpha_bar`` (Ho et al. 2020, eq. 4)."""
        ab = float(alpha_bar)
        if not 0.0 < ab <= 1.0:
            raise ValueError(f"alpha_bar must lie in (0, 1], got {ab}")
        return self.noised(math.sqrt(ab), math.sqrt(1.0 - ab))

    def at_sigma(self, sigma: float) -> "GaussianMixture":
        """VE marginal at noise level ``sigma`` (Song & Ermon 2019)."""
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        return self.noised(1.0, float(sigma))

    # ------------------------------------------------------------------ density and score
    def _check_x(self, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (N, {self.dim}), got {tuple(x.shape)}")
        return x

    def _component_terms(self, x):
        """Per-component log densities ``(N, K)`` and whitened residuals, in float64."""
        x = self._check_x(x).to(torch.float64)
        diff = x[None, :, :] - self.means[:, None, :]  # (K, N, d)
        L = self._chol  # (K, d, d)
        z = torch.linalg.solve_triangular(L, diff.transpose(1, 2), upper=False)  # (K, d, N): L^{-1} (x - mu_k)
        logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)  # (K,)
        logp = -0.5 * (z**2).sum(1).T - 0.5 * logdet - 0.5 * self.dim * math.log(2 * math.pi)  # (N, K)
        return logp + torch.log(self.weights), diff

    def log_prob(self, x) -> torch.Tensor:
        """``log p(x)`` for ``x`` of shape ``(N, d)``, float64."""
        comp, _ = self._component_terms(x)
        return torch.logsumexp(comp, dim=1)

    def responsibilities(self, x) -> torch.Tensor:
        """Posterior component probabilities ``p(k | x)``, ``(N, K)``."""
        comp, _ = self._component_terms(x)
        return torch.softmax(comp, dim=1)

    def score(self, x) -> torch.Tensor:
        """Exact ``grad_x log p(x) = -sum_k p(k|x) S_k^{-1} (x - mu_k)``, returned in ``x``'s dtype."""
        comp, diff = self._component_terms(x)
        r = torch.softmax(comp, dim=1)  # (N, K)
        sol = torch.cholesky_solve(diff.transpose(1, 2), self._chol)  # (K, d, N): S_k^{-1} (x - mu_k)
        out = -torch.einsum("nk,kdn->nd", r, sol)
        return out.to(x.dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else out

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact samples, ``(n, d)`` float64."""
        n = _c.check_count(n, "n", low=0)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        return self.means[k] + (self._chol[k] @ z[..., None])[..., 0]

    # ------------------------------------------------------------------ as a denoiser
    def eps_model(self, schedule):
        """A perfect eps-prediction "network" for VP sampling with ``schedule``:
        ``eps(x_t, t_index) = -sqrt(1 - ab) grad log q_t(x_t)`` using the exact marginal score.
        Accepts ``x`` of shape ``(N, d)`` and an int or ``(N,)`` ``t_index``."""

        def model(x, t_index):
            t_index = np.asarray(t_index.detach().cpu() if hasattr(t_index, "detach") else t_index).reshape(-1)
            levels = np.unique(t_index)
            out = torch.empty_like(x)
            for level in levels:
                ab = float(schedule.alpha_bar[int(level)])
                sel = slice(None) if levels.size == 1 else torch.as_tensor(t_index == level)
                out[sel] = -math.sqrt(1 - ab) * self.at_alpha_bar(ab).score(x[sel])
            return out

        return model

    # ------------------------------------------------------------------ transported along an interpolant
    def at_interpolant(self, interpolant, t: float) -> "GaussianMixture":
        """The exact marginal ``p_t`` of ``x_t = alpha_t x_0 + sigma_t eps`` (``interpolant``: a
        :class:`minidiff.interpolants.Interpolant`, ``t`` a float): ``sum_k w_k N(alpha_t mu_k, alpha_t^2 S_k +
        sigma_t^2 I)``. Its :meth:`log_prob` is the transported density."""
        c = interpolant.coefficients(float(t))
        return self.noised(c.alpha_t, c.sigma_t)

    def posterior_means(self, x, alpha_t: float, sigma_t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(E[x_0 | x_t = x], E[eps | x_t = x])`` for ``x_t = alpha_t x_0 + sigma_t eps``, float64 ``(N, d)``.

        Per component ``k`` (Gaussian conditioning, Bishop 2006, eq. 2.81), with ``C_k = alpha_t^2 S_k +
        sigma_t^2 I``: ``E[x_0 | x, k] = mu_k + alpha_t S_k C_k^{-1} (x - alpha_t mu_k)``,
        ``E[eps | x, k] = sigma_t C_k^{-1} (x - alpha_t mu_k)``, mixed by the responsibilities of ``p_t``.
        Valid at ``alpha_t = 0`` or ``sigma_t = 0`` (not both)."""
        marg = self.noised(alpha_t, sigma_t)
        comp, diff = marg._component_terms(x)                        # (N, K), (K, N, d)
        r = torch.softmax(comp, dim=1)                               # (N, K)
        sol = torch.cholesky_solve(diff.transpose(1, 2), marg._chol)  # (K, d, N): C_k^{-1} (x - alpha_t mu_k)
        x0_k = self.means[:, :, None] + alpha_t * torch.einsum("kij,kjn->kin", self.covs, sol)  # (K, d, N)
        x0 = torch.einsum("nk,kdn->nd", r, x0_k)
        eps = sigma_t * torch.einsum("nk,kdn->nd", r, sol)
        return x0, eps

    def velocity(self, x, t: float, interpolant) -> torch.Tensor:
        """The exact marginal velocity ``u_t(x) = E[alpha'_t x_0 + sigma'_t eps | x_t = x]`` that transports
        ``p_0 = self`` to ``p_1`` along ``interpolant`` (Lipman et al. 2023, eq. 8 and Thm. 1; Albergo &
        Vanden-Eijnden 2023, Prop. 1), in ``x``'s dtype. It solves the continuity equation
        ``d p_t / dt + div(p_t u_t) = 0`` with ``p_t`` = :meth:`at_interpolant`."""
        c = interpolant.coefficients(float(t))
        x0, eps = self.posterior_means(x, c.alpha_t, c.sigma_t)
        out = c.d_alpha_t * x0 + c.d_sigma_t * eps
        return out.to(x.dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else out

    def velocity_model(self, interpolant):
        """``u(x, t) -> velocity`` with the exact field (a perfect "flow network" for the samplers of
        :mod:`minidiff.flow`)."""
        return lambda x, t: self.velocity(x, t, interpolant)


# ============================================================================ digits
@lru_cache(maxsize=1)
def _digits_raw():
    from sklearn.datasets import load_digits as _ld

    d = _ld()
    return d.images.astype(np.float32), d.target.astype(np.int64)


def to_unit_interval(x, low: float = 0.0, high: float = 16.0):
    """Map pixel values in ``[low, high]`` linearly to ``[-1, 1]``."""
    return 2.0 * (x - low) / (high - low) - 1.0


def from_unit_interval(x, low: float = 0.0, high: float = 16.0):
    """Inverse of :func:`to_unit_interval`."""
    return (x + 1.0) * 0.5 * (high - low) + low


def load_digits(split: str = "all"):
    """scikit-learn's bundled 8x8 digits (1797 images, 17 grey levels 0..16), scaled to ``[-1, 1]``.

    Returns ``(images, labels)``: ``(N, 1, 8, 8)`` float32 tensor and ``(N,)`` int64 tensor.
    ``split``: ``"train"`` (1438 images) / ``"test"`` (359) -- a fixed stratified split (seed 0) --
    or ``"all"``.
    """
    images, labels = _digits_raw()
    if split != "all":
        train_idx, test_idx = digits_split()
        if split == "train":
            images, labels = images[train_idx], labels[train_idx]
        elif split == "test":
            images, labels = images[test_idx], labels[test_idx]
        else:
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    x = torch.from_numpy(to_unit_interval(images)).unsqueeze(1).contiguous()
    return x, torch.from_numpy(labels.copy())


@lru_cache(maxsize=1)
def digits_split(test_fraction: float = 0.2, seed: int = 0):
    """Indices of the fixed stratified train/test split: a per-class shuffle with ``seed``."""
    _, labels = _digits_raw()
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_test = int(round(test_fraction * idx.size))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def standardize(x, mean=None, std=None, eps: float = 1e-8):
    """Per-feature standardisation ``(x - mean) / std`` over the batch axis; returns ``(z, mean, std)``."""
    mean = x.mean(0, keepdim=True) if mean is None else mean
    std = x.std(0, keepdim=True) if std is None else std
    return (x - mean) / (std + eps), mean, std


def augment_shift(images, max_shift: int = 1, generator: torch.Generator | None = None, fill: float = -1.0):
    """Randomly translate each image ``(N, C, H, W)`` by up to ``max_shift`` pixels in x and y,
    filling uncovered pixels with ``fill`` (the background value after scaling to ``[-1, 1]``)."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    N, C, H, W = images.shape
    pad = torch.nn.functional.pad(images, (max_shift,) * 4, value=fill)
    shifts = torch.randint(0, 2 * max_shift + 1, (N, 2), generator=generator)
    out = torch.empty_like(images)
    for i in range(N):
        dy, dx = int(shifts[i, 0]), int(shifts[i, 1])
        out[i] = pad[i, :, dy:dy + H, dx:dx + W]
    return out


# ============================================================================ 2-D toys
def _moons(n, g):
    n1 = n // 2
    t1 = torch.rand(n1, generator=g, dtype=torch.float64) * math.pi
    t2 = torch.rand(n - n1, generator=g, dtype=torch.float64) * math.pi
    a = torch.stack([torch.cos(t1), torch.sin(t1)], 1)
    b = torch.stack([1 - torch.cos(t2), 0.5 - torch.sin(t2)], 1)
    return (torch.cat([a, b]) - torch.tensor([0.5, 0.25], dtype=torch.float64)) * 1.5


def _swiss_roll(n, g):
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g, dtype=torch.float64))
    return torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / 7.0


def _rings(n, g):
    r = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64)[torch.randint(0, 3, (n,), generator=g)]
    th = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    return torch.stack([r * torch.cos(th), r * torch.sin(th)], 1)


def _checkerboard(n, g):
    x1 = torch.rand(n, generator=g, dtype=torch.float64) * 4 - 2
    x2 = torch.rand(n, generator=g, dtype=torch.float64) - torch.randint(0, 2, (n,), generator=g) * 2.0
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], 1)


TOYS_2D = {"moons": _moons, "swiss_roll": _swiss_roll, "rings": _rings, "checkerboard": _checkerboard}


def make_2d(name: str, n: int, *, noise: float = 0.03, generator: torch.Generator | None = None,
            dtype=torch.float32) -> torch.Tensor:
    """``n`` points ``(n, 2)`` from a 2-D toy (moons, swiss_roll, rings, checkerboard), roughly in
    ``[-2, 2]^2``, plus isotropic Gaussian jitter of std ``noise``."""
    if name not in TOYS_2D:
        raise ValueError(f"name must be one of {sorted(TOYS_2D)}, got {name!r}")
    n = _c.check_count(n, "n", low=0)
    noise = _c.check_nonnegative(noise, "noise")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    x = TOYS_2D[name](n, g)
    x = x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)
    return x.to(dtype)


# ============================================================================ glyphs (minidiff.glyphs)
from .glyphs import GlyphLabels, load_glyphs  # noqa: E402  (re-exported: 32x32 / 16x16 font glyphs)
from .glyphs import caption as glyph_caption  # noqa: E402
