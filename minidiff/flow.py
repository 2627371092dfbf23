"""Flow matching: ODE samplers for a velocity field, the conditional flow-matching loss, couplings,
straightness and the likelihood of a flow.

A velocity field is a function ``velocity_fn(x, t) -> u`` with ``x`` ``(B, ...)`` and ``t`` a float in
``[0, 1]`` (the time of :mod:`minidiff.interpolants`: data at 0, noise at 1). Sources of one:
:meth:`minidiff.data.GaussianMixture.velocity_model` (exact), :func:`velocity_from_net` (a network trained
with :func:`flow_matching_loss`) and :func:`velocity_from_eps_model` (any eps-network, converted).

Samplers are generators of :class:`minidiff.samplers.Step` on any monotone time grid ``ts`` (descending
to sample, ascending to encode); each update goes through :mod:`minidiff.backend`'s compiled ODE updates:
the probability-flow Euler step ``x - (f x - g^2 s / 2) dt`` with ``f = 0, g = 1, s = u, dt = 2 h`` is
``x + h u``, and the Heun step likewise ``x + h/2 (u + u_euler)``, with the signed step ``h = t_next - t``.

Networks see time through the course's integer interface: ``t_index = round(t (T - 1))`` with
``T = schedule.T`` (1000 levels, resolution ``1 / 999``); training draws ``t_index ~ U{0..T-1}`` and uses
``t = t_index / (T - 1)`` exactly, so a sampler on the grid ``k / (T - 1)`` evaluates the network at
exactly the trained times.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch

from . import backend as _backend
from .interpolants import Interpolant, convert
from .samplers import Step, _check_count, _check_x, _evaluate, _t_index_vector

__all__ = [
    "time_grid", "euler", "heun", "midpoint", "SOLVERS", "nfe", "integrate",
    "time_to_index", "index_to_time", "velocity_from_net", "velocity_from_eps_model",
    "flow_matching_loss", "exact_loss_floor", "ot_pairs", "reflow_pairs",
    "straightness", "path_length_ratio", "log_likelihood",
]


# ============================================================================ time grids
def time_grid(n_steps: int, t_start: float = 1.0, t_end: float = 0.0) -> np.ndarray:
    """``n_steps + 1`` uniform times from ``t_start`` to ``t_end`` (float64)."""
    n_steps = _check_count(n_steps, "n_steps")
    for name, v in (("t_start", t_start), ("t_end", t_end)):
        if not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {v}")
    if float(t_start) == float(t_end):
        raise ValueError("t_start and t_end must differ")
    return np.linspace(float(t_start), float(t_end), n_steps + 1)


def _check_grid(ts) -> np.ndarray:
    ts = np.asarray(ts, dtype=np.float64)
    if ts.ndim != 1 or ts.size < 2:
        raise ValueError(f"ts must be a 1-D grid of at least 2 times, got shape {ts.shape}")
    if not np.all(np.isfinite(ts)) or ts.min() < 0.0 or ts.max() > 1.0:
        raise ValueError(f"ts must lie in [0, 1], got values in [{ts.min()}, {ts.max()}]")
    d = np.diff(ts)
    if not (np.all(d < 0) or np.all(d > 0)):
        raise ValueError("ts must be strictly monotone (descending to sample, ascending to encode)")
    return ts


def time_to_index(t: float, T: int) -> int:
    """The network's ``t_index = round(t (T - 1))`` for a time ``t`` in ``[0, 1]``."""
    if not 0.0 <= float(t) <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    return int(round(float(t) * (T - 1)))


def index_to_time(t_index, T: int):
    """``t = t_index / (T - 1)`` (a tensor of times for a tensor of indices)."""
    return t_index.to(torch.float64) / (T - 1) if isinstance(t_index, torch.Tensor) else t_index / (T - 1)


# ============================================================================ samplers
def _euler_update(x, u, h, backend):
    """``x + h u`` through the backend's probability-flow Euler update (``f = 0, g = 1, dt = 2h``)."""
    return _backend.pf_ode_euler_step(x, u, drift_coef=0.0, diffusion=1.0, dt=2.0 * h, backend=backend)


