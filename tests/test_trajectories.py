"""minidiff.trajectories (fused exact-score trajectories) against the step-by-step samplers driven by
the exact mixture score through torch: the same noise by construction, equal to rounding in float64."""
import numpy as np
import pytest
import torch

from minidiff import GaussianMixture, Schedule, samplers
from minidiff import backend as B
from minidiff import trajectories as TR
from minidiff.sde import VESDE, VPSDE
from minidiff.solvers import dpm_solver_2m

S = Schedule.linear(T=60)
GRID = GaussianMixture.grid_2d(3, 1.0, 0.1)  # isotropic, 9 components
FULL = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[0.0, 1.0, 2.0], [1.0, -1.0, 0.0]]),
                       torch.stack([torch.tensor([[1.0, 0.3, 0.0], [0.3, 0.5, 0.1], [0.0, 0.1, 0.2]]),
                                    0.3 * torch.eye(3)]))  # full covariances
SEED = 2**40 + 5


def x_T(gm, n=300, dtype=torch.float64):
    return B.normal((n, gm.dim), seed=11, step=10**6, dtype=dtype)


def noise_for(x):
    return lambda step: B.normal(x.shape, SEED, step, dtype=x.dtype)


def score_fn(gm, sde):
    return lambda x, t: gm.noised(sde.mean_scale(t), sde.marginal_std(t)).score(x)


def torch_path(kind, gm, x, **kw):
    """The step-by-step sampler on the exact score (what the notebooks ran before)."""
    if kind == "ddpm":
        return samplers.final(samplers.ddpm(gm.eps_model(S), x, S, noise=noise_for(x), **kw))
    if kind == "ddim":
        return samplers.final(samplers.ddim(gm.eps_model(S), x, S, 12, noise=noise_for(x), **kw))
    if kind == "dpm2m":
        return samplers.final(dpm_solver_2m(gm.eps_model(S), x, S, 12, **kw))
    sde = kw.pop("sde")
    f = {"em": samplers.euler_maruyama, "euler": samplers.pf_ode_euler, "heun": samplers.pf_ode_heun}[kind]
    extra = {"noise": noise_for(x)} if kind == "em" else {}
    return samplers.final(f(score_fn(gm, sde), x, sde, 25, **extra))


def fused(kind, gm, x, **kw):
    if kind == "ddpm":
        return TR.ddpm_exact(gm, x, S, seed=SEED, **kw)
    if kind == "ddim":
        return TR.ddim_exact(gm, x, S, 12, kw.pop("eta", 0.0), SEED, **kw)
    if kind == "dpm2m":
        return TR.dpm_solver_2m_exact(gm, x, S, 12, **kw)
    sde = kw.pop("sde")
    if kind == "em":
        return TR.euler_maruyama_exact(gm, x, sde, 25, seed=SEED)
    return {"euler": TR.pf_ode_euler_exact, "heun": TR.pf_ode_heun_exact}[kind](gm, x, sde, 25)


CASES = [("ddpm", {}), ("ddpm", {"clip_x0": 1.0}), ("ddim", {"eta": 0.0}), ("ddim", {"eta": 0.5}),
         ("ddim", {"eta": 1.0, "clip_x0": 1.2}), ("dpm2m", {}), ("dpm2m", {"clip_x0": 1.0}),
         ("em", {"sde": VPSDE()}), ("euler", {"sde": VPSDE()}), ("heun", {"sde": VPSDE()}),
         ("em", {"sde": VESDE(sigma_min=0.01, sigma_max=5.0)}), ("heun", {"sde": VESDE(sigma_min=0.01, sigma_max=5.0)})]


@pytest.mark.parametrize("gm", [GRID, FULL], ids=["isotropic", "full"])
@pytest.mark.parametrize("kind,kw", CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_fused_equals_the_torch_path_in_float64(kind, kw, gm):
    x = x_T(gm)
    want = torch_path(kind, gm, x, **dict(kw))
    got = fused(kind, gm, x, **dict(kw))
    assert got.dtype == torch.float64 and got.shape == x.shape
    scale = float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=0, atol=1e-11 * max(1.0, scale))
    assert float((got - x).abs().max()) > 0.1  # it moved


LANGEVIN = [("langevin", GRID), ("langevin", FULL), ("annealed", GRID), ("annealed", FULL)]


