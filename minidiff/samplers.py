"""Stateless samplers, written as generators that yield one frozen :class:`Step` per update.

A sampler is a function of (model, x_T, schedule or SDE, randomness); it keeps no hidden state. A
widget steps through the generator; a script takes ``final(sampler(...))``. Every update goes through
:mod:`minidiff.backend` (fused kernels, or ``backend="torch"`` for the eager reference), and yielded
tensors are new each step and never mutated afterwards.

Randomness: pass ``generator=`` (a ``torch.Generator``): one int seed is drawn from it at the start and
each update's noise is the counter-based Philox noise ``(seed, sample, element, step)`` drawn by the
backend, so both backends produce the same samples. Or pass ``noise=``: a sequence of tensors shaped
like ``x`` (or a callable ``step -> tensor``), indexed by the sampler's noise counter ``step``
(given per sampler below), for exact comparisons with other implementations.

Model signatures, one noise coordinate per name:

* DDPM / DDIM: ``model(x, t_index) -> eps`` with ``t_index`` a ``(B,)`` int64 tensor in ``[0, T)``.
* Langevin: ``score_fn(x) -> score``; annealed Langevin: ``score_fn(x, sigma) -> score``, sigma a float.
* SDE / ODE samplers: ``score_fn(x, t) -> score``, ``t`` a float in ``(0, 1]``
  (see :func:`minidiff.sde.mixture_score`, :func:`minidiff.sde.score_from_eps_model`).

A record's noise coordinate (``t_index``, ``t`` or ``sigma``) is the level the update started from,
where the model was evaluated and ``x0`` estimated; ``x`` is the state after the update.

Non-finite values: nothing turns into NaN silently. ``x_T`` is checked when the sampler is called,
every model / score output and every state after an update as the sampler runs (one
``isfinite().all()`` reduction each, cheap next to a network evaluation); the first NaN or inf raises
:class:`minidiff._checks.NonFiniteError` naming the step index and what produced it (``x_T``, the model
output, or the update with its parameters, e.g. ``eta``). The low-level updates in
:mod:`minidiff.backend` do not check: they are plain IEEE arithmetic and pass NaN/inf through, so
code calling them directly should use :func:`minidiff._checks.check_finite_state` the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from . import _checks
from . import backend as _backend
from .schedule import Schedule
from .sde import check_t, tweedie_x0

__all__ = [
    "Step", "ddpm", "ddim", "langevin", "annealed_langevin", "euler_maruyama", "predictor_corrector",
    "pf_ode_euler", "pf_ode_heun", "final", "trajectory",
]


@dataclass(frozen=True)
class Step:
    """One sampler update. ``index``: 0, 1, ... in the order yielded; ``x``: the state after the update
    ``(B, ...)``; ``x0``: the denoised estimate at the start of the update (None for plain Langevin);
    the level the update started from in the sampler's own coordinate, the others None:
    ``t_index`` (DDPM, DDIM), ``t`` (SDE and ODE samplers) or ``sigma`` (annealed Langevin)."""

    index: int
    x: torch.Tensor
    x0: torch.Tensor | None = None
    t_index: int | None = None
    t: float | None = None
    sigma: float | None = None


# ============================================================================ helpers
@dataclass(frozen=True)
class _Noise:
    """Where a sampler's noise comes from: the backend's counter-based Philox noise for ``seed``, or
    the caller's tensors ``noise[step]`` / ``noise(step)``."""

    seed: int | None
    given: Sequence | Callable | None

    def given_at(self, step: int):
        if callable(self.given):
            return self.given(step)
        if step >= len(self.given):
            raise IndexError(f"noise has {len(self.given)} entries but the sampler needs noise step {step}; "
                             f"pass one tensor per noise draw (see the sampler's docstring)")
        return self.given[step]

    def kwargs(self, step: int) -> dict:
        """Keyword arguments for a backend update that draws noise at counter ``step``."""
        if self.given is not None:
            return {"noise": self.given_at(step)}
        return {"seed": self.seed, "step": step}

    def tensor(self, step: int, like: torch.Tensor) -> torch.Tensor:
        """The noise tensor itself (the same numbers :meth:`kwargs` makes the backend draw)."""
        if self.given is not None:
            return self.given_at(step)
        return _backend.normal(like.shape, self.seed, step, dtype=like.dtype, device=like.device)


