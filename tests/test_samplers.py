"""Samplers against references: with the exact Gaussian-mixture score as the model every sampler
reproduces the mixture (sliced Wasserstein against the real-vs-real floor, component weights, means
and widths), deterministic solvers converge at their textbook orders, Gaussian data give closed-form
answers, and the two backends draw the same samples from the same generator."""
import math

import numpy as np
import pytest
import torch

from minidiff import GaussianMixture, Schedule, backend
from minidiff import samplers as S
from minidiff.metrics import sliced_wasserstein
from minidiff.sde import VESDE, VPSDE, mixture_score

N = 1500  # samples per reproduction test


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The shared 2-core machines run faster single-threaded for these small batches."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _mixture() -> GaussianMixture:
    """Three separated components on a triangle of radius 1.5, width 0.3, unequal weights."""
    ang = torch.tensor([90.0, 210.0, 330.0], dtype=torch.float64) * math.pi / 180
    means = 1.5 * torch.stack([ang.cos(), ang.sin()], 1)
    return GaussianMixture.isotropic(means, 0.3, weights=[0.5, 0.3, 0.2])


GM = _mixture()


def _component_stats(x, target: GaussianMixture):
    """Weights ``(K,)``, means ``(K, d)`` and RMS widths ``(K,)`` of the samples assigned to each
    component by their responsibilities."""
    k = target.responsibilities(x).argmax(1)
    K = target.n_components
    weights = torch.bincount(k, minlength=K).double() / x.shape[0]
    means = torch.stack([x[k == j].mean(0) for j in range(K)])
    widths = torch.stack([(x[k == j] - target.means[j]).pow(2).mean().sqrt() for j in range(K)])
    return weights, means, widths


def assert_reproduces(x, target: GaussianMixture, *, k_floor=2.0, w_tol=0.04, mean_tol=0.08,
                      width_rtol=0.10, label=""):
    """``x`` (N, d) against ``target`` (the components are > 7 widths apart, so assigning samples by
    responsibility is exact to < 0.1%).

    * sliced W1 to a fresh exact sample <= ``k_floor`` x the real-vs-real floor (the mean over 3 pairs
      of independent exact samples of the same size) + 0.01;
    * each component's weight within ``w_tol`` of the truth (3.4 standard errors at N = 1500), its mean
      within ``mean_tol`` (3.3 standard errors for the smallest component) and its RMS width
      within ``width_rtol`` (4 standard errors). A 0.1 weight error or a 20% width error fails.
    """
    x = x.to(torch.float64)
    n = x.shape[0]
    assert torch.isfinite(x).all(), f"{label}: non-finite samples"
    g = torch.Generator().manual_seed(12345)
    floor = float(np.mean([sliced_wasserstein(target.sample(n, g), target.sample(n, g), p=1) for _ in range(3)]))
    sw = sliced_wasserstein(x, target.sample(n, g), p=1)
    w, m, s = _component_stats(x, target)
    true_width = (torch.diagonal(target.covs, dim1=-2, dim2=-1).mean(-1)).sqrt()
    mean_err = (m - target.means).norm(dim=1)
    msg = (f"{label}: SW1 {sw:.4f} (floor {floor:.4f}); weights {w.numpy().round(3)} vs "
           f"{target.weights.numpy().round(3)}; mean errors {mean_err.numpy().round(3)}; "
           f"widths/true {(s / true_width).numpy().round(3)}")
    print(msg)
    assert sw <= k_floor * floor + 0.01, msg
    assert torch.all((w - target.weights).abs() <= w_tol), msg
    assert torch.all(mean_err <= mean_tol), msg
    assert torch.all((s / true_width - 1).abs() <= width_rtol), msg
    return sw, floor


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _prior(shape, seed=1, std=1.0):
    return std * torch.randn(shape, generator=_gen(seed), dtype=torch.float64)


# ============================================================================ reproduction
SCH_250 = Schedule.linear(250)
SCH_1000 = Schedule.linear(1000)