def _heun_update(x, u, x_euler, u_euler, h, backend):
    """``x + h/2 (u + u_euler)`` through the backend's Heun update (Karras et al. 2022, Alg. 1, l. 9-11)."""
    return _backend.pf_ode_heun_step(x, u, x_euler, u_euler, drift_coef=0.0, diffusion=1.0,
                                     drift_coef_next=0.0, diffusion_next=1.0, dt=2.0 * h, backend=backend)


def _x0(u, x, t, interpolant):
    return None if interpolant is None else convert(u, x, t, interpolant, source="velocity", target="x0")


def _check_sampler(x, ts, interpolant):
    x = _check_x(x, "x")
    if interpolant is not None and not isinstance(interpolant, Interpolant):
        raise TypeError(f"interpolant must be an Interpolant or None, got {type(interpolant).__name__}")
    return x, _check_grid(ts)


def euler(velocity_fn, x, ts: Sequence[float], *, interpolant: Interpolant | None = None,
          backend: str | None = None) -> Iterator[Step]:
    """Euler's method ``x <- x + (t_next - t) u(x, t)`` on the grid ``ts`` (first order; one velocity
    evaluation per step; Liu et al. 2023, Alg. 1 sampling). ``x``: the state at ``ts[0]`` (noise for a
    descending grid from 1). ``interpolant``: if given, each record's ``x0`` is the denoised estimate
    converted from the velocity. Yields ``len(ts) - 1`` records with ``t`` (the time the step started)."""
    x, ts = _check_sampler(x, ts, interpolant)
    return _euler(velocity_fn, x, ts, interpolant, backend)


def _euler(velocity_fn, x, ts, interpolant, backend):
    for i, (t, t_next) in enumerate(zip(ts[:-1].tolist(), ts[1:].tolist())):
        u = _evaluate(velocity_fn, "velocity_fn", x, t)    # (B, ...)
        x0 = _x0(u, x, t, interpolant)
        x = _euler_update(x, u, t_next - t, backend)
        yield Step(index=i, x=x, x0=x0, t=t)


def heun(velocity_fn, x, ts: Sequence[float], *, interpolant: Interpolant | None = None,
         backend: str | None = None) -> Iterator[Step]:
    """Heun's method (explicit trapezoid; Karras et al. 2022, Alg. 1 with a velocity): an Euler step,
    the velocity at its end, the step repeated with the average. Second order; two evaluations per step
    (``velocity_fn`` is evaluated at every grid time, the last included)."""
    x, ts = _check_sampler(x, ts, interpolant)
    return _heun(velocity_fn, x, ts, interpolant, backend)


def _heun(velocity_fn, x, ts, interpolant, backend):
    for i, (t, t_next) in enumerate(zip(ts[:-1].tolist(), ts[1:].tolist())):
        u = _evaluate(velocity_fn, "velocity_fn", x, t)
        x0 = _x0(u, x, t, interpolant)
        x_euler = _euler_update(x, u, t_next - t, backend)
        u_euler = _evaluate(velocity_fn, "velocity_fn", x_euler, t_next)
        x = _heun_update(x, u, x_euler, u_euler, t_next - t, backend)
        yield Step(index=i, x=x, x0=x0, t=t)


def midpoint(velocity_fn, x, ts: Sequence[float], *, interpolant: Interpolant | None = None,
             backend: str | None = None) -> Iterator[Step]:
    """The explicit midpoint method (second-order Runge-Kutta; Hairer et al. 1993, II.1):
    ``x_mid = x + h/2 u(x, t)``, ``x <- x + h u(x_mid, t + h/2)``. Two evaluations per step."""
    x, ts = _check_sampler(x, ts, interpolant)
    return _midpoint(velocity_fn, x, ts, interpolant, backend)