def _noise_source(generator, noise, needed: bool = True) -> _Noise:
    """Draw one seed from ``generator``, or wrap the caller's ``noise``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if noise is not None:
        if not (callable(noise) or isinstance(noise, (Sequence, torch.Tensor))):
            raise TypeError(f"noise must be a sequence of tensors or a callable step -> tensor, "
                            f"got {type(noise).__name__}")
        return _Noise(None, noise)
    if generator is None:
        if needed:
            raise ValueError("pass generator= (a torch.Generator) or noise= (one tensor per noise draw)")
        return _Noise(None, None)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    return _Noise(seed, None)


def _check_x(x, name: str) -> torch.Tensor:
    _checks.check_batch(x, name, exact_float=True)
    _checks.check_finite_state(x, name)
    return x


def _checked(x: torch.Tensor, index: int, params: str = "") -> torch.Tensor:
    """``x`` after the update of step ``index``, raising if it is no longer finite."""
    _checks.check_finite_state(x, "the state after the update", index, params)
    return x


def _check_count(n, name: str, high: int | None = None) -> int:
    return _checks.check_count(n, name, 1, high)


def _check_positive(v, name: str) -> float:
    return _checks.check_positive(v, name)


def _evaluate(fn, name: str, x: torch.Tensor, *args, index: int | None = None) -> torch.Tensor:
    """``fn(x, *args)``, checked to be a finite tensor shaped and typed like ``x`` (``index``: the
    sampler step, named in the error)."""
    out = fn(x, *args)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(out).__name__}")
    if out.shape != x.shape:
        raise ValueError(f"{name} returned shape {tuple(out.shape)}; expected x's shape {tuple(x.shape)} "
                         f"(one output per sample, same batch size)")
    if out.dtype != x.dtype:
        raise TypeError(f"{name} returned dtype {out.dtype}; expected x's dtype {x.dtype}")
    _checks.check_finite_state(out, f"the {name} output", index, "the input x was finite")
    return out


def _t_index_vector(t_index: int, x: torch.Tensor) -> torch.Tensor:
    """The sampler's own ``t_index`` (an int) as the model's ``(B,)`` int64 input on ``x``'s device."""
    return _checks.t_index_vector(int(t_index), x.shape[0], device=x.device)  # (B,)


# ============================================================================ discrete-time samplers
def ddpm(model, x_T, schedule: Schedule, *, generator: torch.Generator | None = None, clip_x0=None,
         noise=None, backend: str | None = None) -> Iterator[Step]:
    """Ancestral sampling (Ho et al. 2020, Algorithm 2; posterior-mean form, eqs. 6-7 and 15):
    for ``t_index = T-1 .. 0``: ``eps = model(x, t_index)``, ``x0 = (x - sqrt(1-ab) eps) / sqrt(ab)``
    (clipped to ``[-clip_x0, clip_x0]`` if given), ``x <- mu_tilde(x0, x) + sqrt(beta_tilde) z``, no noise
    at ``t_index = 0``. Yields ``T`` records with ``t_index``. ``x_T``: ``(B, ...)``, e.g. ``N(0, I)``.
    Noise counter: ``step = index`` (``T - 1`` draws)."""
    x_T = _check_x(x_T, "x_T")
    src = _noise_source(generator, noise, needed=schedule.T > 1)
    return _ddpm(model, x_T, schedule, src, clip_x0, backend)


def _ddpm(model, x, schedule, src, clip_x0, backend):
    for i, t_index in enumerate(range(schedule.T - 1, -1, -1)):
        eps = _evaluate(model, "model", x, _t_index_vector(t_index, x), index=i)  # (B, ...)
        kw = src.kwargs(i) if t_index > 0 else {}
        x, x0 = _backend.ddpm_step(x, eps, t_index, schedule, clip_x0=clip_x0, backend=backend, **kw)
        _checked(x, i, f"t_index={t_index}, clip_x0={clip_x0}")
        yield Step(index=i, x=x, x0=x0, t_index=t_index)


def ddim(model, x_T, schedule: Schedule, n_steps: int, *, eta: float = 0.0,
         generator: torch.Generator | None = None, clip_x0=None, noise=None,
         backend: str | None = None) -> Iterator[Step]:
    """DDIM (Song et al. 2021b, eq. 12, with ``ddim_sigma(eta)`` of eq. 16) on the ``n_steps``
    descending indices ``schedule.timesteps(n_steps)``, the last step going to the data (``t_index = -1``):
    ``x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - ddim_sigma^2) eps + ddim_sigma z``. ``eta = 0`` is the
    deterministic DDIM (a first-order solver of the probability-flow ODE); ``eta = 1`` is DDPM-like.
    Yields ``n_steps`` records with ``t_index``. Noise counter (``eta > 0``): ``step = index``, none on the
    last step (``n_steps - 1`` draws)."""
    x_T = _check_x(x_T, "x_T")
    n_steps = _check_count(n_steps, "n_steps", high=schedule.T)
    eta = _checks.check_nonnegative(eta, "eta")
    src = _noise_source(generator, noise, needed=eta > 0 and n_steps > 1)
    return _ddim(model, x_T, schedule, n_steps, float(eta), src, clip_x0, backend)


