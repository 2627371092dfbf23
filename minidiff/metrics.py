"""Sample-quality metrics. Always report a metric beside its real-vs-real floor: with small sample
sizes these estimators are biased upwards, so a value is only meaningful next to the value two
independent real samples of the same size give.

* Digits: a small CNN classifier trained by the package on the train split (:func:`train_classifier`,
  shipped weights via :func:`load_classifier`); FD-digits, the Frechet distance between its
  penultimate-layer features of generated and real *test* digits (Heusel et al. 2017's FID recipe
  with a domain classifier), with the floor "train split vs test split" at the same sample size
  (:func:`fd_digits`); the histogram of predicted classes (:func:`class_histogram`).
* 2-D data: sliced Wasserstein distance (:func:`sliced_wasserstein`) and its floor
  (:func:`sliced_wasserstein_floor`, :func:`sliced_wasserstein_result`).
* Likelihood: ``log p(x)`` through the probability-flow ODE with exact or Hutchinson trace
  (:func:`log_likelihood`), and bits/dim with an explicit dequantisation offset (:func:`bits_per_dim`,
  :func:`digits_bits_per_dim`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "MetricResult", "NLLResult", "DigitClassifier", "train_classifier", "load_classifier", "save_classifier",
    "classifier_accuracy", "classify", "classifier_features", "frechet_distance", "fd_digits", "fd_digits_floor",
    "class_histogram", "sliced_wasserstein", "sliced_wasserstein_floor", "sliced_wasserstein_result",
    "log_likelihood", "bits_per_dim", "digits_bits_per_dim", "DIGITS_BIN_WIDTH",
]

CLASSIFIER_PATH = Path(__file__).resolve().parent / "weights" / "classifier.safetensors"
DIGITS_BIN_WIDTH = 2.0 / 16.0  # 17 grey levels 0..16 mapped onto [-1, 1]


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


# ============================================================================ the digits classifier
class DigitClassifier(nn.Module):
    """conv(32)-conv(64)-pool-conv(64)-pool-fc(128)-fc(10) on ``(B, 1, 8, 8)`` digits in ``[-1, 1]``.
    :meth:`features` is the 128-d penultimate layer used by FD-digits."""

    feature_dim = 128

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 2 * 2, self.feature_dim)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(self.feature_dim, 10)

    def features(self, x):  # (B, 1, 8, 8) -> (B, 128)
        h = F.relu(self.conv1(x))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (B, 64, 4, 4)
        h = F.max_pool2d(F.relu(self.conv3(h)), 2)  # (B, 64, 2, 2)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x):  # logits (B, 10)
        return self.fc2(self.drop(self.features(x)))


def train_classifier(*, epochs: int = 40, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
                     progress: bool = False) -> DigitClassifier:
    """Train :class:`DigitClassifier` on the digits train split with +-1 pixel shift augmentation,
    AdamW and a cosine learning rate; deterministic for ``seed`` and thread count."""
    from tqdm.auto import tqdm

    from .data import augment_shift, load_digits

    x, y = load_digits("train")
    torch.manual_seed(seed)
    model = DigitClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(x.shape[0] / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    model.train()
    for epoch in tqdm(range(epochs), disable=not progress, desc="classifier"):
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        perm = torch.randperm(x.shape[0], generator=g)
        xa = augment_shift(x, 1, generator=g)
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(model(xa[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval().requires_grad_(False)


def save_classifier(model: DigitClassifier, path=CLASSIFIER_PATH, **info) -> None:
    from . import checkpoint as ckpt

    ckpt.save(path, {f"classifier.{k}": v for k, v in model.state_dict().items()},
              {"kind": "classifier", "info": info})


def load_classifier(path=None) -> DigitClassifier:
    """The shipped digits classifier (eval mode, frozen). Cached for the default path."""
    if path is None:
        return _load_default_classifier()
    return _load_classifier(Path(path))


@lru_cache(maxsize=1)
def _load_default_classifier():
    return _load_classifier(CLASSIFIER_PATH)


def _load_classifier(path: Path) -> DigitClassifier:
    from . import checkpoint as ckpt

    tensors, meta = ckpt.load(path)
    if meta.get("kind") != "classifier":
        raise ValueError(f"{path} is a minidiff {meta.get('kind')!r} file, not the digits classifier")
    model = DigitClassifier()
    ckpt.load_state_into(model, ckpt.subset(tensors, "classifier"), f"classifier {path}")
    return model.eval().requires_grad_(False)


def _prep_digits(x) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
        raise ValueError(f"digits must be (N, 1, 8, 8), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("digits must be finite (a sampler diverged?)")
    return x.detach().to(torch.float32).cpu().clamp(-1.0, 1.0)


@torch.no_grad()
def classifier_logits(x, classifier=None, batch: int = 2048) -> torch.Tensor:
    clf = classifier or load_classifier()
    x = _prep_digits(x)
    return torch.cat([clf(x[i:i + batch]) for i in range(0, x.shape[0], batch)]) if x.shape[0] else torch.empty(0, 10)


def classify(x, classifier=None) -> torch.Tensor:
    """Predicted class ``(N,)`` of digits ``(N, 1, 8, 8)`` in ``[-1, 1]`` (clamped to the range)."""
    return classifier_logits(x, classifier).argmax(1)


def classifier_accuracy(classifier=None, split: str = "test") -> float:
    """Accuracy of the classifier on a digits split."""
    from .data import load_digits

    x, y = load_digits(split)
    return float((classify(x, classifier) == y).double().mean())


@torch.no_grad()
def classifier_features(x, classifier=None, batch: int = 2048) -> torch.Tensor:
    """Penultimate-layer features ``(N, 128)``, float64, of digits clamped to ``[-1, 1]``."""
    clf = classifier or load_classifier()
    x = _prep_digits(x)
    return torch.cat([clf.features(x[i:i + batch]) for i in range(0, x.shape[0], batch)]).double()


def class_histogram(x, classifier=None) -> torch.Tensor:
    """Fraction of samples predicted as each class, ``(10,)`` float64 summing to 1."""
    pred = classify(x, classifier)
    return torch.bincount(pred, minlength=10).double() / max(1, pred.numel())


# ============================================================================ Frechet distance
def _sqrtm_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(a, b) -> float:
    """``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a^{1/2} C_b C_a^{1/2})^{1/2})`` between Gaussians fitted to
    feature sets ``a (N, d)`` and ``b (M, d)`` (Dowson & Landau 1982; Heusel et al. 2017), in float64.
    The trace of the cross term uses symmetric eigendecompositions, so it is real and stable."""
    a = np.asarray(torch.as_tensor(a, dtype=torch.float64))
    b = np.asarray(torch.as_tensor(b, dtype=torch.float64))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (N, d) and (M, d); got {a.shape} and {b.shape}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("need at least 2 samples per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    sa = _sqrtm_psd(ca)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(sa @ cb @ sa), 0.0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2.0 * cross)


@lru_cache(maxsize=4)
def _test_features(classifier_id: int | None):
    from .data import load_digits

    x, _ = load_digits("test")
    return classifier_features(x, _classifiers.get(classifier_id))


_classifiers: dict = {}


def _ref_features(classifier):
    if classifier is None:
        return _test_features(None)
    _classifiers[id(classifier)] = classifier
    return _test_features(id(classifier))


def fd_digits_floor(n: int, *, classifier=None, seed: int = 0) -> float:
    """Real-vs-real floor of FD-digits: ``n`` train-split digits (without replacement when ``n`` <= 1438)
    against the test split."""
    from .data import load_digits

    x, _ = load_digits("train")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(x.shape[0], generator=g)[:n] if n <= x.shape[0] else torch.randint(0, x.shape[0], (n,), generator=g)
    return frechet_distance(classifier_features(x[idx], classifier), _ref_features(classifier))


def fd_digits(samples, *, classifier=None, seed: int = 0) -> MetricResult:
    """FD-digits of ``samples (N, 1, 8, 8)`` in ``[-1, 1]`` against the 359 test digits, with the floor
    (``N`` train digits vs the test digits) beside it."""
    n = int(torch.as_tensor(samples).shape[0])
    value = frechet_distance(classifier_features(samples, classifier), _ref_features(classifier))
    return MetricResult("FD-digits", value, fd_digits_floor(n, classifier=classifier, seed=seed), n)


# ============================================================================ 2-D: sliced Wasserstein
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


# ============================================================================ likelihood
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
    probability-flow ODE (Song et al. 2021b, Sec. 4.3 and App. D; Chen et al. 2018 instantaneous change
    of variables; FFJORD, Grathwohl et al. 2018).

    The ODE is integrated in the VE coordinates of DDIM (Song et al. 2021a, eq. 14):
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
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        raise TypeError("x must be floating point")
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
            t = torch.full((B,), int(i), dtype=torch.int64)
            f = eps_model(s * y, t)
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


# ============================================================================ CLI
def main(argv=None) -> int:
    """``python -m minidiff.metrics train-classifier [--seed S --epochs E --out PATH]``."""
    import argparse
    import time

    p = argparse.ArgumentParser(prog="python -m minidiff.metrics")
    sub = p.add_subparsers(dest="cmd", required=True)
    tc = sub.add_parser("train-classifier", help="train the digits classifier and save it")
    tc.add_argument("--seed", type=int, default=0)
    tc.add_argument("--epochs", type=int, default=40)
    tc.add_argument("--out", default=str(CLASSIFIER_PATH))
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    model = train_classifier(epochs=args.epochs, seed=args.seed, progress=True)
    acc = classifier_accuracy(model, "test")
    secs = time.perf_counter() - t0
    save_classifier(model, args.out, seed=args.seed, epochs=args.epochs, test_accuracy=acc)
    print(f"classifier: test accuracy {acc:.4f}, {secs:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
