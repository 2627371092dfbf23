"""The quality measure against references: KID against a direct O(n^2) float64 double sum and a
brute-force jackknife, its standard error's calibration over repeats, precision/recall against a naive
loop and on distributions with a known answer, the memorisation ratio with planted training copies,
Estimate/compare, the digits report on real vs noise, and the classifier feature cache."""
import gc
import math
import weakref

import numpy as np
import pytest
import torch

from minidiff import load_digits
from minidiff import metrics
from minidiff.metrics import Estimate, compare, kid, memorisation, precision_recall


# ---------------------------------------------------------------------------- references
def _k(x, y):
    return (float(np.dot(x, y)) / x.size + 1.0) ** 3


def _naive_mmd2(a, b):
    """Gretton et al. 2012, eq. 3, as written: double sums over i != j, in float64 Python loops."""
    m, n = len(a), len(b)
    sxx = sum(_k(a[i], a[j]) for i in range(m) for j in range(m) if i != j)
    syy = sum(_k(b[i], b[j]) for i in range(n) for j in range(n) if i != j)
    sxy = sum(_k(a[i], b[j]) for i in range(m) for j in range(n))
    return sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2 * sxy / (m * n)


def _naive_jackknife_se(a, b):
    """Arvesen 1969's two-sample jackknife by recomputing the naive statistic with each point left out."""
    m, n = len(a), len(b)
    la = np.array([_naive_mmd2(np.delete(a, i, 0), b) for i in range(m)])
    lb = np.array([_naive_mmd2(a, np.delete(b, j, 0)) for j in range(n)])
    return math.sqrt((m - 1) / m * ((la - la.mean()) ** 2).sum() + (n - 1) / n * ((lb - lb.mean()) ** 2).sum())


def test_kid_matches_direct_double_sum_and_brute_force_jackknife():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(14, 5))
    b = rng.normal(size=(11, 5)) * 1.3 + 0.4
    est = kid(a, b)
    assert est.value == pytest.approx(_naive_mmd2(a, b), rel=1e-10, abs=1e-12)
    assert est.se == pytest.approx(_naive_jackknife_se(a, b), rel=1e-8)
    assert est.n == 14 and est.name == "KID"
    # torch input, float32, gives the same float64 computation
    assert kid(torch.from_numpy(a), torch.from_numpy(b)).value == pytest.approx(est.value, rel=1e-12)


def test_kid_is_unbiased_and_its_se_is_calibrated():
    """Over repeats: two samples of one Gaussian give KID with mean 0 and |KID|/SE of order 1 (the
    jackknife is conservative there, std/SE ~ 1/sqrt(2)); shifted Gaussians give std(KID) ~ mean SE."""
    rng = np.random.default_rng(1)
    for shift, lo, hi in ((0.0, 0.5, 0.9), (0.3, 0.8, 1.2)):
        est = [kid(rng.normal(size=(100, 8)), rng.normal(size=(120, 8)) + shift) for _ in range(300)]
        v = np.array([e.value for e in est])
        s = np.array([e.se for e in est])
        assert lo < v.std() / s.mean() < hi, (shift, v.std() / s.mean())
        assert np.mean(np.abs(v - v.mean()) > 2 * s) < 0.1
        if shift == 0.0:
            assert abs(v.mean()) < 3 * v.std() / math.sqrt(len(v))  # unbiased: mean 0 at n = 100
            assert 0.2 < np.mean(np.abs(v) / s) < 1.0
        else:
            assert v.mean() > 2 * s.mean()  # a real difference is seen


def _cubic_kernel_mean(mx, my):
    """E (x.y/d + 1)^3 for independent x ~ N(mx, I), y ~ N(my, I): from the cumulants of S = sum_i x_i y_i
    (independent terms with E z = m n, E z^2 = (m^2+1)(n^2+1), E z^3 = (m^3+3m)(n^3+3n))."""
    mx, my = np.asarray(mx, float), np.asarray(my, float)
    d = len(mx)
    mu, ez2, ez3 = mx * my, (mx**2 + 1) * (my**2 + 1), (mx**3 + 3 * mx) * (my**3 + 3 * my)
    k1, k2, k3 = mu.sum(), (ez2 - mu**2).sum(), (ez3 - 3 * mu * ez2 + 2 * mu**3).sum()
    es, es2, es3 = k1, k2 + k1**2, k3 + 3 * k2 * k1 + k1**3
    return es3 / d**3 + 3 * es2 / d**2 + 3 * es / d + 1


