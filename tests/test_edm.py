"""The EDM design space (minidiff.edm) against references typed here from Karras et al. 2022 and
against the course's existing samplers, in float64 on exact Gaussian mixtures."""
import math

import numpy as np
import pytest
import torch

from minidiff import edm, forward, samplers, solvers, trajectories
from minidiff.data import GaussianMixture
from minidiff.schedule import Schedule
from minidiff.sde import VPSDE


@pytest.fixture(scope="module")
def gm():
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]], dtype=torch.float64)
    return GaussianMixture.isotropic(means, torch.tensor([0.3, 0.2, 0.4], dtype=torch.float64))


def _z(n=64, d=2, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------- Table 1 preconditioning
def test_preconditioning_matches_table_1():
    sd = 0.5
    for sigma in [0.002, 0.05, 0.5, 1.0, 3.7, 80.0]:
        assert edm.c_skip(sigma, sd) == pytest.approx(sd**2 / (sigma**2 + sd**2), rel=1e-14)
        assert edm.c_out(sigma, sd) == pytest.approx(sigma * sd / math.sqrt(sd**2 + sigma**2), rel=1e-14)
        assert edm.c_in(sigma, sd) == pytest.approx(1.0 / math.sqrt(sigma**2 + sd**2), rel=1e-14)
        assert edm.c_noise(sigma) == pytest.approx(math.log(sigma) / 4, rel=1e-14, abs=1e-15)
        lam = (sigma**2 + sd**2) / (sigma * sd) ** 2
        assert edm.loss_weight(sigma, sd) == pytest.approx(lam, rel=1e-14)
        # the effective weight lambda c_out^2 is 1 (Karras et al. 2022, Sec. 5)
        assert lam * edm.c_out(sigma, sd) ** 2 == pytest.approx(1.0, rel=1e-12)
    # D -> x as sigma -> 0 (c_skip -> 1, c_out -> 0); unit-variance target and input at every sigma
    assert edm.c_skip(1e-6, sd) == pytest.approx(1.0) and edm.c_out(1e-6, sd) < 1e-6


class _Linear(torch.nn.Module):
    """F(x, t_index) = a x + b t_index: records what the wrapper passes in."""

    config = None

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, t_index, y=None):
        self.seen.append((x.clone(), t_index.clone()))
        return 0.3 * x + 0.01 * t_index.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


def test_precond_wraps_network_as_eq_7():
    sch = Schedule.linear(1000)
    net = _Linear()
    D = edm.Precond(net, kind="edm", sigma_data=0.5, schedule=sch)
    x = _z(5, 3)
    sigma = torch.tensor([0.01, 0.2, 1.0, 5.0, 60.0], dtype=torch.float64)
    out = D(x, sigma)
    for i, s in enumerate(sigma.tolist()):
        cs, co, ci = 0.25 / (s * s + 0.25), s * 0.5 / math.sqrt(s * s + 0.25), 1 / math.sqrt(s * s + 0.25)
        t_index = int(sch.sigma_to_t_index(s))
        F = 0.3 * (ci * x[i]) + 0.01 * t_index
        torch.testing.assert_close(out[i], cs * x[i] + co * F, rtol=1e-12, atol=1e-12)
    # the network sees its own coordinate: the schedule level nearest each sigma
    assert net.seen[0][1].tolist() == sch.sigma_to_t_index(sigma.numpy()).tolist()


def test_vp_precond_of_eps_network_is_tweedie_x0():
    """Table 1's VP column reads an eps-network as D(x; sigma) = the existing x0_hat (Ho et al. 2020, eq. 15)."""
    sch = Schedule.linear(1000)
    eps_net = _Linear()
    D = edm.Precond(eps_net, kind="vp", schedule=sch)
    x_ve = 3.0 * _z(8, 2, seed=1)
    for t_index in [0, 17, 300, 999]:
        ab = float(sch.alpha_bar[t_index])
        sigma = float(sch.sigma[t_index])
        x_t = math.sqrt(ab) * x_ve                                   # the same state in VP coordinates
        eps = eps_net(x_t, torch.full((8,), t_index))
        x0_existing = forward.eps_to_x0(x_t, eps, ab)
        torch.testing.assert_close(D(x_ve, sigma), x0_existing, rtol=1e-12, atol=1e-12)


