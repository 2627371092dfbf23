"""Flow-matching samplers, loss, couplings, straightness and likelihood against references: naive
float64 solvers, the closed-form flow map of Gaussian data, convergence orders on the exact mixture
velocity, the closed-form loss floor of Gaussian data, brute-force optimal assignments, a quarter
circle's straightness, and the closed-form mixture density."""
import itertools
import math

import numpy as np
import pytest
import torch

from minidiff import GaussianMixture, Schedule, samplers
from minidiff import flow
from minidiff.interpolants import Interpolant
from minidiff.sde import VPSDE
from minidiff.train import OBJECTIVES, PRESETS, ScheduleSpec, TrainState, get_objective, train_steps
from minidiff.unet import build_model

MIX = GaussianMixture.grid_2d(3, spacing=1.5, std=0.15)
LINEAR = Interpolant.linear()


def _naive(velocity_fn, x, ts, solver):
    """Textbook float64 Euler / Heun / midpoint (Hairer et al. 1993, II.1)."""
    for t, tn in zip(ts[:-1], ts[1:]):
        h = tn - t
        u = velocity_fn(x, t)
        if solver == "euler":
            x = x + h * u
        elif solver == "heun":
            x = x + 0.5 * h * (u + velocity_fn(x + h * u, tn))
        else:
            x = x + h * velocity_fn(x + 0.5 * h * u, t + 0.5 * h)
    return x


@pytest.mark.parametrize("solver", sorted(flow.SOLVERS))
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_solvers_match_naive_float64(solver, backend):
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(50, 2, generator=g, dtype=torch.float64)
    u = MIX.velocity_model(LINEAR)
    ts = np.array([1.0, 0.8, 0.45, 0.2, 0.05, 0.0])   # a non-uniform grid
    got = flow.integrate(u, x1, ts, solver=solver, backend=backend)
    assert torch.allclose(got, _naive(u, x1, ts.tolist(), solver), rtol=1e-12, atol=1e-12)


def test_records_are_frozen_steps_with_time_and_x0():
    x1 = torch.randn(8, 2, dtype=torch.float64)
    ts = flow.time_grid(4)
    steps = list(flow.heun(MIX.velocity_model(LINEAR), x1, ts, interpolant=LINEAR))
    assert [s.t for s in steps] == ts[:-1].tolist() and [s.index for s in steps] == [0, 1, 2, 3]
    # at t = 1 on the linear path x = eps and x0_hat = x - u = E[x0 | x_1] = the mixture mean (0)
    assert torch.allclose(steps[0].x0, MIX.mean().expand(8, 2), atol=1e-12)
    assert all(isinstance(s, samplers.Step) for s in steps)