def test_ddpm_reproduces_the_mixture():
    """Ho et al. 2020, Alg. 2 with the exact eps. At T = 250 the chain itself is ~4% narrow
    (see test_ddpm_matches_the_exact_gaussian_variance_recursion)."""
    x = S.final(S.ddpm(GM.eps_model(SCH_250), _prior((N, 2)), SCH_250, generator=_gen()))
    assert_reproduces(x, GM, label="ddpm T=250")


@pytest.mark.parametrize("eta, n_steps, width_rtol", [(0.0, 50, 0.10), (1.0, 100, 0.15)])
def test_ddim_reproduces_the_mixture(eta, n_steps, width_rtol):
    """Song et al. 2021b, eq. 12. With eta = 1 and 100 steps the ancestral chain itself is 9% narrow for
    width-0.3 data (exact Gaussian recursion, see below), hence the wider width tolerance there."""
    x = S.final(S.ddim(GM.eps_model(SCH_1000), _prior((N, 2)), SCH_1000, n_steps, eta=eta, generator=_gen()))
    assert_reproduces(x, GM, width_rtol=width_rtol, label=f"ddim eta={eta} n={n_steps}")


SDES = {"VP": VPSDE(), "VE": VESDE()}


@pytest.mark.parametrize("name", SDES)
def test_euler_maruyama_reproduces_the_mixture(name):
    sde = SDES[name]
    x = S.final(S.euler_maruyama(mixture_score(GM, sde), _prior((N, 2), std=sde.prior_std), sde, 200,
                                 generator=_gen()))
    assert_reproduces(x, GM, label=f"euler_maruyama {name} n=200")


@pytest.mark.parametrize("name", SDES)
def test_predictor_corrector_reproduces_the_mixture(name):
    """100 steps: with 60 the VP reverse-diffusion predictor (noise variance beta_i, not the posterior's
    smaller beta_tilde) leaves the components ~7% too wide."""
    sde = SDES[name]
    x = S.final(S.predictor_corrector(mixture_score(GM, sde), _prior((N, 2), std=sde.prior_std), sde, 100,
                                      generator=_gen()))
    assert_reproduces(x, GM, label=f"predictor_corrector {name} n=100")


@pytest.mark.parametrize("name, solver, n_steps", [("VP", S.pf_ode_euler, 100), ("VP", S.pf_ode_heun, 30),
                                                   ("VE", S.pf_ode_heun, 30)])
def test_probability_flow_ode_reproduces_the_mixture(name, solver, n_steps):
    """Uniform steps in t. (Euler on the VE ODE needs ~300 steps here, g^2 growing like sigma^2; its
    convergence is tested below.)"""
    sde = SDES[name]
    x = S.final(solver(mixture_score(GM, sde), _prior((N, 2), std=sde.prior_std), sde, n_steps))
    assert_reproduces(x, GM, label=f"{solver.__name__} {name} n={n_steps}")


def test_annealed_langevin_reproduces_the_mixture_at_the_last_noise_level():
    """Song & Ermon 2019, Alg. 1 targets the data perturbed at sigma_L; start from a uniform box."""
    sigmas = VESDE(sigma_min=0.15, sigma_max=3.0).sigmas(8)
    x_init = 6 * torch.rand((N, 2), generator=_gen(1), dtype=torch.float64) - 3
    steps = S.annealed_langevin(lambda x, sigma: GM.at_sigma(sigma).score(x), x_init, sigmas,
                                n_steps_each=40, step_size=0.01, generator=_gen())
    assert_reproduces(S.final(steps), GM.at_sigma(sigmas[-1]), label="annealed_langevin")