def test_kid_is_unbiased_at_tiny_n():
    """The mean of KID over many (10, 12)-point samples equals the exact squared MMD of the two shifted
    Gaussians (closed form, itself checked against a Monte Carlo mean of the kernel), where the biased
    V-statistic (diagonal terms kept) is far off."""
    rng = np.random.default_rng(5)
    zero, half = np.zeros(4), np.full(4, 0.5)
    x, y = rng.normal(size=(200_000, 4)), rng.normal(size=(200_000, 4)) + 0.5
    k_xy = ((x * y).sum(1) / 4 + 1) ** 3                                   # independent pairs
    assert abs(k_xy.mean() - _cubic_kernel_mean(zero, half)) < 5 * k_xy.std() / math.sqrt(len(k_xy))
    exact = _cubic_kernel_mean(zero, zero) + _cubic_kernel_mean(half, half) - 2 * _cubic_kernel_mean(zero, half)
    small = []
    biased = []
    for _ in range(2000):
        a, b = rng.normal(size=(10, 4)), rng.normal(size=(12, 4)) + 0.5
        small.append(kid(a, b).value)
        k = metrics.polynomial_kernel
        biased.append(k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean())
    small, biased = np.array(small), np.array(biased)
    se = math.sqrt(small.var() / len(small))
    assert abs(small.mean() - exact) < 3 * se, (small.mean(), exact, se)
    assert abs(biased.mean() - exact) > 10 * se


def test_kid_rejects_bad_input():
    a = np.zeros((10, 3))
    with pytest.raises(ValueError, match="features_b"):
        kid(a, np.zeros((10, 4)))
    with pytest.raises(ValueError, match="at least 3"):
        kid(a, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="features_a must be finite"):
        kid(np.full((10, 3), np.nan), a)
    with pytest.raises(ValueError, match="features_a must be a 2-D"):
        kid(np.zeros(10), a)


# ---------------------------------------------------------------------------- precision / recall
def _naive_pr(real, fake, k):
    def radius(x, i):
        d = sorted(float(np.linalg.norm(x[i] - x[j])) for j in range(len(x)) if j != i)
        return d[k - 1]

    rr = [radius(real, i) for i in range(len(real))]
    rf = [radius(fake, i) for i in range(len(fake))]
    p = np.mean([any(np.linalg.norm(f - r) <= rr[i] for i, r in enumerate(real)) for f in fake])
    r = np.mean([any(np.linalg.norm(x - f) <= rf[i] for i, f in enumerate(fake)) for x in real])
    return p, r


def test_precision_recall_matches_naive_loops():
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(40, 3)), rng.normal(size=(35, 3)) * 0.7 + 0.5
    for k in (1, 3, 5):
        assert precision_recall(real, fake, k=k) == pytest.approx(_naive_pr(real, fake, k), abs=1e-12)


def test_precision_recall_known_answers():
    rng = np.random.default_rng(3)
    n = 2000
    # disjoint supports: nothing of one lies in the other's manifold
    p, r = precision_recall(rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) + 20.0)
    assert p == 0.0 and r == 0.0
    # identical distributions: both near 1
    p, r = precision_recall(rng.normal(size=(n, 2)), rng.normal(size=(n, 2)))
    assert p > 0.9 and r > 0.9
    # uniform squares, exact answers (up to the k-NN balls' reach past the edges, ~ sqrt(3 / (pi n))):
    real = rng.uniform(size=(n, 2))
    # shifted by half a side: half of each lies in the other -> P = R = 1/2
    p, r = precision_recall(real, rng.uniform(size=(n, 2)) + np.array([0.5, 0.0]))
    assert p == pytest.approx(0.5, abs=0.04) and r == pytest.approx(0.5, abs=0.04)
    # shrunk to the central quarter: every fake point is real-looking (P = 1), a quarter of the real is covered
    p, r = precision_recall(real, 0.25 + 0.5 * rng.uniform(size=(n, 2)))
    assert p > 0.98 and r == pytest.approx(0.25, abs=0.04)


def test_precision_recall_rejects_bad_k():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="k must be smaller"):
        precision_recall(x, x, k=5)
    with pytest.raises(ValueError, match="k must be"):
        precision_recall(x, x, k=0)
    with pytest.raises(TypeError, match="k must be"):
        precision_recall(x, x, k=2.0)


# ---------------------------------------------------------------------------- memorisation
def test_memorisation_planted_copies_vs_fresh_draws():
    g = torch.Generator().manual_seed(4)
    train, held, fresh = (torch.randn(500, 6, generator=g) for _ in range(3))
    copies = memorisation(train[:200], train=train, held_out=held)
    assert copies.ratio == pytest.approx(0.0, abs=1e-6) and copies.near_copies == 200
    new = memorisation(fresh, train=train, held_out=held)
    assert 0.85 < new.ratio < 1.15 and new.near_copies <= 5
    assert "ratio" in str(new) and new.n == 500


def test_memorisation_digits_default():
    x_train = load_digits("train")[0]
    copies = memorisation(x_train[:100])
    assert copies.ratio == pytest.approx(0.0, abs=1e-6)
    x_test = load_digits("test")[0]
    unseen = memorisation(x_test[:180], held_out=x_test[180:])  # two halves of digits the models never saw
    assert 0.8 < unseen.ratio < 1.25, str(unseen)
    with pytest.raises(ValueError, match="one size"):
        memorisation(torch.zeros(3, 5))


