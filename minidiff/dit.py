"""A transformer denoiser: DiT (Peebles & Xie 2023), small enough for 32x32 glyphs or 8x8 latents on a CPU.

The image is cut into ``p x p`` patches (``patchify``), each a token linearly embedded to ``hidden``
dimensions plus a fixed 2-D sine-cosine position embedding (Peebles & Xie 2023, Sec. 3.2; Vaswani et
al. 2017, Sec. 3.5); ``depth`` transformer blocks condition on the time step (and class) through
*adaLN-Zero*: the embedding ``c`` of ``(t_index, y)`` regresses a shift, scale and gate per sub-layer,

    h = h + gate_msa(c) * Attn(LN(h) * (1 + scale_msa(c)) + shift_msa(c))
    h = h + gate_mlp(c) * MLP(LN(h) * (1 + scale_mlp(c)) + shift_mlp(c))

with the regression initialised to zero, so every block starts as the identity (Sec. 3.2, "adaLN-Zero
block"). A final adaLN layer and a zero-initialised linear map tokens back to patches (``unpatchify``).

Same interface and checkpoints as :class:`minidiff.unet.UNet`: ``model(x, t_index, y=None)``, configured
by the frozen :class:`DiTConfig` (registered with :func:`minidiff.unet.build_model` /
``config_to_dict`` / ``config_from_dict`` as kind ``"dit"``), so the training loop, EMA, the samplers,
:func:`minidiff.unet.as_eps_model` and :func:`minidiff.train.save_weights` / ``load_weights`` take it
unchanged. Class labels follow the U-Net's convention (``num_classes`` = the null label).
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

__all__ = ["DiTConfig", "DiT", "DiTBlock", "patchify", "unpatchify", "sincos_position_embedding", "modulate",
           "dit_flops", "forward_flops"]


@dataclass(frozen=True)
class DiTConfig:
    """A small DiT. ``image_size`` must be divisible by ``patch_size``: ``(image_size / patch_size)^2``
    tokens of width ``hidden`` (divisible by ``heads``) through ``depth`` adaLN-Zero blocks."""

    image_size: int = 32
    in_channels: int = 1
    patch_size: int = 4
    hidden: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: int = 4
    num_classes: int = 0          # 0: unconditional; K > 0: labels 0..K-1 plus the null label K
    prediction: str = "eps"

    def __post_init__(self):
        _check_prediction(self.prediction)
        for name in ("image_size", "in_channels", "patch_size", "hidden", "depth", "heads", "mlp_ratio"):
            _c.check_count(getattr(self, name), f"DiTConfig.{name}")
        _c.check_count(self.num_classes, "DiTConfig.num_classes", low=0)
        if self.image_size % self.patch_size:
            raise ValueError(f"DiTConfig.image_size {self.image_size} must be divisible by patch_size {self.patch_size}")
        if self.hidden % self.heads or (self.hidden // self.heads) % 2:
            raise ValueError(f"DiTConfig.hidden {self.hidden} must be divisible by heads {self.heads} with an even head width")
        if self.hidden % 4:
            raise ValueError(f"DiTConfig.hidden must be divisible by 4 (2-D sine-cosine positions), got {self.hidden}")

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def tokens(self) -> int:
        return self.grid ** 2


# ---------------------------------------------------------------------------- patches
def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, (H/p)(W/p), p*p*C)``: row-major patches, each flattened as ``(p, p, C)``."""
    B, C, H, W = x.shape
    if H % p or W % p:
        raise ValueError(f"image sides {H}x{W} must be divisible by the patch size {p}")
    x = x.reshape(B, C, H // p, p, W // p, p)               # (B, C, gh, p, gw, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // p) * (W // p), p * p * C)


def unpatchify(tokens: torch.Tensor, p: int, channels: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(B, N, p*p*C)`` -> ``(B, C, H, W)``."""
    B = tokens.shape[0]
    gh, gw = height // p, width // p
    x = tokens.reshape(B, gh, gw, p, p, channels)           # (B, gh, gw, p, p, C)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(B, channels, height, width)


def sincos_position_embedding(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding ``(grid*grid, dim)`` (Peebles & Xie 2023 follow MAE, He et
    al. 2022): half the channels encode the row, half the column, each as ``[sin(pos w_k), cos(pos w_k)]``
    with ``w_k = 10000^(-k / (dim/4))``."""
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4, got {dim}")
    w = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    pos = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")

    def one(v):  # (grid*grid,) -> (grid*grid, dim/2)
        a = v.reshape(-1, 1) * w[None]
        return torch.cat([torch.sin(a), torch.cos(a)], 1)

    return torch.cat([one(rows), one(cols)], 1).to(torch.float32)


def modulate(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``h * (1 + scale) + shift`` per sample; ``h (B, N, D)``, ``shift, scale (B, D)``."""
    return h * (1 + scale[:, None]) + shift[:, None]


# ---------------------------------------------------------------------------- blocks
class _Attention(nn.Module):
    """Multi-head self-attention over tokens; keeps its last attention weights when ``keep_maps`` is set."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.keep_maps = False
        self.maps = None

    def forward(self, h):  # (B, N, D)
        B, N, D = h.shape
        q, k, v = self.qkv(h).reshape(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, N, d)
        if self.keep_maps:
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)  # (B, H, N, N)
            self.maps = a.detach()
            out = a @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class DiTBlock(nn.Module):
    """One adaLN-Zero transformer block (Peebles & Xie 2023, Fig. 3): ``c`` -> (shift, scale, gate) for the
    attention and for the MLP; the regression is zero-initialised, so the block starts as the identity."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_ratio * dim, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, h, c):  # h (B, N, D), c (B, D)
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=1)
        h = h + gate1[:, None] * self.attn(modulate(self.norm1(h), shift1, scale1))
        return h + gate2[:, None] * self.mlp(modulate(self.norm2(h), shift2, scale2))


class _FinalLayer(nn.Module):
    """adaLN (shift, scale; zero-initialised) then a zero-initialised linear map to ``p*p*C`` per token."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, out)
        for m in (self.ada[1], self.linear):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, h, c):
        shift, scale = self.ada(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(h), shift, scale))


