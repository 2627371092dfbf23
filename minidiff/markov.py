"""Markov chains: finite transition matrices, and the Gaussian chain a diffusion model runs forward.

Notebook 02 uses these.

Finite chains (row-stochastic ``P``, ``P[i, j] = P(x_{n+1} = j | x_n = i)``, distributions are row
vectors, ``p_{n+1} = p_n P``):

* the stationary distribution three ways: :func:`stationary_eigen` (left eigenvector for eigenvalue
  1), :func:`stationary_power` (power iteration), :func:`simulate_chain` + :func:`occupation`
  (a long run's visit frequencies, by the ergodic theorem);
* detailed balance ``pi_i P_ij = pi_j P_ji`` (:func:`detailed_balance_gap`) and the time-reversed
  chain ``P*_ij = pi_j P_ji / pi_i`` (:func:`time_reversal`), which equals ``P`` iff detailed balance
  holds; :func:`reverse_kernel` is the step-dependent reversal of a chain that is not in equilibrium;
* examples with known answers: :func:`lazy_ehrenfest` (stationary Binomial(N, 1/2), reversible) and
  :func:`ring_walk` (uniform stationary law, not reversible unless symmetric).

The Gaussian chain ``x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps`` (Sohl-Dickstein et al.
2015; Ho et al. 2020) with its closed-form marginals, and -- for data with finitely many values --
the exact reverse kernel ``q(x_{t-1} | x_t) = sum_{x_0} p(x_0 | x_t) q(x_{t-1} | x_t, x_0)``, which
DDPM learns to approximate. Time indices follow :mod:`minidiff.schedule`: ``t_index = i`` is the
state after ``i + 1`` steps; "step 0" below means the data ``x_0`` itself.
"""
from __future__ import annotations

import bisect
import math

import numpy as np
import torch

from . import _checks as _c

from .forward import q_posterior
from .schedule import Schedule

__all__ = [
    "check_stochastic", "n_step", "stationary_eigen", "stationary_power", "simulate_chain", "occupation",
    "detailed_balance_gap", "time_reversal", "reverse_kernel", "evolve", "lazy_ehrenfest", "ring_walk",
    "tv_distance", "gaussian_chain", "gaussian_chain_moments", "data_posterior", "exact_reverse_step",
    "exact_reverse_chain", "discrete_marginal_density",
]


# ============================================================================ finite chains
def check_stochastic(P, atol: float = 1e-10) -> np.ndarray:
    """``P`` as a float64 array, after checking it is square, non-negative and row-stochastic."""
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 2 or P.shape[0] != P.shape[1] or P.shape[0] == 0:
        raise ValueError(f"P must be a non-empty square matrix, got shape {P.shape}")
    if np.any(P < -atol):
        raise ValueError("P must have non-negative entries")
    if not np.allclose(P.sum(1), 1.0, atol=atol, rtol=0):
        raise ValueError(f"every row of P must sum to 1; row sums {P.sum(1)}")
    return P


def n_step(P, n: int) -> np.ndarray:
    """``P^n``: the n-step transition matrix (Chapman-Kolmogorov: ``P^(m+n) = P^m P^n``)."""
    return np.linalg.matrix_power(check_stochastic(P), _c.check_count(n, "n", low=0))  # n < 0 is no inverse


def evolve(p0, P, n: int) -> np.ndarray:
    """Distributions ``p_0, p_0 P, ..., p_0 P^n`` as an ``(n + 1, S)`` array."""
    P = check_stochastic(P)
    p = np.asarray(p0, dtype=np.float64)
    n = _c.check_count(n, "n", low=0)
    out = [p]
    for _ in range(n):
        p = p @ P
        out.append(p)
    return np.stack(out)


def stationary_eigen(P) -> np.ndarray:
    """``pi`` with ``pi P = pi``, from the left eigenvector of the eigenvalue closest to 1."""
    P = check_stochastic(P)
    w, v = np.linalg.eig(P.T)
    k = int(np.argmin(np.abs(w - 1.0)))
    pi = np.real(v[:, k])
    pi = pi / pi.sum()
    return np.clip(pi, 0.0, None) / np.clip(pi, 0.0, None).sum()


def stationary_power(P, p0=None, *, tol: float = 1e-12, max_iter: int = 100_000):
    """Power iteration ``p <- p P`` from ``p0`` (default uniform) until the L1 change is below
    ``tol``. Returns ``(pi, n_iter)``. Converges for irreducible aperiodic chains, geometrically at
    the rate of the second-largest eigenvalue modulus."""
    P = check_stochastic(P)
    p = np.full(P.shape[0], 1.0 / P.shape[0]) if p0 is None else np.asarray(p0, dtype=np.float64)
    for it in range(1, max_iter + 1):
        q = p @ P
        if np.abs(q - p).sum() < tol:
            return q, it
        p = q
    raise RuntimeError(f"power iteration did not converge in {max_iter} steps (is the chain periodic?)")


