"""DPM-Solver++(2M) against references: a naive float64 transcription of Lu et al. 2022b, Alg. 2, and
the exact probability-flow ODE of a Gaussian mixture (solved to 1e-10 by scipy), with DDIM
(= DPM-Solver++(1)) as the first-order baseline at the same number of network evaluations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from minidiff import GaussianMixture, Schedule
from minidiff.samplers import Step, ddim, final
from minidiff.solvers import dpm_solver_2m

MIXTURE = GaussianMixture.isotropic([[-1.0, -0.5], [1.0, 0.0], [0.0, 1.2]], [0.15, 0.3, 0.2],
                                    weights=[0.5, 0.3, 0.2])


@pytest.fixture(scope="module")
def schedule():
    return Schedule.linear(1000)


@pytest.fixture(scope="module")
def x_T():
    return torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.fixture(scope="module")
def exact_endpoint(schedule, x_T):
    """The exact PF-ODE solution from ``x_T`` at ``t_index = T-1`` to the data (sigma = 0), integrated in
    the variance-exploding variable ``y = x / alpha``: ``dy/dsigma = -sigma grad log p_sigma(y)``
    (Karras et al. 2022, eq. 4 with the exact mixture score)."""
    ab = float(schedule.alpha_bar[-1])
    sigma_T = math.sqrt((1 - ab) / ab)

    def rhs(sigma, y):
        Y = torch.from_numpy(y.reshape(-1, 2))
        return (-sigma * MIXTURE.at_sigma(sigma).score(Y)).numpy().ravel()

    sol = solve_ivp(rhs, (sigma_T, 0.0), (x_T / math.sqrt(ab)).numpy().ravel(), method="RK45",
                    rtol=1e-10, atol=1e-10)
    assert sol.success
    return torch.from_numpy(sol.y[:, -1].reshape(-1, 2))


def naive_dpm_solver_2m(eps_fn, x_T, alpha_bar, t_indices):
    """Lu et al. 2022b, Alg. 2 written out in float64 numpy, with a first-order final step to sigma_t = 0."""
    x = np.array(x_T, dtype=np.float64)
    ts = list(t_indices) + [None]
    alpha_t = lambda t: 1.0 if t is None else math.sqrt(alpha_bar[t])          # noqa: E731
    sigma_t = lambda t: 0.0 if t is None else math.sqrt(1.0 - alpha_bar[t])    # noqa: E731
    lam = lambda t: math.log(alpha_t(t) / sigma_t(t))                             # noqa: E731
    data_preds, xs = [], []
    for i in range(len(ts) - 1):
        s, t = ts[i], ts[i + 1]
        data_preds.append((x - sigma_t(s) * eps_fn(x, s)) / alpha_t(s))
        if t is None:
            x = data_preds[-1]
        elif i == 0:
            h = lam(t) - lam(s)
            x = sigma_t(t) / sigma_t(s) * x - alpha_t(t) * (math.exp(-h) - 1.0) * data_preds[-1]
        else:
            h = lam(t) - lam(s)
            h_prev = lam(s) - lam(ts[i - 1])
            r = h_prev / h
            D = (1 + 1 / (2 * r)) * data_preds[-1] - 1 / (2 * r) * data_preds[-2]
            x = sigma_t(t) / sigma_t(s) * x - alpha_t(t) * (math.exp(-h) - 1.0) * D
        xs.append(x)
    return xs, data_preds


def rms(a, b):
    return float((a - b).norm(dim=1).pow(2).mean().sqrt())


@pytest.mark.parametrize("n_steps", [1, 2, 7, 25])
def test_matches_naive_float64(schedule, x_T, n_steps):
    model = MIXTURE.eps_model(schedule)
    recs = list(dpm_solver_2m(model, x_T, schedule, n_steps))
    eps_np = lambda x, t: model(torch.from_numpy(x), torch.full((x.shape[0],), t)).numpy()  # noqa: E731
    xs, x0s = naive_dpm_solver_2m(eps_np, x_T.numpy(), schedule.alpha_bar, schedule.timesteps(n_steps))
    assert len(recs) == n_steps
    for rec, t, x_ref, x0_ref in zip(recs, schedule.timesteps(n_steps), xs, x0s):
        assert isinstance(rec, Step) and rec.index >= 0 and rec.t_index == t
        np.testing.assert_allclose(rec.x.numpy(), x_ref, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(rec.x0.numpy(), x0_ref, rtol=1e-10, atol=1e-10)


def test_first_two_steps_are_ddim(schedule, x_T):
    """DPM-Solver++(1) is DDIM: with one or two steps the multistep correction never applies."""
    model = MIXTURE.eps_model(schedule)
    for n in (1, 2):
        torch.testing.assert_close(final(dpm_solver_2m(model, x_T, schedule, n)),
                                   final(ddim(model, x_T, schedule, n, backend="torch")), rtol=1e-10, atol=1e-10)
    first = next(iter(dpm_solver_2m(model, x_T, schedule, 10)))
    first_ddim = next(iter(ddim(model, x_T, schedule, 10, backend="torch")))
    torch.testing.assert_close(first.x, first_ddim.x, rtol=1e-10, atol=1e-10)


def test_error_falls_with_steps_and_is_second_order(schedule, x_T, exact_endpoint):
    model = MIXTURE.eps_model(schedule)
    errs = {n: rms(final(dpm_solver_2m(model, x_T, schedule, n)), exact_endpoint) for n in (10, 20, 50, 100, 200)}
    ns = sorted(errs)
    assert all(errs[a] > errs[b] for a, b in zip(ns, ns[1:])), errs
    # second order once the steps are small: doubling the steps cuts the error by ~4 (DDIM: ~2)
    assert errs[100] / errs[200] > 3.0, errs
    assert errs[200] < 3e-3, errs


@pytest.mark.parametrize("n_steps", [10, 20, 50, 100])
def test_beats_ddim_at_equal_nfe(schedule, x_T, exact_endpoint, n_steps):
    model = MIXTURE.eps_model(schedule)
    e_dpm = rms(final(dpm_solver_2m(model, x_T, schedule, n_steps)), exact_endpoint)
    e_ddim = rms(final(ddim(model, x_T, schedule, n_steps)), exact_endpoint)
    assert e_dpm < e_ddim, (e_dpm, e_ddim)
    if n_steps >= 50:
        assert e_dpm < 0.7 * e_ddim, (e_dpm, e_ddim)


def test_counts_one_evaluation_per_step_and_keeps_dtype(schedule):
    calls = []
    model = MIXTURE.eps_model(schedule)

    def counting(x, t_index):
        calls.append(int(t_index[0]))
        return model(x, t_index)

    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(1)).to(torch.float32)
    recs = list(dpm_solver_2m(counting, x, schedule, 12))
    assert calls == schedule.timesteps(12).tolist()
    assert all(r.x.dtype == torch.float32 and r.x.shape == x.shape for r in recs)
    assert recs[-1].x is recs[-1].x0  # the last step lands on the denoised estimate


def test_clip_and_argument_checks(schedule):
    model = MIXTURE.eps_model(schedule)
    x = 5.0 * torch.randn(16, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = final(dpm_solver_2m(model, x, schedule, 5, clip_x0=0.5))
    assert out.abs().max() <= 0.5 + 1e-12
    with pytest.raises(ValueError):
        dpm_solver_2m(model, x, schedule, 0)
    with pytest.raises(ValueError):
        dpm_solver_2m(model, x, schedule, schedule.T + 1)
    with pytest.raises(TypeError):
        dpm_solver_2m(model, x, schedule, 5, generator=0)
    with pytest.raises(TypeError):
        dpm_solver_2m(model, x.to(torch.int64), schedule, 5)