def _midpoint(velocity_fn, x, ts, interpolant, backend):
    for i, (t, t_next) in enumerate(zip(ts[:-1].tolist(), ts[1:].tolist())):
        h = t_next - t
        u = _evaluate(velocity_fn, "velocity_fn", x, t)
        x0 = _x0(u, x, t, interpolant)
        x_mid = _euler_update(x, u, 0.5 * h, backend)
        u_mid = _evaluate(velocity_fn, "velocity_fn", x_mid, t + 0.5 * h)
        x = _euler_update(x, u_mid, h, backend)
        yield Step(index=i, x=x, x0=x0, t=t)


SOLVERS = {"euler": euler, "heun": heun, "midpoint": midpoint}
_EVALS_PER_STEP = {"euler": 1, "heun": 2, "midpoint": 2}


def nfe(solver: str, n_steps: int) -> int:
    """Velocity evaluations of ``solver`` on ``n_steps`` steps."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {solver!r}")
    return _EVALS_PER_STEP[solver] * _check_count(n_steps, "n_steps")


def integrate(velocity_fn, x, ts, *, solver: str = "euler", backend: str | None = None) -> torch.Tensor:
    """The final state of ``solver`` (``"euler"``, ``"heun"``, ``"midpoint"``) on the grid ``ts``."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {solver!r}")
    last = x
    with torch.no_grad():
        for step in SOLVERS[solver](velocity_fn, x, ts, backend=backend):
            last = step.x
    return last


# ============================================================================ velocity fields from networks
def velocity_from_net(net, T: int = 1000, y=None):
    """``velocity_fn(x, t)`` from a network ``net(x, t_index, y)`` trained with :func:`flow_matching_loss`
    on ``T`` time levels: ``t_index = round(t (T - 1))``. Gradients off unless ``x.requires_grad``."""
    def velocity_fn(x, t):
        t_index = _t_index_vector(time_to_index(t, T), x)
        with (torch.enable_grad() if x.requires_grad else torch.no_grad()):
            return net(x, t_index, y)
    return velocity_fn


def velocity_from_eps_model(eps_model, schedule, interpolant: Interpolant):
    """The velocity of ``interpolant`` from an eps-network ``eps_model(x, t_index)`` trained on the DDPM
    ``schedule``: ``eps`` at the nearest ``t_index`` (``t = (t_index + 1) / T``, as
    :func:`minidiff.sde.score_from_eps_model`), converted to velocity at ``t`` by
    :func:`minidiff.interpolants.convert`. With ``interpolant = Interpolant.vp(VPSDE.from_schedule(schedule))``
    it is the VP interpolant the network was trained on (up to the ``O(1/T)`` gap between the discrete
    ``alpha_bar`` and ``exp(-B(t))``)."""
    def velocity_fn(x, t):
        t_index = int(schedule.t_to_t_index(max(float(t), 1.0 / schedule.T)))
        eps = eps_model(x, _t_index_vector(t_index, x))
        return convert(eps, x, float(t), interpolant, source="eps", target="velocity")
    return velocity_fn


