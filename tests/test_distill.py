"""Consistency distillation (minidiff.consistency; Song et al. 2023) against references: the boundary
condition exactly, the distillation target against a naive float64 re-derivation, the teacher step
against DDIM, the teacher's ODE map against the closed-form flow of a Gaussian, and a student trained on
the exact mixture teacher getting closer to the teacher's map."""
import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from minidiff import GaussianMixture, Schedule
from minidiff import consistency as cm
from minidiff.backend import ddim_step
from minidiff.train import TrainState
from minidiff.unet import MLPConfig, build_model


class _ToyNet(torch.nn.Module):
    """A fixed smooth float64 "network" ``out = tanh(x W + t_index / 1000 b)`` with a ``config.prediction``,
    so float64 references can be compared to rounding (the course's MLP embeds time in float32)."""

    def __init__(self, prediction="eps", dim=2, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.config = SimpleNamespace(prediction=prediction)
        self.W = torch.nn.Parameter(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.randn(dim, generator=g, dtype=torch.float64))

    def forward(self, x, t_index, y=None):
        t = torch.as_tensor(t_index).reshape(-1, 1).to(x.dtype)
        return torch.tanh(x @ self.W.to(x.dtype) + t / 1000 * self.b.to(x.dtype))


def _net(prediction="eps", seed=0):
    return _ToyNet(prediction, seed=seed).eval().requires_grad_(False)


# ------------------------------------------------------------------ the parameterisation
def test_boundary_coefficients_formula_and_limits():
    sd, smin = 0.5, 0.01
    sig = np.array([smin, 0.1, 1.0, 80.0])
    c_skip, c_out = cm.boundary_coefficients(sig, smin, sd)
    for s, a, b in zip(sig, c_skip, c_out):   # Song et al. 2023, App. C, written out per value
        assert a == pytest.approx(sd**2 / ((s - smin) ** 2 + sd**2), rel=1e-15)
        assert b == pytest.approx(sd * (s - smin) / (sd**2 + s**2) ** 0.5, rel=1e-15, abs=0)
    assert c_skip[0] == 1.0 and c_out[0] == 0.0
    assert c_skip[-1] < 1e-4 and abs(c_out[-1] - sd) < 1e-4
    with pytest.raises(ValueError, match="sigma_min"):
        cm.boundary_coefficients([0.001], smin)
    with pytest.raises(ValueError, match="sigma_data"):
        cm.boundary_coefficients([0.1], smin, 0.0)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_boundary_condition_is_exact(prediction, dtype):
    """f(x, sigma_min) = x bit for bit, whatever the network outputs (Song et al. 2023, eq. 3)."""
    sched = Schedule.linear(1000)
    net = _net(prediction)
    x = torch.randn(64, 2, dtype=dtype) * 3
    f = cm.consistency_function(net, x, 0, sched)
    assert torch.equal(f, x)
    assert not torch.allclose(cm.consistency_function(net, x, 1, sched), x, atol=1e-6)


def test_consistency_function_against_naive_float64():
    sched = Schedule.linear(1000)
    net = _net("eps")
    x = torch.randn(8, 2, dtype=torch.float64)
    t_index = np.array([0, 3, 50, 200, 400, 600, 800, 999])
    f = cm.consistency_function(net, x, t_index, sched).numpy()
    ref = _naive_f(net, x.numpy(), t_index, sched.betas)
    np.testing.assert_allclose(f, ref, rtol=1e-10, atol=1e-12)


def _naive_f(net, x, t_index, betas, sd=cm.SIGMA_DATA):
    """Re-derived from the papers in float64: alpha_bar = prod(1 - beta), sigma = sqrt((1-ab)/ab),
    x_t = sqrt(ab) x, D = x - sigma eps (x = x0 + sigma eps), EDM's F = (D - c_skip^0 x) / c_out^0,
    f = c_skip x + c_out F with Song et al.'s c_skip, c_out (sigma_min = sigma at t_index 0)."""
    ab_all = np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))
    sig_all = np.sqrt((1 - ab_all) / ab_all)
    out = np.empty_like(x)
    for i, ti in enumerate(t_index):
        ab, s, smin = ab_all[ti], sig_all[ti], sig_all[0]
        x_t = np.sqrt(ab) * x[i]
        with torch.no_grad():
            eps = net(torch.as_tensor(x_t[None]), torch.tensor([int(ti)])).numpy()[0]
        D = x[i] - s * eps
        F = (D - sd**2 / (s**2 + sd**2) * x[i]) / (sd * s / np.sqrt(sd**2 + s**2))
        c_skip = sd**2 / ((s - smin) ** 2 + sd**2)
        c_out = sd * (s - smin) / np.sqrt(sd**2 + s**2)
        out[i] = c_skip * x[i] + c_out * F
    return out


