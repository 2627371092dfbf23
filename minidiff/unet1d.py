"""A 1-D convolutional U-Net denoiser for short signals (the sound clips of :mod:`minidiff.audio`).

The DDPM U-Net (Ho et al. 2020, App. B) with its 2-D convolutions replaced by 1-D ones and no attention:
``len(channel_mults)`` levels, each after the first halving the length by a strided convolution, residual
blocks that take the embedding of ``(t_index, y)`` as a per-channel scale and shift of their second
normalisation (adaptive group normalisation, Dhariwal & Nichol 2021, Sec. 3),

    h = conv2(SiLU(GroupNorm(h) * (1 + scale(emb)) + shift(emb))),

and skip connections from each level down to the same level up. The output convolution is
zero-initialised, so the untrained network predicts ``eps = 0``.

**Source conditioning.** With ``label_sines`` (one frequency per class, in cycles per sample) the
network also sees the requested class's sinusoid ``[cos(2 pi f n), sin(2 pi f n)]`` as two extra input
channels (zeros for the null label), the excitation of a neural source-filter model (Wang et al. 2019):
the convolutions then only have to shape a signal of the right period instead of inventing the period
from a label embedding. ``label_sines = None`` (or ``()``) turns it off (label embedding only).

Same interface and checkpoints as :class:`minidiff.unet.UNet`: ``model(x (B, C, L), t_index (B,), y (B,) |
None) -> (B, C, L)``, configured by the frozen :class:`UNet1DConfig` and registered as model kind
``"unet1d"`` (as :mod:`minidiff.dit` registers ``"dit"``), so :func:`minidiff.unet.build_model`, the
training loop, EMA, samplers, :func:`minidiff.unet.as_eps_model` and ``save_weights`` / ``load_weights``
take it unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks as _c
from . import unet as _unet
from .unet import _TimeLabelEmbedding, _check_prediction, _t_index, _y

__all__ = ["UNet1DConfig", "UNet1D", "ResBlock1D", "source_channels", "to_frames", "from_frames"]


@dataclass(frozen=True)
class UNet1DConfig:
    """A small 1-D U-Net. ``length`` must be divisible by ``2^(levels-1)``; ``channel_mults[i] *
    base_channels`` channels at level ``i``; ``kernel_size`` odd. ``label_sines``: empty, or one frequency in
    cycles per sample (in ``(0, 1/2)``) for each of the ``num_classes`` labels (source conditioning)."""

    length: int = 512
    in_channels: int = 1
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    kernel_size: int = 5
    patch_size: int = 1           # p > 1: the signal is cut into L/p frames of p samples (p*C channels)
    groups: int = 8
    num_classes: int = 0          # 0: unconditional; K > 0: labels 0..K-1 plus the null label K
    label_sines: tuple[float, ...] | None = None   # None or (): no source channels
    prediction: str = "eps"

    def __post_init__(self):
        _check_prediction(self.prediction)
        for name in ("length", "in_channels", "base_channels", "num_res_blocks", "kernel_size", "groups",
                     "patch_size"):
            _c.check_count(getattr(self, name), f"UNet1DConfig.{name}")
        _c.check_count(self.num_classes, "UNet1DConfig.num_classes", low=0)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"UNet1DConfig.kernel_size must be odd, got {self.kernel_size}")
        if not isinstance(self.channel_mults, (tuple, list)) or not self.channel_mults:
            raise ValueError(f"UNet1DConfig.channel_mults must be a non-empty tuple of integers >= 1, "
                             f"got {self.channel_mults!r}")
        object.__setattr__(self, "channel_mults",
                           tuple(_c.check_count(m, "UNet1DConfig.channel_mults entries") for m in self.channel_mults))
        if self.length % (self.patch_size * 2 ** (len(self.channel_mults) - 1)):
            raise ValueError(f"UNet1DConfig.length {self.length} must be divisible by patch_size * 2^(levels-1) = "
                             f"{self.patch_size * 2 ** (len(self.channel_mults) - 1)}")
        if any((m * self.base_channels) % self.groups for m in self.channel_mults):
            raise ValueError("UNet1DConfig: every level's channel count must be divisible by groups")
        if self.label_sines is None:
            object.__setattr__(self, "label_sines", ())
        if not isinstance(self.label_sines, (tuple, list)):
            raise ValueError(f"UNet1DConfig.label_sines must be a tuple of frequencies, got {self.label_sines!r}")
        sines = tuple(_c.check_real(f, "UNet1DConfig.label_sines entries") for f in self.label_sines)
        if sines and (len(sines) != self.num_classes or not all(0.0 < f < 0.5 for f in sines)):
            raise ValueError(f"UNet1DConfig.label_sines must hold one frequency in (0, 1/2) cycles per sample for "
                             f"each of the {self.num_classes} classes, got {sines}")
        object.__setattr__(self, "label_sines", sines)


def source_channels(y: torch.Tensor, freqs: torch.Tensor, length: int) -> torch.Tensor:
    """The excitation ``[cos(2 pi f_y n), sin(2 pi f_y n)]``, ``n = 0 .. length-1``, of labels ``y`` ``(B,)``
    with per-class frequencies ``freqs`` ``(K,)`` in cycles per sample; the null label ``K`` gives zeros
    (Wang et al. 2019's sine source). ``(B, 2, length)`` float32."""
    K = freqs.numel()
    f = torch.cat([freqs, freqs.new_zeros(1)])[y]                               # (B,)
    phase = 2 * math.pi * f[:, None] * torch.arange(length, dtype=torch.float64, device=y.device)[None]
    on = (y < K).to(torch.float64)[:, None, None]                               # (B, 1, 1)
    return (on * torch.stack([torch.cos(phase), torch.sin(phase)], 1)).to(torch.float32)


def to_frames(x: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, C, L)`` -> ``(B, C*p, L/p)``: consecutive frames of ``p`` samples as channels (channel ``c*p + j``
    holds sample ``j`` of each frame of channel ``c``). ``p = 1`` is the identity."""
    B, C, L = x.shape
    return x.reshape(B, C, L // p, p).permute(0, 1, 3, 2).reshape(B, C * p, L // p)


def from_frames(h: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse of :func:`to_frames`: ``(B, C*p, L/p)`` -> ``(B, C, L)``."""
    B, Cp, N = h.shape
    return h.reshape(B, Cp // p, p, N).permute(0, 1, 3, 2).reshape(B, Cp // p, N * p)


class ResBlock1D(nn.Module):
    """GroupNorm-SiLU-Conv, adaptive GroupNorm by the embedding (scale and shift; Dhariwal & Nichol 2021,
    Sec. 3), SiLU-Conv (zero-initialised), plus the skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, k: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv1d(c_in, c_out, k, padding=k // 2)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, k, padding=k // 2)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, emb):  # x (B, C, L), emb (B, E)
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None].chunk(2, dim=1)     # (B, C, 1) each
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return self.skip(x) + h


class UNet1D(nn.Module):
    """The 1-D U-Net. ``forward(x (B, C, L), t_index (B,) int64, y (B,) int64 | None) -> (B, C, L)``."""

    def __init__(self, config: UNet1DConfig):
        super().__init__()
        if not isinstance(config, UNet1DConfig):
            raise TypeError(f"config must be a UNet1DConfig, got {type(config).__name__}")
        self.config = c = config
        ch = [c.base_channels * m for m in c.channel_mults]
        emb_dim, k = 4 * c.base_channels, c.kernel_size
        self.embed = _TimeLabelEmbedding(c.base_channels, emb_dim, c.num_classes)
        self.register_buffer("sines", torch.tensor(c.label_sines, dtype=torch.float64), persistent=False)
        self.conv_in = nn.Conv1d(c.patch_size * (c.in_channels + (2 if c.label_sines else 0)), ch[0], k, padding=k // 2)
        self.down, self.downsample, skips, cur = nn.ModuleList(), nn.ModuleList(), [ch[0]], ch[0]
        for i, co in enumerate(ch):
            for _ in range(c.num_res_blocks):
                self.down.append(ResBlock1D(cur, co, emb_dim, c.groups, k))
                cur = co
                skips.append(cur)
            if i < len(ch) - 1:
                self.downsample.append(nn.Conv1d(cur, cur, 3, stride=2, padding=1))
                skips.append(cur)
        self.mid = nn.ModuleList([ResBlock1D(cur, cur, emb_dim, c.groups, k) for _ in range(2)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(ch))):
            for _ in range(c.num_res_blocks + 1):
                self.up.append(ResBlock1D(cur + skips.pop(), ch[i], emb_dim, c.groups, k))
                cur = ch[i]
            if i > 0:
                self.upsample.append(nn.Conv1d(cur, cur, 3, padding=1))
        self.norm_out = nn.GroupNorm(c.groups, cur)
        self.conv_out = nn.Conv1d(cur, c.patch_size * c.in_channels, k, padding=k // 2)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x, t_index, y=None):
        c = self.config
        if x.ndim != 3 or x.shape[1] != c.in_channels or x.shape[2] != c.length:
            raise ValueError(f"x must be (B, {c.in_channels}, {c.length}), got {tuple(x.shape)}")
        t_index, y = _t_index(t_index, x), _y(y, x, c.num_classes)
        emb = self.embed(t_index, y)                                          # (B, E)
        if c.label_sines:
            y_src = y if y is not None else torch.full_like(t_index, c.num_classes)
            x = torch.cat([x, source_channels(y_src, self.sines, c.length).to(x.dtype)], 1)
        h = self.conv_in(to_frames(x, c.patch_size))                         # (B, C0, L/p)
        hs = [h]
        blocks, down = iter(self.down), iter(self.downsample)
        for i in range(len(c.channel_mults)):
            for _ in range(c.num_res_blocks):
                h = next(blocks)(h, emb)
                hs.append(h)
            if i < len(c.channel_mults) - 1:
                h = next(down)(h)
                hs.append(h)
        for blk in self.mid:
            h = blk(h, emb)
        blocks, up = iter(self.up), iter(self.upsample)
        for i in reversed(range(len(c.channel_mults))):
            for _ in range(c.num_res_blocks + 1):
                h = next(blocks)(torch.cat([h, hs.pop()], 1), emb)
            if i > 0:
                h = next(up)(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return from_frames(self.conv_out(F.silu(self.norm_out(h))), c.patch_size)


_unet._KINDS["unet1d"] = (UNet1DConfig, UNet1D)  # same build_model / config_to_dict / config_from_dict / checkpoints