def test_precond_refuses_bad_sigma_and_kind():
    sch = Schedule.linear(100)
    with pytest.raises(ValueError, match="kind"):
        edm.Precond(_Linear(), kind="ve", schedule=sch)
    with pytest.raises(ValueError, match="schedule"):
        edm.Precond(_Linear())
    with pytest.raises(ValueError, match="sigma"):
        edm.Precond(_Linear(), schedule=sch)(_z(2, 2), 0.0)


# ---------------------------------------------------------------- the loss
def test_edm_loss_is_weighted_denoising_error():
    sch = Schedule.linear(1000)
    net = _Linear()
    x0, noise = _z(6, 4, seed=2), _z(6, 4, seed=3)
    sigma = torch.tensor([0.01, 0.1, 0.5, 1.0, 4.0, 40.0], dtype=torch.float64)
    got = edm.edm_loss(net, x0, sigma, noise, schedule=sch)
    D = edm.Precond(net, schedule=sch)(x0 + sigma[:, None] * noise, sigma)
    lam = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
    want = torch.mean(lam[:, None] * (D - x0) ** 2)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def test_objective_draws_log_normal_sigma():
    obj = edm.EDMObjective()
    sigma, noise = obj.draw(torch.Generator().manual_seed(0), 20000, (2,), Schedule.linear(10))
    logs = torch.log(sigma)
    assert abs(float(logs.mean()) - (-1.2)) < 4 * 1.2 / math.sqrt(20000)
    assert abs(float(logs.std()) - 1.2) < 0.03
    assert noise.shape == (20000, 2)
    from minidiff import train

    assert train.OBJECTIVES["edm"] is edm.EDMObjective