def _ddim(model, x, schedule, n_steps, eta, src, clip_x0, backend):
    t_indices = schedule.timesteps(n_steps)
    t_indices_prev = np.append(t_indices[1:], -1)
    for i, (t_index, t_index_prev) in enumerate(zip(t_indices.tolist(), t_indices_prev.tolist())):
        eps = _evaluate(model, "model", x, _t_index_vector(t_index, x), index=i)  # (B, ...)
        kw = src.kwargs(i) if eta > 0 and t_index_prev >= 0 else {}
        x, x0 = _backend.ddim_step(x, eps, t_index, t_index_prev, schedule, eta=eta, clip_x0=clip_x0,
                                   backend=backend, **kw)
        _checked(x, i, f"eta={eta}, t_index={t_index}")
        yield Step(index=i, x=x, x0=x0, t_index=t_index)


# ============================================================================ Langevin dynamics
def langevin(score_fn, x_init, *, step_size: float, n_steps: int, generator: torch.Generator | None = None,
             noise=None, backend: str | None = None) -> Iterator[Step]:
    """Unadjusted Langevin dynamics at one noise level (Song & Ermon 2019, eq. 4; Alg. 1 with L = 1):
    ``x <- x + (step_size / 2) score_fn(x) + sqrt(step_size) z``. Exact only as ``step_size -> 0`` and
    ``n_steps -> inf``; too large a step inflates the variance, and separated modes do not mix
    (Sec. 3.2). Yields ``n_steps`` records (``x0 = None``). Noise counter: ``step = index``."""
    x_init = _check_x(x_init, "x_init")
    step_size = _check_positive(step_size, "step_size")
    n_steps = _check_count(n_steps, "n_steps")
    return _langevin(score_fn, x_init, step_size, n_steps, _noise_source(generator, noise), backend)


def _langevin(score_fn, x, step_size, n_steps, src, backend):
    for i in range(n_steps):
        score = _evaluate(score_fn, "score_fn", x, index=i)  # (B, ...)
        x = _checked(_backend.langevin_step(x, score, step_size, backend=backend, **src.kwargs(i)), i,
                     f"step_size={step_size}")
        yield Step(index=i, x=x)