@pytest.mark.parametrize("kind,gm", LANGEVIN, ids=["langevin-iso", "langevin-full", "annealed-iso", "annealed-full"])
def test_langevin_fused_equals_the_torch_path(kind, gm):
    """Langevin (Song & Ermon 2019, eq. 4) and annealed Langevin (Alg. 1) on the exact scores; 300
    particles (not a multiple of the CPU block), the same Philox noise."""
    x = x_T(gm)
    if kind == "langevin":
        want = samplers.final(samplers.langevin(gm.score, x, step_size=0.004, n_steps=40, noise=noise_for(x)))
        got = TR.langevin_exact(gm, x, step_size=0.004, n_steps=40, seed=SEED)
    else:
        sig = [2.0, 1.0, 0.5, 0.2]
        want = samplers.final(samplers.annealed_langevin(lambda v, sg: gm.at_sigma(float(sg)).score(v), x, sig,
                                                         n_steps_each=6, step_size=0.01, noise=noise_for(x)))
        got = TR.annealed_langevin_exact(gm, x, sig, n_steps_each=6, step_size=0.01, seed=SEED)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-11 * max(1.0, float(want.abs().max())))
    assert float((got - x).abs().max()) > 0.1


def test_langevin_arguments_name_themselves():
    x = x_T(GRID)
    with pytest.raises(ValueError, match="step_size"):
        TR.langevin_exact(GRID, x, step_size=0.0, n_steps=3, seed=1)
    with pytest.raises(ValueError, match="pass seed="):
        TR.langevin_exact(GRID, x, step_size=0.1, n_steps=3)
    with pytest.raises(ValueError, match="sigmas must be"):
        TR.annealed_langevin_exact(GRID, x, [0.1, 1.0], n_steps_each=2, step_size=0.1, seed=1)
    with pytest.raises(ValueError, match=r"x_init must have shape \(B, 2\)"):
        TR.langevin_exact(GRID, torch.zeros(3, 3, dtype=torch.float64), step_size=0.1, n_steps=3, seed=1)


def test_the_vectorised_exp_against_numpy():
    """The kernels' libm-free exp (Cody-Waite reduction, degree-13 polynomial, exponent bits) within
    2 ulp of numpy's over [-700, 0], and exactly 1 at 0."""
    from numba import njit

    from minidiff.kernels import trajectories as KT

    f = njit(KT.exp_rows_poly)
    v = np.concatenate([-np.geomspace(1e-300, 700.0, 4001), [0.0, -np.log(2) / 2, -np.log(2), -745.0]])
    w, tf = v.copy(), np.empty_like(v)
    f(w, tf, tf.view(np.int64), v.size)
    want = np.exp(np.maximum(v, -700.0))
    assert w[-4] == 1.0
    np.testing.assert_array_less(np.abs(w / want - 1), 4.5e-16)


def test_dimension_64_and_one_component():
    rng = np.random.default_rng(0)
    gm = GaussianMixture.isotropic(torch.as_tensor(rng.standard_normal((3, 64))), 0.3)
    x = x_T(gm, n=40)
    torch.testing.assert_close(fused("ddim", gm, x, eta=0.7), torch_path("ddim", gm, x, eta=0.7), rtol=0, atol=1e-11)
    one = GaussianMixture.isotropic([[0.5, -0.5]], 0.2)
    x = x_T(one, n=50)
    torch.testing.assert_close(fused("dpm2m", one, x), torch_path("dpm2m", one, x), rtol=0, atol=1e-12)


def test_float32_in_float32_out_and_numpy_in_numpy_out():
    x = x_T(GRID, dtype=torch.float32)
    got = fused("ddim", GRID, x, eta=0.3)
    want = fused("ddim", GRID, x.double(), eta=0.3)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-6)  # float64 inside, one rounding at the end
    g = TR.ddim_exact(GRID, x.double().numpy(), S, 12, 0.3, SEED)
    assert isinstance(g, np.ndarray)
    np.testing.assert_array_equal(g, want.numpy())


def test_deterministic_and_seed_dependent():
    x = x_T(GRID)
    a, b = (TR.ddpm_exact(GRID, x, S, seed=1) for _ in range(2))
    assert torch.equal(a, b)
    assert float((TR.ddpm_exact(GRID, x, S, seed=2) - a).abs().max()) > 0.01


def test_samples_land_on_the_mixture():
    """DPM-Solver++(2M), 30 steps, on the 3x3 grid: every sample within 5 std of a component mean."""
    x = B.normal((4000, 2), seed=1, dtype=torch.float64)
    got = TR.dpm_solver_2m_exact(GRID, x, Schedule.cosine(T=1000), 30)
    dist = torch.cdist(got, GRID.means).min(1).values
    assert float(dist.max()) < 0.5