def simulate_chain(P, n_steps: int, x0: int = 0, *, seed: int = 0) -> np.ndarray:
    """One trajectory ``x_0, ..., x_{n_steps}`` (int64) by inverse-CDF sampling of each row."""
    P = check_stochastic(P)
    n_steps = _c.check_count(n_steps, "n_steps", low=0)
    x0 = _c.check_index(x0, "x0", P.shape[0])  # a state in [0, S): -1 does not wrap to the last state
    seed = _c.check_count(seed, "seed", low=0)
    cdf = [list(np.cumsum(row)) for row in P]
    for row in cdf:
        row[-1] = 1.0 + 1e-12
    u = np.random.default_rng(seed).random(int(n_steps)).tolist()
    out = [int(x0)]
    x = int(x0)
    for k in range(int(n_steps)):
        x = bisect.bisect_right(cdf[x], u[k])
        out.append(x)
    return np.array(out, dtype=np.int64)


def occupation(states, n_states: int) -> np.ndarray:
    """Fraction of time spent in each state."""
    return np.bincount(np.asarray(states), minlength=n_states) / len(states)


def tv_distance(p, q) -> float:
    """Total-variation distance ``0.5 sum |p - q|``."""
    return 0.5 * float(np.abs(np.asarray(p, dtype=np.float64) - np.asarray(q, dtype=np.float64)).sum())


def detailed_balance_gap(P, pi) -> float:
    """``max_ij |pi_i P_ij - pi_j P_ji|``: zero iff the chain is reversible with respect to ``pi``."""
    P = check_stochastic(P)
    flow = np.asarray(pi, dtype=np.float64)[:, None] * P
    return float(np.abs(flow - flow.T).max())


def time_reversal(P, pi) -> np.ndarray:
    """The reversed chain of a stationary chain, ``P*_ij = pi_j P_ji / pi_i``."""
    return reverse_kernel(P, pi, np.asarray(pi, dtype=np.float64) @ check_stochastic(P))


def reverse_kernel(P, p_prev, p_next=None) -> np.ndarray:
    """One step of a chain run backwards (Bayes): ``R_ij = P(x_n = j | x_{n+1} = i)
    = p_prev_j P_ji / p_next_i`` with ``p_next = p_prev P``. Rows of zero-probability states are
    left uniform."""
    P = check_stochastic(P)
    p_prev = np.asarray(p_prev, dtype=np.float64)
    p_next = p_prev @ P if p_next is None else np.asarray(p_next, dtype=np.float64)
    joint = p_prev[None, :] * P.T  # joint[i, j] = p_prev_j P_ji
    R = np.full_like(joint, 1.0 / P.shape[0])
    ok = p_next > 0
    R[ok] = joint[ok] / p_next[ok, None]
    return R


def lazy_ehrenfest(N: int) -> np.ndarray:
    """Ehrenfest's urn with ``N`` balls, made lazy (stay with probability 1/2) so it is aperiodic:
    from ``k`` balls in the left urn, ``k -> k-1`` w.p. ``k / 2N``, ``k -> k+1`` w.p. ``(N-k) / 2N``.
    Stationary law Binomial(N, 1/2); reversible (a birth-death chain)."""
    P = np.zeros((N + 1, N + 1))
    for k in range(N + 1):
        P[k, k] = 0.5
        if k > 0:
            P[k, k - 1] = 0.5 * k / N
        if k < N:
            P[k, k + 1] = 0.5 * (N - k) / N
    return P


def ring_walk(n: int, p_right: float, p_stay: float = 0.0) -> np.ndarray:
    """A walk on a ring of ``n`` states: right w.p. ``p_right``, stay w.p. ``p_stay``, else left.
    Doubly stochastic, so uniform is stationary; reversible only if ``p_right = p_left``."""
    p_left = 1.0 - p_right - p_stay
    if min(p_right, p_stay, p_left) < 0:
        raise ValueError("need p_right, p_stay >= 0 and p_right + p_stay <= 1")
    P = np.zeros((n, n))
    for i in range(n):
        P[i, (i + 1) % n] += p_right
        P[i, (i - 1) % n] += p_left
        P[i, i] += p_stay
    return P


# ============================================================================ the Gaussian chain
def gaussian_chain(x0, schedule: Schedule, *, generator: torch.Generator | None = None,
                   n_steps: int | None = None) -> torch.Tensor:
    """Run ``x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps`` one step at a time (Sohl-Dickstein
    et al. 2015, eq. 11; Ho et al. 2020, eq. 2). Returns ``(n_steps + 1, *x0.shape)``: the data and
    the states after each step (entry ``i + 1`` is ``t_index = i``). ``n_steps`` defaults to ``T``."""
    x = torch.as_tensor(x0)
    if not x.is_floating_point():
        x = x.to(torch.float64)
    n = schedule.T if n_steps is None else int(n_steps)
    if not 0 <= n <= schedule.T:
        raise ValueError(f"n_steps must lie in [0, T={schedule.T}], got {n}")
    out = [x]
    for i in range(n):
        b = float(schedule.betas[i])
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = math.sqrt(1.0 - b) * x + math.sqrt(b) * eps
        out.append(x)
    return torch.stack(out)