# ---------------------------------------------------------------------------- Estimate and compare
def test_estimate_interval_overlap_and_str():
    a = Estimate("KID", 0.0123, 0.0021, 500)
    assert a.interval() == pytest.approx((0.0081, 0.0165))
    assert a.interval(1.0) == pytest.approx((0.0102, 0.0144))
    assert str(a) == "KID 0.0123 ± 0.0021 (n = 500)"
    assert a.overlaps(Estimate("KID", 0.0200, 0.0020, 500))  # 0.0165 >= 0.0160
    assert not a.overlaps(Estimate("KID", 0.0220, 0.0020, 500))
    with pytest.raises(ValueError, match="value"):
        Estimate("KID", float("nan"), 0.1, 5)
    with pytest.raises(ValueError, match="se"):
        Estimate("KID", 0.1, -1.0, 5)
    with pytest.raises(TypeError, match="n"):
        Estimate("KID", 0.1, 0.1, 5.0)
    with pytest.raises(ValueError, match="z"):
        a.interval(0)


def test_compare_sorts_and_marks_overlaps():
    res = {"slow": Estimate("KID", 0.30, 0.01, 100), "fast": Estimate("KID", 0.10, 0.01, 100),
           "mid": Estimate("KID", 0.115, 0.01, 100)}
    table = compare(res)
    lines = table.splitlines()
    rows = [ln.split()[0] for ln in lines[1:] if not ln.strip().startswith("(")]
    assert rows == ["fast", "mid", "slow"]
    assert "(fast vs mid: not distinguishable at this n)" in table
    assert "mid vs slow" not in table
    with pytest.raises(TypeError, match="results"):
        compare({"x": 0.3})
    with pytest.raises(ValueError, match="results"):
        compare({})


# ---------------------------------------------------------------------------- digits report
def test_digits_quality_real_vs_noise():
    x_test = load_digits("test")[0]
    held = load_digits("train")[0][torch.from_numpy(metrics.classifier_split()[1])]
    real = metrics.digits_quality(held[:300], seed=1)
    noise = metrics.digits_quality(torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    assert real.n == noise.n == 300 and real.floor.n == 300
    assert real.kid.overlaps(real.floor)  # real digits are within the floor's interval
    lo, _ = noise.kid.interval()
    assert lo > real.floor.interval()[1]  # noise is clearly worse
    assert real.precision > 0.8 and real.recall > 0.8 and noise.recall < 0.3
    assert noise.fd > 5 * noise.fd_floor
    assert "floor" in str(real) and "precision" in str(real)
    # the floor is the KID of held-out digits vs the test digits at the same n
    f = metrics.classifier_features
    assert real.floor.value == pytest.approx(kid(f(held[torch.randperm(len(held), generator=torch.Generator().manual_seed(1))[:300]]),
                                                 f(x_test)).value, rel=1e-9)
    assert noise.beyond_floor() and not real.beyond_floor()
    assert 0.8 < real.floor_precision <= 1 and 0.8 < real.floor_recall <= 1
    table = compare({"noise": noise, "real": real, "floor": real.floor})
    assert "not distinguishable" in table and "(real vs noise" not in table and "(floor vs noise" not in table
    assert table.splitlines()[0].split()[:2] == ["value", "SE"] and "precision" in table.splitlines()[0]
    assert compare({"a": real, "b": noise}).splitlines()[0].split()[:2] == ["KID", "SE"]


def test_classifier_split_is_disjoint_stratified_and_deterministic():
    fit, held = metrics.classifier_split()
    y = load_digits("train")[1].numpy()
    assert len(set(fit) & set(held)) == 0 and len(fit) + len(held) == len(y)
    for c in range(10):
        assert abs((y[fit] == c).sum() - (y[held] == c).sum()) <= 1


def test_feature_cache_follows_parameters_and_releases_classifiers():
    torch.manual_seed(0)
    clf = metrics.DigitClassifier().eval().requires_grad_(False)
    f0 = metrics._reference_features(clf, "test")
    assert metrics._reference_features(clf, "test") is f0  # cached
    with torch.no_grad():
        clf.fc1.bias.add_(1.0)  # "trained further"
    f1 = metrics._reference_features(clf, "test")
    torch.testing.assert_close(f1, metrics.classifier_features(load_digits("test")[0], clf))
    assert not torch.equal(f0, f1)
    ref = weakref.ref(clf)
    del clf
    gc.collect()
    assert ref() is None  # the cache does not keep classifiers alive


def test_no_pickle_in_metrics_sources():
    from pathlib import Path

    for f in sorted((Path(metrics.__file__).parent).glob("*.py")):
        src = f.read_text()
        for banned in ("torch.save", "torch.load", "import pickle"):
            assert banned not in src, f"{banned} in {f.name}"
