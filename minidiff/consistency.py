"""Consistency distillation: one network evaluation for the probability-flow ODE's whole map
(Song, Dhariwal, Chen & Sutskever 2023, "Consistency models"; Song et al. 2023 below).

Coordinates. The course's VP schedule is used in its variance-exploding coordinates (Karras et al. 2022,
eq. 4 with ``s = sqrt(alpha_bar)``; Song et al. 2021a, App. B): ``x = x_t / sqrt(alpha_bar) = x0 + sigma eps`` with
``sigma = schedule.sigma[t_index]``. In them the probability-flow ODE reads ``dx/dsigma = eps(x; sigma)``
and one deterministic DDIM step is an Euler step in ``sigma`` (Song et al. 2021b, eq. 14), so the teacher's
ODE solver here is DDIM (:func:`teacher_step`, checked against :func:`minidiff.backend.ddim_step` in the
tests). Samplers take ``x_T ~ N(0, I)`` in the VP coordinates like :func:`minidiff.samplers.ddim`, so a
student and its teacher can start from the same noise. Karras et al.'s σ-grid and Heun-in-σ solver are
in notebook 08; here the grid is the schedule's own ``t_index`` grid.

The pieces, each one box of the paper:

* :func:`boundary_coefficients` -- ``c_skip``, ``c_out`` of Song et al. 2023, App. C (eq. 3's
  parameterisation), so that ``f(x, sigma_min) = x`` holds exactly;
* :func:`consistency_function` -- ``f_theta(x, sigma) = c_skip x + c_out F_theta(x, sigma)``, with
  ``F_theta`` the network's ``x0`` estimate (so a student initialised from an eps-teacher starts as the
  teacher's one-step denoiser);
* :func:`distillation_grid`, :func:`teacher_step` -- adjacent points ``t_n < t_{n+1}`` and the one-step
  ODE solver ``x_hat_n = x_{n+1} + (sigma_n - sigma_{n+1}) eps_teacher(x_{n+1})``;
* :func:`distillation_target`, :func:`distillation_loss` -- Alg. 2 (consistency distillation), with the
  EMA target network ``theta^-`` (:func:`distill_steps` runs the loop);
* :func:`multistep_sample` -- Alg. 1 (multistep consistency sampling) for 1, 2, 4 ... evaluations;
* :func:`teacher_map` -- the map the student imitates: the teacher's Euler-in-sigma (DDIM) steps along
  the whole grid, down to ``sigma_min``.

CLI (the shipped digits students)::

    python -m minidiff.consistency --teacher digits --steps 600 --batch-size 64 --lr 1e-4 \
        --weighting inverse_step --threads 1 --save-every 100 --out runs/cd_digits
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn

from . import _checks as _c
from . import forward
from .samplers import Step
from .schedule import Schedule, append_dims

__all__ = [
    "SIGMA_DATA", "boundary_coefficients", "distillation_grid", "teacher_step", "consistency_function",
    "distillation_target", "distillation_loss", "loss_weights", "distill_steps", "multistep_sample", "sampling_t_indices",
    "teacher_map", "prior_to_ve", "CDConfig", "save_student", "load_student", "main",
]

SIGMA_DATA = 0.5  # Song et al. 2023, App. C (the value of Karras et al. 2022 for images in [-1, 1])


# ============================================================================ the parameterisation
def boundary_coefficients(sigma, sigma_min: float, sigma_data: float = SIGMA_DATA):
    """``(c_skip, c_out)`` of Song et al. 2023, App. C, in float64 numpy:
    ``c_skip = sigma_data^2 / ((sigma - sigma_min)^2 + sigma_data^2)``,
    ``c_out = sigma_data (sigma - sigma_min) / sqrt(sigma_data^2 + sigma^2)``.
    At ``sigma = sigma_min``: ``c_skip = 1``, ``c_out = 0`` exactly (the boundary condition)."""
    s = np.asarray(sigma, dtype=np.float64)
    if not np.all(np.isfinite(s)) or np.any(s < sigma_min):
        raise ValueError(f"sigma must be finite and >= sigma_min = {sigma_min}, got {s.reshape(-1)[:3].tolist()}")
    sd = _c.check_positive(sigma_data, "sigma_data")
    d = s - float(sigma_min)
    return sd**2 / (d**2 + sd**2), sd * d / np.sqrt(sd**2 + s**2)


def distillation_grid(schedule: Schedule, n: int) -> np.ndarray:
    """``n + 1`` ascending ``t_index`` points ``t_0 = 0 < t_1 < ... < t_n = T - 1``, evenly spaced (rounded),
    the discretisation ``t_1 < ... < t_N`` of Song et al. 2023, Sec. 4 on the schedule's own grid; the
    boundary ``sigma_min = schedule.sigma[0]``."""
    n = _c.check_count(n, "n", 1, schedule.T - 1)
    grid = np.round(np.linspace(0, schedule.T - 1, n + 1)).astype(np.int64)
    if np.any(np.diff(grid) <= 0):  # cannot happen for n <= T - 1; kept as a guard
        raise ValueError(f"grid points must be distinct, got {grid.tolist()}")
    return grid


def _table(schedule: Schedule, name: str, t_index, like: torch.Tensor) -> torch.Tensor:
    """``schedule.<name>[t_index]`` shaped ``(B, 1, ..., 1)`` in ``like``'s dtype (``t_index``: int or (B,))."""
    idx = np.asarray(t_index.detach().cpu() if hasattr(t_index, "detach") else t_index).reshape(-1)
    if idx.size == 1:
        idx = np.broadcast_to(idx, (like.shape[0],))
    return schedule.at(name, idx, like)


