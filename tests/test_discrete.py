"""minidiff.discrete against exact answers on small K: the closed forms against matrix products, the
posterior against Bayes' rule written out, the reverse kernel against minidiff.markov's, the masked
weight against the bound's KL, and the samplers' output laws against enumerated tables."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from minidiff import discrete as D
from minidiff import markov as M

SCHEDULES = [D.DiscreteSchedule.linear(6, 4, "absorbing"), D.DiscreteSchedule.linear(6, 4, "uniform"),
             D.DiscreteSchedule.cosine(7, 5, "uniform"), D.DiscreteSchedule.cosine(5, 3, "absorbing")]


def _prod(s, t_index):
    P = np.eye(s.K)
    for i in range(t_index + 1):
        P = P @ s.Q(i)
    return P


@pytest.mark.parametrize("s", SCHEDULES, ids=lambda s: f"{s.kind}-K{s.K}-T{s.T}")
def test_q_bar_is_the_product_of_the_step_matrices(s):
    for t_index in range(s.T):
        Q = s.Q(t_index)
        M.check_stochastic(Q)
        np.testing.assert_allclose(s.Q_bar(t_index), _prod(s, t_index), atol=1e-12)
    np.testing.assert_allclose(s.Q_bar(s.T - 1), np.outer(np.ones(s.K), s.pi), atol=1e-12)  # ends at pi


@pytest.mark.parametrize("s", SCHEDULES, ids=lambda s: f"{s.kind}-K{s.K}-T{s.T}")
def test_pi_is_stationary_for_every_step(s):
    for t_index in range(s.T - 1):  # beta < 1: pi is the unique stationary law
        np.testing.assert_allclose(s.pi @ s.Q(t_index), s.pi, atol=1e-14)
        np.testing.assert_allclose(M.stationary_eigen(s.Q(t_index)), s.pi, atol=1e-9)


@pytest.mark.parametrize("s", SCHEDULES, ids=lambda s: f"{s.kind}-K{s.K}-T{s.T}")
def test_q_probs_matches_products_for_tokens_and_distributions(s):
    x0 = torch.tensor([[0, 1, s.K - 1], [2, 0, 1]]) % s.K
    p = torch.distributions.Dirichlet(torch.ones(s.K, dtype=torch.float64)).sample((3,))
    for t_index in range(s.T):
        P = _prod(s, t_index)
        np.testing.assert_allclose(D.q_probs(x0, t_index, s).numpy(), P[x0.numpy()], atol=1e-12)
        np.testing.assert_allclose(D.q_probs(p, t_index, s).numpy(), p.numpy() @ P, atol=1e-12)


@pytest.mark.parametrize("s", SCHEDULES, ids=lambda s: f"{s.kind}-K{s.K}-T{s.T}")
def test_posterior_is_bayes_rule_on_the_matrices(s):
    for t_index in range(s.T):
        Qt, Qb_prev, Qb = s.Q(t_index), _prod(s, t_index - 1) if t_index else np.eye(s.K), _prod(s, t_index)
        for x0 in range(s.K):
            for xt in range(s.K):
                if Qb[x0, xt] == 0:
                    with pytest.raises(ValueError, match="impossible"):
                        D.posterior_probs(torch.tensor([xt]), torch.tensor([x0]), t_index, s)
                    continue
                want = np.array([Qb_prev[x0, j] * Qt[j, xt] for j in range(s.K)])
                want /= want.sum()
                got = D.posterior_probs(torch.tensor([xt]), torch.tensor([x0]), t_index, s)[0].numpy()
                np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("s", SCHEDULES, ids=lambda s: f"{s.kind}-K{s.K}-T{s.T}")
def test_reverse_probs_with_the_exact_denoiser_is_markovs_reverse_kernel(s):
    p_data = np.random.default_rng(0).dirichlet(np.ones(s.data_K))
    p0 = np.zeros(s.K)
    p0[: s.data_K] = p_data
    for t_index in range(s.T):
        p_prev, p_t = p0 @ (_prod(s, t_index - 1) if t_index else np.eye(s.K)), p0 @ _prod(s, t_index)
        R = M.reverse_kernel(s.Q(t_index), p_prev)                      # R[i, j] = P(x_{t-1} = j | x_t = i)
        for xt in np.flatnonzero(p_t > 0):
            post = p0 * _prod(s, t_index)[:, xt]
            post /= post.sum()                                    # the exact p(x_0 | x_t)
            got = D.reverse_probs(torch.tensor([xt]), torch.tensor(post)[None], t_index, s)[0].numpy()
            np.testing.assert_allclose(got, R[xt], atol=1e-12)


def test_masked_weight_is_the_bounds_kl_at_masked_tokens():
    s = D.DiscreteSchedule.cosine(9, 5, "absorbing")
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 4, (64, 3), generator=g)
    p = torch.distributions.Dirichlet(torch.ones(4, dtype=torch.float64)).sample((64, 3))
    for t_index in range(s.T):
        xt = D.q_sample(x0, t_index, s, generator=g)
        kl = D.vb_kl(x0, xt, p, t_index, s)
        nll = -torch.log(torch.gather(p, -1, x0.unsqueeze(-1)).squeeze(-1))
        want = torch.where(xt == 4, D.masked_weight(t_index, s) * nll, 0.0)
        torch.testing.assert_close(kl, want, atol=1e-12, rtol=1e-10)


def test_linear_schedule_weight_is_one_over_t():
    s = D.DiscreteSchedule.linear(50, 3, "absorbing")
    t_index = torch.arange(50)
    torch.testing.assert_close(s.T * D.masked_weight(t_index, s), 50.0 / (t_index + 1).double())


def test_objective_loss_is_T_times_the_summed_kl():
    s = D.DiscreteSchedule.linear(20, 5, "absorbing")
    obj = D.MaskedDiffusionObjective()
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, 4, (32, 6), generator=g)
    time, u = obj.draw(g, 32, (6,), s)
    logits = torch.randn(32, 6, 4, generator=g, dtype=torch.float64)
    net = lambda x: logits  # noqa: E731
    loss = obj.loss(net, x0, time, u, None, s)
    ab = torch.as_tensor(s.alpha_bar)[time]
    xt = torch.where(u < (1 - ab.float())[:, None], 4, x0)
    p = torch.softmax(logits, -1)
    want = torch.stack([s.T * D.vb_kl(x0[b], xt[b], p[b], int(time[b]), s).sum() for b in range(32)]).mean()
    torch.testing.assert_close(loss.double(), want, rtol=1e-5, atol=1e-6)


def test_q_sample_frequencies_match_q_probs():
    s = D.DiscreteSchedule.cosine(6, 4, "uniform")
    g = torch.Generator().manual_seed(2)
    x0 = torch.full((200_000,), 1)
    for t_index in (0, 3, 5):
        freq = torch.bincount(D.q_sample(x0, t_index, s, generator=g), minlength=4).double() / x0.numel()
        want = D.q_probs(x0[:1], t_index, s)[0]
        assert float((freq - want).abs().max()) < 4 * math.sqrt(0.25 / x0.numel())


# ---------------------------------------------------------------------------- samplers vs exact laws
TABLE = D.TokenTable.random(3, 3, 27, seed=3, concentration=0.3)  # full support: every x_t is possible


def _law_of_product_of_marginals(table, mask_id):
    marg = table.masked_x0_probs(torch.full((1, table.L), mask_id), mask_id)[0]   # (L, V)
    codes = np.array(np.meshgrid(*[np.arange(table.V)] * table.L, indexing="ij")).reshape(table.L, -1).T
    probs = np.prod([marg[l, codes[:, l]].numpy() for l in range(table.L)], 0)
    return D.TokenTable(codes, probs / probs.sum())


def test_unmask_one_token_a_step_samples_the_table_exactly():
    mask = TABLE.V
    den = lambda x: TABLE.masked_x0_probs(x, mask)  # noqa: E731
    x = torch.full((20_000, TABLE.L), mask)
    *_, last = D.unmask(den, x, mask, steps=TABLE.L, order="random", generator=torch.Generator().manual_seed(0))
    tv, lo, hi = D.tv_interval(TABLE, last.x, n_boot=50)
    floor = TABLE.tv(TABLE.sample(20_000, generator=torch.Generator().manual_seed(9)))
    assert tv < 3 * floor + 0.01, (tv, floor)
    # all tokens at once: each position from its marginal, independently -- an exactly known other law
    *_, one = D.unmask(den, x, mask, steps=1, generator=torch.Generator().manual_seed(1))
    prod = _law_of_product_of_marginals(TABLE, mask)
    assert prod.tv(one.x) < 3 * floor + 0.01
    assert TABLE.tv(one.x) > 0.1


@pytest.mark.parametrize("kind", D.KINDS)
def test_ancestral_with_exact_denoiser_approaches_the_table_as_steps_grow(kind):
    K = TABLE.V + (kind == "absorbing")
    errs = []
    for T in (2, 40):
        s = D.DiscreteSchedule.linear(T, K, kind)
        den = lambda x, t_index: TABLE.x0_probs(x, t_index, s)  # noqa: E731
        g = torch.Generator().manual_seed(T)
        x_T = torch.full((8000, 3), K - 1) if kind == "absorbing" else torch.randint(0, K, (8000, 3), generator=g)
        *_, last = D.ancestral(den, x_T, s, generator=g)
        errs.append(TABLE.tv(last.x))
    floor = TABLE.tv(TABLE.sample(8000, generator=torch.Generator().manual_seed(5)))
    assert errs[1] < 2 * floor + 0.02 and errs[0] > errs[1] + 0.05, (errs, floor)


def test_unmask_keeps_given_tokens_orders_and_counts():
    mask = TABLE.V
    den = lambda x: TABLE.masked_x0_probs(x, mask)  # noqa: E731
    x = TABLE.strings[:4].clone()
    x[:, 1:] = mask
    steps = list(D.unmask(den, x, mask, tokens_per_step=1, order="left_to_right",
                          generator=torch.Generator().manual_seed(0)))
    assert len(steps) == 2
    assert (steps[0].x[:, 0] == x[:, 0]).all() and (steps[0].x[:, 1] != mask).all() and (steps[0].x[:, 2] == mask).all()
    # given the first token, the result is a table string with that start
    final = steps[-1].x
    assert (final[:, 0] == x[:, 0]).all() and TABLE._count(final)[0].min() >= 0
    with pytest.raises(ValueError, match="exactly one"):
        next(D.unmask(den, x, mask, generator=torch.Generator()))
    with pytest.raises(ValueError, match="order"):
        next(D.unmask(den, x, mask, steps=2, order="sideways", generator=torch.Generator()))


def test_tv_interval_covers_the_exact_tv_and_counts_off_table_mass():
    other = _law_of_product_of_marginals(TABLE, TABLE.V)
    idx, _ = TABLE._count(other.strings)
    p = np.zeros(TABLE.probs.numel())
    p[idx] = other.probs.numpy()
    exact = M.tv_distance(p, TABLE.probs.numpy())
    covered = 0
    for seed in range(20):
        tv, lo, hi = D.tv_interval(TABLE, other.sample(3000, generator=torch.Generator().manual_seed(seed)),
                                   n_boot=100, seed=seed)
        covered += lo <= exact <= hi
    assert covered >= 15, covered  # nominal 95 %: 19 of 20 expected
    off = torch.full((100, 3), 2)
    off[:, 0] = 5  # not a table string
    assert TABLE.tv(off) == pytest.approx(1.0)


def test_tv_floor_is_the_law_of_the_plug_in_tv_for_exact_draws():
    from scipy.stats import binom

    n = 300
    floor = D.tv_floor(TABLE, n, n_draws=4000, seed=1)
    p = TABLE.probs.numpy()
    k = np.arange(n + 1)
    exact_mean = 0.5 * sum(float((binom.pmf(k, n, pk) * np.abs(k / n - pk)).sum()) for pk in p)   # E TV, exactly
    assert abs(floor.mean() - exact_mean) < 4 * floor.std() / math.sqrt(floor.size), (floor.mean(), exact_mean)
    assert (np.diff(floor) >= 0).all() and np.array_equal(floor, D.tv_floor(TABLE, n, n_draws=4000, seed=1))
    # the test it supports has its nominal size: exact samples exceed the 95th percentile about 5 % of the time,
    # while the basic bootstrap interval of tv_interval (which corrects the bias only to first order) misses the
    # true TV of exact samples, 0, most of the time
    q95 = float(np.quantile(floor, 0.95))
    above = misses = 0
    for seed in range(40):
        x = TABLE.sample(n, generator=torch.Generator().manual_seed(100 + seed))
        above += TABLE.tv(x) > q95
        misses += D.tv_interval(TABLE, x, n_boot=50, seed=seed)[1] > 0
    assert above <= 6, above          # expected 2 of 40
    assert misses >= 12, misses       # a 95 % interval would miss about 2 of 40: why the floor is needed near 0
    with pytest.raises(ValueError, match="n_draws"):
        D.tv_floor(TABLE, n, n_draws=1)
    with pytest.raises(ValueError, match="n must"):
        D.tv_floor(TABLE, 0)


def test_bad_inputs_raise_named_errors():
    with pytest.raises(ValueError, match="kind"):
        D.DiscreteSchedule.linear(5, 4, "gaussian")
    with pytest.raises(ValueError, match="K must"):
        D.DiscreteSchedule.linear(5, 2, "absorbing")
    with pytest.raises(ValueError, match="alpha_bar"):
        D.DiscreteSchedule("uniform", 3, np.array([0.5, 0.7]))
    s = SCHEDULES[0]
    with pytest.raises(ValueError, match="t_index"):
        s.Q(6)
    with pytest.raises(ValueError, match="x0 must hold token ids"):
        D.q_probs(torch.tensor([4]), 0, s)
    with pytest.raises(TypeError, match="integer"):
        D.q_probs(torch.tensor([True]), 0, s)
    with pytest.raises(ValueError, match="p_x0"):
        D.reverse_probs(torch.tensor([0]), torch.tensor([[0.5, 0.5]]), 0, s)
    with pytest.raises(ValueError, match="beta"):
        D.transition_matrix("uniform", 3, 1.5)
    with pytest.raises(ValueError, match="absorbing"):
        D.masked_weight(0, SCHEDULES[1])


def test_wilson_interval_against_scipy():
    from scipy.stats import binomtest

    for k, n in [(0, 20), (7, 20), (180, 200), (200, 200)]:
        lo, hi = D.wilson_interval(k, n)
        ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert lo == pytest.approx(ci.low, abs=1e-4) and hi == pytest.approx(ci.high, abs=1e-4)
    with pytest.raises(ValueError, match="k must"):
        D.wilson_interval(5, 3)