# ============================================================================ Gaussian data: closed form
def _gaussian_chain_moments(schedule, pairs, *, mu, var0, eta=None):
    """Naive float64 reference. Data N(mu, var0) in 1-D: the exact eps is affine in x, so each DDPM
    (``eta=None``, Ho et al. eqs. 7, 15) or DDIM (Song et al. 2021b, eqs. 12, 16) step maps
    ``x -> A x + b + std z`` and the sample mean and variance follow in closed form from N(0, 1)."""
    mean, var = 0.0, 1.0
    for t_index, t_index_prev in pairs:
        ab = schedule.alpha_bar[t_index]
        abp = 1.0 if t_index_prev < 0 else schedule.alpha_bar[t_index_prev]
        m, v = math.sqrt(ab), 1 - ab
        k = m * var0 / (m * m * var0 + v)  # E[x0 | x] = mu + k (x - m mu)
        x0_a, x0_b = k, mu - k * m * mu  # x0_hat = x0_a x + x0_b
        if eta is None:  # DDPM posterior mean
            c_x0 = math.sqrt(abp) * schedule.betas[t_index] / (1 - ab)
            c_x = math.sqrt(schedule.alphas[t_index]) * (1 - abp) / (1 - ab)
            a, b, std2 = c_x0 * x0_a + c_x, c_x0 * x0_b, (schedule.posterior_variance[t_index] if t_index > 0 else 0.0)
        else:
            std2 = eta**2 * (1 - abp) / (1 - ab) * (1 - ab / abp)
            c_eps = math.sqrt(max(1 - abp - std2, 0.0)) / math.sqrt(v)  # eps_hat = (x - m x0_hat) / sqrt(v)
            a = math.sqrt(abp) * x0_a + c_eps * (1 - m * x0_a)
            b = math.sqrt(abp) * x0_b - c_eps * m * x0_b
        mean, var = a * mean + b, a * a * var + std2
    return mean, var


@pytest.mark.parametrize("kind", ["ddpm", "ddim eta=1", "ddim eta=0.5"])
def test_stochastic_chains_match_the_exact_gaussian_moment_recursion(kind):
    """With few steps the chains are visibly biased (variance ~20% low here); the sampler must
    reproduce exactly that bias, not the data's moments."""
    mu, var0, n = 0.7, 0.09, 20000
    gauss = GaussianMixture.isotropic([[mu]], math.sqrt(var0))
    sch = Schedule.linear(40)
    x_T = _prior((n, 1))
    if kind == "ddpm":
        x = S.final(S.ddpm(gauss.eps_model(sch), x_T, sch, generator=_gen()))
        pairs, eta = [(t_index, t_index - 1) for t_index in range(sch.T - 1, -1, -1)], None
    else:
        eta = float(kind.split("=")[1])
        x = S.final(S.ddim(gauss.eps_model(sch), x_T, sch, 10, eta=eta, generator=_gen()))
        ts = sch.timesteps(10)
        pairs = list(zip(ts.tolist(), np.append(ts[1:], -1).tolist()))
    mean, var = _gaussian_chain_moments(sch, pairs, mu=mu, var0=var0, eta=eta)
    assert abs(var / var0 - 1) > 0.05  # the bias is large enough to tell the chain from the data
    assert float(x.mean()) == pytest.approx(mean, abs=4 * math.sqrt(var / n))
    assert float(x.var()) == pytest.approx(var, rel=4 * math.sqrt(2 / n))


def test_deterministic_ddim_is_the_exact_affine_map_for_gaussian_data():
    """eta = 0: every sample follows the closed-form affine map exactly (no sampling noise at all)."""
    mu, var0 = -0.4, 0.25
    gauss = GaussianMixture.isotropic([[mu]], math.sqrt(var0))
    sch = Schedule.cosine(100)
    x_T = _prior((64, 1))
    ts = sch.timesteps(7)
    pairs = list(zip(ts.tolist(), np.append(ts[1:], -1).tolist()))
    # the map is affine: recover (A, b) from the moments of N(0, 1) -> N(b, A^2)
    b, a2 = _gaussian_chain_moments(sch, pairs, mu=mu, var0=var0, eta=0.0)
    x = S.final(S.ddim(gauss.eps_model(sch), x_T, sch, 7))
    torch.testing.assert_close(x, math.sqrt(a2) * x_T + b, rtol=1e-10, atol=1e-10)


# ============================================================================ convergence
def _median_error(x, ref):
    """Median per-sample distance: robust to the few trajectories near a basin boundary that a coarse
    solver sends to another mode (those make the RMS error converge at only half the order)."""
    return float((x - ref).norm(dim=1).median())


def _orders(errs, ns):
    errs, ns = np.asarray(errs), np.asarray(ns, dtype=float)
    return np.log(errs[:-1] / errs[1:]) / np.log(ns[1:] / ns[:-1])


