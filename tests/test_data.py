"""Data: Gaussian-mixture densities and scores against autograd, sampling and quadrature; digits."""
import math

import numpy as np
import pytest
import torch

from minidiff.data import (GaussianMixture, augment_shift, digits_split, load_digits, make_2d,
                           standardize, TOYS_2D)


def _random_mixture(d, K, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(K, d, d, generator=g, dtype=torch.float64) * 0.3
    covs = A @ A.transpose(-1, -2) + 0.05 * torch.eye(d, dtype=torch.float64)
    w = torch.rand(K, generator=g, dtype=torch.float64) + 0.2
    return GaussianMixture(w / w.sum(), torch.randn(K, d, generator=g, dtype=torch.float64) * 2, covs)


@pytest.mark.parametrize("d,K", [(1, 1), (2, 3), (5, 4), (64, 2)])
@pytest.mark.parametrize("alpha_bar", [1.0, 0.5, 0.01])
def test_score_matches_autograd_of_log_prob(d, K, alpha_bar):
    gm = _random_mixture(d, K, seed=d * 10 + K).at_alpha_bar(alpha_bar)
    x = gm.sample(64, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    (grad,) = torch.autograd.grad(gm.log_prob(x).sum(), x)
    torch.testing.assert_close(gm.score(x.detach()), grad, rtol=1e-9, atol=1e-9)


def test_log_prob_integrates_to_one_in_2d():
    gm = GaussianMixture.grid_2d(3, 1.0, 0.15).at_sigma(0.2)
    g = torch.linspace(-4, 4, 801, dtype=torch.float64)
    X, Y = torch.meshgrid(g, g, indexing="ij")
    p = gm.log_prob(torch.stack([X.flatten(), Y.flatten()], 1)).exp()
    assert float(p.sum() * (g[1] - g[0]) ** 2) == pytest.approx(1.0, abs=1e-6)


def test_noised_marginal_matches_simulation():
    """x_t = sqrt(ab) x0 + sqrt(1-ab) eps has the mixture's closed-form mean and covariance."""
    gm = _random_mixture(3, 3, seed=7)
    gen = torch.Generator().manual_seed(2)
    ab = 0.3
    x0 = gm.sample(200000, generator=gen)
    xt = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    m = gm.at_alpha_bar(ab)
    torch.testing.assert_close(xt.mean(0), m.mean(), atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(xt.T), m.covariance(), atol=0.03, rtol=0)


def test_sampling_recovers_weights():
    gm = GaussianMixture.isotropic([[-3.0, 0], [3.0, 0]], 0.3, weights=[0.25, 0.75])
    x = gm.sample(40000, generator=torch.Generator().manual_seed(0))
    frac = (gm.responsibilities(x).argmax(1) == 1).double().mean()
    assert float(frac) == pytest.approx(0.75, abs=0.01)


def test_eps_model_is_the_exact_denoiser():
    """E[eps | x_t] = -sqrt(1-ab) score: check by Monte Carlo regression on a 1-D mixture."""
    from minidiff import Schedule

    s = Schedule.linear(T=100)
    gm = GaussianMixture.isotropic([[-1.0], [1.0]], 0.2)
    model = gm.eps_model(s)
    gen = torch.Generator().manual_seed(0)
    x0 = gm.sample(400000, generator=gen)
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    t_index = 40
    ab = s.alpha_bar[t_index]
    xt = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
    bins = torch.linspace(-1, 1, 9, dtype=torch.float64)
    idx = torch.bucketize(xt[:, 0], bins)
    for b in range(1, len(bins)):
        sel = idx == b
        centre = torch.tensor([[(bins[b - 1] + bins[b]) / 2]], dtype=torch.float64)
        mc = eps[sel, 0].mean()
        exact = model(xt[sel], t_index)[:, 0].mean()
        assert float(mc) == pytest.approx(float(exact), abs=0.03), float(centre)


@pytest.mark.parametrize("bad", [
    dict(weights=[0.5, 0.6], means=[[0.0], [1.0]], covs=[[[1.0]], [[1.0]]]),
    dict(weights=[0.5, 0.5], means=[[0.0], [1.0]], covs=[[[1.0]], [[-1.0]]]),
    dict(weights=[1.0], means=[[0.0, 1.0]], covs=[[[1.0]]]),
])
def test_invalid_mixture_raises(bad):
    with pytest.raises(ValueError):
        GaussianMixture(**{k: torch.tensor(v, dtype=torch.float64) for k, v in bad.items()})


def test_mixture_checks_x_shape():
    with pytest.raises(ValueError, match=r"x must have shape \(N, 2\)"):
        GaussianMixture.grid_2d().score(torch.zeros(4, 3))


def test_digits_split_is_fixed_disjoint_and_stratified():
    tr, te = digits_split()
    assert len(tr) + len(te) == 1797 and len(np.intersect1d(tr, te)) == 0
    x, y = load_digits("train")
    xt, yt = load_digits("test")
    assert x.shape == (len(tr), 1, 8, 8) and x.dtype == torch.float32
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    counts = torch.bincount(yt, minlength=10).double() / len(yt)
    assert torch.all((counts - 0.1).abs() < 0.02)
    with pytest.raises(ValueError, match="split must be"):
        load_digits("val")


@pytest.mark.parametrize("name", sorted(TOYS_2D))
def test_toys(name):
    x = make_2d(name, 1000)
    assert x.shape == (1000, 2) and torch.isfinite(x).all() and x.abs().max() < 4
    torch.testing.assert_close(x, make_2d(name, 1000))  # fixed default seed
    with pytest.raises(ValueError, match="name must be one of"):
        make_2d("spiral", 10)


def test_standardize_and_augment():
    x, _ = load_digits("test")
    z, m, s = standardize(x.flatten(1))
    assert torch.allclose(z.mean(0), torch.zeros(64), atol=1e-5)
    a = augment_shift(x[:50], max_shift=1, generator=torch.Generator().manual_seed(0))
    assert a.shape == x[:50].shape and float(a.min()) >= -1 and float(a.max()) <= 1
    # A shift moves pixels, it does not change the set of grey levels.
    assert set(torch.unique(a).tolist()) <= set(torch.unique(x).tolist())
    with pytest.raises(ValueError, match="images must be"):
        augment_shift(x[:, 0])
