"""minidiff.elbo and minidiff.reverse against references: torch.distributions' Gaussian KL, scipy's normal
CDF, closed-form expectations for a known model, and the true reverse kernel by quadrature."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from minidiff import Schedule
from minidiff import elbo, markov, reverse


# ----------------------------------------------------------------------------- elbo
def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mq, mp = torch.randn(2, 50, generator=g, dtype=torch.float64)
    vq, vp = torch.rand(2, 50, generator=g, dtype=torch.float64) + 0.05
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mq, vq.sqrt()),
                                            torch.distributions.Normal(mp, vp.sqrt()))
    torch.testing.assert_close(elbo.gaussian_kl(mq, vq, mp, vp), ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="positive"):
        elbo.gaussian_kl(mq, torch.zeros(50), mp, vp)


def test_prior_kl_closed_form_per_schedule():
    x0 = torch.linspace(-1, 1, 17, dtype=torch.float64).reshape(1, 17).repeat(3, 1)
    broken = Schedule.from_betas(np.linspace(1e-4, 0.02, 100))     # unscaled: sqrt(ab_T) ~ 0.6
    for s in (Schedule.linear(), Schedule.cosine(), broken):
        ab = s.alpha_bar[-1]
        want = 0.5 * (ab * x0**2 - ab - math.log(1 - ab)).sum(1)      # KL(N(sqrt(ab) x, 1-ab) || N(0, 1)), float64
        torch.testing.assert_close(elbo.prior_kl(x0, s), want, rtol=1e-10, atol=1e-15)
    assert float(elbo.prior_kl(x0, broken).mean()) > 1e3 * float(elbo.prior_kl(x0, Schedule.linear()).mean())
    with pytest.raises(ValueError, match="x0"):
        elbo.prior_kl(torch.zeros(0, 3), Schedule.linear())


def test_discretized_gaussian_is_a_distribution_and_matches_scipy():
    levels = torch.linspace(-1, 1, 17, dtype=torch.float64)
    w = 2 / 16
    for mean, std in ((0.13, 0.2), (-0.9, 0.01), (1.4, 0.5)):
        nll = elbo.discretized_gaussian_nll(levels, torch.full_like(levels, mean), torch.tensor(std), bin_width=w)
        assert math.isclose(float(torch.exp(-nll).sum()), 1.0, rel_tol=1e-9)
        k = 5                                                           # an interior level, by scipy
        p = stats.norm.cdf(float(levels[k]) + w / 2, mean, std) - stats.norm.cdf(float(levels[k]) - w / 2, mean, std)
        if p > 1e-200:
            assert math.isclose(float(nll[k]), -math.log(p), rel_tol=1e-6)
    with pytest.raises(ValueError, match="bin_width"):
        elbo.discretized_gaussian_nll(levels, levels, torch.tensor(0.1), bin_width=0.0)


def _point_mass_eps_model(c, schedule):
    """The exact E[eps | x_t] for data that is the constant c: (x_t - sqrt(ab) c) / sqrt(1 - ab)."""
    def model(x_t, t_index):
        ab = torch.as_tensor(schedule.alpha_bar[t_index.numpy()], dtype=x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))
        return (x_t - ab.sqrt() * c) / (1 - ab).sqrt()
    return model


def test_vlb_of_the_exact_model_of_a_point_mass_is_its_prior_term():
    s = Schedule.linear(T=200)
    x0 = torch.full((8, 1, 2, 2), 0.25, dtype=torch.float64)
    terms = elbo.vlb_terms(_point_mass_eps_model(0.25, s), x0, s, bin_width=2 / 16, n_steps=40)
    # x0_hat = c exactly: every L_{t-1} is 0 and L_0 = -D log P(|N(0, beta_1)| < bin / 2), c being on the grid
    decoder = -4 * math.log(2 * stats.norm.cdf((2 / 16) / 2 / math.sqrt(s.betas[0])) - 1)
    assert float(terms.steps.abs().max()) < 1e-6
    torch.testing.assert_close(terms.decoder, torch.full((8,), decoder, dtype=torch.float64), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(terms.total, elbo.prior_kl(x0, s) + decoder, rtol=1e-6, atol=1e-6)


def test_vlb_steps_of_a_zero_predictor_match_the_closed_form():
    # eps_theta = 0 gives x0_hat = x_t / sqrt(ab), so mu_p - mu_q = c_t sqrt((1 - ab)/ab) eps and
    # E KL = D c_t^2 (1 - ab) / (2 ab beta_tilde) (sigma^2 = beta_tilde).
    s = Schedule.linear(T=50)
    x0 = torch.zeros(4000, 1, dtype=torch.float64)
    terms = elbo.vlb_terms(lambda x, t_index: torch.zeros_like(x), x0, s, bin_width=2 / 16)
    i = np.arange(1, s.T)
    c = np.sqrt(s.alpha_bar_prev[i]) * s.betas[i] / (1 - s.alpha_bar[i])
    want = (c**2 * (1 - s.alpha_bar[i]) / (2 * s.alpha_bar[i] * s.posterior_variance[i])).sum()
    got, se = float(terms.steps.mean()), float(terms.steps.std()) / math.sqrt(len(x0))
    assert abs(got - want) < 4 * se, (got, want, se)
    mean_bpd, _ = terms.bits_per_dim("steps")
    assert math.isclose(mean_bpd, got / math.log(2), rel_tol=1e-12)
    with pytest.raises(ValueError, match="variance"):
        elbo.vlb_terms(lambda x, t_index: x, x0, s, bin_width=0.1, variance="learned")


# ----------------------------------------------------------------------------- reverse
SUPPORT, WEIGHTS = [-1.5, 1.0], [0.3, 0.7]


def _reverse_by_quadrature(x_t, i, s):
    """Mean and variance of q(x_{t-1} | x_t) ∝ N(x_t; sqrt(alpha_t) x, beta_t) q_{t-1}(x) on a fine grid."""
    grid = np.linspace(-6, 6, 200_001)
    prior = markov.discrete_marginal_density(grid, s.alpha_bar_prev[i], SUPPORT, WEIGHTS)
    lik = np.exp(-(x_t - math.sqrt(s.alphas[i]) * grid) ** 2 / (2 * s.betas[i]))
    p = prior * lik
    p /= p.sum()
    m = (p * grid).sum()
    return m, (p * (grid - m) ** 2).sum()


@pytest.mark.parametrize("T,i", [(10, 5), (10, 1), (1000, 300), (1000, 20)])
def test_true_reverse_moments_match_quadrature_and_plugin_has_the_same_mean(T, i):
    s = Schedule.linear(T=T)
    x_t = torch.tensor([-1.2, -0.1, 0.4, 1.3], dtype=torch.float64)
    mean, var = reverse.true_reverse_moments(x_t, i, s, SUPPORT, WEIGHTS)
    pm, pv = reverse.plugin_reverse_moments(x_t, i, s, SUPPORT, WEIGHTS)
    for k in range(len(x_t)):
        m_ref, v_ref = _reverse_by_quadrature(float(x_t[k]), i, s)
        assert abs(float(mean[k]) - m_ref) < 1e-6 and abs(float(var[k]) / v_ref - 1) < 1e-4
    torch.testing.assert_close(pm, mean, rtol=0, atol=1e-12)
    assert torch.all(pv <= var) and torch.allclose(pv, torch.full_like(pv, s.posterior_variance[i]))


def test_plugin_chain_is_exact_for_a_single_point_and_validates_input():
    s = Schedule.linear(T=20)
    x_T = torch.randn(100, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    chain = reverse.plugin_reverse_chain(x_T, s, [0.5], [1.0], generator=torch.Generator().manual_seed(1))
    assert chain.shape == (21, 100) and torch.allclose(chain[0], torch.full((100,), 0.5, dtype=torch.float64), atol=1e-12)
    with pytest.raises(ValueError, match="x_t"):
        reverse.plugin_reverse_moments(torch.zeros(3, 2), 1, s, SUPPORT, WEIGHTS)
    with pytest.raises(ValueError, match="weights"):
        reverse.true_reverse_moments(torch.zeros(3), 1, s, SUPPORT, [0.5, 0.6])
