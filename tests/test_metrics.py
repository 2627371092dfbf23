"""Metrics against references: Frechet distance vs a scipy sqrtm float64 reference, the shipped
classifier's test accuracy, floors, and the probability-flow likelihood vs the closed-form Gaussian
mixture density."""
import math

import numpy as np
import pytest
import torch

from minidiff import GaussianMixture, Schedule, load_digits, make_2d
from minidiff import metrics


def _naive_fd(a, b):
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(c1 @ c2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean))


def test_frechet_distance_matches_scipy_reference():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 0.5
    assert metrics.frechet_distance(a, b) == pytest.approx(_naive_fd(a, b), rel=1e-8)
    assert metrics.frechet_distance(b, a) == pytest.approx(metrics.frechet_distance(a, b), rel=1e-10)
    assert abs(metrics.frechet_distance(a, a)) < 1e-8


def test_frechet_distance_of_gaussians_closed_form():
    """For commuting (diagonal) covariances FD = |dmu|^2 + sum (sqrt(s1) - sqrt(s2))^2."""
    a = np.diag([1.0, 4.0, 9.0])
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200_000, 3)) * np.sqrt(np.diag(a))
    y = rng.normal(size=(200_000, 3)) * 2.0 + np.array([1.0, 0.0, 0.0])
    exact = 1.0 + (1 - 2) ** 2 + (2 - 2) ** 2 + (3 - 2) ** 2
    assert metrics.frechet_distance(x, y) == pytest.approx(exact, abs=0.05)


def test_shipped_classifier_accuracy():
    assert metrics.classifier_accuracy(split="test") >= 0.97


