"""VP and VE SDEs against references: a naive simulation of the forward SDE, the Fokker-Planck
variance equation, the DDPM and NCSN chains they discretise, Tweedie's formula for Gaussian data."""
import math

import numpy as np
import pytest
import torch

from minidiff import GaussianMixture, Schedule
from minidiff.sde import VESDE, VPSDE, check_t, mixture_score, score_from_eps_model, tweedie_x0

SDES = [VPSDE(), VESDE()]
IDS = ["VP", "VE"]


def _simulate_forward(sde, x0, t_end, n_steps, generator):
    """Naive float64 Euler-Maruyama of the forward SDE ``dx = f(t) x dt + g(t) dw`` from ``t = 0``."""
    x, dt = x0.clone(), t_end / n_steps
    for i in range(n_steps):
        t = i * dt
        z = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        x = x + sde.drift_coef(t) * x * dt + sde.diffusion(t) * math.sqrt(dt) * z
    return x


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginal_mean_and_std_match_simulated_forward_sde(sde):
    """The closed-form perturbation kernel (Song et al. 2021a, eq. 29 / App. B) against EM simulation.
    VE: x(0) is the data perturbed at sigma_min (NCSN convention), so the marginal std is sigma(t)."""
    g = torch.Generator().manual_seed(0)
    n, x_data = 20000, 1.5
    x0 = torch.full((n, 1), x_data, dtype=torch.float64)
    if isinstance(sde, VESDE):
        x0 = x0 + sde.sigma_min * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    for t in (0.1, 0.5, 1.0):
        x = _simulate_forward(sde, x0, t, n_steps=int(1000 * t), generator=g)
        m, s = sde.mean_scale(t) * x_data, sde.marginal_std(t)
        se_mean, se_std = s / math.sqrt(n), s / math.sqrt(2 * n)
        # 5 standard errors plus the O(dt) EM bias (dt = 1e-3)
        assert abs(float(x.mean()) - m) < 5 * se_mean + 2e-3 * max(s, 1.0), (t, float(x.mean()), m)
        assert abs(float(x.std()) - s) < 5 * se_std + 2e-3 * s, (t, float(x.std()), s)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