def test_gaussian_data_flow_map_is_closed_form_and_orders_are_1_and_2():
    """For x0 ~ N(m, s^2 I) the linear path's flow map is affine: x_1 -> m + s x_1. Errors against it
    fall as h (Euler) and h^2 (Heun, midpoint)."""
    m, s = torch.tensor([0.5, -1.0], dtype=torch.float64), 0.3
    gauss = GaussianMixture.isotropic(m[None], s)
    x1 = torch.randn(200, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = m + s * x1
    for solver, order in (("euler", 1), ("heun", 2), ("midpoint", 2)):
        errs = [float((flow.integrate(gauss.velocity_model(LINEAR), x1, flow.time_grid(n), solver=solver)
                       - exact).norm(dim=1).max()) for n in (16, 32, 64, 128)]
        rates = [math.log2(errs[i] / errs[i + 1]) for i in range(3)]
        # Euler exactly first order; the second-order methods at least second order (midpoint is third
        # order on this linear-in-x field)
        ok = abs(rates[-1] - 1) < 0.1 if order == 1 else rates[-1] > 1.9
        assert ok and all(r > order - 0.3 for r in rates), (solver, errs, rates)


def test_mixture_convergence_orders_against_a_fine_solution():
    x1 = torch.randn(400, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    u = MIX.velocity_model(LINEAR)
    ref = flow.integrate(u, x1, flow.time_grid(512), solver="midpoint")
    for solver, order in (("euler", 1), ("heun", 2), ("midpoint", 2)):
        e = [float((flow.integrate(u, x1, flow.time_grid(n), solver=solver) - ref).norm(dim=1).mean())
             for n in (16, 32, 64)]
        assert math.log2(e[1] / e[2]) == pytest.approx(order, abs=0.3), (solver, e)


def test_grid_and_input_checks():
    u = MIX.velocity_model(LINEAR)
    x = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="monotone"):
        list(flow.euler(u, x, [1.0, 0.5, 0.7]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        list(flow.euler(u, x, [1.2, 0.0]))
    with pytest.raises(TypeError):
        list(flow.euler(u, x.numpy(), [1.0, 0.0]))
    with pytest.raises(ValueError, match="solver"):
        flow.nfe("rk4", 3)
    assert flow.nfe("heun", 5) == 10 and flow.nfe("euler", 5) == 5


def test_eps_model_converted_to_vp_velocity_matches_the_exact_field():
    schedule = Schedule.linear(1000)
    interp = Interpolant.vp(VPSDE.from_schedule(schedule))
    u_eps = flow.velocity_from_eps_model(MIX.eps_model(schedule), schedule, interp)
    x = torch.randn(30, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for t_index in (100, 500, 900):
        t = (t_index + 1) / schedule.T
        exact = MIX.velocity(x, t, interp)
        # the eps comes from the discrete alpha_bar, the conversion from exp(-B(t)): an O(1/T) gap
        assert torch.allclose(u_eps(x, t), exact, rtol=0.02, atol=0.02), t_index


# ---------------------------------------------------------------------------- training
def _gaussian_floor(m, s, T):
    """Closed-form CFM floor for x0 ~ N(m, s^2) (per coordinate), linear path: Var(eps - x0 | x_t) =
    (1 + s^2) - Cov(eps - x0, x_t)^2 / Var(x_t), averaged over t = k / (T - 1)."""
    t = np.arange(T) / (T - 1)
    return float(np.mean((1 + s * s) - (t - (1 - t) * s * s) ** 2 / ((1 - t) ** 2 * s * s + t * t)))


def test_exact_loss_floor_matches_closed_form_for_gaussian_data():
    gauss = GaussianMixture.isotropic(torch.tensor([[0.5, -1.0]]), 0.3)
    mean, se = flow.exact_loss_floor(gauss, LINEAR, 20000, generator=torch.Generator().manual_seed(4), T=50)
    assert abs(mean - _gaussian_floor(0.5, 0.3, 50)) < 4 * se, (mean, se)


def test_loss_of_the_exact_velocity_is_the_floor():
    """flow_matching_loss with the exact field as the "network" estimates exact_loss_floor."""
    T = 100
    net = lambda x, t_index, y=None: MIX.velocity(x, float(t_index[0]) / (T - 1), LINEAR)  # noqa: E731
    g = torch.Generator().manual_seed(5)
    losses = []
    for _ in range(200):
        t_index = torch.full((64,), int(torch.randint(0, T, (1,), generator=g)))
        x0 = MIX.sample(64, generator=g)
        losses.append(float(flow.flow_matching_loss(net, x0, t_index, torch.randn(64, 2, generator=g,
                                                                                   dtype=torch.float64),
                                                    interpolant=LINEAR, T=T)))
    floor, se_floor = flow.exact_loss_floor(MIX, LINEAR, 20000, generator=g, T=T)
    se = np.std(losses) / math.sqrt(len(losses))
    assert abs(np.mean(losses) - floor) < 4 * math.hypot(se, se_floor), (np.mean(losses), floor)


def test_ot_pairs_is_the_optimal_assignment():
    g = torch.Generator().manual_seed(6)
    for _ in range(5):
        a, b = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
        cost = lambda p: float(((a - b[list(p)]) ** 2).sum())  # noqa: E731
        best = min(cost(p) for p in itertools.permutations(range(6)))
        paired = flow.ot_pairs(a, b)
        assert float(((a - paired) ** 2).sum()) == pytest.approx(best, rel=1e-6)
        assert sorted(paired[:, 0].tolist()) == sorted(b[:, 0].tolist())  # a permutation of b
    with pytest.raises(ValueError, match="same shape"):
        flow.ot_pairs(a, b[:3])


def test_flow_matching_objective_is_registered_and_draws_like_ddpm():
    assert isinstance(get_objective("fm"), OBJECTIVES["fm"]) and get_objective("fm_ot").coupling == "ot"
    s = Schedule.linear(1000)
    fm = get_objective("fm").draw(torch.Generator().manual_seed(7), 4, (2,), s)
    dd = get_objective("ddpm").draw(torch.Generator().manual_seed(7), 4, (2,), s)
    assert all(torch.equal(a, b) for a, b in zip(fm, dd))
    assert PRESETS["fm_digits"].model.prediction == "velocity" and PRESETS["fm_digits"].objective == "fm"
    with pytest.raises(ValueError, match="coupling"):
        flow.flow_matching_loss(None, torch.zeros(2, 2), torch.zeros(2, dtype=torch.int64), torch.zeros(2, 2),
                                interpolant=LINEAR, coupling="sinkhorn")


@pytest.mark.slow
def test_training_reaches_near_the_floor_and_learns_the_exact_field():
    """A 2-D MLP trained by the shared loop with the fm objective: its loss approaches the exact floor
    and its field is far closer to the exact velocity than the zero field is."""
    torch.manual_seed(0)
    from minidiff.train import training_data

    x, _ = training_data("gmm")
    state = TrainState.create(build_model(PRESETS["fm_gmm"].model))
    losses = [r.loss for r in train_steps(state, x, ScheduleSpec().build(), steps=600, batch_size=256,
                                          warmup=50, lr_min_frac=0.05, objective="fm")]
    floor, se = flow.exact_loss_floor(MIX, LINEAR, 20000, generator=torch.Generator().manual_seed(8))
    assert np.mean(losses[-100:]) < floor * 1.15, (np.mean(losses[-100:]), floor)
    v = flow.velocity_from_net(state.ema)
    pts = torch.randn(500, 2, generator=torch.Generator().manual_seed(9))
    for t in (0.3, 0.7):
        exact = MIX.velocity(pts, t, LINEAR)
        err = float(((v(pts, t) - exact) ** 2).sum(1).mean())
        assert err < 0.2 * float((exact**2).sum(1).mean()), (t, err)


def test_reflow_pairs_feed_the_pairs_coupling():
    u = MIX.velocity_model(LINEAR)
    eps = torch.randn(32, 2, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    pairs = flow.reflow_pairs(u, eps, flow.time_grid(20), solver="heun")
    assert pairs.shape == (32, 2, 2) and torch.equal(pairs[:, 1], eps)
    assert torch.allclose(pairs[:, 0], flow.integrate(u, eps, flow.time_grid(20), solver="heun"))
    # with the straight pairs' own velocity (x0 - eps is constant in t) the loss is exactly zero
    T = 11
    lookup = {}
    t_index = torch.arange(32) % T
    x_t = LINEAR.sample(pairs[:, 0], flow.index_to_time(t_index, T), pairs[:, 1])
    for i in range(32):
        lookup[tuple(x_t[i].tolist())] = pairs[i, 1] - pairs[i, 0]
    net = lambda x, ti, y=None: torch.stack([lookup[tuple(r.tolist())] for r in x])  # noqa: E731
    loss = flow.flow_matching_loss(net, pairs, t_index, torch.zeros(32, 2), interpolant=LINEAR, T=T,
                                   coupling="pairs")
    assert float(loss) < 1e-20
    with pytest.raises(ValueError, match="descending"):
        flow.reflow_pairs(u, eps, flow.time_grid(4, 0.0, 1.0))


# ---------------------------------------------------------------------------- straightness
def test_straightness_and_path_length_on_known_paths():
    ts = np.linspace(0.0, 1.0, 2001)
    line = [torch.tensor([[1.0 - t, 2.0 * t]]) for t in ts]
    assert float(flow.straightness(line, ts)[0]) == pytest.approx(0.0, abs=1e-20)
    assert float(flow.path_length_ratio(line)[0]) == pytest.approx(1.0)
    arc = [torch.tensor([[math.cos(0.5 * math.pi * t), math.sin(0.5 * math.pi * t)]]) for t in ts]
    # S = int ||u - (x1 - x0)||^2 = pi^2/4 + 2 - 2 (x1 - x0).(x1 - x0) = pi^2/4 - 2
    assert float(flow.straightness(arc, ts)[0]) == pytest.approx(math.pi**2 / 4 - 2, rel=1e-4)
    assert float(flow.path_length_ratio(arc)[0]) == pytest.approx((math.pi / 2) / math.sqrt(2), rel=1e-6)


# ---------------------------------------------------------------------------- likelihood
def test_flow_likelihood_matches_the_closed_form_density():
    """Instantaneous change of variables with the exact velocity: log p_0 within the Heun error of the
    closed-form mixture density; Hutchinson's estimator is unbiased around it."""
    x = MIX.sample(40, generator=torch.Generator().manual_seed(11))
    u = MIX.velocity_model(LINEAR)
    ts = flow.time_grid(200, 0.0, 1.0)
    exact = MIX.log_prob(x)
    ll = flow.log_likelihood(u, x, ts, trace="exact")
    assert float((ll - exact).abs().max()) < 0.02, float((ll - exact).abs().max())
    llh = flow.log_likelihood(u, x, ts, trace="hutchinson", n_probes=4,
                              generator=torch.Generator().manual_seed(12))
    diff = llh - exact
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(40) + 0.02
    with pytest.raises(ValueError, match="ascending"):
        flow.log_likelihood(u, x, flow.time_grid(4))