@pytest.mark.parametrize("name", SDES)
def test_pf_ode_solvers_converge_at_orders_one_and_two(name):
    """Coupled comparison: the same x_T, each endpoint against a 200-step Heun reference, so sampling
    noise cancels. Euler is first order, Heun second (Karras et al. 2022, Sec. 3), and Heun beats Euler
    at equal steps once in the asymptotic range (at 10-20 steps on the uniform t grid the VP Heun
    error is still the larger)."""
    sde = SDES[name]
    score = mixture_score(GM, sde)
    x_T = _prior((200, 2), seed=3, std=sde.prior_std)
    ref = S.final(S.pf_ode_heun(score, x_T, sde, 200))
    ns_euler, ns_heun = [10, 20, 40, 80], [10, 20, 40]
    euler = [_median_error(S.final(S.pf_ode_euler(score, x_T, sde, n)), ref) for n in ns_euler]
    heun = [_median_error(S.final(S.pf_ode_heun(score, x_T, sde, n)), ref) for n in ns_heun]
    print(f"{name}: euler {np.round(euler, 5)} orders {_orders(euler, ns_euler).round(2)}; "
          f"heun {np.round(heun, 5)} orders {_orders(heun, ns_heun).round(2)}")
    assert np.all(np.diff(euler) < 0) and np.all(np.diff(heun) < 0)
    assert 0.75 < _orders(euler, ns_euler)[-2:].mean() < 1.25
    assert 1.6 < _orders(heun, ns_heun)[-1] < 2.6
    assert heun[-1] < euler[2]  # at 40 steps


def test_ddim_error_falls_with_steps_at_first_order():
    """DDIM (eta = 0) is a first-order solver of the probability-flow ODE (Song et al. 2021b, Sec. 4.3):
    coupled against the full T = 200-step DDIM chain."""
    sch = Schedule.linear(200)
    x_T = _prior((200, 2), seed=4)
    model = GM.eps_model(sch)
    ref = S.final(S.ddim(model, x_T, sch, 200))
    ns = [5, 10, 20, 40]
    errs = [_median_error(S.final(S.ddim(model, x_T, sch, n)), ref) for n in ns]
    print(f"ddim: {np.round(errs, 4)} orders {_orders(errs, ns).round(2)}")
    assert np.all(np.diff(errs) < 0)
    assert 0.7 < _orders(errs, ns)[-2:].mean() < 1.4


# ============================================================================ Langevin dynamics
def test_langevin_step_size_trades_bias_for_speed():
    """Unadjusted Langevin on N(0, v I) is an AR(1) chain with stationary variance
    ``v / (1 - h / (4 v))``: a step h = v inflates the variance by 4/3, h = v / 20 by 1.3%."""
    v, n = 1.0, 4000
    x_init = _prior((n, 2), seed=5, std=3.0)
    score = lambda x: -x / v  # noqa: E731
    for h, steps in ((v, 60), (v / 20, 400)):
        x = S.final(S.langevin(score, x_init, step_size=h, n_steps=steps, generator=_gen()))
        want = v / (1 - h / (4 * v))
        assert float(x.var()) == pytest.approx(want, rel=4 * math.sqrt(2 / x.numel())), h
    assert v / (1 - 1 / 4) / v > 1.3  # the large step's bias is visible


def test_single_level_langevin_misses_the_weights_and_annealing_recovers_them():
    """Song & Ermon 2019, Sec. 3.2 and Fig. 3: 0.2 N((-5,-5), I) + 0.8 N((5,5), I) from a uniform start.
    Plain Langevin keeps the start's 50/50 split (the modes never exchange samples); annealed Langevin
    (Alg. 1) recovers 0.2 / 0.8."""
    gm = GaussianMixture.isotropic([[-5.0, -5.0], [5.0, 5.0]], 1.0, weights=[0.2, 0.8])
    x_init = 16 * torch.rand((800, 2), generator=_gen(6), dtype=torch.float64) - 8
    plain = S.final(S.langevin(gm.score, x_init, step_size=0.1, n_steps=100, generator=_gen()))
    sigmas = VESDE(sigma_min=1.0, sigma_max=20.0).sigmas(8)
    annealed = S.final(S.annealed_langevin(lambda x, s: gm.at_sigma(s).score(x), x_init, sigmas,
                                           n_steps_each=25, step_size=0.5, generator=_gen()))
    w_plain = float((gm.responsibilities(plain)[:, 1] > 0.5).double().mean())
    w_annealed = float((gm.responsibilities(annealed)[:, 1] > 0.5).double().mean())
    w_start = float((x_init.sum(1) > 0).double().mean())
    print(f"weight of the 0.8 mode: start {w_start:.3f}, Langevin {w_plain:.3f}, annealed {w_annealed:.3f}")
    assert abs(w_plain - w_start) < 0.03 and abs(w_plain - 0.8) > 0.2
    assert abs(w_annealed - 0.8) < 0.05  # 3.5 standard errors


