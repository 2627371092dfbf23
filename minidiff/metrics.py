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

import hashlib
import math
import weakref
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
    "Estimate", "kid", "polynomial_kernel", "precision_recall", "QualityReport", "digits_quality",
    "MemorisationReport", "memorisation", "compare", "classifier_split", "parameters_digest",
    "classifier_logits",
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


CLASSIFIER_FIT_FRACTION = 0.5


@lru_cache(maxsize=1)
def classifier_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The digits classifier's data: indices ``(fit, held_out)`` into ``load_digits("train")``.

    A fixed stratified split (per class, a shuffle with ``seed``) of the 1438 train digits: the
    classifier is trained on ``fit`` (half of each class) only, so the real-vs-real floor of the
    quality measures -- ``held_out`` train digits against the test split -- compares two sets the
    classifier never saw, and generated samples are compared with the test split, unseen by both the
    classifier and the diffusion models (which train on the whole train split)."""
    from .data import load_digits

    labels = load_digits("train")[1].numpy()
    rng = np.random.default_rng(seed)
    fit, held = [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_fit = int(round(CLASSIFIER_FIT_FRACTION * idx.size))
        fit.append(idx[:n_fit])
        held.append(idx[n_fit:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(held))


def train_classifier(*, epochs: int = 40, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
                     progress: bool = False) -> DigitClassifier:
    """Train :class:`DigitClassifier` on the ``fit`` half of the digits train split
    (:func:`classifier_split`) with +-1 pixel shift augmentation, AdamW and a cosine learning rate;
    deterministic for ``seed`` and thread count."""
    from tqdm.auto import tqdm

    from .data import augment_shift, load_digits

    epochs = _check_count(epochs, "epochs")
    batch_size = _check_count(batch_size, "batch_size")
    x, y = load_digits("train")
    fit = torch.from_numpy(classifier_split()[0])
    x, y = x[fit], y[fit]
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


# ---------------------------------------------------------------------------- reference features, cached
# Cached on the classifier itself (a WeakKeyDictionary, so a classifier that goes away takes its cache
# with it) and keyed by a digest of its parameters, so training it further cannot serve stale features.
_feature_cache: "weakref.WeakKeyDictionary[nn.Module, tuple[str, dict]]" = weakref.WeakKeyDictionary()


def parameters_digest(model: nn.Module) -> str:
    """SHA-1 of every parameter and buffer (names, shapes, dtypes and bytes) of ``model``."""
    h = hashlib.sha1()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _reference_digits(which: str) -> torch.Tensor:
    """``"test"``: the test split; ``"held_out"``: the train digits the classifier did not see."""
    from .data import load_digits

    if which == "test":
        return load_digits("test")[0]
    if which == "held_out":
        return load_digits("train")[0][torch.from_numpy(classifier_split()[1])]
    raise ValueError(f"which must be 'test' or 'held_out', got {which!r}")


def _reference_features(classifier, which: str) -> torch.Tensor:
    """Features of the reference digits ``which`` under ``classifier`` (``None``: the shipped one), cached."""
    clf = classifier if classifier is not None else load_classifier()
    digest = parameters_digest(clf)
    cached = _feature_cache.get(clf)
    if cached is None or cached[0] != digest:
        cached = (digest, {})
        _feature_cache[clf] = cached
    if which not in cached[1]:
        cached[1][which] = classifier_features(_reference_digits(which), clf)
    return cached[1][which]


def _floor_features(n: int, classifier, seed: int) -> torch.Tensor:
    """Features of ``min(n, H)`` held-out train digits, drawn without replacement with ``seed``."""
    held = _reference_features(classifier, "held_out")
    if n >= held.shape[0]:
        return held
    return held[torch.randperm(held.shape[0], generator=torch.Generator().manual_seed(seed))[:n]]


def fd_digits_floor(n: int, *, classifier=None, seed: int = 0) -> float:
    """Real-vs-real floor of FD-digits: ``min(n, H)`` held-out train digits (unseen by the classifier,
    :func:`classifier_split`; drawn without replacement with ``seed``) against the test split. For
    ``n > H`` the floor is at ``H`` digits, where FD's small-sample bias is larger: a conservative floor."""
    n = _check_count(n, "n", 2)
    return frechet_distance(_floor_features(n, classifier, _check_count(seed, "seed", 0)),
                            _reference_features(classifier, "test"))