class DiT(nn.Module):
    """Diffusion transformer (Peebles & Xie 2023). ``forward(x (B, C, H, W), t_index (B,) int64,
    y (B,) int64 | None) -> (B, C, H, W)``, the quantity ``config.prediction`` names."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        if not isinstance(config, DiTConfig):
            raise TypeError(f"config must be a DiTConfig, got {type(config).__name__}")
        self.config = c = config
        patch_dim = c.patch_size ** 2 * c.in_channels
        self.embed = nn.Linear(patch_dim, c.hidden)
        self.register_buffer("pos", sincos_position_embedding(c.hidden, c.grid), persistent=False)
        self.cond = _TimeLabelEmbedding(c.hidden, c.hidden, c.num_classes)
        self.blocks = nn.ModuleList([DiTBlock(c.hidden, c.heads, c.mlp_ratio) for _ in range(c.depth)])
        self.final = _FinalLayer(c.hidden, patch_dim)

    def forward(self, x, t_index, y=None):
        c = self.config
        if x.ndim != 4 or tuple(x.shape[1:]) != (c.in_channels, c.image_size, c.image_size):
            raise ValueError(f"x must be (B, {c.in_channels}, {c.image_size}, {c.image_size}), got {tuple(x.shape)}")
        cond = self.cond(_t_index(t_index, x), _y(y, x, c.num_classes))           # (B, D)
        h = self.embed(patchify(x, c.patch_size)) + self.pos                 # (B, N, D)
        for block in self.blocks:
            h = block(h, cond)
        return unpatchify(self.final(h, cond), c.patch_size, c.in_channels, c.image_size, c.image_size)

    @torch.no_grad()
    def attention_maps(self, x, t_index, y=None) -> list[torch.Tensor]:
        """One forward pass keeping each block's attention weights: a list (one per block) of
        ``(B, heads, N, N)`` tensors, rows summing to 1 (query token -> key tokens, row-major patches)."""
        for b in self.blocks:
            b.attn.keep_maps = True
        try:
            self.forward(x, t_index, y)
            return [b.attn.maps for b in self.blocks]
        finally:
            for b in self.blocks:
                b.attn.keep_maps, b.attn.maps = False, None


_unet._KINDS["dit"] = (DiTConfig, DiT)  # same build_model / config_to_dict / config_from_dict / checkpoints


def dit_flops(config: DiTConfig, batch: int = 1) -> int:
    """Closed-form FLOPs of one forward pass (2 per multiply-add) over the matrix products only -- what
    ``torch.utils.flop_counter`` counts: patch embedding, per block the adaLN regression, QKV, the two
    attention products, the output projection and the MLP, then the final layer; plus the time MLP."""
    c = config
    N, D, P = c.tokens, c.hidden, c.patch_size ** 2 * c.in_channels
    per_sample = 2 * N * P * D                                   # patch embedding
    per_sample += 2 * (D * D + D * D)                            # time-embedding MLP (freq_dim = D)
    block = 2 * D * 6 * D + 2 * N * D * 3 * D + 2 * 2 * N * N * D + 2 * N * D * D + 2 * 2 * N * D * c.mlp_ratio * D
    per_sample += c.depth * block
    per_sample += 2 * D * 2 * D + 2 * N * D * P                  # final adaLN and linear
    return batch * per_sample


def _explicit_attention(q, k, v, *args, **kwargs):
    """``softmax(q k^T / sqrt(d)) v`` written as two matrix products (no mask, no dropout)."""
    if args or any(kwargs.get(name) not in (None, 0.0, False) for name in ("attn_mask", "dropout_p", "is_causal")):
        raise ValueError("forward_flops counts plain attention only (no mask, dropout or causal flag)")
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1) @ v


def forward_flops(model: nn.Module, x: torch.Tensor, t_index, y=None) -> int:
    """FLOPs of ``model(x, t_index, y)`` counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix
    products and convolutions, 2 per multiply-add). On CPU torch's fused attention kernel is invisible to
    the counter, so during the count ``F.scaled_dot_product_attention`` is replaced by its two explicit
    products (same result); this counts the U-Net's attention and the DiT's alike."""
    from torch.utils.flop_counter import FlopCounterMode

    fused = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _explicit_attention
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x, t_index, y)
    finally:
        F.scaled_dot_product_attention = fused
    return int(counter.get_total_flops())