# ============================================================================ backends and noise
def _all_samplers(x_T2, seed=0, backend=None):
    """Short runs of every sampler, as {name: final x}."""
    sch = Schedule.linear(8)
    vp, ve = VPSDE(), VESDE()
    g = lambda: _gen(seed)  # noqa: E731
    runs = {
        "ddpm": S.ddpm(GM.eps_model(sch), x_T2, sch, generator=g(), backend=backend),
        "ddim": S.ddim(GM.eps_model(sch), x_T2, sch, 5, eta=0.7, generator=g(), backend=backend),
        "langevin": S.langevin(GM.score, x_T2, step_size=0.01, n_steps=5, generator=g(), backend=backend),
        "annealed": S.annealed_langevin(lambda x, s: GM.at_sigma(s).score(x), x_T2, [1.0, 0.5, 0.2],
                                        n_steps_each=2, step_size=0.01, generator=g(), backend=backend),
        "em_vp": S.euler_maruyama(mixture_score(GM, vp), x_T2, vp, 5, generator=g(), backend=backend),
        "pc_ve": S.predictor_corrector(mixture_score(GM, ve), 50 * x_T2, ve, 5, generator=g(), backend=backend),
        "pc_vp": S.predictor_corrector(mixture_score(GM, vp), x_T2, vp, 4, n_corrector=2, generator=g(),
                                       backend=backend),
        "heun_ve": S.pf_ode_heun(mixture_score(GM, ve), 50 * x_T2, ve, 5, backend=backend),
        "euler_vp": S.pf_ode_euler(mixture_score(GM, vp), x_T2, vp, 5, backend=backend),
    }
    return {k: S.final(v) for k, v in runs.items()}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_backends_draw_the_same_samples_from_the_same_generator(dtype):
    """Counter-based noise: the default (numba) and the torch reference backend agree sample by sample;
    a run is reproducible and another seed gives other samples."""
    x_T = _prior((64, 2), seed=7).to(dtype)
    default, ref = _all_samplers(x_T), _all_samplers(x_T, backend="torch")
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    for name in ref:
        assert default[name].dtype == dtype
        torch.testing.assert_close(default[name], ref[name], **tol, msg=lambda m: f"{name}: {m}")
    if dtype == torch.float64:
        again, other = _all_samplers(x_T), _all_samplers(x_T, seed=1)
        for name in ref:
            assert torch.equal(again[name], default[name]), name  # reproducible
            if name not in ("heun_ve", "euler_vp"):  # deterministic ones ignore the seed
                assert not torch.allclose(other[name], default[name]), name


def test_explicit_noise_reproduces_the_seeded_run():
    """``noise=`` takes the tensors themselves: passing the backend's Philox draws gives the same run."""
    sch = Schedule.linear(20)
    x_T = _prior((16, 2), seed=8)
    seed = int(torch.randint(0, 2**62, (1,), generator=_gen(0)).item())  # what the sampler draws
    draws = [backend.normal(x_T.shape, seed, k, dtype=x_T.dtype) for k in range(sch.T - 1)]
    a = S.final(S.ddpm(GM.eps_model(sch), x_T, sch, generator=_gen(0)))
    b = S.final(S.ddpm(GM.eps_model(sch), x_T, sch, noise=draws))
    c = S.final(S.ddpm(GM.eps_model(sch), x_T, sch, noise=lambda k: draws[k]))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)
    vp = VPSDE()
    d = S.final(S.predictor_corrector(mixture_score(GM, vp), x_T, vp, 5, generator=_gen(0)))
    pc_draws = [backend.normal(x_T.shape, seed, k, dtype=x_T.dtype) for k in range(10)]
    e = S.final(S.predictor_corrector(mixture_score(GM, vp), x_T, vp, 5, noise=pc_draws))
    torch.testing.assert_close(d, e, rtol=0, atol=0)
    with pytest.raises(IndexError, match="noise has 3 entries"):
        S.final(S.ddpm(GM.eps_model(sch), x_T, sch, noise=draws[:3]))