def gaussian_chain_moments(schedule: Schedule, mean0: float = 0.0, var0: float = 0.0):
    """Closed-form marginal moments of the chain from ``x_0`` with mean ``mean0`` and variance
    ``var0``: ``m_t = sqrt(ab_t) m_0``, ``v_t = ab_t v_0 + 1 - ab_t``. Returns two ``(T + 1,)`` arrays
    (index 0 = the data, index ``i + 1`` = ``t_index = i``)."""
    ab = np.concatenate([[1.0], schedule.alpha_bar])
    return np.sqrt(ab) * mean0, ab * var0 + (1.0 - ab)


def _check_support(support, weights):
    s = torch.as_tensor(support, dtype=torch.float64).reshape(-1)
    w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
    if s.numel() != w.numel() or s.numel() == 0:
        raise ValueError("support and weights must be non-empty and of equal length")
    if not (bool(torch.all(w >= 0)) and math.isclose(float(w.sum()), 1.0, abs_tol=1e-9)):  # NaN fails too
        raise ValueError("weights must be non-negative and sum to 1")
    return s, w


def discrete_marginal_density(x, alpha_bar: float, support, weights) -> np.ndarray:
    """Density of ``q(x_t) = sum_k w_k N(sqrt(ab) s_k, 1 - ab)`` for 1-D data taking values ``s_k``."""
    s, w = _check_support(support, weights)
    x = torch.as_tensor(np.asarray(x, dtype=np.float64)).reshape(-1, 1)
    var = 1.0 - alpha_bar
    dens = torch.exp(-(x - math.sqrt(alpha_bar) * s) ** 2 / (2 * var)) / math.sqrt(2 * math.pi * var)
    return (dens * w).sum(1).numpy()


def data_posterior(x_t, t_index: int, schedule: Schedule, support, weights) -> torch.Tensor:
    """``p(x_0 = s_k | x_t)`` for 1-D data with finitely many values ``s_k`` (weights ``w_k``):
    a softmax of ``log w_k - (x_t - sqrt(ab) s_k)^2 / (2 (1 - ab))``. ``x_t``: ``(N,)`` -> ``(N, K)``."""
    s, w = _check_support(support, weights)
    ab = float(schedule.alpha_bar[_c.check_index(t_index, "t_index", schedule.T)])
    x = torch.as_tensor(x_t, dtype=torch.float64).reshape(-1, 1)
    logits = torch.log(w) - (x - math.sqrt(ab) * s) ** 2 / (2 * (1 - ab))
    return torch.softmax(logits, dim=1)


def exact_reverse_step(x_t, t_index: int, schedule: Schedule, support, weights, *,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample ``x_{t-1} ~ q(x_{t-1} | x_t) = sum_k p(x_0 = s_k | x_t) q(x_{t-1} | x_t, x_0 = s_k)``:
    draw ``x_0`` from :func:`data_posterior`, then ``x_{t-1}`` from the Gaussian posterior
    :func:`minidiff.q_posterior` (Ho et al. 2020, eqs. 6-7). At ``t_index = 0`` returns the drawn ``x_0``.
    ``x_t``: ``(N,)`` float64."""
    s, _ = _check_support(support, weights)
    t_index = _c.check_index(t_index, "t_index", schedule.T)
    x = torch.as_tensor(x_t, dtype=torch.float64).reshape(-1)
    post = data_posterior(x, t_index, schedule, support, weights)
    k = torch.multinomial(post, 1, generator=generator)[:, 0]
    x0 = s[k]
    mean, var = q_posterior(x0[:, None], x[:, None], t_index, schedule)
    if t_index == 0:
        return x0
    z = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    return mean[:, 0] + var[:, 0].sqrt() * z


def exact_reverse_chain(x_T, schedule: Schedule, support, weights, *,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Run :func:`exact_reverse_step` from ``t_index = T-1`` down to the data. Returns
    ``(T + 1, N)`` ordered like :func:`gaussian_chain` (index 0 = data, index ``i + 1`` = ``t_index = i``)."""
    x = torch.as_tensor(x_T, dtype=torch.float64).reshape(-1)
    out = [x]
    for t_index in reversed(range(schedule.T)):
        x = exact_reverse_step(x, t_index, schedule, support, weights, generator=generator)
        out.append(x)
    return torch.stack(out[::-1])