def test_bad_arguments_name_themselves():
    x = x_T(GRID)
    with pytest.raises(TypeError, match="gm must be a minidiff.GaussianMixture"):
        TR.ddim_exact("gm", x, S, 5)
    with pytest.raises(ValueError, match=r"x_T must have shape \(B, 2\)"):
        TR.ddim_exact(GRID, torch.zeros(3, 3, dtype=torch.float64), S, 5)
    with pytest.raises(ValueError, match="x_T must be finite"):
        TR.ddim_exact(GRID, torch.full((3, 2), float("nan")), S, 5)
    with pytest.raises(ValueError, match="pass seed="):
        TR.ddpm_exact(GRID, x, S)
    with pytest.raises(ValueError, match="eta must be"):
        TR.ddim_exact(GRID, x, S, 5, -1.0, 0)
    with pytest.raises(TypeError, match="seed must be an int"):
        TR.ddim_exact(GRID, x, S, 5, 1.0, 1.5)
    with pytest.raises(TypeError, match="clip_x0 must be a real number"):
        TR.ddim_exact(GRID, x, S, 5, clip_x0="1")
    with pytest.raises(TypeError, match="sde must be"):
        TR.pf_ode_euler_exact(GRID, x, S, 5)
    with pytest.raises(ValueError, match="x_T"):
        TR.ddim_exact(GRID, torch.zeros(3, 2, device="meta"), S, 5)


def test_flops_count_is_consistent():
    assert TR.flops_per_sample_step(GRID, heun=True) == 2 * TR.flops_per_sample_step(GRID)
    assert TR.flops_per_sample_step(FULL) > TR.flops_per_sample_step(
        GaussianMixture.isotropic(FULL.means, 0.3, FULL.weights))


# ---------------------------------------------------------------------------- flow-matching ODE solvers
from minidiff import flow  # noqa: E402
from minidiff.interpolants import Interpolant  # noqa: E402

INTERPOLANTS = {"linear": Interpolant.linear(), "trig": Interpolant.trig(), "vp": Interpolant.vp()}
FLOW_SOLVERS = {"euler": TR.flow_euler_exact, "heun": TR.flow_heun_exact, "midpoint": TR.flow_midpoint_exact}


def flow_grid(kind, n=10, descending=True):
    t_end = INTERPOLANTS[kind].t_min  # VP: the velocity blows up at t = 0
    return flow.time_grid(n, 1.0, t_end) if descending else flow.time_grid(n, t_end, 1.0)


@pytest.mark.parametrize("gm", [GRID, FULL], ids=["isotropic", "full"])
@pytest.mark.parametrize("solver", list(FLOW_SOLVERS))
@pytest.mark.parametrize("kind", list(INTERPOLANTS))
def test_flow_solvers_fused_equal_the_torch_path(kind, solver, gm):
    """:func:`minidiff.flow.euler / heun / midpoint` on ``gm.velocity_model(interpolant)`` against the fused
    solvers, every interpolant (linear and trig start at ``alpha_t = 0``, where the velocity is not a
    function of the score), float64: equal to rounding."""
    ip = INTERPOLANTS[kind]
    x = x_T(gm)
    ts = flow_grid(kind)
    want = flow.integrate(gm.velocity_model(ip), x, ts, solver=solver)
    got = FLOW_SOLVERS[solver](gm, x, ts, ip)
    assert got.dtype == torch.float64 and got.shape == x.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-11 * max(1.0, float(want.abs().max())))
    assert float((got - x).abs().max()) > 0.1


def test_flow_encoding_direction_and_numpy():
    """An ascending grid (data to noise, the likelihood's direction) and numpy in, numpy out."""
    ip = INTERPOLANTS["trig"]
    x0 = GRID.sample(200, generator=torch.Generator().manual_seed(3))
    ts = flow_grid("trig", 8, descending=False)
    want = flow.integrate(GRID.velocity_model(ip), x0, ts, solver="heun")
    got = TR.flow_heun_exact(GRID, x0.numpy(), ts, ip)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-11 * float(want.abs().max()))


def test_flow_arguments_name_themselves():
    x = x_T(GRID)
    with pytest.raises(TypeError, match="interpolant must be"):
        TR.flow_euler_exact(GRID, x, flow.time_grid(4), "linear")
    with pytest.raises(ValueError, match="ts must be strictly monotone"):
        TR.flow_heun_exact(GRID, x, [1.0, 0.5, 0.7], INTERPOLANTS["linear"])
    with pytest.raises(ValueError, match="ts must lie in"):
        TR.flow_midpoint_exact(GRID, x, [1.5, 0.0], INTERPOLANTS["linear"])
    with pytest.raises(ValueError, match=r"not defined at t = 0\.0"):  # VP's sigma_t' is infinite at t = 0
        TR.flow_heun_exact(GRID, x, flow.time_grid(4), INTERPOLANTS["vp"])
    with pytest.raises(ValueError, match=r"x_T must have shape \(B, 2\)"):
        TR.flow_euler_exact(GRID, torch.zeros(3, 3, dtype=torch.float64), flow.time_grid(4), INTERPOLANTS["linear"])