def annealed_langevin(score_fn, x_init, sigmas, *, n_steps_each: int, step_size: float,
                      generator: torch.Generator | None = None, noise=None,
                      backend: str | None = None) -> Iterator[Step]:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1): for each ``sigma_i`` in the
    decreasing ``sigmas``, ``n_steps_each`` Langevin steps with ``alpha_i = step_size sigma_i^2 / sigma_L^2``
    on ``score_fn(x, sigma_i)``. The chain targets the data perturbed at ``sigma_L = sigmas[-1]``.
    Yields ``len(sigmas) * n_steps_each`` records with ``sigma`` and ``x0 = x + sigma^2 score``
    (Tweedie). Noise counter: ``step = index``."""
    x_init = _check_x(x_init, "x_init")
    sig = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if sig.size < 1 or not np.all(np.isfinite(sig)) or np.any(sig <= 0) or np.any(np.diff(sig) > 0):
        raise ValueError(f"sigmas must be a non-empty sequence of positive, non-increasing noise levels, "
                         f"got {sig[:5].tolist()}{'...' if sig.size > 5 else ''}")
    n_steps_each = _check_count(n_steps_each, "n_steps_each")
    step_size = _check_positive(step_size, "step_size")
    return _annealed_langevin(score_fn, x_init, sig, n_steps_each, step_size,
                              _noise_source(generator, noise), backend)


def _annealed_langevin(score_fn, x, sigmas, n_steps_each, step_size, src, backend):
    k = 0
    for sigma in sigmas.tolist():
        alpha = step_size * sigma**2 / sigmas[-1] ** 2  # Alg. 1, line 3
        for _ in range(n_steps_each):
            score = _evaluate(score_fn, "score_fn", x, sigma, index=k)  # (B, ...)
            x0 = tweedie_x0(x, score, std=sigma)
            x = _checked(_backend.langevin_step(x, score, alpha, backend=backend, **src.kwargs(k)), k,
                         f"sigma={sigma}, step size {alpha}")
            yield Step(index=k, x=x, x0=x0, sigma=sigma)
            k += 1


# ============================================================================ SDE and ODE samplers
def _check_sde_args(x_T, sde, n_steps, t_min):
    x_T = _check_x(x_T, "x_T")
    for attr in ("drift_coef", "diffusion", "mean_scale", "marginal_std", "time_grid"):
        if not hasattr(sde, attr):
            raise TypeError(f"sde must be a VPSDE or VESDE (minidiff.sde), got {type(sde).__name__}")
    n_steps = _check_count(n_steps, "n_steps")
    check_t(t_min, "t_min")
    return x_T, sde.time_grid(n_steps, t_min)


def euler_maruyama(score_fn, x_T, sde, n_steps: int, *, generator: torch.Generator | None = None,
                   t_min: float = 1e-3, noise=None, backend: str | None = None) -> Iterator[Step]:
    """Euler-Maruyama on the reverse-time SDE ``dx = [f(t) x - g(t)^2 score] dt + g(t) dw_bar``
    (Anderson 1982; Song et al. 2021a, eq. 6 and App. D) on the uniform grid from ``t = 1`` to ``t_min``:
    ``x <- x - [f x - g^2 score] dt + g sqrt(dt) z``. ``x_T`` from ``sde.prior_sample``. Yields
    ``n_steps`` records with ``t`` and the Tweedie ``x0``. Noise counter: ``step = index``."""
    x_T, ts = _check_sde_args(x_T, sde, n_steps, t_min)
    return _euler_maruyama(score_fn, x_T, sde, ts, _noise_source(generator, noise), backend)


def _euler_maruyama(score_fn, x, sde, ts, src, backend):
    for i, (t, t_next) in enumerate(zip(ts[:-1].tolist(), ts[1:].tolist())):
        score = _evaluate(score_fn, "score_fn", x, t, index=i)  # (B, ...)
        x0 = sde.x0_from_score(x, score, t)
        x = _backend.reverse_sde_step(x, score, drift_coef=sde.drift_coef(t), diffusion=sde.diffusion(t),
                                      dt=t - t_next, backend=backend, **src.kwargs(i))
        _checked(x, i, f"t={t}")
        yield Step(index=i, x=x, x0=x0, t=t)


def predictor_corrector(score_fn, x_T, sde, n_steps: int, *, snr: float = 0.16, n_corrector: int = 1,
                        generator: torch.Generator | None = None, t_min: float = 1e-3, noise=None,
                        backend: str | None = None) -> Iterator[Step]:
    """Predictor-corrector sampling (Song et al. 2021a, Algorithms 2 (VE) and 3 (VP)) on the uniform grid
    from ``t = 1`` to ``t_min``. Predictor: reverse diffusion, the ancestral step of the SDE's own
    discretisation ``(F, G) = sde.discretize(t, dt)``: ``x <- (1 - F) x + G^2 score(x, t) + G z``.
    Corrector (``n_corrector`` times at the new time): Langevin ``x <- x + e score + sqrt(2 e) z`` with
    ``e = 2 alpha (snr ||z|| / ||score||)^2`` (``alpha = 1 - beta_i`` for VP, 1 for VE; norms per
    sample, averaged over the batch as in the authors' code). Yields ``n_steps`` records with ``t``
    (after the correctors) and the Tweedie ``x0``. Noise counter: ``step = index (1 + n_corrector) + j``,
    ``j = 0`` for the predictor and ``1 .. n_corrector`` for the correctors."""
    x_T, ts = _check_sde_args(x_T, sde, n_steps, t_min)
    snr = _check_positive(snr, "snr")
    n_corrector = _checks.check_count(n_corrector, "n_corrector", low=0)
    return _predictor_corrector(score_fn, x_T, sde, ts, snr, int(n_corrector),
                                _noise_source(generator, noise), backend)


def _langevin_corrector_step_size(score, z, snr: float, alpha: float) -> float:
    """``2 (2 alpha (snr ||z|| / ||score||)^2)``: the backend's ``step_size`` (its update is
    ``x + step/2 score + sqrt(step) z``) for Song et al.'s ``e`` (Alg. 2 line 8, Alg. 3 line 7)."""
    from minidiff.kernels.trajectories import langevin_corrector_step_size

    norm = lambda v: v.reshape(v.shape[0], -1).norm(dim=1).mean()  # noqa: E731  (B,) -> scalar
    return langevin_corrector_step_size(float(norm(z)), float(norm(score)), snr, alpha)


def _corrector_alpha(F: float) -> float:
    """Song et al.'s ``alpha_i`` in the corrector's step size from the predictor's ``F`` of
    ``sde.discretize``: ``(1 + F)^2``, which is ``1 - beta_i`` for VP (Alg. 3) and 1 for VE (Alg. 2)."""
    return (1.0 + F) ** 2