def fd_digits(samples, *, classifier=None, seed: int = 0) -> MetricResult:
    """FD-digits of ``samples (N, 1, 8, 8)`` in ``[-1, 1]`` against the 359 test digits, with the floor
    (:func:`fd_digits_floor`) beside it. A secondary measure: FD is biased at small ``N``; the headline
    is :func:`digits_quality`'s KID with its interval."""
    feats = classifier_features(samples, classifier)
    n = int(feats.shape[0])
    value = frechet_distance(feats, _reference_features(classifier, "test"))
    return MetricResult("FD-digits", value, fd_digits_floor(n, classifier=classifier, seed=seed), n)


# ============================================================================ estimates with intervals
def _check_count(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (bools and floats refused), else a ValueError/TypeError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


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


# ============================================================================ KID
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


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """KID's kernel ``k(x, y) = (x.y / d + 1)^3`` (Bińkowski et al. 2018, Sec. 3), ``(N, M)`` float64."""
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def _mmd2_unbiased(sxx: float, syy: float, sxy: float, m: int, n: int) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) from the off-diagonal sums of K_xx, K_yy and the sum of K_xy."""
    return sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2.0 * sxy / (m * n)


def kid(features_a, features_b) -> Estimate:
    """Kernel Inception Distance (Bińkowski et al. 2018): the unbiased estimate of the squared MMD
    (Gretton et al. 2012, eq. 3) between feature sets ``a (m, d)`` and ``b (n, d)`` with the cubic
    polynomial kernel :func:`polynomial_kernel`, in float64, with a standard error.

    Unbiased at every sample size, so the real-vs-real value is 0 in expectation (it can be negative).
    The standard error is the two-sample jackknife's (Arvesen 1969), computed in O(m n) from the
    kernel matrices' row sums: consistent when the distributions differ; when they are equal the
    statistic is degenerate and the jackknife overstates the variance (by about 2x), so an interval
    that excludes 0 is conservative. ``Estimate.n`` is ``m``, the size of the sample being assessed."""
    a = _features_2d(features_a, "features_a")
    b = _features_2d(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features_a and features_b must have the same width d; got {a.shape[1]} and {b.shape[1]}")
    m, n = a.shape[0], b.shape[0]
    if m < 3 or n < 3:
        raise ValueError(f"features_a and features_b need at least 3 rows each (jackknife); got {m} and {n}")
    kxx, kyy, kxy = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
    rxx = kxx.sum(1) - np.diag(kxx)  # (m,) off-diagonal row sums
    ryy = kyy.sum(1) - np.diag(kyy)  # (n,)
    rxy, cxy = kxy.sum(1), kxy.sum(0)  # (m,), (n,)
    sxx, syy, sxy = rxx.sum(), ryy.sum(), rxy.sum()
    value = _mmd2_unbiased(sxx, syy, sxy, m, n)
    loo_a = _mmd2_unbiased(sxx - 2 * rxx, syy, sxy - rxy, m - 1, n)  # (m,) leaving out a_i
    loo_b = _mmd2_unbiased(sxx, syy - 2 * ryy, sxy - cxy, m, n - 1)  # (n,) leaving out b_j
    var = (m - 1) / m * ((loo_a - loo_a.mean()) ** 2).sum() + (n - 1) / n * ((loo_b - loo_b.mean()) ** 2).sum()
    return Estimate("KID", float(value), float(math.sqrt(max(var, 0.0))), m)


# ============================================================================ precision and recall
def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``(N, M)`` in float64."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.clip(d, 0.0, None)


def _knn_radii_sq(x: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each row of ``x`` to its ``k``-th nearest other row."""
    d = _sq_distances(x, x)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def _coverage(points: np.ndarray, centres: np.ndarray, radii_sq: np.ndarray) -> float:
    """Fraction of ``points`` inside at least one ball ``|p - c_i| <= r_i`` (the k-NN manifold estimate)."""
    return float((_sq_distances(points, centres) <= radii_sq[None, :]).any(1).mean())