def test_fd_digits_real_vs_noise_and_floor():
    x_test, y_test = load_digits("test")
    fit, held_idx = metrics.classifier_split()
    held = load_digits("train")[0][torch.from_numpy(held_idx)]
    idx = torch.randperm(held.shape[0], generator=torch.Generator().manual_seed(0))
    real = metrics.fd_digits(held[idx[:360]])
    assert real.n == 360 and real.floor == pytest.approx(real.value, rel=1e-9)  # the floor is this very comparison
    other = metrics.fd_digits(held[idx[-360:]])
    assert 0.5 < other.ratio < 1.5
    noise = torch.rand(360, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    bad = metrics.fd_digits(noise)
    assert bad.ratio > 5
    assert "floor" in str(bad)
    hist = metrics.class_histogram(x_test)
    torch.testing.assert_close(hist, torch.bincount(y_test, minlength=10).double() / 360, atol=0.02, rtol=0)
    assert float(hist.sum()) == pytest.approx(1.0)


def test_sliced_wasserstein_floor_and_result():
    sampler = lambda n, g: make_2d("moons", n, generator=g)  # noqa: E731
    floor = metrics.sliced_wasserstein_floor(sampler, 1000)
    assert 0 < floor < 0.1
    good = metrics.sliced_wasserstein_result(sampler(1000, torch.Generator().manual_seed(99)), sampler)
    assert good.ratio < 2.0
    shifted = metrics.sliced_wasserstein_result(sampler(1000, torch.Generator().manual_seed(99)) + 0.5, sampler)
    assert shifted.ratio > 5


def _anisotropic_gmm():
    """Non-separable (rotated, correlated) components, so the score's Jacobian has off-diagonal terms."""
    covs = torch.tensor([[[0.05, 0.03], [0.03, 0.04]], [[0.02, -0.015], [-0.015, 0.03]], [[0.08, 0.0], [0.0, 0.01]]],
                        dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
                           torch.tensor([[-1.0, 0.5], [0.8, 0.8], [0.3, -1.0]], dtype=torch.float64), covs)


def test_pf_ode_likelihood_is_exact_on_gaussian_mixture():
    """log p at t_index = 0 by the probability-flow ODE (exact trace, every t_index) equals the closed-form
    density of the noised mixture (Song et al. 2021a, App. D) up to the ODE's discretisation error."""
    sch = Schedule.linear()
    gm = _anisotropic_gmm()
    x = gm.sample(16, generator=torch.Generator().manual_seed(3))
    lp = metrics.log_likelihood(gm.eps_model(sch), x, sch, trace="exact")
    ref = gm.at_alpha_bar(float(sch.alpha_bar[0])).log_prob(x)
    err = (lp - ref).abs().max()
    assert err < 6e-3
    # and the error is the ODE's: a 4x coarser grid is clearly worse
    coarse = metrics.log_likelihood(gm.eps_model(sch), x, sch, n_steps=250, trace="exact")
    assert (coarse - ref).abs().mean() > 1.5 * (lp - ref).abs().mean()
    # a wrong model (a single wide Gaussian) gives a clearly different, lower likelihood on average
    wrong = GaussianMixture.isotropic(torch.zeros(1, 2), 1.0)
    lw = metrics.log_likelihood(wrong.eps_model(sch), x, sch, n_steps=100, trace="exact")
    assert float((ref - lw).mean()) > 0.5


def test_hutchinson_trace_is_unbiased():
    """Averaged over many Rademacher probes, the Hutchinson estimate equals the exact-trace result on the
    same ODE grid (the ODE error is common to both)."""
    sch = Schedule.linear()
    gm = _anisotropic_gmm()
    x = gm.sample(4, generator=torch.Generator().manual_seed(4))
    eps = gm.eps_model(sch)
    exact = metrics.log_likelihood(eps, x, sch, n_steps=60, trace="exact")
    reps = 64
    hutch = metrics.log_likelihood(eps, x.repeat(reps, 1), sch, n_steps=60, trace="hutchinson",
                                   generator=torch.Generator().manual_seed(5)).reshape(reps, 4)
    se = hutch.std(0) / math.sqrt(reps)
    assert torch.all((hutch.mean(0) - exact).abs() < 4 * se + 1e-3)
    assert float(hutch.std(0).max()) > 1e-4  # it really is a stochastic estimate


def test_bits_per_dim_dequantisation_offset():
    """Digits: uniform dequantisation with bin width 2/16 and a +3 bits/dim offset, checked on an exact
    isotropic Gaussian model (whose Jacobian is a multiple of I, so Hutchinson's estimate is exact)."""
    sch = Schedule.linear()
    D = 64
    gm = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, D, dtype=torch.float64),
                         0.25 * torch.eye(D, dtype=torch.float64)[None])
    eps = lambda z, t_index: gm.eps_model(sch)(z.reshape(-1, D), t_index).reshape(z.shape)  # noqa: E731
    x = load_digits("test")[0][:3].double()
    res = metrics.digits_bits_per_dim(eps, x, sch, n_steps=200, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    xd = x + (torch.rand(x.shape, generator=g, dtype=x.dtype) - 0.5) * (2 / 16)
    direct = -metrics.log_likelihood(eps, xd, sch, n_steps=200, generator=g)
    torch.testing.assert_close(res.nll, direct, atol=1e-9, rtol=0)
    ref_nll = -gm.at_alpha_bar(float(sch.alpha_bar[0])).log_prob(xd.reshape(3, D))
    assert res.offset_bits == pytest.approx(3.0) and res.dim == D
    torch.testing.assert_close(res.nll, ref_nll, atol=0, rtol=3e-3)
    torch.testing.assert_close(res.bits_per_dim, res.nll / (D * math.log(2)) + 3.0, atol=1e-12, rtol=0)
    assert res.mean_bits_per_dim == pytest.approx(float(res.bits_per_dim.mean()))


# ---------------------------------------------------------------------------- bad input (issue 14, items 7 and 22)
def test_metric_arguments_are_checked_by_name():
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="p must be"):
        metrics.sliced_wasserstein(x, x, p=0)
    with pytest.raises(TypeError, match="n_projections"):
        metrics.sliced_wasserstein(x, x, n_projections=0.5)
    sch = Schedule.linear()
    gm = GaussianMixture.isotropic(torch.zeros(1, 2), 1.0)
    with pytest.raises(ValueError, match="n_probes"):
        metrics.log_likelihood(gm.eps_model(sch), x[:2], sch, n_probes=0)
    with pytest.raises(ValueError, match="n_steps"):  # 0 intervals: would return the prior density of x
        metrics.log_likelihood(gm.eps_model(sch), x[:2], sch, n_steps=0)
    with pytest.raises(ValueError, match="bin_width"):
        metrics.bits_per_dim(gm.eps_model(sch), x[:2], sch, bin_width=0)
    with pytest.raises(ValueError, match="b must be finite"):
        metrics.frechet_distance(np.ones((5, 3)), np.full((5, 3), np.nan))
    with pytest.raises(ValueError, match="empty batch"):
        metrics.classifier_features(torch.zeros(0, 1, 8, 8))


def test_train_classifier_cli_writes_to_the_working_directory(tmp_path, monkeypatch):
    with pytest.raises(SystemExit):
        metrics.main(["train-classifier", "--epochs", "0"])
    with pytest.raises(ValueError, match="epochs"):
        metrics.train_classifier(epochs=0)
    shipped = metrics.CLASSIFIER_PATH.stat().st_mtime_ns
    monkeypatch.chdir(tmp_path)
    assert metrics.main(["train-classifier", "--epochs", "1"]) == 0
    clf = metrics.load_classifier(tmp_path / "classifier.safetensors")
    assert isinstance(clf, metrics.DigitClassifier)
    assert metrics.CLASSIFIER_PATH.stat().st_mtime_ns == shipped  # the package was not written


def test_python_dash_m_minidiff_metrics_runs_the_cli():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "minidiff.metrics", "train-classifier", "--epochs", "0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--epochs: expected a positive integer" in r.stderr
