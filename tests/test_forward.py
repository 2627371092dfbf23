"""The forward process against closed forms and Bayes' rule on a grid."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from minidiff import Schedule, load_digits
from minidiff.forward import (convert, eps_to_score, eps_to_v, eps_to_x0, q_posterior, q_sample,
                              v_to_eps, v_to_x0, x0_to_eps)

SCHEDULES = [Schedule.linear(), Schedule.cosine(), Schedule.sigmoid()]
BACKENDS = ["torch", "numba"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_q_sample_moments_match_closed_form(backend):
    s = Schedule.cosine()
    g = torch.Generator().manual_seed(1)
    t_index = torch.tensor([0, 100, 500, 900])
    x0 = torch.tensor([1.5, -0.7, 0.3, 2.0], dtype=torch.float64)[:, None].expand(4, 20000).contiguous()
    noise = torch.randn(4, 20000, generator=g, dtype=torch.float64)
    xt = q_sample(x0, t_index, noise, s, backend=backend)
    ab = torch.as_tensor(s.alpha_bar[t_index.numpy()])
    mean, std = ab.sqrt() * x0[:, 0], (1 - ab).sqrt()
    # Standard errors of the sample mean and std with n = 20000.
    se = std / math.sqrt(20000)
    assert torch.all((xt.mean(1) - mean).abs() < 5 * se)
    assert torch.all((xt.std(1) - std).abs() < 5 * std / math.sqrt(2 * 20000))


@pytest.mark.parametrize("backend", BACKENDS)
def test_q_sample_exact_against_formula(backend):
    s = Schedule.linear(T=50)
    x0 = torch.randn(6, 3, 4, dtype=torch.float32)
    noise = torch.randn_like(x0)
    t_index = torch.tensor([0, 1, 10, 20, 48, 49])
    want = (torch.as_tensor(s.sqrt_alpha_bar[t_index.numpy()]).view(-1, 1, 1) * x0.double()
            + torch.as_tensor(s.sqrt_one_minus_alpha_bar[t_index.numpy()]).view(-1, 1, 1) * noise.double())
    got = q_sample(x0, t_index, noise, s, backend=backend)
    assert got.dtype == torch.float32 and got.shape == x0.shape
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("s", SCHEDULES, ids=lambda s: s.name)
def test_last_index_reaches_standard_normal(s):
    """x_T of real data (digits) is N(0, I): pooled moments and a KS test on 60k values."""
    x0, _ = load_digits("train")
    x0 = x0.double()
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    xT = q_sample(x0, s.T - 1, noise, s, backend="torch").flatten()
    assert abs(float(xT.mean())) < 0.02
    assert abs(float(xT.std()) - 1) < 0.02
    assert stats.kstest(xT[:60000].numpy(), "norm").pvalue > 1e-3
    # ... and the signal left is tiny: correlation between x_T and x_0 near zero.
    assert abs(float(torch.corrcoef(torch.stack([xT, x0.flatten()]))[0, 1])) < 0.03


@pytest.mark.parametrize("t_index", [0, 1, 37, 250, 999])
def test_posterior_matches_bayes_rule_on_a_grid(t_index):
    """q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0), integrated numerically in 1-D."""
    s = Schedule.linear()
    x0_val, xt_val = 0.8, -0.4
    mean, var = q_posterior(torch.tensor([[x0_val]], dtype=torch.float64),
                            torch.tensor([[xt_val]], dtype=torch.float64), t_index, s)
    if t_index == 0:  # x_{t-1} is x_0 itself
        assert float(var) == 0 and float(mean) == pytest.approx(x0_val)
        return
    ab_prev, alpha, beta = s.alpha_bar_prev[t_index], s.alphas[t_index], s.betas[t_index]
    grid = np.linspace(-6, 6, 400001)
    log_prior = -0.5 * (grid - math.sqrt(ab_prev) * x0_val) ** 2 / (1 - ab_prev)
    log_lik = -0.5 * (xt_val - math.sqrt(alpha) * grid) ** 2 / beta
    w = np.exp(log_prior + log_lik - (log_prior + log_lik).max())
    w /= w.sum()
    m = (w * grid).sum()
    v = (w * (grid - m) ** 2).sum()
    assert float(mean) == pytest.approx(m, abs=1e-6)
    assert float(var) == pytest.approx(v, rel=1e-4)


def test_conversions_round_trip_and_agree():
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(5, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 2, generator=g, dtype=torch.float64)
    ab = torch.tensor([0.99, 0.7, 0.5, 0.1, 1e-3], dtype=torch.float64)
    xt = ab.sqrt()[:, None] * x0 + (1 - ab).sqrt()[:, None] * eps
    torch.testing.assert_close(eps_to_x0(xt, eps, ab), x0)
    torch.testing.assert_close(x0_to_eps(xt, x0, ab), eps)
    v = eps_to_v(xt, eps, ab)
    torch.testing.assert_close(v, ab.sqrt()[:, None] * eps - (1 - ab).sqrt()[:, None] * x0)
    torch.testing.assert_close(v_to_eps(xt, v, ab), eps)
    torch.testing.assert_close(v_to_x0(xt, v, ab), x0)
    for src, pred in [("x0", x0), ("v", v), ("score", eps_to_score(eps, ab))]:
        torch.testing.assert_close(convert(pred, xt, ab, source=src, target="eps"), eps)
    with pytest.raises(ValueError, match="source and target"):
        convert(eps, xt, ab, source="noise")


def test_bad_inputs_name_the_problem():
    s = Schedule.linear(T=10)
    x = torch.zeros(3, 4)
    with pytest.raises(IndexError, match="t_index"):
        q_sample(x, torch.tensor([0, 1, 10]), torch.zeros_like(x), s)
    with pytest.raises(ValueError, match="one entry per sample"):
        q_sample(x, torch.tensor([0, 1]), torch.zeros_like(x), s)
    with pytest.raises(ValueError, match="noise must have shape .* like x0"):
        q_sample(x, 1, torch.zeros(3, 5), s)
    with pytest.raises(TypeError, match="noise must have dtype .* like x0"):
        q_sample(x, 1, torch.zeros(3, 4, dtype=torch.float64), s)
    with pytest.raises(TypeError, match="x0 must have a floating dtype"):
        q_sample(torch.zeros(3, 4, dtype=torch.int64), 1, torch.zeros(3, 4), s)
    with pytest.raises(TypeError, match="x0 must be a torch.Tensor"):
        q_sample(np.zeros((3, 4)), 1, torch.zeros(3, 4), s)
    with pytest.raises(ValueError, match="x0 and x_t must have the same shape"):
        q_posterior(x, torch.zeros(3, 5), 1, s)