def precision_recall(real_features, fake_features, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, eqs. 1-2): each set's manifold is the
    union of balls around its points reaching their ``k``-th nearest neighbour within the set;
    precision = fraction of fake points inside the real manifold (fidelity), recall = fraction of real
    points inside the fake manifold (diversity). ``k = 3`` as in the paper."""
    real = _features_2d(real_features, "real_features")
    fake = _features_2d(fake_features, "fake_features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real_features and fake_features must have the same width d; got {real.shape[1]} and {fake.shape[1]}")
    k = _check_count(k, "k")
    if k >= real.shape[0] or k >= fake.shape[0]:
        raise ValueError(f"k must be smaller than both sample sizes ({real.shape[0]}, {fake.shape[0]}), got {k}")
    precision = _coverage(fake, real, _knn_radii_sq(real, k))
    recall = _coverage(real, fake, _knn_radii_sq(fake, k))
    return precision, recall


# ============================================================================ memorisation
@dataclass(frozen=True)
class MemorisationReport:
    """Nearest-training-neighbour distances of samples beside those of held-out real data.

    ``ratio = sample_median / held_out_median``: about 1 for a model that generalises like fresh data,
    near 0 for one that reproduces its training set. ``near_copies``: samples closer to a training
    point than the closest held-out point is (``held_out_distances.min()``)."""

    sample_distances: np.ndarray
    held_out_distances: np.ndarray

    @property
    def n(self) -> int:
        return int(self.sample_distances.shape[0])

    @property
    def sample_median(self) -> float:
        return float(np.median(self.sample_distances))

    @property
    def held_out_median(self) -> float:
        return float(np.median(self.held_out_distances))

    @property
    def ratio(self) -> float:
        return self.sample_median / self.held_out_median

    @property
    def near_copies(self) -> int:
        return int((self.sample_distances < self.held_out_distances.min()).sum())

    def __str__(self) -> str:
        return (f"memorisation: median nearest-training distance {self.sample_median:.3f} for samples vs "
                f"{self.held_out_median:.3f} for held-out data (ratio {self.ratio:.2f}, n = {self.n}); "
                f"{self.near_copies} samples nearer than any held-out point")


def _flat_points(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64)
        x = x.reshape(x.shape[0], -1).numpy() if x.ndim >= 1 else x.numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim < 2 or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch (N, ...), got shape {a.shape}")
    a = a.reshape(a.shape[0], -1)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite: it holds NaN or inf (a sampler diverged?)")
    return a


def _nearest_distances(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return np.sqrt(_sq_distances(points, reference).min(1))


def memorisation(samples, *, train=None, held_out=None) -> MemorisationReport:
    """Memorisation check (Carlini et al. 2023; Somepalli et al. 2023 use the same nearest-neighbour
    test): Euclidean distance of each sample to its nearest *training* point, beside the same distance
    for held-out real data the model never saw.

    Defaults are the digits: ``train`` = ``load_digits("train")`` (the diffusion models' training
    data), ``held_out`` = ``load_digits("test")``, in pixel space ``[-1, 1]^64``; samples are
    clamped to ``[-1, 1]`` like the training data. Any ``(N, ...)`` arrays of equal point size work."""
    from .data import load_digits

    digits = train is None
    train = load_digits("train")[0] if train is None else train
    held_out = load_digits("test")[0] if held_out is None else held_out
    s = _flat_points(samples, "samples")
    tr, ho = _flat_points(train, "train"), _flat_points(held_out, "held_out")
    if not (s.shape[1] == tr.shape[1] == ho.shape[1]):
        raise ValueError(f"samples, train and held_out must have points of one size; got {s.shape[1]}, {tr.shape[1]}, {ho.shape[1]}")
    if digits:
        s = np.clip(s, -1.0, 1.0)
    return MemorisationReport(_nearest_distances(s, tr), _nearest_distances(ho, tr))


# ============================================================================ the digits quality report
@dataclass(frozen=True)
class QualityReport:
    """The headline digits measure: KID of the samples against the test digits with its real-vs-real
    ``floor`` (held-out train digits vs the test digits, both unseen by the classifier, at the same
    ``n`` up to the held-out size), precision and recall, and FD-digits with its floor as a secondary
    column."""

    kid: Estimate
    floor: Estimate
    precision: float
    recall: float
    fd: float
    fd_floor: float
    n: int

    @property
    def value(self) -> float:
        return self.kid.value

    @property
    def se(self) -> float:
        return self.kid.se

    def __str__(self) -> str:
        d = _decimals_for(min(s for s in (self.kid.se, self.floor.se) if s > 0) if max(self.kid.se, self.floor.se) > 0 else 0.0)
        return (f"KID {self.kid.value:.{d}f} ± {self.kid.se:.{d}f} (real-vs-real floor {self.floor.value:.{d}f} ± "
                f"{self.floor.se:.{d}f}, n = {self.floor.n}); precision {self.precision:.3f}, recall {self.recall:.3f}; "
                f"FD-digits {self.fd:.3g} (floor {self.fd_floor:.3g}); n = {self.n}")


def digits_quality(samples, *, seed: int = 0, classifier=None, k: int = 3) -> QualityReport:
    """Sample quality of digits ``samples (n, 1, 8, 8)`` in ``[-1, 1]`` in the classifier's feature
    space (:func:`classifier_features`): :func:`kid` against the 359 test digits, the floor
    :func:`kid` of ``min(n, H)`` held-out train digits (drawn without replacement with ``seed``) against
    the same test digits -- both sides unseen by the classifier (:func:`classifier_split`) --,
    :func:`precision_recall` with the test digits as the real set, and FD-digits
    (:func:`frechet_distance`) for the samples and for the floor's digits."""
    seed = _check_count(seed, "seed", 0)
    feats = classifier_features(samples, classifier)
    n = feats.shape[0]
    test = _reference_features(classifier, "test")
    floor_feats = _floor_features(n, classifier, seed)
    precision, recall = precision_recall(test, feats, k=k)
    floor = kid(floor_feats, test)
    return QualityReport(kid=kid(feats, test), floor=Estimate("KID floor", floor.value, floor.se, floor.n),
                         precision=precision, recall=recall, fd=frechet_distance(feats, test),
                         fd_floor=frechet_distance(floor_feats, test), n=n)


