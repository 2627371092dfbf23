"""Training: the denoising loss, EMA weights, checkpoints, presets, a CLI and multi-process training.

The loss is Ho et al. 2020, eq. 14 ("L_simple"): draw ``t_index ~ U{0..T-1}``, ``eps ~ N(0, I)``,
``x_t = sqrt(ab) x_0 + sqrt(1-ab) eps`` and regress the network on ``eps`` (or on ``v`` / ``x_0`` when the
model's ``config.prediction`` says so; Salimans & Ho 2022). Classifier-free guidance training replaces
the label by the null label with probability ``p_uncond`` (Ho & Salimans 2022, Alg. 1).

Training is a generator of frozen :class:`TrainRecord` (step, loss, lr)::

    state = TrainState.create(build_model(UNetConfig()), lr=2e-3)
    for rec in train_steps(state, x, schedule, steps=500, batch_size=128, lr=2e-3, seed=0):
        losses.append(rec.loss)            # plot live in a notebook

Determinism: every random draw of step ``s`` (batch indices, ``t_index``, noise, label dropout) comes
from a generator seeded by ``(seed, s)``, so a run resumed from a checkpoint continues exactly as an
uninterrupted one would (same thread count). Under ``torchrun`` each of the ``W`` processes draws the
same global batch and trains on its ``1/W`` slice with DistributedDataParallel, so the run matches a
single process with the same global batch up to floating-point summation order.

CLI::

    python -m minidiff.train --preset digits [--steps N --batch-size B --lr LR --seed S --out DIR --resume]
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
import torch.nn as nn

from . import checkpoint as ckpt
from . import forward
from .schedule import Schedule
from .unet import MLPConfig, UNetConfig, build_model, config_from_dict, config_to_dict

__all__ = [
    "TrainRecord", "TrainState", "ScheduleSpec", "Preset", "PRESETS", "train_steps", "run", "lr_at",
    "diffusion_loss", "training_data", "save_checkpoint", "load_checkpoint", "save_weights",
    "load_weights", "load_pretrained", "PRETRAINED", "main", "DDPMObjective", "OBJECTIVES", "get_objective",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
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

    def build(self) -> Schedule:
        ctor = {"linear": Schedule.linear, "cosine": Schedule.cosine, "sigmoid": Schedule.sigmoid}.get(self.kind)
        if ctor is None:
            raise ValueError(f"schedule kind must be linear, cosine or sigmoid, got {self.kind!r}")
        return ctor(T=self.T)


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

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["model"] = config_to_dict(self.model)
        d["schedule"] = dataclasses.asdict(self.schedule)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preset":
        d = dict(d)
        d["model"] = config_from_dict(d["model"])
        d["schedule"] = ScheduleSpec(**d["schedule"])
        names = {f.name for f in dataclasses.fields(cls)}
        if set(d) - names:
            raise ValueError(f"unknown preset fields {sorted(set(d) - names)}")
        return cls(**d)


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

    def draw(self, g: torch.Generator, batch_size: int, shape: tuple[int, ...], schedule: Schedule):
        t_index = torch.randint(0, schedule.T, (batch_size,), generator=g)        # (B,)
        noise = torch.randn((batch_size,) + tuple(shape), generator=g)           # (B, ...)
        return t_index, noise

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


def _dist():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def train_steps(state: TrainState, data: torch.Tensor, schedule: Schedule, *, steps: int,
                batch_size: int = 128, lr: float = 2e-3, seed: int = 0, labels: torch.Tensor | None = None,
                warmup: int = 0, lr_min_frac: float = 1.0, ema_decay: float = 0.999, grad_clip: float | None = 1.0,
                p_uncond: float = 0.1, progress: bool = False, objective="ddpm") -> Iterator[TrainRecord]:
    """Train ``state`` from ``state.step`` up to ``steps`` total steps, yielding one record per step.

    ``data``: ``(N, ...)`` training examples (on the model's device); ``labels``: ``(N,)`` for a
    class-conditional model (replaced by the null label with probability ``p_uncond``).
    EMA: ``ema = d ema + (1 - d) params`` with ``d = min(ema_decay, (1 + s) / (10 + s))``.
    Under ``torch.distributed`` the model is wrapped in DistributedDataParallel and each rank trains on
    its slice of the same global batch (``batch_size`` must be divisible by the world size).
    ``objective``: a name in :data:`OBJECTIVES` or an object with ``draw``/``loss`` (see :class:`DDPMObjective`).
    """
    from tqdm.auto import tqdm

    objective = get_objective(objective)
    world, rank = _dist()
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} must be divisible by the number of processes {world}")
    K = getattr(state.model.config, "num_classes", 0)
    if (labels is not None) != (K > 0):
        raise ValueError("pass labels exactly when the model is class-conditional (num_classes > 0)")
    net = state.model
    if world > 1:
        if state._ddp is None:
            from torch.nn.parallel import DistributedDataParallel as DDP

            dev = next(state.model.parameters()).device
            state._ddp = DDP(state.model, device_ids=[dev.index] if dev.type == "cuda" else None)
        net = state._ddp
    local = slice(rank * batch_size // world, (rank + 1) * batch_size // world)
    device = data.device
    N = data.shape[0]
    state.model.train()
    bar = tqdm(total=steps, initial=state.step, disable=not progress or rank != 0, desc="train", leave=False)
    try:
        while state.step < steps:
            s = state.step
            g = step_generator(seed, s)
            idx = torch.randint(0, N, (batch_size,), generator=g)[local]
            time_draw, noise = (d[local] for d in objective.draw(g, batch_size, tuple(data.shape[1:]), schedule))
            drop = torch.rand(batch_size, generator=g)[local] < p_uncond
            x0 = data[idx.to(device)]
            y = None
            if labels is not None:
                y = torch.where(drop.to(device), torch.full_like(labels[idx.to(device)], K), labels[idx.to(device)])
            cur_lr = lr_at(s, lr, warmup, steps, lr_min_frac)
            for grp in state.optimizer.param_groups:
                grp["lr"] = cur_lr
            loss = objective.loss(net, x0, time_draw.to(device), noise.to(device), y, schedule)
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(state.model.parameters(), grad_clip)
            state.optimizer.step()
            _ema_update(state.ema, state.model, min(ema_decay, (1 + s) / (10 + s)))
            state.step = s + 1
            value = loss.detach()
            if world > 1:
                import torch.distributed as dist

                dist.all_reduce(value)
                value = value / world
            rec = TrainRecord(step=state.step, loss=float(value), lr=cur_lr)
            bar.update(1)
            if state.step % 25 == 0:
                bar.set_postfix(loss=f"{rec.loss:.4f}")
            yield rec
    finally:
        bar.close()


# ============================================================================ checkpoints
def save_checkpoint(path, state: TrainState, preset: Preset) -> None:
    """Full training state (model, EMA, optimizer, torch RNG) plus the preset, atomically."""
    tensors = {f"model.{k}": v for k, v in state.model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in state.ema.state_dict().items()})
    opt_t, groups = ckpt.optimizer_state_to_tensors(state.optimizer)
    tensors.update({f"optim.{k}": v for k, v in opt_t.items()})
    tensors["rng.torch"] = torch.get_rng_state()
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
    preset = Preset.from_dict(meta["preset"])
    if state is None:
        state = TrainState.create(build_model(preset.model), lr=preset.lr, weight_decay=preset.weight_decay)
    ckpt.load_state_into(state.model, ckpt.subset(tensors, "model"), f"checkpoint {path} (model)")
    ckpt.load_state_into(state.ema, ckpt.subset(tensors, "ema"), f"checkpoint {path} (ema)")
    ckpt.optimizer_state_from_tensors(state.optimizer, ckpt.subset(tensors, "optim"),
                                      meta["optimizer"]["param_groups"])
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    state.step = int(meta["step"])
    return state, preset


def save_weights(path, model: nn.Module, schedule_spec: ScheduleSpec, **info) -> None:
    """Weights only (the EMA network to ship), with its config and schedule, atomically."""
    tensors = {f"ema.{k}": v for k, v in model.state_dict().items()}
    meta = {"kind": "weights", "model": config_to_dict(model.config),
            "schedule": dataclasses.asdict(schedule_spec), "info": info}
    ckpt.save(path, tensors, meta)


def load_weights(path) -> tuple[nn.Module, Schedule, dict]:
    """``(model, schedule, meta)`` from a weights file or a training checkpoint (EMA weights), eval mode."""
    tensors, meta = ckpt.load(path)
    if meta.get("kind") not in ("weights", "train_state"):
        raise ValueError(f"{path} holds no denoiser weights (kind {meta.get('kind')!r})")
    model = build_model(config_from_dict(meta["model"]))
    ckpt.load_state_into(model, ckpt.subset(tensors, "ema"), f"weights {path}")
    model.eval().requires_grad_(False)
    return model, ScheduleSpec(**meta["schedule"]).build(), meta


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
    """The JSON record shipped next to a pretrained model (command, seed, measured figures)."""
    return json.loads((WEIGHTS_DIR / f"{name}.json").read_text())


# ============================================================================ a whole run
def _init_distributed() -> torch.device:
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if torch.cuda.is_available():
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
        return dev
    return torch.device("cpu")


def _param_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def run(preset: Preset, *, out=None, resume: bool = False, progress: bool = True,
        device: torch.device | None = None, save_ema_every: int | None = None) -> Iterator[TrainRecord]:
    """Train ``preset`` end to end, yielding records. With ``out``: a JSONL log (``log.jsonl``), a
    checkpoint ``last.safetensors`` every ``checkpoint_every`` steps and at the end, and the EMA weights
    ``ema.safetensors``. ``resume=True`` continues from ``out/last.safetensors`` if present.
    ``save_ema_every=k`` also keeps EMA snapshots ``ema_<step>.safetensors`` every ``k`` steps (for
    measuring when a run first reaches a quality bar)."""
    world, rank = _dist()
    device = device or (torch.device("cpu") if world == 1 else next_device())
    out = Path(out) if out is not None else None
    torch.manual_seed(preset.seed)
    model = build_model(preset.model).to(device)
    state = TrainState.create(model, lr=preset.lr, weight_decay=preset.weight_decay)
    schedule = preset.schedule.build()
    last = out / "last.safetensors" if out else None
    if resume and last is not None and last.exists():
        state, saved = load_checkpoint(last, state)
        diff = {k for k, v in preset.to_dict().items() if saved.to_dict().get(k) != v} - {"checkpoint_every"}
        if diff:
            raise ValueError(f"cannot resume {last}: preset differs in {sorted(diff)}")
    x, y = training_data(preset.data, conditional=getattr(preset.model, "num_classes", 0) > 0)
    x, y = x.to(device), (y.to(device) if y is not None else None)
    log = None
    if out is not None and rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        logf = out / "log.jsonl"
        kept = []
        if resume and logf.exists():
            kept = [ln for ln in logf.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= state.step]
        logf.write_text("".join(ln + "\n" for ln in kept))
        log = open(logf, "a")
        (out / "preset.json").write_text(json.dumps(preset.to_dict(), indent=1, sort_keys=True))
    t0 = time.perf_counter()
    try:
        for rec in train_steps(state, x, schedule, steps=preset.steps, batch_size=preset.batch_size, lr=preset.lr,
                               seed=preset.seed, labels=y, warmup=preset.warmup, lr_min_frac=preset.lr_min_frac,
                               ema_decay=preset.ema_decay, grad_clip=preset.grad_clip, p_uncond=preset.p_uncond,
                               progress=progress, objective=preset.objective):
            if log is not None:
                log.write(json.dumps({"step": rec.step, "loss": rec.loss, "lr": rec.lr,
                                      "time": round(time.perf_counter() - t0, 3)}) + "\n")
                log.flush()
                if rec.step % preset.checkpoint_every == 0 or rec.step == preset.steps:
                    save_checkpoint(last, state, preset)
                if save_ema_every and rec.step % save_ema_every == 0:
                    save_weights(out / f"ema_{rec.step:06d}.safetensors", state.ema, preset.schedule,
                                 preset=preset.name, steps=rec.step, seed=preset.seed,
                                 time_s=round(time.perf_counter() - t0, 3))
            yield rec
    finally:
        if log is not None:
            log.close()
    if out is not None and rank == 0:
        save_checkpoint(last, state, preset)
        save_weights(out / "ema.safetensors", state.ema, preset.schedule, preset=preset.name,
                     steps=state.step, seed=preset.seed)
    if world > 1:
        _check_ranks(state, out, world, rank)


def next_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _check_ranks(state: TrainState, out, world: int, rank: int) -> None:
    """Gather every rank's parameter digest; rank 0 writes them to ``out/ranks.json``."""
    import torch.distributed as dist

    digest = torch.tensor(list(bytes.fromhex(_param_digest(state.model))), dtype=torch.int64)
    if dist.get_backend() == "nccl":
        digest = digest.cuda()
    gathered = [torch.zeros_like(digest) for _ in range(world)]
    dist.all_gather(gathered, digest)
    if rank == 0 and out is not None:
        hexes = [bytes(int(b) for b in d.cpu().tolist()).hex() for d in gathered]
        (Path(out) / "ranks.json").write_text(json.dumps({"world_size": world, "param_sha256": hexes}, indent=1))


# ============================================================================ CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m minidiff.train", description="Train a minidiff denoiser.")
    p.add_argument("--preset", required=True, choices=sorted(PRESETS))
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--ema-decay", type=float)
    p.add_argument("--warmup", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--out", help="run folder (default runs/<preset>)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors if present")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--save-ema-every", type=int, help="also keep EMA snapshots every N steps")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {k: getattr(args, k) for k in ("steps", "batch_size", "lr", "seed", "ema_decay", "warmup",
                                               "checkpoint_every") if getattr(args, k) is not None}
    preset = dataclasses.replace(PRESETS[args.preset], **overrides)
    device = _init_distributed()
    world, rank = _dist()
    out = Path(args.out or f"runs/{preset.name}")
    t0 = time.perf_counter()
    last = None
    for last in run(preset, out=out, resume=args.resume, progress=not args.no_progress, device=device,
                    save_ema_every=args.save_ema_every):
        pass
    if rank == 0:
        msg = f"{preset.name}: step {last.step if last else preset.steps}" + (f", loss {last.loss:.4f}" if last else "")
        print(f"{msg}, {time.perf_counter() - t0:.1f} s, {world} process(es); weights in {out / 'ema.safetensors'}",
              file=sys.stderr)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