# ============================================================================ records
def test_records_are_frozen_fresh_and_complete():
    sch = Schedule.linear(25)
    x_T = _prior((32, 2), seed=9)
    x_T_copy = x_T.clone()
    records = list(S.ddpm(GM.eps_model(sch), x_T, sch, generator=_gen()))
    assert [r.index for r in records] == list(range(25))
    assert [r.t_index for r in records] == list(range(24, -1, -1))
    assert all(r.t is None and r.sigma is None and r.x0.shape == x_T.shape for r in records)
    assert torch.equal(x_T, x_T_copy)  # the input is never written
    ids = {id(r.x) for r in records} | {id(x_T)}
    assert len(ids) == 26  # a new tensor each step
    with pytest.raises(Exception):
        records[0].index = 5
    # yielded tensors are never mutated afterwards: snapshot at yield time, compare at the end
    snaps, kept = [], []
    for r in S.euler_maruyama(mixture_score(GM, VPSDE()), x_T, VPSDE(), 8, generator=_gen()):
        snaps.append((r.x.clone(), r.x0.clone()))
        kept.append(r)
    for (x, x0), r in zip(snaps, kept):
        assert torch.equal(x, r.x) and torch.equal(x0, r.x0)
    assert [r.t for r in kept] == pytest.approx(list(np.linspace(1, 1e-3, 9)[:-1]))
    ald = list(S.annealed_langevin(lambda x, s: GM.at_sigma(s).score(x), x_T, [1.0, 0.3], n_steps_each=2,
                                   step_size=0.01, generator=_gen()))
    assert [r.sigma for r in ald] == [1.0, 1.0, 0.3, 0.3] and [r.index for r in ald] == [0, 1, 2, 3]
    ddim = list(S.ddim(GM.eps_model(SCH_1000), x_T, SCH_1000, 4))
    assert [r.t_index for r in ddim] == SCH_1000.timesteps(4).tolist()


def test_final_and_trajectory():
    sch = Schedule.linear(10)
    x_T = _prior((8, 2), seed=10)
    run = lambda: S.ddpm(GM.eps_model(sch), x_T, sch, generator=_gen())  # noqa: E731
    records = list(run())
    assert torch.equal(S.final(run()), records[-1].x)
    traj = S.trajectory(run(), every=4)
    assert [r.index for r in traj] == [0, 4, 8, 9]
    assert [r.index for r in S.trajectory(run(), every=3)] == [0, 3, 6, 9]
    with pytest.raises(ValueError, match="no steps"):
        S.final(iter([]))