def compare(results: dict, z: float = 2.0) -> str:
    """A small table of ``{name: Estimate | QualityReport}`` sorted by value (lowest first), each with its
    ``z``-SE interval; between adjacent rows whose intervals overlap, "not distinguishable at this n"."""
    if not isinstance(results, dict) or not results:
        raise ValueError("results must be a non-empty dict {name: Estimate or QualityReport}")
    z = _check_z(z)
    rows = []
    for name, r in results.items():
        if isinstance(r, QualityReport):
            rows.append((str(name), r.kid, r))
        elif isinstance(r, Estimate):
            rows.append((str(name), r, None))
        else:
            raise TypeError(f"results[{name!r}] must be an Estimate or a QualityReport, got {type(r).__name__}")
    rows.sort(key=lambda row: row[1].value)
    d = max(_decimals_for(e.se) for _, e, _ in rows if e.se > 0) if any(e.se > 0 for _, e, _ in rows) else 4
    width = max(len(name) for name, _, _ in rows)
    quality = any(q is not None for _, _, q in rows)
    head = f"{'':{width}}  {rows[0][1].name:>{d + 4}}  ± SE{'':{d}}  interval (±{z:g} SE)"
    lines = [head + ("     precision  recall  floor" if quality else "") + "     n"]
    for i, (name, e, q) in enumerate(rows):
        lo, hi = e.interval(z)
        line = f"{name:{width}}  {e.value:{d + 4}.{d}f}  {e.se:{d + 4}.{d}f}  [{lo:.{d}f}, {hi:.{d}f}]"
        if quality:
            line += (f"  {q.precision:9.3f}  {q.recall:6.3f}  {q.floor.value:.{d}f} ± {q.floor.se:.{d}f}" if q is not None
                     else f"  {'':9}  {'':6}  {'':5}")
        lines.append(line + f"  {e.n:5d}")
        if i + 1 < len(rows) and e.overlaps(rows[i + 1][1], z):
            lines.append(f"{'':{width}}    ({name} vs {rows[i + 1][0]}: not distinguishable at this n)")
    return "\n".join(lines)


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
