"""Training: the denoising loss, EMA weights, checkpoints, presets, a CLI and multi-process training.

The loss is Ho et al. 2020, eq. 14 ("L_simple"): draw ``t_index ~ U{0..T-1}``, ``eps ~ N(0, I)``,
``x_t = sqrt(ab) x_0 + sqrt(1-ab) eps`` and regress the network on ``eps`` (or on ``v`` / ``x_0`` when the
model's ``config.prediction`` says so; Salimans & Ho 2022). Classifier-free guidance training replaces
the label by the null label with probability ``p_uncond`` (Ho & Salimans 2022, Alg. 1).

Training is a generator of frozen :class:`TrainRecord` (step, loss, lr), built from small parts in
nanoGPT's style: a :class:`TrainConfig` (the loop's numbers, the presets' defaults), :func:`draw_batch`
(the step's batch), :func:`lr_at` (the learning rate), :func:`ema_decay_at` (the EMA decay)::

    state = TrainState.create(build_model(UNetConfig()), lr=2e-3)
    for rec in train_steps(state, x, schedule, TrainConfig(steps=500, batch_size=128, seed=0)):
        losses.append(rec.loss)            # plot live in a notebook
    # keyword options override the config's fields: train_steps(state, x, schedule, steps=500, lr=1e-3)

Determinism: every random draw of step ``s`` (batch indices, ``t_index``, noise, label dropout) comes
from a generator seeded by ``(seed, s)`` (:func:`draw_batch`), so a run resumed from a checkpoint
continues exactly as an uninterrupted one would (same thread count). Under ``torchrun`` each of the
``W`` processes draws the same global batch and trains on its ``1/W`` slice with
DistributedDataParallel, so the run matches a single process with the same global batch up to
floating-point summation order. :func:`init_distributed` is the one process/device initialisation.

CLI::

    python -m minidiff.train --preset digits [--steps N --batch-size B --lr LR --seed S --out DIR --resume
                                              --overwrite]
    torchrun --nproc_per_node=2 -m minidiff.train --preset digits --out runs/digits
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from . import _checks as _c
from . import checkpoint as ckpt
from . import forward
from .schedule import Schedule
from .unet import MLPConfig, UNetConfig, build_model, config_from_dict, config_to_dict

__all__ = [
    "TrainRecord", "TrainState", "TrainConfig", "ScheduleSpec", "Preset", "PRESETS", "train_steps", "run", "lr_at",
    "Batch", "draw_batch", "step_generator", "ema_decay_at", "init_distributed",
    "diffusion_loss", "training_data", "save_checkpoint", "load_checkpoint", "save_weights",
    "load_weights", "load_pretrained", "PRETRAINED", "main", "DDPMObjective", "OBJECTIVES", "get_objective",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SCHEDULE_KINDS = ("linear", "cosine", "sigmoid")
PRETRAINED = ("digits", "digits_cond", "toy2d")


# ============================================================================ records and state
@dataclass(frozen=True)
class TrainRecord:
    """One optimizer step: ``step`` counts completed steps (1-based); ``loss`` is the batch loss
    before the update; ``lr`` the learning rate used."""

    step: int
    loss: float
    lr: float


@dataclass(eq=False)
class TrainState:
    """What a training run mutates: the network, its EMA copy, the optimizer, the step counter."""

    model: nn.Module
    ema: nn.Module
    optimizer: torch.optim.Optimizer
    step: int = 0
    _ddp: nn.Module | None = field(default=None, repr=False)

    @classmethod
    def create(cls, model: nn.Module, *, lr: float = 2e-3, weight_decay: float = 0.0) -> "TrainState":
        ema = copy.deepcopy(model).eval().requires_grad_(False)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        return cls(model, ema, opt)


@dataclass(frozen=True)
class ScheduleSpec:
    """A named schedule constructor and its keyword arguments (stored in checkpoints as JSON)."""

    kind: str = "linear"
    T: int = 1000

    def __post_init__(self):
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"schedule kind must be one of {SCHEDULE_KINDS}, got {self.kind!r}")
        from .schedule import _check_T

        _check_T(self.T)

    @classmethod
    def from_dict(cls, d, what: str = "schedule") -> "ScheduleSpec":
        """Every field required and type-checked; ``ValueError`` naming ``what`` and the key."""
        kw = _c.fields_from_dict(cls, d, what)
        try:
            return cls(**kw)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{what}: {e}") from None

    def build(self) -> Schedule:
        ctor = {"linear": Schedule.linear, "cosine": Schedule.cosine, "sigmoid": Schedule.sigmoid}.get(self.kind)
        if ctor is None:
            raise ValueError(f"schedule kind must be linear, cosine or sigmoid, got {self.kind!r}")
        return ctor(T=self.T)


@dataclass(frozen=True)
class TrainConfig:
    """The numbers of a training loop (what :func:`train_steps` reads), validated once, with the same
    defaults as :class:`Preset` (a preset's :meth:`Preset.train_config` is its loop's config).

    ``lr`` follows :func:`lr_at` (linear warm-up over ``warmup`` steps, cosine decay to
    ``lr * lr_min_frac``); ``p_uncond`` is the label-dropout probability of a class-conditional model
    (Ho & Salimans 2022, Alg. 1); ``objective`` a name in :data:`OBJECTIVES` or an object with
    ``draw``/``loss``; ``grad_clip=None`` turns clipping off.
    """

    steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 100
    lr_min_frac: float = 0.05         # cosine decay to lr * lr_min_frac at the last step
    ema_decay: float = 0.999
    grad_clip: float | None = 1.0
    p_uncond: float = 0.1             # label dropout for classifier-free guidance (conditional models)
    seed: int = 0
    objective: object = "ddpm"        # a key of OBJECTIVES (or an objective instance)

    def __post_init__(self):
        clean = dict(steps=_c.check_count(self.steps, "steps"),
                     batch_size=_c.check_count(self.batch_size, "batch_size"),
                     lr=_c.check_positive(self.lr, "lr"), seed=_c.check_count(self.seed, "seed", low=0),
                     warmup=_c.check_count(self.warmup, "warmup", low=0),
                     lr_min_frac=_c.check_probability(self.lr_min_frac, "lr_min_frac"),
                     ema_decay=_c.check_probability(self.ema_decay, "ema_decay"),
                     p_uncond=_c.check_probability(self.p_uncond, "p_uncond"),
                     grad_clip=None if self.grad_clip is None else _c.check_nonnegative(self.grad_clip, "grad_clip"))
        for name, v in clean.items():  # plain Python numbers from here on
            object.__setattr__(self, name, v)

    def replace(self, **overrides) -> "TrainConfig":
        """A copy with ``overrides``; an unknown name is a ``TypeError`` listing the fields."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown training option(s) {unknown}; the options are "
                            f"{[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **overrides)