# ============================================================================ training
def ot_pairs(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``noise`` reordered so ``(x0[i], out[i])`` is a minibatch optimal-transport coupling for the
    squared Euclidean cost (Tong et al. 2023, Alg. 3; Pooladian et al. 2023): the permutation minimising
    ``sum_i ||x0_i - noise_pi(i)||^2``, found exactly by ``scipy.optimize.linear_sum_assignment``."""
    from scipy.optimize import linear_sum_assignment

    if x0.shape != noise.shape:
        raise ValueError(f"x0 and noise must have the same shape, got {tuple(x0.shape)} and {tuple(noise.shape)}")
    a, b = x0.detach().reshape(x0.shape[0], -1), noise.detach().reshape(noise.shape[0], -1)
    cost = torch.cdist(a.to(torch.float64), b.to(torch.float64)).pow(2).cpu().numpy()   # (B, B)
    _, cols = linear_sum_assignment(cost)
    return noise[torch.as_tensor(cols, device=noise.device)]


COUPLINGS = ("independent", "ot", "pairs")


def flow_matching_loss(net, x0, t_index, noise, *, interpolant: Interpolant, T: int = 1000, y=None,
                       coupling: str = "independent") -> torch.Tensor:
    """Conditional flow matching (Lipman et al. 2023, eq. 23; Liu et al. 2023, eq. 1; Albergo &
    Vanden-Eijnden 2023, eq. 11): ``t = t_index / (T - 1)``, ``x_t = alpha_t x_0 + sigma_t eps``, and
    ``mean ||net(x_t, t_index) - (alpha'_t x_0 + sigma'_t eps)||^2``. Its minimiser is the marginal
    velocity ``E[alpha' x_0 + sigma' eps | x_t]``; the loss of that minimiser is :func:`exact_loss_floor`.

    ``coupling``: ``"independent"`` (``eps`` as drawn), ``"ot"`` (``eps`` re-paired by :func:`ot_pairs`)
    or ``"pairs"`` (reflow, Liu et al. 2023, Sec. 2.2: each training example holds its own pair
    ``x0[:, 0] = x_0``, ``x0[:, 1] = eps``, from :func:`reflow_pairs`; the drawn ``eps`` is unused)."""
    if coupling not in COUPLINGS:
        raise ValueError(f"coupling must be one of {COUPLINGS}, got {coupling!r}")
    if coupling == "pairs":
        if x0.ndim < 2 or x0.shape[1] != 2:
            raise ValueError(f"coupling 'pairs' needs examples shaped (B, 2, ...) (data, noise), got {tuple(x0.shape)}")
        x0, noise = x0[:, 0], x0[:, 1]
    noise = noise.to(dtype=x0.dtype)
    if coupling == "ot":
        noise = ot_pairs(x0, noise)
    t = index_to_time(t_index, T)                                  # (B,) float64
    x_t = interpolant.sample(x0, t, noise)                         # (B, ...)
    target = interpolant.conditional_velocity(x0, t, noise)
    return torch.mean((net(x_t, t_index, y) - target) ** 2)


def exact_loss_floor(mixture, interpolant: Interpolant, n: int, *, generator: torch.Generator,
                     T: int = 1000) -> tuple[float, float]:
    """The irreducible conditional flow-matching loss for Gaussian-mixture data, by Monte Carlo with the
    exact marginal velocity: ``E ||u_cond - u_t(x_t)||^2 / d`` (the conditional variance of the target;
    Lipman et al. 2023, Thm. 2: the two losses differ by this constant). Times as in training,
    ``t_index ~ U{0..T-1}``. Returns ``(mean, standard error)`` per coordinate, like the training loss."""
    n = _check_count(n, "n")
    t_index = torch.randint(0, T, (n,), generator=generator)
    x0 = mixture.sample(n, generator=generator)
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    per = torch.empty(n, dtype=torch.float64)
    for ti in torch.unique(t_index).tolist():
        sel = t_index == ti
        t = ti / (T - 1)
        x_t = interpolant.sample(x0[sel], t, eps[sel])
        res = interpolant.conditional_velocity(x0[sel], t, eps[sel]) - mixture.velocity(x_t, t, interpolant)
        per[sel] = (res**2).mean(1)
    return float(per.mean()), float(per.std() / math.sqrt(n))


def reflow_pairs(velocity_fn, noise: torch.Tensor, ts, *, solver: str = "heun") -> torch.Tensor:
    """Reflow's training set (Liu et al. 2023, Alg. 1, "Reflow"): the model's own couplings
    ``(x_0, eps)`` with ``x_0`` the ODE solution from ``eps`` on the descending grid ``ts``, stacked
    ``(N, 2, ...)`` for :func:`flow_matching_loss` with ``coupling="pairs"``."""
    ts = _check_grid(ts)
    if not ts[0] > ts[-1]:
        raise ValueError("reflow integrates from noise to data: ts must be descending")
    x0 = integrate(velocity_fn, noise, ts, solver=solver)
    return torch.stack([x0, noise], dim=1)


# ============================================================================ straightness
def _states(states) -> torch.Tensor:
    xs = [s.x if isinstance(s, Step) else s for s in states]
    if len(xs) < 2:
        raise ValueError("need at least two states along a trajectory")
    return torch.stack([torch.as_tensor(x, dtype=torch.float64) for x in xs]).flatten(2)  # (K, B, D)


def straightness(states, ts) -> torch.Tensor:
    """Liu et al. 2023's straightness ``S = int_0^1 ||(x_1 - x_0) - dx_t/dt||^2 dt`` per trajectory, with
    ``dx/dt`` by finite differences between the ``states`` (``x`` at each time of ``ts``, first included)
    and the chord over the whole time span: 0 exactly for straight, constant-speed paths. ``(B,)``."""
    xs, ts = _states(states), _check_grid(ts)
    if xs.shape[0] != ts.size:
        raise ValueError(f"need one state per time: {xs.shape[0]} states for {ts.size} times")
    dt = torch.as_tensor(np.diff(ts))                                   # (K-1,)
    chord = (xs[-1] - xs[0]) / float(ts[-1] - ts[0])                    # (B, D)
    speed = (xs[1:] - xs[:-1]) / dt[:, None, None]                      # (K-1, B, D)
    dev = ((speed - chord) ** 2).sum(-1)                                # (K-1, B)
    return (dev * dt.abs()[:, None]).sum(0) / abs(float(ts[-1] - ts[0]))


def path_length_ratio(states) -> torch.Tensor:
    """Length of each polyline trajectory over the length of its chord (``>= 1``; 1 when straight). ``(B,)``."""
    xs = _states(states)
    length = (xs[1:] - xs[:-1]).norm(dim=-1).sum(0)
    return length / (xs[-1] - xs[0]).norm(dim=-1)


# ============================================================================ likelihood
def log_likelihood(velocity_fn, x, ts, *, trace: str = "exact", n_probes: int = 1,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``log p_0(x)`` (nats, ``(N,)`` float64) of a flow by the instantaneous change of variables
    (Chen et al. 2018, Thm. 1; Grathwohl et al. 2018): ``d log p_t(x_t) / dt = -div u_t(x_t)``, so
    ``log p_0(x_0) = log N(x_1; 0, I) + int_0^1 div u_t(x_t) dt`` along ``dx/dt = u`` from the data. Heun's
    method on the ascending grid ``ts`` (from ``ts[0]``, e.g. 0, to ``ts[-1] = 1`` where ``p_1 = N(0, I)``)
    integrates the state and the divergence together; ``trace``: ``"exact"`` or ``"hutchinson"``
    (``n_probes`` Rademacher vectors fixed along each path) with :func:`minidiff.metrics.likelihood._divergence`."""
    from .metrics.likelihood import _divergence

    if trace not in ("exact", "hutchinson"):
        raise ValueError(f"trace must be 'exact' or 'hutchinson', got {trace!r}")
    x = _check_x(torch.as_tensor(x), "x")
    ts = _check_grid(ts)
    if not ts[-1] > ts[0]:
        raise ValueError("log_likelihood integrates from data to noise: ts must be ascending")
    probes = None
    if trace == "hutchinson":
        g = generator or torch.Generator().manual_seed(0)
        probes = [(torch.randint(0, 2, x.shape, generator=g) * 2 - 1).to(x.dtype) for _ in range(n_probes)]

    def field(y, t):
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            u = velocity_fn(y, t)
            div = _divergence(u, y, probes)
        return u.detach(), div.detach().to(torch.float64)

    y, delta = x.detach(), torch.zeros(x.shape[0], dtype=torch.float64)
    for t, t_next in zip(ts[:-1].tolist(), ts[1:].tolist()):
        h = t_next - t
        u0, d0 = field(y, t)
        y_e = y + h * u0
        u1, d1 = field(y_e, t_next)
        y = y + 0.5 * h * (u0 + u1)
        delta = delta + 0.5 * h * (d0 + d1)
    flat = y.to(torch.float64).reshape(y.shape[0], -1)
    log_prior = -0.5 * (flat**2).sum(1) - 0.5 * flat.shape[1] * math.log(2 * math.pi)
    return log_prior + delta