# ---------------------------------------------------------------- grids and coordinates
def test_rho_grid_is_eq_5():
    n, smin, smax, rho = 18, 0.002, 80.0, 7.0
    s = edm.karras_sigmas(n, smin, smax, rho)
    want = [(smax ** (1 / rho) + i / (n - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho for i in range(n)]
    np.testing.assert_allclose(s[:-1], want, rtol=1e-13)
    assert s[-1] == 0 and s[0] == pytest.approx(smax) and s[-2] == pytest.approx(smin)
    np.testing.assert_allclose(edm.karras_sigmas(5, 1.0, 5.0, rho=1.0)[:-1], [5, 4, 3, 2, 1], rtol=1e-13)
    # rho -> inf is uniform in log sigma = uniform in log-SNR
    np.testing.assert_allclose(edm.karras_sigmas(6, 0.01, 10.0, rho=1e7)[:-1], edm.log_snr_sigmas(6, 0.01, 10.0)[:-1],
                               rtol=1e-5)
    lam = edm.log_snr_from_sigma(edm.log_snr_sigmas(6, 0.01, 10.0)[:-1])
    np.testing.assert_allclose(np.diff(lam), np.full(5, np.diff(lam)[0]), rtol=1e-12)
    with pytest.raises(ValueError, match="sigma_min"):
        edm.karras_sigmas(5, 1.0, 0.5)


def test_coordinate_conversions_round_trip():
    sch = Schedule.linear(1000)
    ab = sch.alpha_bar
    s = edm.sigma_from_alpha_bar(ab)
    np.testing.assert_allclose(s, sch.sigma, rtol=1e-14)
    np.testing.assert_allclose(edm.alpha_bar_from_sigma(s), ab, rtol=1e-13)
    np.testing.assert_allclose(edm.log_snr_from_sigma(s), np.log(sch.snr), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(edm.sigma_from_log_snr(np.log(sch.snr)), s, rtol=1e-12)
    assert edm.sigma_from_t_index(sch, -1) == 0.0
    sde = VPSDE()
    ts = np.linspace(0.0, 1.0, 23)
    np.testing.assert_allclose(edm.vp_t_from_sigma(sde, [sde.sigma(t) for t in ts]), ts, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="sigma"):
        edm.alpha_bar_from_sigma(-1.0)


def test_grid_schedule_and_vp_sde_visit_the_grid():
    s = edm.karras_sigmas(7, 0.01, 50.0)
    sch = edm.grid_schedule(s)
    assert sch.T == 7
    np.testing.assert_allclose(sch.sigma[::-1], s[:-1], rtol=1e-12)
    np.testing.assert_allclose(edm.t_index_sigmas(sch, 7), s, rtol=1e-12)
    sde = edm.grid_vp_sde(VPSDE(), edm.karras_sigmas(7, 0.01, 100.0))
    np.testing.assert_allclose([sde.sigma(t) for t in sde.time_grid(7)], edm.karras_sigmas(7, 0.01, 100.0),
                               rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="n_steps"):
        sde.time_grid(5)
    with pytest.raises(ValueError, match="ending in 0"):
        edm.grid_schedule([3.0, 1.0])


# ---------------------------------------------------------------- samplers in sigma
def test_ddim_is_euler_in_sigma_on_rescaled_state(gm):
    """DDIM (eta = 0) on x_VP = sqrt(ab) x equals Euler in sigma on x (Karras et al. 2022, App. B.2)."""
    s = edm.karras_sigmas(12, 0.02, 30.0)
    sch = edm.grid_schedule(s)
    x_ve = s[0] * _z(128)
    x_vp = math.sqrt(sch.alpha_bar[-1]) * x_ve
    ddim = list(samplers.ddim(gm.eps_model(sch), x_vp, sch, sch.T, backend="torch"))
    euler = list(edm.euler(edm.mixture_denoiser(gm), x_ve, s, backend="torch"))
    for a, b, sig_next in zip(ddim, euler, s[1:]):
        torch.testing.assert_close(a.x * math.sqrt(1.0 + sig_next**2), b.x, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(a.x0, b.x0, rtol=1e-12, atol=1e-12)
    fused = trajectories.ddim_exact(gm, x_vp, sch, sch.T)
    torch.testing.assert_close(fused, euler[-1].x, rtol=1e-11, atol=1e-11)


def test_dpm_solver_first_step_is_ddim_on_the_grid(gm):
    s = edm.log_snr_sigmas(6, 0.02, 30.0)
    sch = edm.grid_schedule(s)
    x = math.sqrt(sch.alpha_bar[-1]) * s[0] * _z(32)
    a = next(iter(solvers.dpm_solver_2m(gm.eps_model(sch), x, sch, sch.T)))
    b = next(iter(samplers.ddim(gm.eps_model(sch), x, sch, sch.T, backend="torch")))
    torch.testing.assert_close(a.x, b.x, rtol=1e-12, atol=1e-12)
    assert [st.t_index for st in solvers.dpm_solver_2m(gm.eps_model(sch), x, sch, sch.T)] == list(range(5, -1, -1))


def test_heun_in_sigma_matches_fused_kernel(gm):
    s = edm.karras_sigmas(9, 0.02, 20.0)
    x = s[0] * _z(50)
    steps = list(edm.heun(edm.mixture_denoiser(gm), x, s, backend="torch"))
    assert [st.sigma for st in steps] == s[:-1].tolist()
    fused = trajectories.pf_ode_heun_exact(gm, x, edm.SigmaODE(tuple(s)), 9)
    torch.testing.assert_close(fused, steps[-1].x, rtol=1e-11, atol=1e-11)


def _heun_errors(gm, ns, n_ref=512, n_samples=100):
    D = edm.mixture_denoiser(gm)
    z = _z(n_samples, seed=4)
    run = lambda n: samplers.final(edm.heun(D, 20.0 * z, edm.karras_sigmas(n, 0.02, 20.0), backend="torch"))  # noqa
    ref = run(n_ref)
    return [float((run(n) - ref).pow(2).sum(1).mean().sqrt()) for n in ns]


def test_heun_in_sigma_is_second_order(gm):
    """Alg. 1 on the exact mixture: error against NFE = 2n - 1 falls with slope about -2."""
    ns = [8, 16, 32, 64]
    err = _heun_errors(gm, ns)
    slope = np.polyfit(np.log(2 * np.array(ns) - 1), np.log(err), 1)[0]
    assert -2.6 < slope < -1.7, (slope, err)


def test_churn_is_alg_2(gm):
    """One churned step by hand: x_hat = x + sqrt(s_hat^2 - s^2) z, then the Heun step from s_hat."""
    s = edm.karras_sigmas(4, 0.05, 10.0)
    D = edm.mixture_denoiser(gm)
    x = s[0] * _z(16)
    z = _z(16, seed=9)
    churn = 2.0
    first = next(iter(edm.stochastic(D, x, s, s_churn=churn, noise=[z] * 4, backend="torch")))
    gamma = min(churn / 4, math.sqrt(2) - 1)
    sh = s[0] * (1 + gamma)
    xh = x + math.sqrt(sh**2 - s[0] ** 2) * z
    d = (xh - D(xh, sh)) / sh
    xe = xh + (s[1] - sh) * d
    d2 = (xe - D(xe, s[1])) / s[1]
    torch.testing.assert_close(first.x, xh + (s[1] - sh) * 0.5 * (d + d2), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="generator"):
        next(iter(edm.stochastic(D, x, s, s_churn=1.0)))
    # churn 0 is Alg. 1
    a = samplers.final(edm.stochastic(D, x, s, s_churn=0.0, backend="torch"))
    torch.testing.assert_close(a, samplers.final(edm.heun(D, x, s, backend="torch")), rtol=0, atol=0)


def test_denoiser_as_eps_model_round_trip(gm):
    """A denoiser read as an eps-model on its grid gives back the mixture's exact eps."""
    s = edm.karras_sigmas(5, 0.05, 10.0)
    sch = edm.grid_schedule(s)
    x = _z(20)
    m = edm.denoiser_as_eps_model(edm.mixture_denoiser(gm), s)
    for t_index in range(sch.T):
        ti = torch.full((20,), t_index)
        torch.testing.assert_close(m(x, ti), gm.eps_model(sch)(x, ti), rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- guidance on the exact mixture
def test_guided_denoiser_is_cfg_and_respects_interval(gm):
    cond, uncond = edm.mixture_denoiser(edm.component(gm, 1)), edm.mixture_denoiser(gm)
    x = _z(10)
    for sigma in [0.1, 1.0, 10.0]:
        want = 3.0 * cond(x, sigma) - 2.0 * uncond(x, sigma)             # (1 + w) D_y - w D, w = 2
        torch.testing.assert_close(edm.guided_denoiser(cond, uncond, 2.0)(x, sigma), want)
        # in score form: grad log p(x|y) + w grad log p(y|x), the class posterior's gradient by autograd
        xr = x.clone().requires_grad_(True)
        log_post = torch.log(gm.at_sigma(sigma).responsibilities(xr)[:, 1]).sum()
        grad = torch.autograd.grad(log_post, xr)[0]
        score_w = (want - x) / sigma**2
        torch.testing.assert_close(score_w, edm.component(gm, 1).at_sigma(sigma).score(x) + 2.0 * grad,
                                   rtol=1e-8, atol=1e-8)
    limited = edm.guided_denoiser(cond, uncond, 2.0, sigma_range=(0.5, 2.0))
    torch.testing.assert_close(limited(x, 0.1), cond(x, 0.1), rtol=0, atol=0)
    torch.testing.assert_close(limited(x, 1.0), 3.0 * cond(x, 1.0) - 2.0 * uncond(x, 1.0))
    with pytest.raises(ValueError, match="sigma_range"):
        edm.guided_denoiser(cond, uncond, 1.0, sigma_range=(2.0, 1.0))


def test_sample_on_grid_matches_component_moments(gm):
    """At w = 0 the tilted density is p(x | y): grid samples have its mean and covariance."""
    x = edm.sample_on_grid(edm.tilted_log_density(gm, 2, 0.0), 20000, generator=torch.Generator().manual_seed(0))
    mu, std = gm.means[2], 0.4
    assert torch.allclose(x.mean(0), mu, atol=4 * std / math.sqrt(20000) + 2e-3)
    assert torch.allclose(x.std(0), torch.full((2,), std, dtype=torch.float64), rtol=0.03)
    # the tilt with w > 0 pushes mass away from the other classes: p(y | x) rises on average
    xw = edm.sample_on_grid(edm.tilted_log_density(gm, 2, 3.0), 20000, generator=torch.Generator().manual_seed(1))
    assert gm.responsibilities(xw)[:, 2].mean() > gm.responsibilities(x)[:, 2].mean()


def test_shipped_edm_digits_load_as_a_denoiser():
    """load_edm_digits wraps the shipped F in the EDM column: D(x; sigma) -> x as sigma -> 0 (c_skip -> 1,
    c_out -> 0), and at large sigma D is near the data's scale, not x's."""
    D = edm.precond_denoiser(edm.load_edm_digits())
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(D(x, 1e-4), x, rtol=0, atol=1e-3)
    big = 80.0 * x
    assert float(D(big, 80.0).abs().max()) < 3.0 < float(big.abs().max())