@dataclass(frozen=True)
class Preset:
    """Everything a training run needs. Override with ``dataclasses.replace(PRESETS["digits"], steps=...)``."""

    name: str
    data: str                         # "digits", a 2-D toy name from data.TOYS_2D, or "gmm"
    model: UNetConfig | MLPConfig
    schedule: ScheduleSpec = ScheduleSpec()
    steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 100
    lr_min_frac: float = 0.05         # cosine decay to lr * lr_min_frac at the last step
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    p_uncond: float = 0.1             # label dropout for classifier-free guidance (conditional models)
    seed: int = 0
    checkpoint_every: int = 250
    objective: str = "ddpm"           # a key of OBJECTIVES: what is regressed on what

    def __post_init__(self):
        for name in ("name", "data", "objective"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"Preset.{name} must be a string, got {getattr(self, name)!r}")
        if not isinstance(self.model, (UNetConfig, MLPConfig)):
            raise TypeError(f"Preset.model must be a UNetConfig or MLPConfig, got {type(self.model).__name__}")
        if not isinstance(self.schedule, ScheduleSpec):
            raise TypeError(f"Preset.schedule must be a ScheduleSpec, got {type(self.schedule).__name__}")
        self.train_config()  # validates the loop's numbers, naming the field
        _c.check_nonnegative(self.weight_decay, "weight_decay")
        _c.check_count(self.checkpoint_every, "checkpoint_every")

    def train_config(self) -> TrainConfig:
        """The training loop's config: the fields this preset shares with :class:`TrainConfig`."""
        return TrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)})

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["model"] = config_to_dict(self.model)
        d["schedule"] = dataclasses.asdict(self.schedule)
        return d

    @classmethod
    def from_dict(cls, d: dict, what: str = "preset") -> "Preset":
        """Inverse of :meth:`to_dict`: every field required and type-checked, none defaulted;
        ``ValueError`` naming ``what`` (e.g. the file) and the key."""
        kw = _c.fields_from_dict(cls, d, what, skip=("model", "schedule", "name", "data", "grad_clip"))
        for name in ("name", "data"):
            if not isinstance(kw[name], str):
                raise ValueError(f"{what}: field {name!r} must be of type str, got {kw[name]!r}")
        if kw["grad_clip"] is not None:  # null: no clipping
            kw["grad_clip"] = _c._typed(kw["grad_clip"], 1.0, f"{what}: field 'grad_clip'")
        kw["model"] = config_from_dict(kw["model"], f"{what}: model")
        kw["schedule"] = ScheduleSpec.from_dict(kw["schedule"], f"{what}: schedule")
        try:
            return cls(**kw)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{what}: {e}") from None


DIGITS_UNET = UNetConfig(image_size=8, base_channels=32, channel_mults=(1, 2), num_res_blocks=1)
PRESETS: dict[str, Preset] = {
    "digits": Preset("digits", "digits", DIGITS_UNET, steps=4000, batch_size=128, lr=2e-3),
    "digits_cond": Preset("digits_cond", "digits", dataclasses.replace(DIGITS_UNET, num_classes=10),
                          steps=2000, batch_size=128, lr=2e-3),
    "toy2d": Preset("toy2d", "moons", MLPConfig(dim=2, hidden=128, depth=3), steps=3000, batch_size=256,
                    lr=2e-3),
    "gmm": Preset("gmm", "gmm", MLPConfig(dim=2, hidden=128, depth=3), steps=3000, batch_size=256, lr=2e-3),
    # flow matching (notebook 07): the same networks predicting the rectified-flow velocity
    "fm_gmm": Preset("fm_gmm", "gmm", MLPConfig(dim=2, hidden=128, depth=3, prediction="velocity"), steps=3000,
                     batch_size=256, lr=2e-3, objective="fm"),
    "fm_digits": Preset("fm_digits", "digits", dataclasses.replace(DIGITS_UNET, prediction="velocity"), steps=2000,
                        batch_size=128, lr=2e-3, objective="fm"),
    # EDM (notebook 08): the digits U-Net as F inside minidiff.edm.Precond, trained with the EDM loss
    "edm_digits": Preset("edm_digits", "digits", DIGITS_UNET, steps=800, batch_size=128, lr=2e-3, objective="edm"),
    # SR3 super-resolution 4x4 -> 8x8 (notebook 11): channel 0 x_t, channel 1 the lifted low-res digit
    "sr_digits": Preset("sr_digits", "digits", dataclasses.replace(DIGITS_UNET, in_channels=2, base_channels=16),
                        steps=2500, batch_size=64, lr=2e-3, objective="sr3"),
}