def _t_index_vector(t_index, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(t_index.detach().cpu() if hasattr(t_index, "detach") else t_index),
                        dtype=torch.int64).reshape(-1)
    return t.expand(x.shape[0]).clone() if t.numel() == 1 else t  # (B,)


def prior_to_ve(x_T: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """``x_T ~ N(0, I)`` at ``t_index = T - 1`` (VP) as the VE state ``x_T / sqrt(alpha_bar[T-1])``."""
    return x_T / float(np.sqrt(schedule.alpha_bar[-1]))


def consistency_function(net: nn.Module, x: torch.Tensor, t_index, schedule: Schedule, *,
                         sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """``f_theta(x, sigma) = c_skip(sigma) x + c_out(sigma) F_theta(x, sigma)`` (Song et al. 2023, eq. 3 and
    App. C) for VE states ``x (B, ...)`` at ``sigma = schedule.sigma[t_index]``, ``sigma_min = schedule.sigma[0]``:
    ``f(x, t_index=0) = x`` exactly.

    ``F_theta`` is the network in the raw form of Karras et al. 2022 (Table 1), which Song et al. 2023 use
    for their students: with ``D`` the network's ``x0`` estimate (``net(x_t, t_index)`` of any
    ``config.prediction`` at ``x_t = sqrt(alpha_bar) x``), ``F = (D - c_skip^0 x) / c_out^0`` where
    ``c^0`` are the same coefficients with ``sigma_min = 0`` (EDM's ``c_skip``, ``c_out``). So a student
    initialised from a teacher starts, away from ``sigma_min``, as the teacher's denoiser ``D``."""
    t = _t_index_vector(t_index, x)                                  # (B,)
    ab = _table(schedule, "alpha_bar", t, x)                         # (B, 1, ...)
    x_t = x * ab.sqrt()
    denoised = forward.convert(net(x_t, t), x_t, ab, source=net.config.prediction, target="x0")
    sigma = schedule.sigma[t.numpy()]
    c_skip, c_out = boundary_coefficients(sigma, schedule.sigma[0], sigma_data)
    c_skip0, c_out0 = boundary_coefficients(sigma, 0.0, sigma_data)
    as_t = lambda c: append_dims(torch.as_tensor(c, dtype=x.dtype, device=x.device), x.ndim)  # noqa: E731
    raw = (denoised - as_t(c_skip0) * x) / as_t(c_out0)              # F_theta (B, ...)
    return as_t(c_skip) * x + as_t(c_out) * raw


def teacher_step(teacher_eps, x: torch.Tensor, t_index, t_index_next, schedule: Schedule) -> torch.Tensor:
    """One deterministic DDIM step from ``t_index`` to ``t_index_next`` (each an int or ``(B,)``) in VE
    coordinates, the one-step ODE solver ``Phi`` of Song et al. 2023, Alg. 2 with the Euler method in
    ``sigma`` (Song et al. 2021b, eq. 14; Karras et al. 2022, eq. 4 with ``sigma(t) = t``):
    ``x_next = x + (sigma_next - sigma) eps_teacher(x_t, t_index)``, ``x_t = sqrt(alpha_bar) x``.
    ``teacher_eps(x_t, t_index) -> eps`` (e.g. :func:`minidiff.unet.as_eps_model` or
    :meth:`minidiff.data.GaussianMixture.eps_model`)."""
    t = _t_index_vector(t_index, x)
    ab = _table(schedule, "alpha_bar", t, x)
    eps = teacher_eps(x * ab.sqrt(), t)                                # (B, ...)
    return x + (_table(schedule, "sigma", t_index_next, x) - _table(schedule, "sigma", t, x)) * eps


# ============================================================================ Alg. 2: consistency distillation
def distillation_target(target_net: nn.Module, teacher_eps, x0: torch.Tensor, noise: torch.Tensor, n, grid,
                        schedule: Schedule, *, sigma_data: float = SIGMA_DATA):
    """The pair ``(x_{n+1}, target)`` of Song et al. 2023, Alg. 2, lines 4-6: ``x_{n+1} = x0 + sigma_{n+1} z``,
    ``x_hat_n = teacher_step(x_{n+1})`` and ``target = f_{theta^-}(x_hat_n, t_n)`` (no gradient).
    ``n``: ``(B,)`` int64 in ``[0, len(grid) - 1)``; ``grid``: :func:`distillation_grid`."""
    grid = np.asarray(grid, dtype=np.int64)
    n = _check_n(n, x0, len(grid))
    t_n, t_next = grid[n], grid[n + 1]                                 # (B,) t_index each
    x_next = x0 + _table(schedule, "sigma", t_next, x0) * noise        # (B, ...)
    with torch.no_grad():
        x_hat = teacher_step(teacher_eps, x_next, t_next, t_n, schedule)
        target = consistency_function(target_net, x_hat, t_n, schedule, sigma_data=sigma_data)
    return x_next, target


def loss_weights(grid, n, schedule: Schedule, weighting: str = "uniform") -> np.ndarray:
    """``lambda(t_n)`` per sample, float64 ``(B,)``: ``"uniform"`` = 1 (Song et al. 2023, Sec. 5) or
    ``"inverse_step"`` = ``1 / (sigma_{n+1} - sigma_n)`` (Song & Dhariwal 2023, Sec. 3.5), which keeps the
    wide top intervals of a VP schedule (``sigma`` up to ~157 for the linear one) from dominating."""
    grid = np.asarray(grid, dtype=np.int64)
    n = np.asarray(n.detach().cpu() if hasattr(n, "detach") else n, dtype=np.int64)
    if weighting == "uniform":
        return np.ones(n.shape)
    if weighting == "inverse_step":
        return 1.0 / (schedule.sigma[grid[n + 1]] - schedule.sigma[grid[n]])
    raise ValueError(f"weighting must be 'uniform' or 'inverse_step', got {weighting!r}")


def distillation_loss(net: nn.Module, target_net: nn.Module, teacher_eps, x0, noise, n, grid, schedule, *,
                      sigma_data: float = SIGMA_DATA, weighting: str = "uniform") -> torch.Tensor:
    """The consistency distillation loss (Song et al. 2023, eq. 7) with the squared l2 metric, averaged
    over the batch and the elements: ``mean lambda(t_n) || f_theta(x_{n+1}, t_{n+1}) - f_{theta^-}(x_hat_n, t_n) ||^2``
    (``lambda``: :func:`loss_weights`)."""
    n = _check_n(n, x0, len(grid))
    w = loss_weights(grid, n, schedule, weighting)
    x_next, target = distillation_target(target_net, teacher_eps, x0, noise, n, grid, schedule,
                                         sigma_data=sigma_data)
    t_next = np.asarray(grid, dtype=np.int64)[n + 1]
    pred = consistency_function(net, x_next, t_next, schedule, sigma_data=sigma_data)
    per_sample = ((pred - target) ** 2).reshape(x0.shape[0], -1).mean(1)      # (B,)
    return torch.mean(torch.as_tensor(w, dtype=x0.dtype, device=x0.device) * per_sample)


def _check_n(n, x0, n_points: int) -> np.ndarray:
    n = np.asarray(n.detach().cpu() if hasattr(n, "detach") else n)
    if not np.issubdtype(n.dtype, np.integer) or n.shape != (x0.shape[0],):
        raise ValueError(f"n must be ({x0.shape[0]},) integers, got dtype {n.dtype} shape {n.shape}")
    if n.min() < 0 or n.max() > n_points - 2:
        raise ValueError(f"n must lie in [0, {n_points - 2}] for a grid of {n_points} points")
    return n.astype(np.int64)


@dataclass(frozen=True)
class CDConfig:
    """Consistency distillation settings (Song et al. 2023, Sec. 4 and App. C): ``n_grid`` = N - 1
    intervals, ``target_decay`` = mu of the target network, ``ema_decay`` for the weights one samples
    with (``min(ema_decay, (1 + s) / (10 + s))`` as in :func:`minidiff.train.train_steps`)."""

    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-4
    warmup: int = 0
    lr_min_frac: float = 1.0
    n_grid: int = 18
    target_decay: float = 0.95
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    sigma_data: float = SIGMA_DATA
    weighting: str = "uniform"
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "n_grid"):
            _c.check_count(getattr(self, name), name)
        _c.check_count(self.warmup, "warmup", 0)
        _c.check_count(self.seed, "seed", 0)
        _c.check_positive(self.lr, "lr")
        _c.check_positive(self.sigma_data, "sigma_data")
        _c.check_nonnegative(self.grad_clip, "grad_clip")
        for name in ("lr_min_frac", "target_decay", "ema_decay"):
            _c.check_probability(getattr(self, name), name)
        loss_weights([0, 1], [0], Schedule.linear(2), self.weighting)   # ValueError for an unknown name


def distill_steps(state, target_net: nn.Module, teacher_eps, data: torch.Tensor, schedule: Schedule,
                  config: CDConfig = CDConfig()) -> Iterator:
    """Consistency distillation, Song et al. 2023, Alg. 2, yielding one :class:`minidiff.train.TrainRecord`
    per step: draw ``x0`` from ``data``, ``n ~ U{0 .. N-2}``, ``z ~ N(0, I)`` (from
    :func:`minidiff.train.step_generator`), a gradient step on :func:`distillation_loss`, then
    ``theta^- <- mu theta^- + (1 - mu) theta`` and the sampling EMA ``state.ema``.

    ``state``: a :class:`minidiff.train.TrainState` (``state.model`` = the online student ``theta``);
    ``target_net``: ``theta^-``, usually ``copy.deepcopy(state.model)`` at the start (its own
    training-loop rather than :func:`minidiff.train.train_steps`, whose objectives have no target network
    or teacher)."""
    from .train import TrainRecord, _ema_update, lr_at, step_generator

    if not isinstance(config, CDConfig):
        raise TypeError(f"config must be a CDConfig, got {type(config).__name__}")
    grid = distillation_grid(schedule, config.n_grid)
    N = data.shape[0]
    state.model.train()
    target_net.requires_grad_(False)
    while state.step < config.steps:
        s = state.step
        g = step_generator(config.seed, s)
        idx = torch.randint(0, N, (config.batch_size,), generator=g)
        n = torch.randint(0, len(grid) - 1, (config.batch_size,), generator=g)
        noise = torch.randn((config.batch_size,) + tuple(data.shape[1:]), generator=g).to(data.dtype)
        cur_lr = lr_at(s, config.lr, config.warmup, config.steps, config.lr_min_frac)
        for grp in state.optimizer.param_groups:
            grp["lr"] = cur_lr
        loss = distillation_loss(state.model, target_net, teacher_eps, data[idx], noise, n, grid, schedule,
                                 sigma_data=config.sigma_data, weighting=config.weighting)
        if not bool(torch.isfinite(loss.detach())):
            raise _c.NonFiniteError(f"distillation diverged: the loss of step {s + 1} is {float(loss)} "
                                    f"(lr {cur_lr:g}); lower lr")
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(state.model.parameters(), config.grad_clip)
        state.optimizer.step()
        _ema_update(target_net, state.model, config.target_decay)      # Alg. 2, line 9
        _ema_update(state.ema, state.model, min(config.ema_decay, (1 + s) / (10 + s)))
        state.step = s + 1
        yield TrainRecord(step=state.step, loss=float(loss.detach()), lr=cur_lr)


# ============================================================================ Alg. 1: sampling
def sampling_t_indices(schedule: Schedule, n_steps: int, sigma_low: float = 0.8) -> np.ndarray:
    """Default descending ``t_index`` points for ``n_steps``-step consistency sampling: ``T - 1``, then
    ``n_steps - 1`` levels geometrically spaced in ``sigma`` from ``schedule.sigma[T-1]`` down to
    ``sigma_low`` (exclusive of the top; Song et al. 2023 pick these points by search, e.g.
    ``sigma = 0.821`` for their two-step CIFAR-10 model, App. C), each the nearest ``t_index``."""
    n_steps = _c.check_count(n_steps, "n_steps", 1, schedule.T)
    sigma_low = _c.check_positive(sigma_low, "sigma_low")
    if n_steps == 1:
        return np.array([schedule.T - 1], dtype=np.int64)
    sig = np.geomspace(schedule.sigma[-1], sigma_low, n_steps)
    t = np.asarray(schedule.sigma_to_t_index(sig), dtype=np.int64)
    t[0] = schedule.T - 1
    if np.any(np.diff(t) >= 0):
        raise ValueError(f"n_steps={n_steps} with sigma_low={sigma_low} gives repeated t_index points {t.tolist()}")
    return t


def multistep_sample(net: nn.Module, x_T: torch.Tensor, schedule: Schedule, t_indices, *,
                     generator: torch.Generator | None = None, noise=None,
                     sigma_data: float = SIGMA_DATA) -> Iterator[Step]:
    """Multistep consistency sampling (Song et al. 2023, Alg. 1): ``x <- f(x_T, T)``; then for each
    further ``tau`` in ``t_indices[1:]``: ``x_tau = x + sqrt(sigma_tau^2 - sigma_min^2) z``,
    ``x <- f(x_tau, tau)``. ``x_T ~ N(0, I)`` in VP coordinates (as for :func:`minidiff.samplers.ddim`),
    ``t_indices`` descending and starting at ``T - 1`` (:func:`sampling_t_indices`). One network
    evaluation per entry. Yields :class:`minidiff.samplers.Step` records with ``t_index``, ``x`` = ``x0`` =
    the estimate. Noise: ``generator=`` or ``noise=`` (one tensor per re-noising, ``len(t_indices) - 1``)."""
    from .samplers import _check_x

    x_T = _check_x(x_T, "x_T")
    t_indices = np.asarray(t_indices, dtype=np.int64).reshape(-1)
    if t_indices.size < 1 or t_indices[0] != schedule.T - 1 or np.any(np.diff(t_indices) >= 0) or t_indices.min() < 0:
        raise ValueError(f"t_indices must descend from T - 1 = {schedule.T - 1} to >= 0, got {t_indices.tolist()}")
    if t_indices.size > 1 and generator is None and noise is None:
        raise ValueError("pass generator= (a torch.Generator) or noise= (one tensor per re-noising step)")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return _multistep(net, x_T, schedule, t_indices, generator, noise, sigma_data)


@torch.no_grad()
def _eval(net, x, t_index, schedule, sigma_data):
    return consistency_function(net, x, t_index, schedule, sigma_data=sigma_data)


def _multistep(net, x_T, schedule, t_indices, generator, noise, sigma_data):
    sigma_min = float(schedule.sigma[0])
    x = _eval(net, prior_to_ve(x_T, schedule), int(t_indices[0]), schedule, sigma_data)   # Alg. 1, line 2
    yield Step(index=0, x=x, x0=x, t_index=int(t_indices[0]))
    for i, tau in enumerate(t_indices[1:].tolist(), start=1):
        z = (torch.randn(x.shape, generator=generator, dtype=x.dtype) if noise is None else noise[i - 1])
        x_tau = x + float(np.sqrt(schedule.sigma[tau] ** 2 - sigma_min**2)) * z                # line 5
        x = _eval(net, x_tau, tau, schedule, sigma_data)                                      # line 6
        yield Step(index=i, x=x, x0=x, t_index=tau)


@torch.no_grad()
def teacher_map(teacher_eps, x_T: torch.Tensor, schedule: Schedule, grid) -> torch.Tensor:
    """The teacher's ODE map along ``grid`` (ascending ``t_index``, as :func:`distillation_grid`): from
    ``x_T ~ N(0, I)`` (VP) at ``grid[-1] = T - 1`` down to ``grid[0]`` by :func:`teacher_step` (DDIM), in VE
    coordinates -- the map a consistency model distilled on ``grid`` imitates (Song et al. 2023, Thm. 1).
    ``len(grid) - 1`` teacher evaluations."""
    grid = np.asarray(grid, dtype=np.int64)
    if grid[-1] != schedule.T - 1 or np.any(np.diff(grid) <= 0):
        raise ValueError(f"grid must ascend to T - 1 = {schedule.T - 1}, got {grid[:3].tolist()}...{grid[-3:].tolist()}")
    x = prior_to_ve(x_T, schedule)
    for t, t_prev in zip(grid[:0:-1].tolist(), grid[-2::-1].tolist()):
        x = teacher_step(teacher_eps, x, t, t_prev, schedule)
    return x


# ============================================================================ files and CLI
def save_student(path, net: nn.Module, schedule_spec, config: CDConfig, **info) -> None:
    """The student's weights with :func:`minidiff.train.save_weights` (safetensors + JSON); ``info``
    records the distillation settings, so :func:`load_student` knows ``sigma_data``."""
    import dataclasses

    from .train import save_weights

    save_weights(path, net, schedule_spec, consistency=dataclasses.asdict(config), **info)


def load_student(path) -> tuple[nn.Module, Schedule, float]:
    """``(net, schedule, sigma_data)`` of a :func:`save_student` file, eval mode; sample with
    :func:`multistep_sample`."""
    from .train import load_weights

    net, schedule, meta = load_weights(path)
    cd = meta.get("info", {}).get("consistency")
    if not isinstance(cd, dict) or "sigma_data" not in cd:
        raise ValueError(f"{path} is not a consistency student (no 'consistency' record in its metadata)")
    return net, schedule, _c.check_positive(cd["sigma_data"], f"{path}: sigma_data")


def _parser() -> argparse.ArgumentParser:
    from .train import _POS_INT, _ranged

    p = argparse.ArgumentParser(prog="python -m minidiff.consistency",
                                description="Consistency-distil a shipped teacher (Song et al. 2023, Alg. 2).")
    p.add_argument("--teacher", default="digits", choices=["digits"])
    p.add_argument("--steps", type=_POS_INT, default=CDConfig.steps)
    p.add_argument("--batch-size", type=_POS_INT, default=CDConfig.batch_size)
    p.add_argument("--lr", type=_ranged(float, 0.0, low_open=True, what="a learning rate > 0"), default=CDConfig.lr)
    p.add_argument("--n-grid", type=_POS_INT, default=CDConfig.n_grid)
    p.add_argument("--target-decay", type=_ranged(float, 0.0, 1.0, what="a decay in [0, 1]"),
                   default=CDConfig.target_decay)
    p.add_argument("--weighting", choices=["uniform", "inverse_step"], default=CDConfig.weighting)
    p.add_argument("--ema-decay", type=_ranged(float, 0.0, 1.0, what="a decay in [0, 1]"), default=CDConfig.ema_decay)
    p.add_argument("--seed", type=_ranged(int, 0, what="an integer >= 0"), default=CDConfig.seed)
    p.add_argument("--threads", type=_POS_INT)
    p.add_argument("--save-every", type=_POS_INT, help="also save the EMA student every N steps")
    p.add_argument("--out", required=True, help="folder for log.jsonl and student.safetensors")
    return p


def main(argv=None) -> int:
    from .train import TrainState, load_pretrained
    from .unet import as_eps_model
    from .data import load_digits
    from .train import PRESETS

    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = CDConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, n_grid=args.n_grid,
                   target_decay=args.target_decay, seed=args.seed,
                   weighting=args.weighting, ema_decay=args.ema_decay)
    teacher, schedule = load_pretrained(args.teacher)
    torch.manual_seed(cfg.seed)
    student = copy.deepcopy(teacher).requires_grad_(True)              # initialised from the teacher
    state = TrainState.create(student, lr=cfg.lr)
    target = copy.deepcopy(student).eval()
    data, _ = load_digits("train")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(out / "log.jsonl", "w") as log:
        for rec in distill_steps(state, target, as_eps_model(teacher, schedule), data, schedule, cfg):
            log.write(json.dumps({"step": rec.step, "loss": rec.loss, "time": round(time.perf_counter() - t0, 2)})
                      + "\n")
            log.flush()
            if args.save_every and rec.step % args.save_every == 0:
                save_student(out / f"student_{rec.step:06d}.safetensors", state.ema, PRESETS[args.teacher].schedule,
                             cfg, teacher=args.teacher, steps=rec.step)
    wall = time.perf_counter() - t0
    save_student(out / "student.safetensors", state.ema, PRESETS[args.teacher].schedule, cfg,
                 teacher=args.teacher, steps=state.step, train_wall_s=round(wall, 1))
    print(f"consistency distillation of {args.teacher}: {state.step} steps, {wall:.1f} s; "
          f"weights in {out / 'student.safetensors'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
