"""Sample quality of digits in the classifier's feature space: the headline :func:`digits_quality`
(KID with its standard error beside a real-vs-real floor, precision and recall), FD-digits as a
secondary column, the memorisation check, and :func:`compare` for tables that do not rank noise."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .classifier import _floor_features, _reference_features, classifier_features
from .estimate import Estimate, MetricResult, _check_count, _check_z, _decimals_for, _features_2d, _sq_distances


# ============================================================================ Frechet distance
def _sqrtm_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(a, b) -> float:
    """``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a^{1/2} C_b C_a^{1/2})^{1/2})`` between Gaussians fitted to
    feature sets ``a (N, d)`` and ``b (M, d)`` (Dowson & Landau 1982; Heusel et al. 2017), in float64.
    The trace of the cross term uses symmetric eigendecompositions, so it is real and stable."""
    a, b = _features_2d(a, "a"), _features_2d(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (N, d) and (M, d) with one d; got {a.shape} and {b.shape}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("need at least 2 samples per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    sa = _sqrtm_psd(ca)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(sa @ cb @ sa), 0.0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2.0 * cross)


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


# ============================================================================ KID
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
    from ..data import load_digits

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
    column. ``floor_precision`` / ``floor_recall``: the same for the floor's real digits, the values a
    perfect model would get at these sample sizes (k-NN manifolds make them less than 1).
    :meth:`beyond_floor`: the KID interval lies wholly above the floor's, i.e. the samples are
    distinguishable from real digits at this n."""

    kid: Estimate
    floor: Estimate
    precision: float
    recall: float
    fd: float
    fd_floor: float
    n: int
    floor_precision: float | None = None
    floor_recall: float | None = None

    @property
    def value(self) -> float:
        return self.kid.value

    @property
    def se(self) -> float:
        return self.kid.se

    def beyond_floor(self, z: float = 2.0) -> bool:
        """Whether the KID's ``z``-SE interval lies wholly above the floor's (distinguishable from real)."""
        return self.kid.interval(z)[0] > self.floor.interval(z)[1]

    def __str__(self) -> str:
        d = _decimals_for(min((s for s in (self.kid.se, self.floor.se) if s > 0), default=0.0))
        pr_floor = ("" if self.floor_precision is None or self.floor_recall is None
                    else f" (floor {self.floor_precision:.3f}, {self.floor_recall:.3f})")
        return (f"KID {self.kid.value:.{d}f} ± {self.kid.se:.{d}f} (real-vs-real floor {self.floor.value:.{d}f} ± "
                f"{self.floor.se:.{d}f}, n = {self.floor.n}); precision {self.precision:.3f}, recall {self.recall:.3f}"
                f"{pr_floor}; FD-digits {self.fd:.3g} (floor {self.fd_floor:.3g}); n = {self.n}")


def quality_report(feats, floor_feats, test, *, k: int = 3) -> QualityReport:
    """The :class:`QualityReport` of sample features ``feats`` and real-floor features ``floor_feats`` against
    reference features ``test``: KID (and the floor's), precision/recall at ``k`` and Fréchet distances. The
    one assembly behind :func:`digits_quality` and :func:`~minidiff.metrics.glyph_quality`."""
    precision, recall = precision_recall(test, feats, k=k)
    floor_precision, floor_recall = precision_recall(test, floor_feats, k=k)
    floor = kid(floor_feats, test)
    return QualityReport(kid=kid(feats, test), floor=Estimate("KID floor", floor.value, floor.se, floor.n),
                         precision=precision, recall=recall, fd=frechet_distance(feats, test),
                         fd_floor=frechet_distance(floor_feats, test), n=feats.shape[0],
                         floor_precision=floor_precision, floor_recall=floor_recall)


def digits_quality(samples, *, seed: int = 0, classifier=None, k: int = 3) -> QualityReport:
    """Sample quality of digits ``samples (n, 1, 8, 8)`` in ``[-1, 1]`` in the classifier's feature
    space (:func:`classifier_features`): :func:`kid` against the 359 test digits, the floor
    :func:`kid` of ``min(n, H)`` held-out train digits (drawn without replacement with ``seed``) against
    the same test digits -- both sides unseen by the classifier (:func:`classifier_split`) --,
    :func:`precision_recall` with the test digits as the real set (also for the floor's digits), and FD-digits
    (:func:`frechet_distance`) for the samples and for the floor's digits."""
    seed = _check_count(seed, "seed", 0)
    feats = classifier_features(samples, classifier)
    n = feats.shape[0]
    test = _reference_features(classifier, "test")
    floor_feats = _floor_features(n, classifier, seed)
    return quality_report(feats, floor_feats, test, k=k)


def _table(rows: list[list[str]]) -> list[str]:
    """Left-align the first column and right-align the others."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]


def compare(results: dict, z: float = 2.0) -> str:
    """A small table of ``{name: Estimate | QualityReport}`` sorted by value (lowest first), each with its
    ``z``-SE interval; under each adjacent pair whose intervals overlap, "not distinguishable at this n".
    For a :class:`QualityReport` the row is its KID, with its floor, precision and recall beside it."""
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
    ses = [e.se for _, e, _ in rows if e.se > 0]
    d = _decimals_for(min(ses)) if ses else 4
    quality = any(q is not None for _, _, q in rows)
    names = {e.name for _, e, _ in rows}
    cells = [["", names.pop() if len(names) == 1 else "value", "SE", f"interval (±{z:g} SE)", "n"]
             + (["floor", "precision", "recall"] if quality else [])]
    for name, e, q in rows:
        lo, hi = e.interval(z)
        cells.append([name, f"{e.value:.{d}f}", f"{e.se:.{d}f}", f"[{lo:.{d}f}, {hi:.{d}f}]", str(e.n)]
                     + ([f"{q.floor.value:.{d}f} ± {q.floor.se:.{d}f}", f"{q.precision:.3f}", f"{q.recall:.3f}"]
                        if q is not None else ["", "", ""] if quality else []))
    table = _table(cells)
    lines = [table[0]]
    for i, (name, e, _) in enumerate(rows):
        lines.append(table[i + 1])
        if i + 1 < len(rows) and e.overlaps(rows[i + 1][1], z):
            lines.append(f"    ({name} vs {rows[i + 1][0]}: not distinguishable at this n)")
    return "\n".join(lines)