# ============================================================================ data
def gmm_target():
    """The Gaussian mixture of the ``gmm`` preset: a 3x3 grid, spacing 1.5, std 0.15."""
    from .data import GaussianMixture

    return GaussianMixture.grid_2d(3, spacing=1.5, std=0.15)


def training_data(data: str, conditional: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(x, y)`` for a preset's ``data``: digits train split ``(1438, 1, 8, 8)`` with labels, or a fixed
    set of 10 000 points (seed 1234) from a 2-D toy or the preset Gaussian mixture (labels ``None``)."""
    from . import data as D

    if data == "digits":
        x, y = D.load_digits("train")
        return x, (y if conditional else None)
    if data == "arith":  # int64 (9000, 9) addition statements (minidiff.arithmetic; 1000 held out)
        from .arithmetic import split

        if conditional:
            raise ValueError("data 'arith' has no labels")
        return split()[0], None
    if conditional:
        raise ValueError(f"data {data!r} has no labels")
    g = torch.Generator().manual_seed(1234)
    if data == "gmm":
        return gmm_target().sample(10_000, generator=g).to(torch.float32), None
    return D.make_2d(data, 10_000, generator=g), None


# ============================================================================ the loss and the loop
def diffusion_loss(model: nn.Module, x0, schedule: Schedule, t_index, noise, y=None) -> torch.Tensor:
    """Mean squared error between the network output and its target at ``x_t`` (Ho et al. 2020, eq. 14):
    target ``eps`` for eps-prediction, ``v = sqrt(ab) eps - sqrt(1-ab) x0`` for v, ``x0`` for x0."""
    x_t = forward.q_sample(x0, t_index, noise, schedule, backend="torch")  # (B, ...)
    pred = model(x_t, t_index, y)
    kind = model.config.prediction if not hasattr(model, "module") else model.module.config.prediction
    if kind == "eps":
        target = noise
    elif kind == "x0":
        target = x0
    else:
        target = forward.eps_to_v(x_t, noise, schedule.at("alpha_bar", t_index.cpu().numpy(), x0))
    return torch.mean((pred - target) ** 2)


@dataclass(frozen=True)
class DDPMObjective:
    """The DDPM objective (Ho et al. 2020, eq. 14): ``t_index ~ U{0..T-1}``, ``eps ~ N(0, I)``,
    regression by :func:`diffusion_loss` on the target the model's ``config.prediction`` names.

    An objective is the part of a training step that differs between model families: ``draw`` makes
    the step's random time coordinate and noise from the step's generator (the determinism contract:
    nothing else is drawn), ``loss`` turns a batch and those draws into a scalar loss. The training loop,
    EMA, checkpoints and CLI are shared; a new family adds its objective class to :data:`OBJECTIVES`.
    """

    name: str = "ddpm"

    def draw(self, g: torch.Generator, batch_size: int, shape: tuple[int, ...], schedule: Schedule):
        t_index = torch.randint(0, schedule.T, (batch_size,), generator=g)        # (B,)
        noise = torch.randn((batch_size,) + tuple(shape), generator=g)           # (B, ...)
        return t_index, noise

    def loss(self, net: nn.Module, x0, time, noise, y, schedule: Schedule) -> torch.Tensor:
        return diffusion_loss(net, x0, schedule, time, noise.to(dtype=x0.dtype), y)


@dataclass(frozen=True)
class FlowMatchingObjective:
    """Conditional flow matching (Lipman et al. 2023, eq. 23; rectified flow, Liu et al. 2023): draw
    ``t_index ~ U{0..T-1}`` (time ``t = t_index / (T - 1)``) and ``eps ~ N(0, I)``, regress the network
    on the conditional velocity of ``interpolant`` (a kind in :data:`minidiff.interpolants.KINDS`) by
    :func:`minidiff.flow.flow_matching_loss`, with ``coupling`` ``"independent"``, ``"ot"`` (minibatch OT,
    Tong et al. 2023) or ``"pairs"`` (reflow on stored ``(x_0, eps)`` pairs). The network predicts the
    velocity (``config.prediction = "velocity"``)."""

    name: str = "fm"
    interpolant: str = "linear"
    coupling: str = "independent"

    draw = DDPMObjective.draw  # the same draws: t_index ~ U{0..T-1}, eps ~ N(0, I)

    def loss(self, net: nn.Module, x0, time, noise, y, schedule: Schedule) -> torch.Tensor:
        from .flow import flow_matching_loss
        from .interpolants import Interpolant

        return flow_matching_loss(net, x0, time, noise, interpolant=Interpolant(self.interpolant), T=schedule.T,
                                  y=y, coupling=self.coupling)


@dataclass(frozen=True)
class FlowMatchingOTObjective(FlowMatchingObjective):
    """:class:`FlowMatchingObjective` with the minibatch optimal-transport coupling (Tong et al. 2023)."""

    name: str = "fm_ot"
    coupling: str = "ot"


# Objective name (stored in presets and checkpoints as data) -> its class.
OBJECTIVES: dict[str, type] = {"ddpm": DDPMObjective, "fm": FlowMatchingObjective, "fm_ot": FlowMatchingOTObjective}
from .discrete import MaskedDiffusionObjective  # noqa: E402  (masked diffusion on tokens, notebook 12)

OBJECTIVES["masked"] = MaskedDiffusionObjective
from .edm import EDMObjective  # noqa: E402  (EDM loss, Karras et al. 2022; notebook 08)

OBJECTIVES["edm"] = EDMObjective

from .conditional import SR3Objective  # noqa: E402  (SR3 super-resolution, notebook 11)

OBJECTIVES["sr3"] = SR3Objective


def get_objective(objective) -> object:
    """An objective instance from a name in :data:`OBJECTIVES` (or an instance, returned as is)."""
    if isinstance(objective, str):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {sorted(OBJECTIVES)}, got {objective!r}")
        return OBJECTIVES[objective]()
    if not (callable(getattr(objective, "draw", None)) and callable(getattr(objective, "loss", None))):
        raise ValueError(f"objective must be a name in {sorted(OBJECTIVES)} or have draw() and loss(), "
                         f"got {type(objective).__name__}")
    return objective


def lr_at(step: int, lr: float, warmup: int, total: int, min_frac: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``lr * min_frac`` at ``total``
    (Loshchilov & Hutter 2017). ``step`` is the 0-based index of the step about to be taken."""
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * frac)))


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator for step ``step`` of a run with ``seed``: a pure function of ``(seed, step)``."""
    s = np.random.SeedSequence([int(seed), int(step)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(s[0]) << 31 | int(s[1] >> 1))


def ema_decay_at(step: int, ema_decay: float) -> float:
    """The EMA decay used after step ``step`` (0-based): ``min(ema_decay, (1 + step) / (10 + step))``, a
    warm-up so the average does not remember the random initialisation for ~1/(1 - ema_decay) steps."""
    return min(ema_decay, (1 + step) / (10 + step))


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * params``; buffers are copied."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


@dataclass(frozen=True)
class Batch:
    """One step's training batch: ``x0`` ``(B, ...)``, class labels ``y`` ``(B,)`` after label dropout (or
    ``None``), the objective's time coordinate ``time`` ``(B,)`` (``t_index`` for DDPM) and ``noise``
    ``(B, ...)``, all on the data's device. ``B`` is this process's share of the global batch."""

    x0: torch.Tensor
    y: torch.Tensor | None
    time: torch.Tensor
    noise: torch.Tensor


def _draw(seed, step, data, schedule, objective, batch_size, labels, null_label, p_uncond, rank, world) -> Batch:
    g = step_generator(seed, step)
    local = slice(rank * batch_size // world, (rank + 1) * batch_size // world)  # this rank's rows
    idx = torch.randint(0, data.shape[0], (batch_size,), generator=g)[local].to(data.device)   # (B,)
    time, noise = (d[local].to(data.device) for d in objective.draw(g, batch_size, tuple(data.shape[1:]), schedule))
    y = None
    if labels is not None:  # classifier-free guidance training: the null label with probability p_uncond
        drop = (torch.rand(batch_size, generator=g)[local] < p_uncond).to(data.device)
        y = torch.where(drop, torch.full_like(labels[idx], null_label), labels[idx])
    return Batch(data[idx], y, time, noise)


def draw_batch(seed: int, step: int, data: torch.Tensor, schedule: Schedule, *, batch_size: int,
               objective="ddpm", labels: torch.Tensor | None = None, null_label: int | None = None,
               p_uncond: float = 0.0, rank: int = 0, world: int = 1) -> Batch:
    """The batch of step ``step`` (0-based) of a run with ``seed`` -- the determinism contract.

    Every random draw (example indices, the objective's ``draw``: ``t_index`` and noise for DDPM, label
    dropout) comes from :func:`step_generator` ``(seed, step)`` in that order, so the batch is a pure
    function of ``(seed, step)`` and the data: a resumed run draws what an uninterrupted one would.
    The global batch of ``batch_size`` rows is drawn whole and process ``rank`` of ``world`` keeps rows
    ``[rank B / W, (rank + 1) B / W)``, so concatenating the ranks' batches gives the single-process
    batch, whatever the world size. ``labels`` ``(N,)`` are replaced by ``null_label`` with
    probability ``p_uncond`` (Ho & Salimans 2022, Alg. 1).
    """
    seed, step = _c.check_count(seed, "seed", low=0), _c.check_count(step, "step", low=0)
    batch_size = _c.check_count(batch_size, "batch_size")
    world = _c.check_count(world, "world")
    rank = _c.check_index(rank, "rank", world)
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} must be divisible by the number of processes {world}")
    _c.check_tensor(data, "data")
    if labels is not None:
        _c.check_tensor(labels, "labels")
        null_label = _c.check_count(null_label, "null_label", low=0)
    return _draw(seed, step, data, schedule, get_objective(objective), batch_size, labels, null_label,
                 _c.check_probability(p_uncond, "p_uncond"), rank, world)


def train_steps(state: TrainState, data: torch.Tensor, schedule: Schedule, config: TrainConfig | None = None, *,
                labels: torch.Tensor | None = None, progress: bool = False, **options) -> Iterator[TrainRecord]:
    """Train ``state`` from ``state.step`` up to ``config.steps`` total steps, yielding one record per step.

    ``config``: a :class:`TrainConfig` (default ``TrainConfig()``, the presets' defaults); keyword
    ``options`` override its fields (``train_steps(state, x, schedule, steps=500, lr=1e-3)``).
    ``data``: ``(N, ...)`` training examples (on the model's device); ``labels``: ``(N,)`` for a
    class-conditional model. Each step is nanoGPT's loop: :func:`draw_batch`, :func:`lr_at`, the
    objective's loss, a clipped AdamW step, the EMA update (:func:`ema_decay_at`).
    Under ``torch.distributed`` the model is wrapped in DistributedDataParallel and each rank trains on
    its slice of the same global batch (``batch_size`` must be divisible by the world size).
    """
    cfg = (config if config is not None else TrainConfig()).replace(**options)
    objective = get_objective(cfg.objective)
    world, rank = _world_rank()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the number of processes {world}")
    K = getattr(state.model.config, "num_classes", 0)
    if (labels is not None) != (K > 0):
        raise ValueError("pass labels exactly when the model is class-conditional (num_classes > 0)")
    net = _wrap_ddp(state, world)
    state.model.train()
    bar = _progress_bar(cfg.steps, state.step, progress and rank == 0)
    try:
        while state.step < cfg.steps:
            batch = _draw(cfg.seed, state.step, data, schedule, objective, cfg.batch_size, labels, K, cfg.p_uncond,
                          rank, world)
            rec = _train_step(state, net, batch, schedule, cfg, objective, world)
            bar.update(1)
            if rec.step % 25 == 0:
                bar.set_postfix(loss=f"{rec.loss:.4f}")
            yield rec
    finally:
        bar.close()


def _train_step(state: TrainState, net: nn.Module, batch: Batch, schedule: Schedule, cfg: TrainConfig,
                objective, world: int) -> TrainRecord:
    """One optimizer step on ``batch`` at the learning rate of step ``state.step``."""
    s = state.step
    lr = lr_at(s, cfg.lr, cfg.warmup, cfg.steps, cfg.lr_min_frac)
    for grp in state.optimizer.param_groups:
        grp["lr"] = lr
    loss = objective.loss(net, batch.x0, batch.time, batch.noise, batch.y, schedule)
    if not bool(torch.isfinite(loss.detach())):  # stop before the update touches the weights
        raise _c.NonFiniteError(f"training diverged: the loss of step {s + 1} is {float(loss.detach())} "
                                f"(lr {lr:g}); check lr, the data and batch_size. The weights "
                                f"are those after step {s} and nothing non-finite was saved")
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
    state.optimizer.step()
    _ema_update(state.ema, state.model, ema_decay_at(s, cfg.ema_decay))
    state.step = s + 1
    return TrainRecord(step=state.step, loss=_mean_over_ranks(loss.detach(), world), lr=lr)


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", leave=False)


# ============================================================================ processes and devices
def _launched_by_torchrun() -> bool:
    """True only for a process started by ``torchrun`` (it sets ``TORCHELASTIC_RUN_ID`` next to
    ``WORLD_SIZE``). A ``WORLD_SIZE > 1`` inherited from elsewhere, with no launcher and no peers, would
    make ``init_process_group`` wait 30 minutes for ranks that never come: warn and run single-process."""
    import warnings

    world = os.environ.get("WORLD_SIZE", "1")
    if not world.isdigit() or int(world) <= 1:
        return False
    if "TORCHELASTIC_RUN_ID" in os.environ:
        return True
    warnings.warn(f"WORLD_SIZE={world} is set but this process was not started by torchrun "
                  f"(no TORCHELASTIC_RUN_ID); training single-process. Launch with torchrun for "
                  f"multi-process training.", RuntimeWarning, stacklevel=3)
    return False


def _local_device() -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def init_distributed() -> torch.device:
    """The one process initialisation: join the process group when started by ``torchrun`` (NCCL with
    CUDA, gloo without), select and return this process's device."""
    if _launched_by_torchrun() and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = _local_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _world_rank() -> tuple[int, int]:
    """``(world size, rank)`` of this process: ``(1, 0)`` outside ``torch.distributed``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _wrap_ddp(state: TrainState, world: int) -> nn.Module:
    """The module to train: ``state.model``, wrapped once in DistributedDataParallel when ``world > 1``."""
    if world == 1:
        return state.model
    if state._ddp is None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        dev = next(state.model.parameters()).device
        state._ddp = DDP(state.model, device_ids=[dev.index] if dev.type == "cuda" else None)
    return state._ddp


def _mean_over_ranks(value: torch.Tensor, world: int) -> float:
    """A scalar averaged over the ranks (the global batch's loss), as a Python float."""
    if world > 1:
        dist.all_reduce(value)
        value = value / world
    return float(value)


def _shutdown_distributed(world: int) -> None:
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


# ============================================================================ checkpoints
def save_checkpoint(path, state: TrainState, preset: Preset) -> None:
    """Full training state (model, EMA, optimizer, torch RNG) plus the preset, atomically."""
    tensors = {f"model.{k}": v for k, v in state.model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in state.ema.state_dict().items()})
    opt_t, groups = ckpt.optimizer_state_to_tensors(state.optimizer)
    tensors.update({f"optim.{k}": v for k, v in opt_t.items()})
    tensors["rng.torch"] = torch.get_rng_state()
    ckpt.check_finite_weights(tensors, f"checkpoint {path} at step {state.step}")
    meta = {"kind": "train_state", "step": state.step, "preset": preset.to_dict(),
            "model": config_to_dict(preset.model), "schedule": dataclasses.asdict(preset.schedule),
            "optimizer": {"name": "AdamW", "param_groups": groups}}
    ckpt.save(path, tensors, meta)


def load_checkpoint(path, state: TrainState | None = None) -> tuple[TrainState, Preset]:
    """Restore a :func:`save_checkpoint` file into ``state`` (or a fresh one built from its preset).
    Raises ``ValueError`` for a file that is not a training checkpoint or does not fit ``state``."""
    tensors, meta = ckpt.load(path)
    if meta.get("kind") != "train_state":
        raise ValueError(f"{path} is a minidiff {meta.get('kind')!r} file, not a training checkpoint")
    for key in ("step", "preset", "optimizer"):
        if key not in meta:
            raise ValueError(f"{path}: checkpoint metadata lacks the field {key!r}")
    step = meta["step"]
    if not _c.is_int(step) or step < 0:
        raise ValueError(f"{path}: field 'step' must be a non-negative integer, got {step!r}")
    opt_meta = meta["optimizer"]
    if not isinstance(opt_meta, dict) or not isinstance(opt_meta.get("param_groups"), list):
        raise ValueError(f"{path}: field 'optimizer' must be an object with a 'param_groups' list")
    preset = Preset.from_dict(meta["preset"], f"{path}: preset")
    _check_shapes_before_building(preset.model, ckpt.subset(tensors, "model"), f"checkpoint {path} (model)")
    if state is None:
        state = TrainState.create(build_model(preset.model), lr=preset.lr, weight_decay=preset.weight_decay)
    ckpt.load_state_into(state.model, ckpt.subset(tensors, "model"), f"checkpoint {path} (model)")
    ckpt.load_state_into(state.ema, ckpt.subset(tensors, "ema"), f"checkpoint {path} (ema)")
    ckpt.optimizer_state_from_tensors(state.optimizer, ckpt.subset(tensors, "optim"), opt_meta["param_groups"],
                                      f"checkpoint {path} (optimizer)")
    if "rng.torch" in tensors:
        if tensors["rng.torch"].dtype != torch.uint8 or tensors["rng.torch"].ndim != 1:
            raise ValueError(f"checkpoint {path}: rng.torch must be a 1-D uint8 tensor")
        torch.set_rng_state(tensors["rng.torch"])
    state.step = int(step)
    return state, preset


def _check_shapes_before_building(config, tensors: dict, what: str) -> None:
    """Compare ``tensors`` with the parameters ``config`` would build, on the ``meta`` device (no
    memory allocated), so a few-KB file claiming a huge model fails before anything is built."""
    with torch.device("meta"):
        shell = build_model(config)
    ckpt.check_state_dict(shell, tensors, what)


def save_weights(path, model: nn.Module, schedule_spec: ScheduleSpec, **info) -> None:
    """Weights only (the EMA network to ship), with its config and schedule, atomically."""
    tensors = {f"ema.{k}": v for k, v in model.state_dict().items()}
    ckpt.check_finite_weights(tensors, f"weights {path}")
    meta = {"kind": "weights", "model": config_to_dict(model.config),
            "schedule": dataclasses.asdict(schedule_spec), "info": info}
    ckpt.save(path, tensors, meta)


def load_weights(path) -> tuple[nn.Module, Schedule, dict]:
    """``(model, schedule, meta)`` from a weights file or a training checkpoint (EMA weights), eval mode."""
    tensors, meta = ckpt.load(path)
    if meta.get("kind") not in ("weights", "train_state"):
        raise ValueError(f"{path} holds no denoiser weights (kind {meta.get('kind')!r})")
    for key in ("model", "schedule"):
        if key not in meta:
            raise ValueError(f"{path}: metadata lacks the field {key!r}")
    config = config_from_dict(meta["model"], f"{path}: model")
    spec = ScheduleSpec.from_dict(meta["schedule"], f"{path}: schedule")   # T bounded before building
    ema = ckpt.subset(tensors, "ema")
    _check_shapes_before_building(config, ema, f"weights {path}")
    model = build_model(config)
    ckpt.load_state_into(model, ema, f"weights {path}")
    model.eval().requires_grad_(False)
    return model, spec.build(), meta


def load_pretrained(name: str) -> tuple[nn.Module, Schedule]:
    """A shipped model, ready to sample: ``(model in eval mode with EMA weights, its schedule)``.

    ``name``: ``"digits"`` (unconditional 8x8 digits), ``"digits_cond"`` (class-conditional, null label
    10; see ``minidiff/weights/digits_cond.json`` for the guidance scale the course uses) or ``"toy2d"``
    (two moons). The digits classifier behind FD-digits is :func:`minidiff.metrics.load_classifier`.
    """
    if name not in PRETRAINED:
        raise ValueError(f"name must be one of {PRETRAINED}, got {name!r}")
    model, schedule, _ = load_weights(WEIGHTS_DIR / f"{name}.safetensors")
    return model, schedule


def pretrained_info(name: str) -> dict:
    """The JSON record shipped next to a pretrained model (command, seed, measured figures).
    ``name`` must be one of :data:`PRETRAINED` or ``"classifier"`` (no paths)."""
    if name not in PRETRAINED + ("classifier",):
        raise ValueError(f"name must be one of {PRETRAINED + ('classifier',)}, got {name!r}")
    return json.loads((WEIGHTS_DIR / f"{name}.json").read_text())


# ============================================================================ a whole run
def _param_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


RUN_FILES = ("log.jsonl", "preset.json", "last.safetensors", "ema.safetensors", "ranks.json")


def _is_run_file(name: str) -> bool:
    """A file :func:`run` writes (``ema_<step>.safetensors`` snapshots included)."""
    return name in RUN_FILES or (name.startswith("ema_") and name.endswith(".safetensors")
                                 and name[4:-12].isdigit())


def _prepare_out(out: Path, preset: Preset, resume: bool, overwrite: bool) -> bool:
    """Apply the ``--out`` rule and return whether to resume from ``out/last.safetensors``.

    An empty (or new) folder starts a fresh run. A folder holding ``last.safetensors`` is continued
    with ``resume`` (the preset must match). Any other non-empty folder -- a finished or foreign run
    without ``resume``, or files from elsewhere -- is refused unless ``overwrite``, which first deletes
    the files a run writes (:data:`RUN_FILES`, ``ema_*.safetensors``) so log and checkpoints always
    describe one run; other files are left alone."""
    last = out / "last.safetensors"
    entries = sorted(p.name for p in out.iterdir() if p.name != ckpt.LOCK_NAME) if out.is_dir() else []
    if not entries:
        return False
    if resume and last.is_file():
        return True
    if not overwrite:
        shown = ", ".join(entries[:5]) + (" ..." if len(entries) > 5 else "")
        why = ("it holds no last.safetensors to resume from" if resume else
               "it already holds files (a finished run or files from elsewhere)")
        raise FileExistsError(f"--out {out} is not empty ({shown}) and {why}; pass --resume to continue a run "
                              f"of this preset, --overwrite to replace it, or choose another --out")
    for name in entries:
        p = out / name
        if _is_run_file(name) and (p.is_file() or p.is_symlink()):
            p.unlink()
    return False


def _read_log(logf: Path, upto: int) -> list[str]:
    """The log lines of steps ``1..upto`` from a previous run. Lines that do not parse as a JSON object
    with an integer ``step`` (a line torn by a full disk, foreign text) are dropped with a warning, and
    the steps missing from the log are named (they are re-run only if after the checkpoint)."""
    import warnings

    kept, dropped = {}, 0
    if logf.is_symlink():
        raise OSError(f"{logf} is a symbolic link; refusing to read or write through it")
    for ln in logf.read_text(errors="replace").splitlines():
        if not ln.strip():
            continue
        try:
            d = json.loads(ln)
            step = d.get("step") if isinstance(d, dict) else None
        except ValueError:
            step = None
        if not _c.is_int(step):
            dropped += 1
            continue
        if 1 <= step <= upto:
            kept[step] = ln
    missing = [k for k in range(1, upto + 1) if k not in kept]
    if dropped or missing:
        gap = f"; steps {missing[:5]}{' ...' if len(missing) > 5 else ''} have no log line" if missing else ""
        warnings.warn(f"{logf}: dropped {dropped} unreadable line(s){gap}; resuming from the checkpoint at "
                      f"step {upto}, later steps are re-run", RuntimeWarning, stacklevel=3)
    return [kept[k] for k in sorted(kept)]


def run(preset: Preset, *, out=None, resume: bool = False, progress: bool = True,
        device: torch.device | None = None, save_ema_every: int | None = None,
        overwrite: bool = False) -> Iterator[TrainRecord]:
    """Train ``preset`` end to end, yielding records. With ``out``: a JSONL log (``log.jsonl``), a
    checkpoint ``last.safetensors`` every ``checkpoint_every`` steps and at the end, and the EMA weights
    ``ema.safetensors``. ``resume=True`` continues from ``out/last.safetensors`` if present.
    ``save_ema_every=k`` also keeps EMA snapshots ``ema_<step>.safetensors`` every ``k`` steps (for
    measuring when a run first reaches a quality bar).

    Files: ``out`` is locked for the run (a second run into it raises ``RuntimeError``); a non-empty
    ``out`` that is not a run to resume is refused unless ``overwrite`` (see :func:`_prepare_out`);
    nothing is written through a symbolic link; temporary files of killed saves are removed."""
    if save_ema_every is not None:
        save_ema_every = _c.check_count(save_ema_every, "save_ema_every")
    out = Path(out) if out is not None else None
    world, rank = _world_rank()
    if out is not None and rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        with ckpt.lock_folder(out, "another training run"):
            ckpt.remove_stale_temps(out, owned=_is_run_file)
            resume = _prepare_out(out, preset, resume, overwrite)
            yield from _run(preset, out, resume, progress, device, save_ema_every, world, rank)
    else:
        yield from _run(preset, out, resume, progress, device, save_ema_every, world, rank)


def _run(preset, out, resume, progress, device, save_ema_every, world, rank):
    device = device or (torch.device("cpu") if world == 1 else _local_device())
    state = _fresh_or_resumed_state(preset, out, resume, device)
    x, y = training_data(preset.data, conditional=getattr(preset.model, "num_classes", 0) > 0)
    x, y = x.to(device), (y.to(device) if y is not None else None)
    log = _open_log(out, preset, resume, state.step) if out is not None and rank == 0 else None
    t0 = time.perf_counter()
    try:
        for rec in train_steps(state, x, preset.schedule.build(), preset.train_config(), labels=y,
                               progress=progress):
            if log is not None:
                _record(log, rec, state, preset, out, save_ema_every, time.perf_counter() - t0)
            yield rec
    finally:
        if log is not None:
            log.close()
    if out is not None and rank == 0:
        save_checkpoint(out / "last.safetensors", state, preset)
        save_weights(out / "ema.safetensors", state.ema, preset.schedule, preset=preset.name,
                     steps=state.step, seed=preset.seed)
    if world > 1:
        _check_ranks(state, out, world, rank)


def _fresh_or_resumed_state(preset: Preset, out, resume: bool, device) -> TrainState:
    """A new state seeded by ``preset.seed``, or the one in ``out/last.safetensors`` when resuming
    (whose preset must equal ``preset`` but for ``checkpoint_every``)."""
    torch.manual_seed(preset.seed)
    model = build_model(preset.model).to(device)
    state = TrainState.create(model, lr=preset.lr, weight_decay=preset.weight_decay)
    last = out / "last.safetensors" if out else None
    if resume and last is not None and last.exists():
        state, saved = load_checkpoint(last, state)
        diff = {k for k, v in preset.to_dict().items() if saved.to_dict().get(k) != v} - {"checkpoint_every"}
        if diff:
            raise ValueError(f"cannot resume {last}: preset differs in {sorted(diff)}")
    return state


def _open_log(out: Path, preset: Preset, resume: bool, step: int):
    """``out/log.jsonl`` for appending, holding the previous run's lines up to ``step`` when resuming;
    ``out/preset.json`` written."""
    logf = out / "log.jsonl"
    kept = _read_log(logf, step) if resume and logf.exists() else []
    ckpt.atomic_write_text(logf, "".join(ln + "\n" for ln in kept))
    ckpt.atomic_write_text(out / "preset.json", json.dumps(preset.to_dict(), indent=1, sort_keys=True))
    return ckpt.open_append(logf)


def _record(log, rec: TrainRecord, state: TrainState, preset: Preset, out: Path, save_ema_every, elapsed: float):
    """Log one record; checkpoint every ``checkpoint_every`` steps and at the last; EMA snapshots."""
    log.write(json.dumps({"step": rec.step, "loss": rec.loss, "lr": rec.lr, "time": round(elapsed, 3)}) + "\n")
    log.flush()
    if rec.step % preset.checkpoint_every == 0 or rec.step == preset.steps:
        save_checkpoint(out / "last.safetensors", state, preset)
    if save_ema_every and rec.step % save_ema_every == 0:
        save_weights(out / f"ema_{rec.step:06d}.safetensors", state.ema, preset.schedule, preset=preset.name,
                     steps=rec.step, seed=preset.seed, time_s=round(elapsed, 3))


def _check_ranks(state: TrainState, out, world: int, rank: int) -> None:
    """Gather every rank's parameter digest; rank 0 writes them to ``out/ranks.json``."""
    digest = torch.tensor(list(bytes.fromhex(_param_digest(state.model))), dtype=torch.int64)
    if dist.get_backend() == "nccl":
        digest = digest.cuda()
    gathered = [torch.zeros_like(digest) for _ in range(world)]
    dist.all_gather(gathered, digest)
    if rank == 0 and out is not None:
        hexes = [bytes(int(b) for b in d.cpu().tolist()).hex() for d in gathered]
        ckpt.atomic_write_text(Path(out) / "ranks.json",
                               json.dumps({"world_size": world, "param_sha256": hexes}, indent=1))


# ============================================================================ CLI
def _ranged(kind, low=None, high=None, low_open=False, what="a number"):
    """An argparse ``type`` converting with ``kind`` and checking ``low <= v <= high`` (``low < v``
    with ``low_open``), so a bad value is a usage error naming the option, not a crash later."""
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if kind is float and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"expected a finite {what}, got {text!r}")
        if low is not None and (v <= low if low_open else v < low) or high is not None and v > high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return v
    return parse


_POS_INT = _ranged(int, 1, what="an integer >= 1")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m minidiff.train", description="Train a minidiff denoiser.",
        epilog="OUT rule: a new or empty OUT starts a fresh run; an OUT holding last.safetensors continues "
               "with --resume (same preset). Any other non-empty OUT (a finished run rerun without "
               "--resume, files from elsewhere) is refused unless --overwrite, which deletes the files "
               "a run writes (log.jsonl, preset.json, last/ema*.safetensors, ranks.json) first. OUT is "
               "locked while a run trains in it: a second run into the same OUT stops at once.")
    p.add_argument("--preset", required=True, choices=sorted(PRESETS))
    p.add_argument("--steps", type=_POS_INT, help="total optimizer steps (>= 1)")
    p.add_argument("--batch-size", type=_POS_INT, help="global batch size (>= 1)")
    p.add_argument("--lr", type=_ranged(float, 0.0, low_open=True, what="a learning rate > 0"))
    p.add_argument("--seed", type=_ranged(int, 0, what="an integer >= 0"))
    p.add_argument("--ema-decay", type=_ranged(float, 0.0, 1.0, what="a decay in [0, 1]"))
    p.add_argument("--warmup", type=_ranged(int, 0, what="an integer >= 0"))
    p.add_argument("--checkpoint-every", type=_POS_INT, help="save OUT/last.safetensors every N steps (>= 1)")
    p.add_argument("--out", help="run folder (default runs/<preset>); see the OUT rule below")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors if present")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run files in a non-empty OUT instead of refusing")
    p.add_argument("--threads", type=_POS_INT, help="torch.set_num_threads (>= 1; default: torch's default)")
    p.add_argument("--save-ema-every", type=_POS_INT, help="also keep EMA snapshots every N steps (>= 1)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {k: getattr(args, k) for k in ("steps", "batch_size", "lr", "seed", "ema_decay", "warmup",
                                               "checkpoint_every") if getattr(args, k) is not None}
    preset = dataclasses.replace(PRESETS[args.preset], **overrides)
    device = init_distributed()
    world, rank = _world_rank()
    out = Path(args.out or f"runs/{preset.name}")
    t0 = time.perf_counter()
    last = None
    for last in run(preset, out=out, resume=args.resume, progress=not args.no_progress, device=device,
                    save_ema_every=args.save_ema_every, overwrite=args.overwrite):
        pass
    if rank == 0:
        msg = f"{preset.name}: step {last.step if last else preset.steps}" + (f", loss {last.loss:.4f}" if last else "")
        print(f"{msg}, {time.perf_counter() - t0:.1f} s, {world} process(es); weights in {out / 'ema.safetensors'}",
              file=sys.stderr)
    _shutdown_distributed(world)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
