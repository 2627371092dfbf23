"""Denoising networks: a small U-Net for 8x8 / 16x16 single-channel images and an MLP for 2-D points.

Both share one interface (Ho et al. 2020, Sec. 3.2 and App. B; Dhariwal & Nichol 2021 for the blocks)::

    pred = model(x, t_index, y=None)      # x (B, ...) float, t_index (B,) int64, y (B,) int64 or None

``pred`` is the raw network output, of the kind named by ``model.config.prediction`` (``"eps"``,
``"v"`` or ``"x0"``). :func:`as_eps_model` turns any of them into the ``(x, t_index) -> eps`` function
the samplers take, with optional classifier-free guidance (Ho & Salimans 2022).

Class conditioning: a model built with ``num_classes = K > 0`` embeds labels ``0..K-1`` and a *null*
label ``K`` meaning "no label" (used for label dropout during training and for the unconditional
branch of guidance). ``y=None`` means "all null".
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks as _c
from . import forward
from .schedule import Schedule

__all__ = [
    "UNetConfig", "MLPConfig", "UNet", "MLPDenoiser", "build_model", "config_to_dict", "config_from_dict",
    "timestep_embedding", "as_eps_model", "count_parameters", "PREDICTIONS",
]

PREDICTIONS = ("eps", "v", "x0", "velocity")  # velocity: flow matching (minidiff.flow), not an eps-model


def _check_prediction(p: str) -> None:
    if p not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {p!r}")


@dataclass(frozen=True)
class UNetConfig:
    """A small U-Net. Defaults suit 8x8 digits: levels 8x8 -> 4x4, attention at 4x4.

    ``channel_mults[i] * base_channels`` channels at level ``i``; each level after the first halves the
    resolution. Self-attention runs at the lowest resolution (in its residual blocks and the middle).
    """

    image_size: int = 8
    in_channels: int = 1
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 2
    attn_heads: int = 4
    groups: int = 8
    dropout: float = 0.0
    num_classes: int = 0          # 0: unconditional; K > 0: labels 0..K-1 plus the null label K
    prediction: str = "eps"

    def __post_init__(self):
        _check_prediction(self.prediction)
        for name in ("image_size", "in_channels", "base_channels", "num_res_blocks", "attn_heads", "groups"):
            _c.check_count(getattr(self, name), f"UNetConfig.{name}")
        _c.check_count(self.num_classes, "UNetConfig.num_classes", low=0)
        if not isinstance(self.channel_mults, (tuple, list)) or not self.channel_mults:
            raise ValueError(f"UNetConfig.channel_mults must be a non-empty tuple of integers >= 1, "
                             f"got {self.channel_mults!r}")
        mults = tuple(_c.check_count(m, "UNetConfig.channel_mults entries") for m in self.channel_mults)
        object.__setattr__(self, "channel_mults", mults)
        if not 0.0 <= _c.check_real(self.dropout, "UNetConfig.dropout") < 1.0:
            raise ValueError(f"UNetConfig.dropout must lie in [0, 1), got {self.dropout}")
        down = 2 ** (len(self.channel_mults) - 1)
        if self.image_size % down:
            raise ValueError(f"image_size {self.image_size} must be divisible by 2^(levels-1) = {down}")
        for m in self.channel_mults:
            if (m * self.base_channels) % self.groups or (m * self.base_channels) % self.attn_heads:
                raise ValueError("every level's channel count must be divisible by groups and attn_heads")
        if self.num_classes < 0:
            raise ValueError("num_classes must be >= 0")


@dataclass(frozen=True)
class MLPConfig:
    """A residual MLP denoiser for ``dim``-dimensional points (2-D toys, Gaussian mixtures)."""

    dim: int = 2
    hidden: int = 128
    depth: int = 3
    num_classes: int = 0
    prediction: str = "eps"

    def __post_init__(self):
        _check_prediction(self.prediction)
        for name in ("dim", "hidden", "depth"):
            _c.check_count(getattr(self, name), f"MLPConfig.{name}")
        _c.check_count(self.num_classes, "MLPConfig.num_classes", low=0)


# ---------------------------------------------------------------------------- building blocks
def timestep_embedding(t_index: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer ``t_index`` (B,) -> (B, dim) (Vaswani et al. 2017, Sec. 3.5;
    Ho et al. 2020, App. B): ``[cos(t w_k), sin(t w_k)]`` with ``w_k = max_period^(-k / (dim/2))``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t_index.device) / half)
    args = t_index.to(torch.float32)[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


class _TimeLabelEmbedding(nn.Module):
    """``MLP(sinusoidal(t_index)) + Embedding(y)`` -> (B, emb_dim)."""

    def __init__(self, freq_dim: int, emb_dim: int, num_classes: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.num_classes = num_classes
        self.label = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None

    def forward(self, t_index, y):
        emb = self.mlp(timestep_embedding(t_index, self.freq_dim))
        if self.label is not None:
            if y is None:
                y = torch.full_like(t_index, self.num_classes)
            emb = emb + self.label(y)
        elif y is not None:
            raise ValueError("this model is unconditional (num_classes=0); pass y=None")
        return emb


class ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv, add the (time, label) embedding, GroupNorm-SiLU-Dropout-Conv, plus skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, emb):  # x (B, C, H, W), emb (B, E)
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the ``H*W`` positions, pre-GroupNorm, residual."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x):  # (B, C, H, W)
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        # (B, heads, HW, C/heads)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(B, C, H, W))


class _Level(nn.Module):
    def __init__(self, res: nn.Module, attn: nn.Module | None):
        super().__init__()
        self.res = res
        self.attn = attn if attn is not None else nn.Identity()


class UNet(nn.Module):
    """The DDPM U-Net (Ho et al. 2020, App. B), shrunk for 8x8 / 16x16 digits.

    ``forward(x (B, C, H, W), t_index (B,) int64, y (B,) int64 | None) -> (B, C, H, W)``.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        ch = [c.base_channels * m for m in c.channel_mults]
        emb_dim = 4 * c.base_channels
        self.embed = _TimeLabelEmbedding(c.base_channels, emb_dim, c.num_classes)
        self.conv_in = nn.Conv2d(c.in_channels, ch[0], 3, padding=1)
        last = len(ch) - 1

        def block(c_in, c_out, level):
            attn = SelfAttention(c_out, c.attn_heads, c.groups) if level == last else None
            return _Level(ResBlock(c_in, c_out, emb_dim, c.groups, c.dropout), attn)

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, cur = [ch[0]], ch[0]
        for i, co in enumerate(ch):
            for _ in range(c.num_res_blocks):
                self.down.append(block(cur, co, i))
                cur = co
                skips.append(cur)
            if i < last:
                self.downsample.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                skips.append(cur)
        self.mid1 = ResBlock(cur, cur, emb_dim, c.groups, c.dropout)
        self.mid_attn = SelfAttention(cur, c.attn_heads, c.groups)
        self.mid2 = ResBlock(cur, cur, emb_dim, c.groups, c.dropout)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(ch))):
            for _ in range(c.num_res_blocks + 1):
                self.up.append(block(cur + skips.pop(), ch[i], i))
                cur = ch[i]
            if i > 0:
                self.upsample.append(nn.Conv2d(cur, cur, 3, padding=1))
        self.norm_out = nn.GroupNorm(c.groups, cur)
        self.conv_out = nn.Conv2d(cur, c.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x, t_index, y=None):
        c = self.config
        if x.ndim != 4 or x.shape[1] != c.in_channels or x.shape[-1] != c.image_size or x.shape[-2] != c.image_size:
            raise ValueError(f"x must be (B, {c.in_channels}, {c.image_size}, {c.image_size}), got {tuple(x.shape)}")
        emb = self.embed(_t_index(t_index, x), _y(y, x, c.num_classes))  # (B, E)
        h = self.conv_in(x)
        hs = [h]
        blocks, down = iter(self.down), iter(self.downsample)
        for i in range(len(c.channel_mults)):
            for _ in range(c.num_res_blocks):
                lvl = next(blocks)
                h = lvl.attn(lvl.res(h, emb))
                hs.append(h)
            if i < len(c.channel_mults) - 1:
                h = next(down)(h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        blocks, up = iter(self.up), iter(self.upsample)
        for i in reversed(range(len(c.channel_mults))):
            for _ in range(c.num_res_blocks + 1):
                lvl = next(blocks)
                h = lvl.attn(lvl.res(torch.cat([h, hs.pop()], 1), emb))
            if i > 0:
                h = next(up)(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class MLPDenoiser(nn.Module):
    """Residual MLP for points: ``forward(x (B, dim), t_index (B,), y (B,) | None) -> (B, dim)``."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = c = config
        self.embed = _TimeLabelEmbedding(c.hidden, c.hidden, c.num_classes)
        self.inp = nn.Linear(c.dim, c.hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(c.hidden), nn.Linear(c.hidden, 2 * c.hidden), nn.SiLU(),
                          nn.Linear(2 * c.hidden, c.hidden)) for _ in range(c.depth))
        # no normalisation before the output: the residual stream keeps a linear path from x, so the
        # net can return eps ~ x_t for far-out points at high noise (a final LayerNorm would bound |eps|)
        self.out = nn.Linear(c.hidden, c.dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x, t_index, y=None):
        c = self.config
        if x.ndim != 2 or x.shape[1] != c.dim:
            raise ValueError(f"x must be (B, {c.dim}), got {tuple(x.shape)}")
        emb = self.embed(_t_index(t_index, x), _y(y, x, c.num_classes))
        h = self.inp(x) + emb
        for blk in self.blocks:
            h = h + blk(h + emb)
        return self.out(h)


def _t_index(t_index, x):
    """``t_index`` as a (B,) int64 tensor on x's device (an int broadcasts)."""
    return _c.t_index_vector(t_index, x.shape[0], device=x.device)


def _y(y, x, num_classes):
    if y is None:
        return None
    y = torch.as_tensor(y, device=x.device)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"y must hold integer class labels, got {y.dtype}")  # y=1.7 is not class 1
    y = y.to(torch.int64).reshape(-1)
    if y.numel() == 1 and x.shape[0] != 1:
        y = y.expand(x.shape[0])
    if y.numel() != x.shape[0]:
        raise ValueError(f"y must have one label per sample ({x.shape[0]}), got {y.numel()}")
    if num_classes and (int(y.min()) < 0 or int(y.max()) > num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}] ({num_classes} = no label)")
    return y


