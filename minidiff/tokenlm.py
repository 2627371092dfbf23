"""A small bidirectional token transformer for masked diffusion, its weights, and its training run.

The denoiser of a masked-diffusion language model maps a partly masked sequence to logits of the
clean token at every position (Sahoo et al. 2024; Shi et al. 2024; the encoder of Vaswani et al.
2017 / Devlin et al. 2019 without causal masking). It takes no time input: for the absorbing
kernel ``p(x_0 | x_t)`` depends on ``x_t`` only (Ou et al. 2024, Thm. 1).

Training reuses :func:`minidiff.train.train_steps` (the shared loop, EMA and per-step generators)
with :class:`minidiff.discrete.MaskedDiffusionObjective`; weights are safetensors with JSON metadata
(:mod:`minidiff.checkpoint`)::

    python -m minidiff.tokenlm --threads 2 --out runs/arith     # trains ARITH, writes ema.safetensors
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from . import _checks as _c
from . import checkpoint as ckpt

__all__ = ["TokenTransformerConfig", "TokenTransformer", "LMPreset", "ARITH", "save_lm", "load_lm",
           "load_pretrained_lm", "new_state", "lm_schedule", "train_lm", "main"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class TokenTransformerConfig:
    """``vocab_size`` input ids (data tokens + mask), ``out_size`` output classes (data tokens),
    sequences of exactly ``seq_len`` tokens; pre-norm encoder blocks of width ``d_model``."""

    vocab_size: int = 13
    out_size: int = 12
    seq_len: int = 9
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 3
    mlp_ratio: int = 4

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            _c.check_count(v, f.name)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.out_size > self.vocab_size:
            raise ValueError("out_size must not exceed vocab_size")


class TokenTransformer(nn.Module):
    """``forward(x) -> logits``: ``x`` int ``(B, seq_len)`` in ``[0, vocab_size)``, logits
    ``(B, seq_len, out_size)``. Token + learned position embeddings, ``n_layers`` pre-norm encoder
    blocks (full attention), a final LayerNorm and a linear read-out."""

    def __init__(self, config: TokenTransformerConfig):
        super().__init__()
        self.config = c = config
        self.tok = nn.Embedding(c.vocab_size, c.d_model)
        self.pos = nn.Parameter(torch.randn(c.seq_len, c.d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(c.d_model, c.n_heads, c.mlp_ratio * c.d_model, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, c.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.out_size)

    def forward(self, x, t_index=None, y=None):
        c = self.config
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != c.seq_len or x.is_floating_point():
            raise ValueError(f"x must be an integer tensor (B, {c.seq_len}), got "
                             f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= c.vocab_size):
            raise ValueError(f"x must hold token ids in [0, {c.vocab_size - 1}]")
        h = self.tok(x.long()) + self.pos
        return self.head(self.norm(self.blocks(h)))

    @torch.no_grad()
    def probs(self, x) -> torch.Tensor:
        """``p(x_0^l | x)`` over the data tokens, float32 ``(B, L, out_size)`` (a sampler's denoiser)."""
        return torch.softmax(self(x).float(), -1)


@dataclass(frozen=True)
class LMPreset:
    """A masked-diffusion training run: data name for :func:`minidiff.train.training_data`, model,
    absorbing schedule ``T`` (``alpha_bar`` linear), optimisation."""

    name: str = "arith"
    data: str = "arith"
    model: TokenTransformerConfig = TokenTransformerConfig()
    T: int = 1000
    steps: int = 5000
    batch_size: int = 128
    lr: float = 1.5e-3
    warmup: int = 200
    lr_min_frac: float = 0.05
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    weight_decay: float = 0.01
    seed: int = 0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LMPreset":
        d = dict(d)
        d["model"] = TokenTransformerConfig(**d["model"])
        return cls(**d)


ARITH = LMPreset()


def save_lm(path, model: TokenTransformer, preset: LMPreset, **info) -> None:
    """The (EMA) network with its config and preset as JSON metadata, atomically (no pickle)."""
    tensors = {f"ema.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"kind": "token_lm", "model": dataclasses.asdict(model.config), "preset": preset.to_dict(),
            "info": info}
    ckpt.save(path, tensors, meta)


def load_lm(path) -> tuple[TokenTransformer, dict]:
    """``(model in eval mode, meta)`` from a :func:`save_lm` file; ValueError for any other file."""
    tensors, meta = ckpt.load(path)
    if meta.get("kind") != "token_lm":
        raise ValueError(f"{path} is a minidiff {meta.get('kind')!r} file, not token-LM weights")
    model = TokenTransformer(TokenTransformerConfig(**meta["model"]))
    ckpt.load_state_into(model, ckpt.subset(tensors, "ema"), f"weights {path}")
    return model.eval().requires_grad_(False), meta


def load_pretrained_lm(name: str = "arith") -> TokenTransformer:
    """The shipped masked-diffusion model (``"arith"``: addition statements, notebook 12)."""
    if name != "arith":
        raise ValueError(f"name must be 'arith', got {name!r}")
    return load_lm(WEIGHTS_DIR / f"{name}.safetensors")[0]


def new_state(preset: LMPreset = ARITH):
    """A fresh :class:`minidiff.train.TrainState` for ``preset`` (weights initialised from its seed)."""
    from .train import TrainState

    torch.manual_seed(preset.seed)
    return TrainState.create(TokenTransformer(preset.model), lr=preset.lr, weight_decay=preset.weight_decay)


def lm_schedule(preset: LMPreset = ARITH):
    """The absorbing :class:`minidiff.discrete.DiscreteSchedule` the preset trains with."""
    from .discrete import DiscreteSchedule

    return DiscreteSchedule.linear(preset.T, preset.model.vocab_size, "absorbing")


def train_lm(state, preset: LMPreset = ARITH, *, steps: int | None = None, progress: bool = False):
    """Train ``state`` with the shared loop (:func:`minidiff.train.train_steps`, objective
    ``"masked"``) on the preset's data up to ``steps`` (default ``preset.steps``) total steps,
    yielding :class:`minidiff.train.TrainRecord`."""
    from .train import train_steps, training_data

    x, _ = training_data(preset.data)
    total = steps if steps is not None else preset.steps
    return train_steps(state, x, lm_schedule(preset), steps=total, batch_size=preset.batch_size, lr=preset.lr,
                       seed=preset.seed, warmup=preset.warmup, lr_min_frac=preset.lr_min_frac,
                       ema_decay=preset.ema_decay, grad_clip=preset.grad_clip, p_uncond=0.0,
                       progress=progress, objective="masked")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m minidiff.tokenlm", description="Train the masked-diffusion LM.")
    p.add_argument("--steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--out", default="runs/arith")
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--lr", type=float)
    p.add_argument("--init", help="start from these token-LM weights (a second stage; recorded in the output)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = ARITH if args.seed is None else dataclasses.replace(ARITH, seed=args.seed)
    if args.steps is not None:
        preset = dataclasses.replace(preset, steps=args.steps)
    if args.lr is not None:
        preset = dataclasses.replace(preset, lr=args.lr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    state = new_state(preset)
    if args.init:
        init, _ = load_lm(args.init)
        if init.config != preset.model:
            raise ValueError(f"--init {args.init} holds a {init.config}, the preset trains {preset.model}")
        state.model.load_state_dict(init.state_dict())
        state.ema.load_state_dict(init.state_dict())
    rec = None
    with open(out / "log.jsonl", "w") as log:
        for rec in train_lm(state, preset):
            log.write(json.dumps({"step": rec.step, "loss": rec.loss, "lr": rec.lr,
                                  "time": round(time.perf_counter() - t0, 3)}) + "\n")
            log.flush()
            if rec.step % args.save_every == 0:
                save_lm(out / f"ema_{rec.step:06d}.safetensors", state.ema, preset, steps=rec.step,
                        seed=preset.seed, time_s=round(time.perf_counter() - t0, 1))
    elapsed = time.perf_counter() - t0
    save_lm(out / "ema.safetensors", state.ema, preset, steps=state.step, seed=preset.seed,
            time_s=round(elapsed, 1), command="python -m minidiff.tokenlm " + " ".join(argv or sys.argv[1:]))
    print(f"{preset.name}: {state.step} steps, loss {rec.loss:.4f}, {elapsed:.1f} s; weights in "
          f"{out / 'ema.safetensors'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