def test_flow_flops_count_the_velocity():
    assert TR.flops_per_sample_step(GRID, velocity=True) > TR.flops_per_sample_step(GRID)
    assert TR.flops_per_sample_step(FULL, heun=True, velocity=True) == 2 * TR.flops_per_sample_step(FULL, velocity=True)


# ---------------------------------------------------------------------------- predictor-corrector
PC_CASES = [(VPSDE(), 1, GRID), (VPSDE(), 2, FULL), (VESDE(sigma_min=0.01, sigma_max=5.0), 1, GRID),
            (VESDE(sigma_min=0.01, sigma_max=5.0), 0, FULL)]


@pytest.mark.parametrize("sde,n_corrector,gm", PC_CASES, ids=["vp-1-iso", "vp-2-full", "ve-1-iso", "ve-0-full"])
def test_predictor_corrector_fused_equals_the_torch_path(sde, n_corrector, gm):
    """Song et al. 2021a, Alg. 2/3 with the exact score, 300 samples (3 blocks, the last partial): the same
    Philox noise (counter ``index (1 + n_corrector) + j``). The corrector's step is a batch mean of norms,
    summed in another order than torch's (per block, then over blocks): a relative difference of a few
    1e-16 in the step size, which the later steps carry, hence 1e-10 against 1e-11 for the per-sample kernels."""
    x = x_T(gm)
    want = samplers.final(samplers.predictor_corrector(score_fn(gm, sde), x, sde, 20, snr=0.16,
                                                       n_corrector=n_corrector, noise=noise_for(x)))
    got = TR.predictor_corrector_exact(gm, x, sde, 20, snr=0.16, n_corrector=n_corrector, seed=SEED)
    assert got.dtype == torch.float64 and got.shape == x.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10 * max(1.0, float(want.abs().max())))
    assert float((got - x).abs().max()) > 0.1


def test_predictor_corrector_step_depends_on_the_whole_batch():
    """The corrector couples the samples: the first 300 of 600 end elsewhere than the 300 alone."""
    x = x_T(GRID, n=600)
    a = TR.predictor_corrector_exact(GRID, x, VPSDE(), 5, seed=SEED)[:300]
    b = TR.predictor_corrector_exact(GRID, x[:300], VPSDE(), 5, seed=SEED)
    assert float((a - b).abs().max()) > 1e-9


def test_predictor_corrector_arguments_name_themselves():
    x = x_T(GRID)
    with pytest.raises(ValueError, match="snr"):
        TR.predictor_corrector_exact(GRID, x, VPSDE(), 5, snr=0.0, seed=1)
    with pytest.raises(ValueError, match="n_corrector"):
        TR.predictor_corrector_exact(GRID, x, VPSDE(), 5, n_corrector=-1, seed=1)
    with pytest.raises(ValueError, match="pass seed="):
        TR.predictor_corrector_exact(GRID, x, VPSDE(), 5)
    with pytest.raises(TypeError, match="sde must be"):
        TR.predictor_corrector_exact(GRID, x, S, 5, seed=1)


def test_corrector_norm_sums_vectorised_equal_the_scalar_loop():
    """The CPU's corrector norm sums (lane norms first, then the serial sum) are bitwise the scalar loop
    and equal to a float64 numpy reference to rounding; the isotropic score with fused multiply-adds agrees
    with the exact torch score of ``gm.noised`` to rounding."""
    from minidiff.kernels import cpu
    from minidiff.kernels.trajectories import ROWS

    v = np.random.default_rng(3).standard_normal((3, ROWS)) * np.array([[1.0], [1e-3], [1e3]])
    q = np.empty(ROWS)
    for n in (1, 5, ROWS):
        got = cpu._t["norm_sum_rows"](v, n, q)
        assert got == cpu._t["norm_sum"](v, n)
        assert abs(got - np.linalg.norm(v[:, :n], axis=0).sum()) <= 1e-13 * got
    a, s = 0.6, 0.8
    prec, const, iso, _, _ = TR.level_tables(GRID, [(a, s)])
    x = B.normal((ROWS, 2), seed=5, dtype=torch.float64) * 2.0
    X = np.ascontiguousarray(x.numpy().T)
    SC, LG, lanes = np.empty_like(X), np.empty((9, ROWS)), np.empty((4, ROWS))
    cpu._t["gm_score_rows"](X, ROWS, a, 0, GRID.means.numpy(), prec, const, False, prec, const[:, 0], LG, lanes[0],
                            lanes[1], lanes[2], lanes[3], lanes[3].view(np.int64), SC)
    want = GRID.noised(a, s).score(x).numpy().T
    np.testing.assert_allclose(SC, want, rtol=0, atol=1e-13 * max(1.0, float(np.abs(want).max())))
