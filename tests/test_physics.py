"""minidiff.physics against analytic answers: the heat kernel, FTCS convergence order and stability,
Brownian mean squared displacement 2 d D t, and the Ornstein-Uhlenbeck stationary law."""
from __future__ import annotations

import math

import numpy as np
import pytest

from minidiff import physics as P


def test_gaussian_kernel_is_a_normalised_heat_solution():
    x = np.linspace(-20, 20, 4001)
    dx = x[1] - x[0]
    for t in (0.1, 1.0, 3.0):
        g = P.gaussian_kernel(x, t, 0.7)
        assert abs(g.sum() * dx - 1) < 1e-9
        assert abs((x**2 * g).sum() * dx - 2 * 0.7 * t) < 1e-6  # variance 2Dt
    # u_t = D u_xx, by central differences in t and x
    t, D, h = 1.0, 0.7, 1e-4
    ut = (P.gaussian_kernel(x, t + h, D) - P.gaussian_kernel(x, t - h, D)) / (2 * h)
    g = P.gaussian_kernel(x, t, D)
    uxx = (np.roll(g, 1) - 2 * g + np.roll(g, -1)) / dx**2
    assert np.abs(ut - D * uxx)[1:-1].max() < 1e-4
    # 2-D: the product of two 1-D kernels
    pts = np.random.default_rng(0).normal(size=(5, 2))
    np.testing.assert_allclose(P.gaussian_kernel(pts, t, D),
                               P.gaussian_kernel(pts[:, 0], t, D) * P.gaussian_kernel(pts[:, 1], t, D))


def test_ftcs_second_order_at_fixed_r_and_fourth_at_one_sixth():
    res = P.ftcs_convergence(levels=4)
    assert abs(res.r - 0.4) < 1e-12
    assert np.all(np.diff(res.max_error) < 0)
    np.testing.assert_allclose(res.orders, 2.0, atol=0.05)
    res6 = P.ftcs_convergence(levels=3, r=1 / 6)
    np.testing.assert_allclose(res6.orders, 4.0, atol=0.1)


def test_ftcs_matches_exact_solution_and_conserves_mass():
    L, n, D = 10.0, 200, 1.0
    x = P.periodic_grid(L, n)
    dx = L / n
    dt = 0.4 * dx**2 / D
    u0 = P.heat_solution_periodic(x, 0.5, D, L)
    snaps = P.solve_heat_1d(u0, D, dt, dx, 100, every=50)
    assert snaps.shape == (3, n)
    for k, u in enumerate(snaps):
        exact = P.heat_solution_periodic(x, 0.5 + 50 * k * dt, D, L)
        assert np.abs(u - exact).max() < 1e-4
        assert abs(u.sum() * dx - u0.sum() * dx) < 1e-12


def test_ftcs_2d_matches_product_solution():
    L, n, D = 8.0, 64, 0.5
    x = P.periodic_grid(L, n)
    dx = L / n
    dt = 0.2 * dx**2 / D
    g0 = P.heat_solution_periodic(x, 0.5, D, L)
    u = P.solve_heat_2d(np.outer(g0, g0), D, dt, dx, 200)
    g1 = P.heat_solution_periodic(x, 0.5 + 200 * dt, D, L)
    assert np.abs(u - np.outer(g1, g1)).max() < 1e-3


def test_stability_bound_refused_by_default_and_blows_up_when_allowed():
    L, n, D = 10.0, 100, 1.0
    x = P.periodic_grid(L, n)
    dx = L / n
    u0 = P.heat_solution_periodic(x, 0.5, D, L)
    with pytest.raises(ValueError, match="unstable"):
        P.solve_heat_1d(u0, D, 0.51 * dx**2 / D, dx, 10)
    u = P.solve_heat_1d(u0, D, 0.55 * dx**2 / D, dx, 400, allow_unstable=True)
    assert not np.all(np.isfinite(u)) or np.abs(u).max() > 1e3
    stable = P.solve_heat_1d(u0, D, 0.5 * dx**2 / D, dx, 400)
    assert np.abs(stable).max() <= u0.max() + 1e-12  # maximum principle
    th = np.linspace(0, np.pi, 101)
    assert np.abs(P.ftcs_amplification(0.5, th)).max() <= 1 + 1e-15
    assert P.ftcs_amplification(0.55, np.pi) == pytest.approx(1 - 4 * 0.55)


@pytest.mark.parametrize("dim", [1, 2])
def test_walkers_msd_is_2dDt(dim):
    D, dt, n = 0.5, 0.01, 20_000
    times, paths = P.simulate_walkers(n, D, dt, 100, dim=dim, seed=3, every=25)
    assert paths.shape == (5, n, dim) and np.allclose(times, [0, 0.25, 0.5, 0.75, 1.0])
    ratio = P.msd(paths[1:]) / (2 * dim * D * times[1:])
    np.testing.assert_allclose(ratio, 1.0, atol=0.04)


def test_walker_paths_do_not_depend_on_batch_size():
    _, a = P.simulate_walkers(10, 1.0, 0.1, 5, seed=7)
    _, b = P.simulate_walkers(1000, 1.0, 0.1, 5, seed=7)
    np.testing.assert_array_equal(a, b[:, :10])


def test_ou_reaches_stationary_variance():
    D, theta, dt = 1.0, 2.0, 0.01
    times, paths = P.simulate_walkers(20_000, D, dt, 400, drift_coef=-theta, x0=3.0, seed=1, every=100)
    x = paths[..., 0]
    np.testing.assert_allclose(x.mean(1), P.ou_mean(times, 3.0, theta), atol=0.03)
    v_em = P.ou_em_stationary_variance(D, theta, dt)
    assert v_em == pytest.approx((D / theta) / (1 - theta * dt / 2))
    assert abs(x[-1].var() / v_em - 1) < 0.04
    assert P.ou_variance(1e6, D, theta) == pytest.approx(D / theta)
    # the OU density solves its Fokker-Planck equation p_t = (theta x p)_x + D p_xx
    xs, h, t = np.linspace(-4, 4, 801), 1e-5, 0.3
    p = P.ou_density(xs, t, 1.0, D, theta)
    pt = (P.ou_density(xs, t + h, 1.0, D, theta) - P.ou_density(xs, t - h, 1.0, D, theta)) / (2 * h)
    rhs = np.gradient(theta * xs * p, xs) + D * np.gradient(np.gradient(p, xs), xs)
    assert np.abs(pt - rhs)[5:-5].max() < 2e-3


def test_input_checks():
    with pytest.raises(ValueError, match="t and D"):
        P.gaussian_kernel([0.0], 0.0, 1.0)
    with pytest.raises(ValueError, match="u0"):
        P.solve_heat_1d(np.zeros((2, 3, 4)), 1.0, 0.1, 1.0, 1)
    with pytest.raises(ValueError, match="n_steps"):
        P.solve_heat_1d(np.zeros(5), 1.0, 0.1, 1.0, -1)
    with pytest.raises(ValueError, match="non-integer"):
        P.ftcs_convergence(r=0.3)
    assert P.ftcs_ratio(1.0, 0.1, 1.0) == pytest.approx(0.1)
    assert math.isclose(P.periodic_grid(10, 5)[1] - P.periodic_grid(10, 5)[0], 2.0)
