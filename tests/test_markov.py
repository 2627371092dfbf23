"""minidiff.markov against exact answers: stationary laws three ways, detailed balance and reversal,
the Gaussian chain's closed-form marginals, and the exact reverse kernel."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from minidiff import Schedule, q_posterior
from minidiff import markov as M


def _binom(N):
    return np.array([math.comb(N, k) for k in range(N + 1)]) / 2.0**N


def test_stationary_three_ways_agree_with_binomial():
    P = M.lazy_ehrenfest(8)
    exact = _binom(8)
    np.testing.assert_allclose(M.stationary_eigen(P), exact, atol=1e-12)
    pi, it = M.stationary_power(P)
    np.testing.assert_allclose(pi, exact, atol=1e-10)
    assert it > 10
    occ = M.occupation(M.simulate_chain(P, 200_000, x0=0, seed=0), 9)
    assert M.tv_distance(occ, exact) < 0.02


def test_chapman_kolmogorov_and_evolve():
    P = M.ring_walk(5, 0.6, 0.1)
    np.testing.assert_allclose(M.n_step(P, 5), M.n_step(P, 2) @ M.n_step(P, 3))
    p = M.evolve(np.eye(5)[0], P, 4)
    np.testing.assert_allclose(p[4], M.n_step(P, 4)[0])


def test_simulated_transition_frequencies_match_P():
    P = M.ring_walk(4, 0.5, 0.2)
    s = M.simulate_chain(P, 100_000, seed=1)
    counts = np.zeros((4, 4))
    np.add.at(counts, (s[:-1], s[1:]), 1)
    assert np.abs(counts / counts.sum(1, keepdims=True) - P).max() < 0.01


def test_detailed_balance_and_time_reversal():
    P = M.lazy_ehrenfest(6)
    pi = _binom(6)
    assert M.detailed_balance_gap(P, pi) < 1e-15
    np.testing.assert_allclose(M.time_reversal(P, pi), P, atol=1e-14)
    R = M.ring_walk(5, 0.7)
    u = np.full(5, 0.2)
    assert M.detailed_balance_gap(R, u) == pytest.approx(0.2 * 0.4)
    np.testing.assert_allclose(M.time_reversal(R, u), R.T)  # the reversed walk turns the other way
    M.check_stochastic(M.time_reversal(R, u))


def test_reverse_kernel_undoes_a_step_out_of_equilibrium():
    P = M.ring_walk(4, 0.3, 0.3)
    p0 = np.array([0.7, 0.2, 0.1, 0.0])
    p1 = p0 @ P
    Rk = M.reverse_kernel(P, p0)
    M.check_stochastic(Rk)
    np.testing.assert_allclose(p1 @ Rk, p0, atol=1e-15)


def test_check_stochastic_rejects_bad_matrices():
    with pytest.raises(ValueError, match="square"):
        M.check_stochastic(np.ones((2, 3)) / 3)
    with pytest.raises(ValueError, match="sum to 1"):
        M.check_stochastic([[0.5, 0.4], [0.5, 0.5]])
    with pytest.raises(ValueError, match="non-negative"):
        M.check_stochastic([[1.5, -0.5], [0.5, 0.5]])


def test_gaussian_chain_matches_closed_form_and_jump():
    s = Schedule.linear(T=50)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((40_000,), 2.0, dtype=torch.float64)
    xs = M.gaussian_chain(x0, s, generator=g)
    assert xs.shape == (51, 40_000)
    m, v = M.gaussian_chain_moments(s, 2.0, 0.0)
    assert m[0] == 2.0 and v[0] == 0.0
    np.testing.assert_allclose(m[1:], 2.0 * s.sqrt_alpha_bar)
    for i in (1, 10, 25, 50):
        assert abs(float(xs[i].mean()) - m[i]) < 0.03
        assert abs(float(xs[i].var()) / v[i] - 1) < 0.05
    assert abs(float(xs[-1].var()) - 1) < 0.03 and abs(float(xs[-1].mean())) < 0.03


def test_exact_reverse_chain_recovers_data_and_marginals():
    s = Schedule.cosine(T=40)
    support, weights = [-1.5, 1.0], [0.3, 0.7]
    g = torch.Generator().manual_seed(0)
    xs = M.exact_reverse_chain(torch.randn(20_000, generator=g, dtype=torch.float64), s, support, weights,
                               generator=g)
    assert xs.shape == (41, 20_000)
    assert set(torch.unique(xs[0]).tolist()) <= {-1.5, 1.0}
    assert abs(float((xs[0] == 1.0).double().mean()) - 0.7) < 0.015
    mean0 = -1.5 * 0.3 + 0.7
    var0 = 0.3 * 2.25 + 0.7 - mean0**2
    m, v = M.gaussian_chain_moments(s, mean0, var0)
    for i in (5, 20, 35):
        assert abs(float(xs[i].mean()) - m[i]) < 0.04
        assert abs(float(xs[i].var()) / v[i] - 1) < 0.05


def test_data_posterior_and_marginal_density():
    s = Schedule.linear(T=20)
    post = M.data_posterior(torch.tensor([-3.0, 0.0, 3.0]), 5, s, [-1.0, 1.0], [0.5, 0.5])
    np.testing.assert_allclose(post.sum(1), 1.0)
    assert post[0, 0] > 0.9 and post[2, 1] > 0.9 and abs(float(post[1, 0]) - 0.5) < 1e-12
    x = np.linspace(-8, 8, 2001)
    d = M.discrete_marginal_density(x, float(s.alpha_bar[5]), [-1.0, 1.0], [0.25, 0.75])
    assert abs(d.sum() * (x[1] - x[0]) - 1) < 1e-6
    # exact_reverse_step at t_index 0 returns data values
    out = M.exact_reverse_step(torch.tensor([0.1, -0.2]), 0, s, [-1.0, 1.0], [0.5, 0.5])
    assert set(out.tolist()) <= {-1.0, 1.0}
    # one reverse step has the q_posterior mean given x0
    mean, var = q_posterior(torch.tensor([[1.0]], dtype=torch.float64), torch.tensor([[0.5]], dtype=torch.float64), 5, s)
    assert var.item() == pytest.approx(s.posterior_variance[5])