def _predictor_corrector(score_fn, x, sde, ts, snr, n_corrector, src, backend):
    per_step = 1 + n_corrector
    for i, (t, t_next) in enumerate(zip(ts[:-1].tolist(), ts[1:].tolist())):
        score = _evaluate(score_fn, "score_fn", x, t, index=i)  # (B, ...)
        x0 = sde.x0_from_score(x, score, t)
        F, G = sde.discretize(t, t - t_next)
        x = _checked(_backend.reverse_sde_step(x, score, drift_coef=F, diffusion=G, dt=1.0, backend=backend,
                                               **src.kwargs(i * per_step)), i, f"predictor at t={t}")
        alpha = _corrector_alpha(F)
        for j in range(1, n_corrector + 1):
            score = _evaluate(score_fn, "score_fn", x, t_next, index=i)
            z = src.tensor(i * per_step + j, x)
            step_size = _langevin_corrector_step_size(score, z, snr, alpha)
            x = _checked(_backend.langevin_step(x, score, step_size, noise=z, backend=backend), i,
                         f"corrector {j}, snr={snr}, step size {step_size}")
        yield Step(index=i, x=x, x0=x0, t=t)


def pf_ode_euler(score_fn, x_T, sde, n_steps: int, *, t_min: float = 1e-3,
                 backend: str | None = None) -> Iterator[Step]:
    """Euler's method on the probability-flow ODE ``dx/dt = f(t) x - g(t)^2 score / 2`` (Song et al.
    2021b, eq. 13) from ``t = 1`` to ``t_min`` on the uniform grid: deterministic, first order, ``n_steps``
    score evaluations. Yields ``n_steps`` records with ``t`` and the Tweedie ``x0``."""
    x_T, ts = _check_sde_args(x_T, sde, n_steps, t_min)
    return _pf_ode(score_fn, x_T, sde, ts, False, backend)


def pf_ode_heun(score_fn, x_T, sde, n_steps: int, *, t_min: float = 1e-3,
                backend: str | None = None) -> Iterator[Step]:
    """Heun's method (explicit trapezoid) on the probability-flow ODE, in the shape of Karras et al. 2022,
    Algorithm 1: an Euler step, the drift re-evaluated at its end, the average of the two drifts; the
    last step is plain Euler, so the score is never evaluated at ``t_min`` (``2 n_steps - 1``
    evaluations). Second order. Yields ``n_steps`` records with ``t`` and the Tweedie ``x0``."""
    x_T, ts = _check_sde_args(x_T, sde, n_steps, t_min)
    return _pf_ode(score_fn, x_T, sde, ts, True, backend)


def _pf_ode(score_fn, x, sde, ts, heun: bool, backend):
    n = len(ts) - 1
    for i, (t, t_next) in enumerate(zip(ts[:-1].tolist(), ts[1:].tolist())):
        coef = dict(drift_coef=sde.drift_coef(t), diffusion=sde.diffusion(t))
        score = _evaluate(score_fn, "score_fn", x, t, index=i)  # (B, ...)
        x0 = sde.x0_from_score(x, score, t)
        x_euler = _checked(_backend.pf_ode_euler_step(x, score, dt=t - t_next, backend=backend, **coef), i,
                           f"Euler step at t={t}")
        if heun and i < n - 1:  # Karras et al. 2022, Alg. 1, lines 9-11
            score_euler = _evaluate(score_fn, "score_fn", x_euler, t_next, index=i)
            x = _backend.pf_ode_heun_step(x, score, x_euler, score_euler, **coef,
                                          drift_coef_next=sde.drift_coef(t_next),
                                          diffusion_next=sde.diffusion(t_next), dt=t - t_next,
                                          backend=backend)
            _checked(x, i, f"Heun correction at t={t}")
        else:
            x = x_euler
        yield Step(index=i, x=x, x0=x0, t=t)


# ============================================================================ consuming a sampler
def final(steps: Iterable[Step]) -> torch.Tensor:
    """The last record's ``x``, without keeping the intermediate states: ``final(ddpm(...))``."""
    last = None
    for last in steps:
        pass
    if last is None:
        raise ValueError("the sampler yielded no steps")
    return last.x


def trajectory(steps: Iterable[Step], every: int = 1) -> list[Step]:
    """The records whose ``index`` is a multiple of ``every``, plus always the last one."""
    every = _check_count(every, "every")
    kept, last = [], None
    for last in steps:
        if last.index % every == 0:
            kept.append(last)
    if last is not None and (not kept or kept[-1] is not last):
        kept.append(last)
    return kept