# ============================================================================ validation
def test_invalid_arguments_raise_clear_errors():
    sch = Schedule.linear(20)
    x_T = _prior((8, 2))
    model = GM.eps_model(sch)
    vp = VPSDE()
    score = mixture_score(GM, vp)
    with pytest.raises(TypeError, match="x_T must have a floating dtype"):
        S.ddpm(model, torch.zeros(8, 2, dtype=torch.int64), sch, generator=_gen())
    with pytest.raises(TypeError, match="x_T must be a torch.Tensor"):
        S.ddim(model, np.zeros((8, 2)), sch, 5)
    with pytest.raises(TypeError, match="x_T must be float32 or float64"):
        S.ddim(model, x_T.half(), sch, 5)
    with pytest.raises(ValueError, match=r"n_steps must be an integer in \[1, 20\]"):
        S.ddim(model, x_T, sch, 21)
    with pytest.raises(ValueError, match="n_steps"):
        S.ddim(model, x_T, sch, 0)
    with pytest.raises(ValueError, match="n_steps"):
        S.euler_maruyama(score, x_T, vp, 0, generator=_gen())
    with pytest.raises(ValueError, match="pass generator="):
        S.ddpm(model, x_T, sch)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        S.langevin(GM.score, x_T, step_size=0.1, n_steps=3, generator=0)
    with pytest.raises(ValueError, match="step_size must be"):
        S.langevin(GM.score, x_T, step_size=0.0, n_steps=3, generator=_gen())
    with pytest.raises(ValueError, match="sigmas must be"):
        S.annealed_langevin(lambda x, s: x, x_T, [0.1, 1.0], n_steps_each=2, step_size=0.1, generator=_gen())
    with pytest.raises(ValueError, match="eta must be"):
        S.ddim(model, x_T, sch, 5, eta=-1.0)
    with pytest.raises(TypeError, match="sde must be"):
        S.pf_ode_euler(score, x_T, sch, 5)
    with pytest.raises(ValueError, match="t_min"):
        S.pf_ode_heun(score, x_T, vp, 5, t_min=2.0)
    # the model's output is checked when the generator runs
    wrong_batch = lambda x, t: model(x, t)[:-1]  # noqa: E731
    with pytest.raises(ValueError, match=r"model returned shape \(7, 2\); expected x's shape \(8, 2\)"):
        S.final(S.ddpm(wrong_batch, x_T, sch, generator=_gen()))
    with pytest.raises(ValueError, match="score_fn returned shape"):
        S.final(S.pf_ode_euler(lambda x, t: score(x, t)[:, :1], x_T, vp, 3))
    with pytest.raises(TypeError, match="score_fn returned dtype"):
        S.final(S.euler_maruyama(lambda x, t: score(x, t).float(), x_T, vp, 3, generator=_gen()))
    with pytest.raises(TypeError, match="model must return a torch.Tensor"):
        S.final(S.ddim(lambda x, t: x.numpy(), x_T, sch, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_check_by_sum_agrees_with_isfinite_and_settles_overflow(dtype):
    """check_finite_state proves a CPU tensor finite from numpy's sum (a NaN or infinity makes any sum
    non-finite); a sum that overflows on finite values falls back to ``torch.isfinite`` and passes, and
    every non-finite case raises with the count ``isfinite`` gives, also on strided and grad tensors."""
    from minidiff._checks import NonFiniteError, check_finite_state

    big = torch.finfo(dtype).max
    check_finite_state(torch.full((4, 3), big, dtype=dtype), "x")  # the sum overflows; every value is finite
    check_finite_state(torch.randn(5, 4, dtype=dtype, requires_grad=True), "x")
    check_finite_state(torch.empty(0, 3, dtype=dtype), "x")
    for bad in (math.nan, math.inf, -math.inf):
        x = torch.randn(6, 8, dtype=dtype)
        x[2, 5] = bad
        for t in (x, x.t(), x[:, ::2].clone().fill_(bad), x.requires_grad_(True)):
            n_bad = int((~torch.isfinite(t)).sum())
            assert n_bad > 0
            with pytest.raises(NonFiniteError, match=f"step 3 holds {n_bad} non-finite"):
                check_finite_state(t, "the state", 3)
    x = torch.full((2, 2), big, dtype=dtype)
    x[0, 0], x[1, 1] = math.inf, -math.inf  # inf - inf: the sum is NaN, and two values are bad
    with pytest.raises(NonFiniteError, match="holds 2 non-finite"):
        check_finite_state(x, "x")


def test_t_index_vector_fast_path_equals_the_general_conversion():
    """An int ``t_index`` becomes the (B,) int64 vector in one ``torch.full``: the same tensor the general
    conversion makes from a numpy integer."""
    from minidiff._checks import t_index_vector

    for batch in (0, 1, 7):
        fast, general = t_index_vector(5, batch), t_index_vector(np.int64(5), batch)
        assert fast.dtype == general.dtype == torch.int64 and fast.device == general.device
        assert fast.is_contiguous() and torch.equal(fast, general) and fast.shape == (batch,)