# ------------------------------------------------------------------ the teacher's solver
def test_teacher_step_is_ddim():
    """Euler in sigma on x = x_t / sqrt(ab) is the deterministic DDIM update (Song et al. 2021b, eq. 14)."""
    sched = Schedule.linear(1000)
    mix = GaussianMixture.grid_2d(2, spacing=2.0, std=0.3)
    eps_fn = mix.eps_model(sched)
    x_t = torch.randn(256, 2, dtype=torch.float64)
    for t_index, t_index_prev in [(999, 944), (500, 300), (60, 0)]:
        ab, ab_prev = sched.alpha_bar[t_index], sched.alpha_bar[t_index_prev]
        eps = eps_fn(x_t, torch.full((256,), t_index))
        want, _ = ddim_step(x_t, eps, t_index, t_index_prev, sched, backend="torch")
        got = cm.teacher_step(eps_fn, x_t / np.sqrt(ab), t_index, t_index_prev, sched) * np.sqrt(ab_prev)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_teacher_map_follows_the_closed_form_ode_of_a_gaussian():
    """For N(mu, s^2 I) data the VE probability-flow ODE is x(sigma) = mu + (x_T - mu) sqrt(s^2 + sigma^2) /
    sqrt(s^2 + sigma_T^2); DDIM on the full grid is first order, so 999 steps land close and 18 further."""
    sched = Schedule.linear(1000)
    mu, s = torch.tensor([[0.7, -0.4]], dtype=torch.float64), 0.3
    mix = GaussianMixture.isotropic(mu, s)
    x_T = torch.randn(500, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    xT_ve = cm.prior_to_ve(x_T, sched)
    exact = mu + (xT_ve - mu) * np.sqrt(s**2 + sched.sigma[0] ** 2) / np.sqrt(s**2 + sched.sigma[-1] ** 2)
    err = {n: float((cm.teacher_map(mix.eps_model(sched), x_T, sched, cm.distillation_grid(sched, n)) - exact)
                    .norm(dim=1).mean()) for n in (18, 999)}
    assert err[999] < 2e-3 and err[999] < err[18] / 10, err


def test_distillation_grid():
    sched = Schedule.linear(1000)
    g = cm.distillation_grid(sched, 18)
    assert g[0] == 0 and g[-1] == 999 and len(g) == 19 and np.all(np.diff(g) > 0)
    with pytest.raises(ValueError, match="n"):
        cm.distillation_grid(sched, 1000)


# ------------------------------------------------------------------ the distillation target (Alg. 2)
def test_distillation_target_against_naive_float64():
    sched = Schedule.linear(1000)
    mix = GaussianMixture.grid_2d(2, spacing=2.0, std=0.3)
    target_net = _net("eps", seed=3)
    grid = cm.distillation_grid(sched, 18)
    g = torch.Generator().manual_seed(0)
    x0 = mix.sample(6, generator=g)
    z = torch.randn(6, 2, dtype=torch.float64, generator=g)
    n = np.array([0, 1, 5, 9, 16, 17])
    x_next, target = cm.distillation_target(target_net, mix.eps_model(sched), x0, z, n, grid, sched)
    # naive: x_{n+1} = x0 + sigma_{n+1} z; x_hat = x_{n+1} + (sigma_n - sigma_{n+1}) eps*(x_{n+1}), eps* the
    # exact eps of the VP marginal, -sqrt(1-ab) grad log q_t (a Gaussian mixture), from scratch below
    ab_all = np.cumprod(1.0 - sched.betas)
    sig_all = np.sqrt((1 - ab_all) / ab_all)
    xn, zz = x0.numpy(), z.numpy()
    want_next, x_hat = np.empty_like(xn), np.empty_like(xn)
    for i, k in enumerate(n):
        t_hi, t_lo = grid[k + 1], grid[k]
        want_next[i] = xn[i] + sig_all[t_hi] * zz[i]
        ab = ab_all[t_hi]
        x_t = np.sqrt(ab) * want_next[i]
        eps = -np.sqrt(1 - ab) * _naive_mixture_score(x_t, mix, ab)
        x_hat[i] = want_next[i] + (sig_all[t_lo] - sig_all[t_hi]) * eps
    want_target = _naive_f(target_net, x_hat, grid[n], sched.betas)
    np.testing.assert_allclose(x_next.numpy(), want_next, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(target.numpy(), want_target, rtol=1e-9, atol=1e-10)
    assert np.allclose(target.numpy()[0], x_hat[0])   # n = 0: the target is the boundary, f(x_hat, t_0) = x_hat


def _naive_mixture_score(x, mix, ab):
    w, mus = mix.weights.numpy(), mix.means.numpy()
    var = ab * mix.covs.numpy()[:, 0, 0] + (1 - ab)                 # isotropic components
    d = x[None, :] - np.sqrt(ab) * mus                               # (K, 2)
    logp = np.log(w) - 0.5 * (d**2).sum(1) / var - np.log(2 * np.pi * var)
    r = np.exp(logp - logp.max())
    r /= r.sum()
    return -(r[:, None] * d / var[:, None]).sum(0)


def test_loss_weights_and_bad_input():
    sched = Schedule.linear(1000)
    grid = cm.distillation_grid(sched, 4)
    w = cm.loss_weights(grid, [0, 3], sched, "inverse_step")
    assert w[0] == pytest.approx(1 / (sched.sigma[grid[1]] - sched.sigma[grid[0]]))
    assert np.all(cm.loss_weights(grid, [0, 3], sched) == 1)
    with pytest.raises(ValueError, match="weighting"):
        cm.CDConfig(weighting="lpips")
    net = _net()
    x0 = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="n must lie"):
        cm.distillation_target(net, lambda x, t: x, x0, x0, [0, 4], grid, sched)
    with pytest.raises(ValueError, match="n must be"):
        cm.distillation_target(net, lambda x, t: x, x0, x0, [0.5, 1.0], grid, sched)


# ------------------------------------------------------------------ sampling (Alg. 1)
def test_multistep_sampling_follows_algorithm_1():
    sched = Schedule.linear(1000)
    net = _net("x0")
    x_T = torch.randn(16, 2, dtype=torch.float64)
    steps = list(cm.multistep_sample(net, x_T, sched, [999]))
    assert len(steps) == 1
    torch.testing.assert_close(steps[0].x, cm.consistency_function(net, cm.prior_to_ve(x_T, sched), 999, sched))
    z = [torch.randn(16, 2, dtype=torch.float64)]
    two = list(cm.multistep_sample(net, x_T, sched, [999, 300], noise=z))
    x_tau = steps[0].x + np.sqrt(sched.sigma[300] ** 2 - sched.sigma[0] ** 2) * z[0]
    torch.testing.assert_close(two[1].x, cm.consistency_function(net, x_tau, 300, sched))
    assert [s.t_index for s in two] == [999, 300]
    with pytest.raises(ValueError, match="generator"):
        list(cm.multistep_sample(net, x_T, sched, [999, 300]))
    with pytest.raises(ValueError, match="t_indices"):
        cm.multistep_sample(net, x_T, sched, [500, 300])
    t4 = cm.sampling_t_indices(sched, 4)
    assert t4[0] == 999 and len(t4) == 4 and np.all(np.diff(t4) < 0)


# ------------------------------------------------------------------ training on the exact teacher
def test_student_gets_closer_to_the_exact_teachers_map():
    """On a Gaussian mixture the teacher (exact eps) is known, so the student's error to the map it
    imitates (the teacher's DDIM steps along the grid) is measurable: it must fall over training."""
    torch.set_num_threads(1)
    sched = Schedule.linear(1000)
    mix = GaussianMixture.grid_2d(2, spacing=2.0, std=0.2)
    teacher = mix.eps_model(sched)
    data = mix.sample(4000, generator=torch.Generator().manual_seed(0)).float()
    torch.manual_seed(0)
    net = build_model(MLPConfig(dim=2, hidden=64, depth=2, prediction="x0"))
    state, target = TrainState.create(net, lr=1e-3), copy.deepcopy(net).eval()
    cfg = cm.CDConfig(steps=200, batch_size=128, lr=3e-3, n_grid=6, ema_decay=0.9, weighting="inverse_step")
    grid = cm.distillation_grid(sched, cfg.n_grid)
    x_T = torch.randn(1000, 2, generator=torch.Generator().manual_seed(1))
    ref = cm.teacher_map(teacher, x_T, sched, grid)

    def error():
        x = list(cm.multistep_sample(state.ema, x_T, sched, [999]))[-1].x
        return float((x - ref).norm(dim=1).mean())

    before = error()
    losses = [rec.loss for rec in cm.distill_steps(state, target, teacher, data, sched, cfg)]
    after = error()
    assert len(losses) == 200 and np.isfinite(losses).all()
    print(f"error to the teacher's map before / after training: {before:.3f} / {after:.3f}")
    assert after < 0.5 * before, (before, after)


def test_student_files_round_trip_and_refuse_other_weights(tmp_path):
    from minidiff.train import WEIGHTS_DIR, ScheduleSpec

    net = build_model(MLPConfig(dim=2, hidden=16, depth=1, prediction="x0"))
    cfg = cm.CDConfig(steps=3, sigma_data=0.7)
    cm.save_student(tmp_path / "s.safetensors", net, ScheduleSpec(), cfg, teacher="mixture")
    loaded, sched, sd = cm.load_student(tmp_path / "s.safetensors")
    assert sd == 0.7 and sched.T == 1000
    x = torch.randn(5, 2)
    torch.testing.assert_close(cm.consistency_function(loaded, x, 500, sched, sigma_data=sd),
                               cm.consistency_function(net.eval(), x, 500, sched, sigma_data=sd))
    with pytest.raises(ValueError, match="not a consistency student"):
        cm.load_student(WEIGHTS_DIR / "toy2d.safetensors")
    with pytest.raises(ValueError, match="target_decay"):
        cm.CDConfig(target_decay=1.5)
    with pytest.raises(ValueError, match="steps"):
        cm.CDConfig(steps=0)