@pytest.mark.parametrize("data_var", [0.09, 1.0])
def test_closed_form_moments_solve_the_fokker_planck_moment_equations(sde, data_var):
    """For linear drift, ``dm/dt = f m`` and ``dv/dt = 2 f v + g^2`` (Sarkka & Solin 2019, eq. 5.51)
    where ``v = m^2 var_0 + std^2`` is the marginal variance of data with variance ``var_0``."""
    h = 1e-6
    var = lambda t: sde.mean_scale(t) ** 2 * data_var + sde.marginal_std(t) ** 2  # noqa: E731
    for t in np.linspace(0.05, 0.95, 7):
        dm = (sde.mean_scale(t + h) - sde.mean_scale(t - h)) / (2 * h)
        dv = (var(t + h) - var(t - h)) / (2 * h)
        assert dm == pytest.approx(sde.drift_coef(t) * sde.mean_scale(t), rel=1e-6, abs=1e-9)
        assert dv == pytest.approx(2 * sde.drift_coef(t) * var(t) + sde.diffusion(t) ** 2, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_reverse_and_probability_flow_drifts_retrace_gaussian_marginals(sde):
    """Data N(0, var_0): the marginal is N(0, v(t)) with score -x / v. The reverse SDE (Anderson 1982)
    run backwards must retrace v: ``dv/dt = 2 b v - g^2`` for its linear drift ``b``; the PF-ODE moves
    every point along ``x(t) ~ sqrt(v(t))``: its drift is ``x v' / (2 v)`` (Song et al. 2021a, eqs. 6, 13)."""
    var_0, h = 0.3, 1e-6
    var = lambda t: sde.mean_scale(t) ** 2 * var_0 + sde.marginal_std(t) ** 2  # noqa: E731
    x = torch.tensor([-3.0, -1.0, -0.2, 0.5, 2.0], dtype=torch.float64)[:, None]  # x = 0 would divide by 0
    for t in np.linspace(0.05, 0.95, 7):
        score = -x / var(t)
        dv = (var(t + h) - var(t - h)) / (2 * h)
        b = sde.reverse_drift(x, score, t) / x  # linear coefficient
        torch.testing.assert_close(2 * b * var(t) - sde.diffusion(t) ** 2, torch.full_like(x, dv), rtol=1e-5, atol=0)
        torch.testing.assert_close(sde.pf_ode_drift(x, score, t), x * dv / (2 * var(t)), rtol=1e-5, atol=1e-12)


def test_vp_discretisation_is_the_ddpm_chain_within_order_one_over_T():
    """``beta_i = beta(t_i) / T`` (Song et al. 2021a, App. B): the chain's alpha_bar matches
    ``exp(-int beta)`` at ``t_i = (i+1)/T`` with an error that halves when T doubles."""
    sde = VPSDE()
    errs = []
    for T in (250, 500, 1000, 2000):
        sch = sde.to_schedule(T)
        t = np.arange(1, T + 1) / T
        cont = np.array([sde.alpha_bar(ti) for ti in t])
        errs.append(np.max(np.abs(np.log(sch.alpha_bar) - np.log(cont))))
    errs = np.array(errs)
    # first order: T * error stays bounded (~ int beta^2 / 2 + (beta_max - beta_min) / 2 = 76)
    assert np.all(errs * np.array([250, 500, 1000, 2000]) < 90), errs
    ratios = errs[:-1] / errs[1:]
    assert np.all((ratios > 1.8) & (ratios < 2.2)), ratios
    # the SDE's own unit-step discretisation is the exact transition: to first order the same betas,
    # and its alpha_bar telescopes to exp(-int beta) exactly, even on a coarse grid (beta(t) dt > 1)
    T = 1000
    sch = sde.to_schedule(T)
    for i in (0, 377, 999):
        F, G = sde.discretize((i + 1) / T, 1.0 / T)
        assert (1 + F) ** 2 + G**2 == pytest.approx(1.0, abs=1e-15)
        # beta(t) dt - (1 - exp(-int beta)) = (beta' + beta^2) dt^2 / 2 + O(dt^3)
        assert G**2 == pytest.approx(sch.betas[i], abs=(sde.beta_max - sde.beta_min + sde.beta_max**2) / (2 * T**2))
    for n in (5, 100):
        ab = np.prod([(1 + sde.discretize(i / n, 1.0 / n)[0]) ** 2 for i in range(1, n + 1)])
        assert ab == pytest.approx(sde.alpha_bar(1.0), rel=1e-10)


def test_vp_from_schedule_inverts_to_schedule_and_reads_ddpm_linear():
    sde = VPSDE(beta_min=0.2, beta_max=12.0)
    back = VPSDE.from_schedule(sde.to_schedule(300))
    assert back.beta_min == pytest.approx(0.2, abs=1e-9) and back.beta_max == pytest.approx(12.0, rel=1e-9)
    lin = Schedule.linear(1000)  # beta(t) T sampled at t = i / (T - 1): beta_max 20, beta_min ~0.08
    fit = VPSDE.from_schedule(lin)
    np.testing.assert_allclose(fit.to_schedule(1000).betas, lin.betas, rtol=1e-9)
    assert fit.beta_max == pytest.approx(20.0, rel=1e-3)
    with pytest.raises(ValueError, match="linear"):
        VPSDE.from_schedule(Schedule.cosine(100))


def test_ve_is_the_ncsn_chain():
    """NCSN's geometric noise levels (Song & Ermon 2019) and the chain
    ``x_i = x_{i-1} + sqrt(sigma_i^2 - sigma_{i-1}^2) z`` (Song et al. 2021a, eq. 8), whose variances
    telescope to ``sigma(t)^2 - sigma_min^2``."""
    sde = VESDE(sigma_min=0.01, sigma_max=50.0)
    np.testing.assert_allclose(sde.sigmas(10), np.exp(np.linspace(np.log(50.0), np.log(0.01), 10)), rtol=1e-12)
    N = 64
    added = sum(sde.discretize(i / N, 1.0 / N)[1] ** 2 for i in range(1, N + 1))
    assert added == pytest.approx(sde.sigma(1.0) ** 2 - sde.sigma_min**2, rel=1e-12)
    assert all(sde.discretize(i / N, 1.0 / N)[0] == 0.0 for i in range(1, N + 1))
    assert sde.diffusion(0.3) ** 2 == pytest.approx(
        (sde.sigma(0.3 + 1e-6) ** 2 - sde.sigma(0.3 - 1e-6) ** 2) / 2e-6, rel=1e-6)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_noise_coordinates_agree_with_schedule_conventions(sde):
    for t in (0.01, 0.5, 1.0):
        ab = sde.alpha_bar(t)
        assert sde.sigma(t) == pytest.approx(math.sqrt((1 - ab) / ab), rel=1e-12)
        assert sde.mean_scale(t) ** 2 / (sde.mean_scale(t) ** 2 + sde.marginal_std(t) ** 2) == pytest.approx(ab)
    vp = VPSDE()
    assert vp.alpha_bar(1.0) < 1e-4  # the prior end really is N(0, I)
    assert vp.mean_scale(0.4) ** 2 + vp.marginal_std(0.4) ** 2 == pytest.approx(1.0)  # variance preserving
    assert VESDE().sigma(1.0) == pytest.approx(50.0) and VESDE().prior_std == 50.0


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_prior_sample_shape_and_scale(sde):
    x = sde.prior_sample((20000, 2), generator=torch.Generator().manual_seed(0))
    assert x.shape == (20000, 2) and x.dtype == torch.float64
    assert float(x.std()) == pytest.approx(sde.prior_std, rel=0.03)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_mixture_score_is_the_exact_marginal_score(sde):
    gm = GaussianMixture.isotropic([[-1.0, 0.0], [1.0, 0.5]], 0.3, weights=[0.3, 0.7])
    x = torch.randn(50, 2, dtype=torch.float64)
    score = mixture_score(gm, sde)
    for t in (0.05, 0.5):
        marginal = gm.at_alpha_bar(sde.alpha_bar(t)) if isinstance(sde, VPSDE) else gm.at_sigma(sde.sigma(t))
        torch.testing.assert_close(score(x, t), marginal.score(x))
        # and autograd of the marginal's log-density
        xr = x.clone().requires_grad_(True)
        gm.noised(sde.mean_scale(t), sde.marginal_std(t)).log_prob(xr).sum().backward()
        torch.testing.assert_close(score(x, t), xr.grad)


def test_score_from_eps_model_matches_the_discrete_marginal_score():
    gm = GaussianMixture.isotropic([[-1.0, 0.0], [1.0, 0.5]], 0.3)
    sch = Schedule.linear(200)
    score = score_from_eps_model(gm.eps_model(sch), sch)
    x = torch.randn(40, 2, dtype=torch.float64)
    for i in (0, 57, 199):
        torch.testing.assert_close(score(x, (i + 1) / sch.T), gm.at_alpha_bar(sch.alpha_bar[i]).score(x))


def test_tweedie_is_the_posterior_mean_for_gaussian_data():
    """Data N(mu, s^2): ``E[x0 | x_t] = mu + m s^2 (x_t - m mu) / (m^2 s^2 + std^2)``."""
    mu, s = 0.7, 0.4
    gm = GaussianMixture.isotropic([[mu]], s)
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    for sde in SDES:
        for t in (0.1, 0.6):
            m, std = sde.mean_scale(t), sde.marginal_std(t)
            want = mu + m * s**2 * (x - m * mu) / (m**2 * s**2 + std**2)
            torch.testing.assert_close(sde.x0_from_score(x, mixture_score(gm, sde)(x, t), t), want)
    torch.testing.assert_close(tweedie_x0(x, -x, std=0.5), x - 0.25 * x)


def test_invalid_arguments_raise_naming_the_problem():
    with pytest.raises(ValueError, match="beta_min"):
        VPSDE(beta_min=-1.0)
    with pytest.raises(ValueError, match="sigma_min"):
        VESDE(sigma_min=10.0, sigma_max=1.0)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        VPSDE().mean_scale(1.5)
    with pytest.raises(TypeError, match="t must be a float"):
        check_t("soon")
    with pytest.raises(ValueError, match="n_steps"):
        VPSDE.time_grid(0)
    with pytest.raises(ValueError, match="T must be"):
        VPSDE().to_schedule(0)
    with pytest.raises(ValueError, match="n must be"):
        VESDE().sigmas(1)
    with pytest.raises(Exception):
        VPSDE().beta_min = 3.0  # frozen