# ---------------------------------------------------------------------------- configs <-> JSON
_KINDS = {"unet": (UNetConfig, UNet), "mlp": (MLPConfig, MLPDenoiser)}


def build_model(config) -> nn.Module:
    """The network for a :class:`UNetConfig` or :class:`MLPConfig`."""
    for cfg_cls, model_cls in _KINDS.values():
        if type(config) is cfg_cls:
            return model_cls(config)
    raise TypeError(f"config must be one of {[c.__name__ for c, _ in _KINDS.values()]}, got {type(config).__name__}")


def config_to_dict(config) -> dict:
    """A JSON-able dict ``{"kind": "unet"|"mlp", **fields}``."""
    kind = next((k for k, (cfg_cls, _) in _KINDS.items() if type(config) is cfg_cls), None)
    if kind is None:
        raise TypeError(f"not a model config: {type(config).__name__}")
    d = dataclasses.asdict(config)
    d = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
    return {"kind": kind, **d}


def config_from_dict(d: dict, what: str = "model config"):
    """Inverse of :func:`config_to_dict`. Every field is required and type-checked (a missing
    ``prediction`` must not load a v-model as eps); unknown kinds or fields are a ``ValueError``
    naming ``what`` (e.g. the file) and the key."""
    if not isinstance(d, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(d).__name__}")
    if d.get("kind") not in _KINDS:
        raise ValueError(f"{what}: field 'kind' must be one of {sorted(_KINDS)}, got {d.get('kind')!r}")
    cfg_cls = _KINDS[d["kind"]][0]
    kw = _c.fields_from_dict(cfg_cls, {k: v for k, v in d.items() if k != "kind"}, f"{what} ({d['kind']})")
    try:
        return cfg_cls(**kw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: {e}") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------- eps for samplers
def as_eps_model(model: nn.Module, schedule: Schedule, y=None, guidance_scale: float | None = None):
    """Wrap ``model`` as ``eps_fn(x, t_index) -> eps`` for the samplers, whatever it predicts.

    The raw output is converted with :func:`minidiff.forward.convert` from ``model.config.prediction``.
    ``y``: an int or ``(B,)`` labels for a class-conditional model (``None``: unconditional / null label).
    ``guidance_scale = w``: classifier-free guidance (Ho & Salimans 2022, eq. 6)
    ``eps = (1 + w) eps(x, y) - w eps(x, null)``; ``w = 0`` is plain conditional sampling.

    Gradients are off (``torch.no_grad``) unless ``x.requires_grad`` (as in the likelihood's trace).
    """
    config = model.config
    K = getattr(config, "num_classes", 0)
    if y is not None and K == 0:
        raise ValueError("y was given but the model is unconditional (num_classes=0)")
    if guidance_scale is not None and y is None:
        raise ValueError("guidance_scale needs labels y")

    def eps_fn(x, t_index):
        t_index = _t_index(t_index, x)
        ctx = torch.enable_grad() if x.requires_grad else torch.no_grad()
        with ctx:
            if guidance_scale is None or guidance_scale == 0:
                pred = model(x, t_index, None if y is None else _y(y, x, K))
            else:
                yc = _y(y, x, K)
                both = model(torch.cat([x, x]), torch.cat([t_index, t_index]), torch.cat([yc, torch.full_like(yc, K)]))
                cond, uncond = both.chunk(2)
                pred = (1 + guidance_scale) * cond - guidance_scale * uncond
            alpha_bar = schedule.at("alpha_bar", t_index.cpu().numpy(), x)
            return forward.convert(pred, x, alpha_bar, source=config.prediction, target="eps")

    return eps_fn


# ---------------------------------------------------------------------------- the transformer denoiser
# minidiff.dit builds on this module's embeddings and adds ("dit": (DiTConfig, DiT)) to _KINDS when it is
# imported; importing it here makes build_model / config_from_dict know it whichever module comes first.
from . import dit as _dit  # noqa: E402,F401
from . import unet1d as _unet1d  # noqa: E402,F401  (the 1-D U-Net for sound registers "unet1d" the same way)
