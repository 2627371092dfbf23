"""Text-to-image on glyph captions: a caption tokenizer, a small text encoder and a DiT with cross-attention.

The captions are the glyphs' own attribute strings (:func:`minidiff.glyphs.caption`: "bold italic serif
capital R", "monospace digit 7"), so whether a sample follows its prompt is *measurable*: the glyph
classifier (:mod:`minidiff.metrics.glyphs`) reads back the character, weight, slant and family.

* :func:`tokenize` / :func:`detokenize`: one token per word over the closed caption vocabulary
  :data:`VOCAB`, a leading ``<cls>`` token that every caption keeps, ``<pad>`` up to :data:`MAX_TOKENS`.
  The *null caption* of classifier-free guidance is the empty caption, ``<cls>`` alone (:func:`null_tokens`).
* :class:`TextEncoder`: token embeddings plus learned positions through ``text_layers`` pre-LN transformer
  layers (Vaswani et al. 2017) with padding masked out; trained with the denoiser, nothing downloaded.
* :class:`TextDiT`: the DiT of :mod:`minidiff.dit` (Peebles & Xie 2023) with, in every block, a
  cross-attention sub-layer from the image tokens (queries) to the caption tokens (keys and values), as
  latent diffusion conditions on text (Rombach et al. 2022, Sec. 3.3, eq. 3):
  ``Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V`` with ``Q = W_Q h``, ``K = W_K tau(y)``,
  ``V = W_V tau(y)``; the ``<cls>`` output (a summary of the caption) and the bag of the caption's word
  embeddings (:meth:`TextDiT.bag_of_words`, the way a class label enters a DiT) are also added to the time
  embedding that drives adaLN-Zero. Without the bag of words the shipped model ignored the character
  (issue 19; :func:`caption_losses` and ``glyph_t2i.json`` record the diagnosis). The cross-attention output projection starts at zero, so each block starts as the identity.
  Registered as model kind ``"text_dit"`` (:func:`minidiff.unet.build_model`, ``config_to_dict``,
  ``config_from_dict``, :func:`minidiff.train.save_weights` / ``load_weights``); ``model(x, t_index, y)``
  takes ``y`` = caption tokens ``(B, L)`` (``None``: the null caption).
* :func:`train_text2image`: the DDPM loss (Ho et al. 2020, eq. 14) with caption dropout (the null caption
  with probability ``p_uncond``; Ho & Salimans 2022, Alg. 1), reusing :mod:`minidiff.train`'s step
  (:func:`~minidiff.train.lr_at`, clipping, AdamW, EMA) on batches drawn here (the labels are token rows).
* :func:`caption_eps_model` / :func:`sample_from_captions`: DDIM with classifier-free guidance on the
  caption, ``eps = (1 + w) eps(x, c) - w eps(x, null)`` (Ho & Salimans 2022, eq. 6), the convention of
  :func:`minidiff.unet.as_eps_model`.

Held out of training: every image whose attributes are one of :data:`HELD_OUT` (bold italic serif
``A``, ``R``, ``e``, ``5``), for the compositional test: the model has seen bold italic serif letters and
upright regular ``R``, never the two together.

CLI (the shipped ``minidiff/weights/glyph_t2i.safetensors``)::

    python -m minidiff.text2image train --steps 4000 --batch-size 32 --seed 0 --threads 1 --out minidiff/weights/glyph_t2i.safetensors
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from . import _checks as _c
from . import glyphs as G
from . import unet as _unet
from .dit import DiTBlock, _FinalLayer, modulate, patchify, sincos_position_embedding, unpatchify
from .unet import _TimeLabelEmbedding, _check_prediction, _t_index

__all__ = ["VOCAB", "MAX_TOKENS", "HELD_OUT", "tokenize", "detokenize", "null_tokens", "TextDiTConfig",
           "TextEncoder", "CrossAttention", "TextDiT", "caption_eps_model", "sample_from_captions",
           "cross_attention_maps", "caption_losses", "training_set", "prompts", "Proportion", "adherence", "evaluate", "is_held_out", "train_text2image", "load_text2image",
           "T2I_WEIGHTS"]

PAD, CLS = "<pad>", "<cls>"
_WORDS = ("bold", "italic", "sans", "serif", "monospace", "stix", "computer", "modern", "digit", "capital",
          "lowercase")
VOCAB: tuple[str, ...] = (PAD, CLS) + _WORDS + tuple(G.CHARSET)   # token id -> word
_ID = {w: i for i, w in enumerate(VOCAB)}
MAX_TOKENS = 8   # <cls> + the longest caption, "bold italic computer modern lowercase g" (6 words), + 1 spare

# (char, family, weight, slant) combinations never seen in training: the compositional test.
HELD_OUT = tuple((ch, "serif", "bold", "italic") for ch in "ARe5")


# ============================================================================ tokenizer
def tokenize(captions, max_tokens: int = MAX_TOKENS) -> torch.Tensor:
    """Captions -> ``(B, max_tokens)`` int64 token ids: ``<cls>``, one id per word of :data:`VOCAB`, then
    ``<pad>``. A single string gives ``B = 1``; ``""`` is the null caption (``<cls>`` alone)."""
    if isinstance(captions, str):
        captions = [captions]
    if not isinstance(captions, (list, tuple)) or not all(isinstance(c, str) for c in captions):
        raise TypeError(f"captions must be a string or a list of strings, got {type(captions).__name__}")
    max_tokens = _c.check_count(max_tokens, "max_tokens", low=2)
    out = torch.full((len(captions), max_tokens), _ID[PAD], dtype=torch.int64)
    for i, text in enumerate(captions):
        words = text.split()
        if len(words) > max_tokens - 1:
            raise ValueError(f"caption {text!r} has {len(words)} words; at most {max_tokens - 1} fit max_tokens={max_tokens}")
        unknown = [w for w in words if w not in _ID or w in (PAD, CLS)]
        if unknown:
            raise ValueError(f"caption {text!r}: word(s) {unknown} are not in the caption vocabulary "
                             f"(minidiff.text2image.VOCAB)")
        out[i, :len(words) + 1] = torch.tensor([_ID[CLS]] + [_ID[w] for w in words])
    return out


def detokenize(tokens) -> list[str]:
    """Inverse of :func:`tokenize`: ``(B, L)`` ids -> captions (``<cls>`` and ``<pad>`` dropped)."""
    tokens = _check_tokens(tokens, "tokens")
    return [" ".join(VOCAB[int(i)] for i in row if int(i) not in (_ID[PAD], _ID[CLS])) for row in tokens]


def null_tokens(batch: int, max_tokens: int = MAX_TOKENS) -> torch.Tensor:
    """``(batch, max_tokens)`` null captions (``<cls>`` then padding): the unconditional input."""
    return tokenize([""] * _c.check_count(batch, "batch"), max_tokens)


def _check_tokens(tokens, name: str, max_tokens: int | None = None) -> torch.Tensor:
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids (from tokenize), got {type(tokens).__name__}")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got {tokens.dtype}")
    if tokens.ndim != 2 or (max_tokens is not None and tokens.shape[1] != max_tokens):
        raise ValueError(f"{name} must be (B, {max_tokens or 'L'}) token ids, got {tuple(tokens.shape)}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= len(VOCAB)):
        raise ValueError(f"{name} must lie in [0, {len(VOCAB) - 1}] (the caption vocabulary)")
    if tokens.numel() and not bool((tokens[:, 0] == _ID[CLS]).all()):
        raise ValueError(f"{name}: every row must start with the <cls> token (use tokenize)")
    return tokens.to(torch.int64)


# ============================================================================ config
@dataclass(frozen=True)
class TextDiTConfig:
    """A DiT on ``image_size`` glyphs (patches of ``patch_size``) conditioned on caption tokens through
    cross-attention; the text encoder has ``text_layers`` layers of width ``hidden``."""

    image_size: int = 16
    in_channels: int = 1
    patch_size: int = 4
    hidden: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: int = 4
    text_layers: int = 2
    max_tokens: int = MAX_TOKENS
    vocab_size: int = len(VOCAB)
    prediction: str = "eps"

    def __post_init__(self):
        _check_prediction(self.prediction)
        for name in ("image_size", "in_channels", "patch_size", "hidden", "depth", "heads", "mlp_ratio",
                     "text_layers", "max_tokens"):
            _c.check_count(getattr(self, name), f"TextDiTConfig.{name}")
        if self.vocab_size != len(VOCAB):
            raise ValueError(f"TextDiTConfig.vocab_size must be {len(VOCAB)} (minidiff.text2image.VOCAB), got {self.vocab_size}")
        if self.image_size % self.patch_size:
            raise ValueError(f"TextDiTConfig.image_size {self.image_size} must be divisible by patch_size {self.patch_size}")
        if self.hidden % self.heads or self.hidden % 4:
            raise ValueError(f"TextDiTConfig.hidden {self.hidden} must be divisible by heads {self.heads} and by 4")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


# ============================================================================ attention with a key mask
class CrossAttention(nn.Module):
    """Multi-head attention from queries ``h (B, N, D)`` to a context ``(B, L, D)`` whose keys are
    ``mask (B, L)`` (True: a real token); ``softmax(Q K^T / sqrt(d)) V`` (Vaswani et al. 2017, eq. 1;
    Rombach et al. 2022, eq. 3) with masked keys at ``-inf`` (weight exactly 0). With ``zero_init`` the
    output projection starts at zero (the block starts as the identity). Keeps its weights
    ``(B, heads, N, L)`` in ``maps`` when ``keep_maps`` is set."""

    def __init__(self, dim: int, heads: int, zero_init: bool = False):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if zero_init:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)
        self.keep_maps, self.maps = False, None

    def forward(self, h, context, mask):  # h (B, N, D), context (B, L, D), mask (B, L) bool
        B, N, D = h.shape
        L, d = context.shape[1], D // self.heads
        q = self.q(h).reshape(B, N, self.heads, d).transpose(1, 2)                            # (B, H, N, d)
        k, v = self.kv(context).reshape(B, L, 2, self.heads, d).permute(2, 0, 3, 1, 4)        # (B, H, L, d)
        logits = (q @ k.transpose(-1, -2)) / math.sqrt(d)                                     # (B, H, N, L)
        a = torch.softmax(logits.masked_fill(~mask[:, None, None, :], float("-inf")), -1)
        if self.keep_maps:
            self.maps = a.detach()
        return self.proj((a @ v).transpose(1, 2).reshape(B, N, D))


class _TextLayer(nn.Module):
    """A pre-LN transformer encoder layer: ``h + SelfAttn(LN h)`` then ``h + MLP(LN h)``, padding masked."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_ratio * dim, dim))

    def forward(self, h, mask):
        u = self.norm1(h)
        h = h + self.attn(u, u, mask)
        return h + self.mlp(self.norm2(h))


class TextEncoder(nn.Module):
    """``tokens (B, L)`` -> ``(context (B, L, D), mask (B, L), pooled (B, D))``: token embeddings plus
    learned positions through pre-LN transformer layers; ``pooled`` is the ``<cls>`` output."""

    def __init__(self, vocab_size: int, max_tokens: int, dim: int, heads: int, layers: int, mlp_ratio: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(0.02 * torch.randn(max_tokens, dim))
        self.layers = nn.ModuleList([_TextLayer(dim, heads, mlp_ratio) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens):
        mask = tokens != _ID[PAD]                         # (B, L); <cls> is never padding
        h = self.embed(tokens) + self.pos                 # (B, L, D)
        for layer in self.layers:
            h = layer(h, mask)
        h = self.norm(h)
        return h, mask, h[:, 0]


class TextDiTBlock(DiTBlock):
    """The adaLN-Zero DiT block (Peebles & Xie 2023, Fig. 3) with a cross-attention sub-layer between the
    self-attention and the MLP: ``h = h + CrossAttn(LN h, context)`` (zero-initialised output)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__(dim, heads, mlp_ratio)
        self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
        self.cross = CrossAttention(dim, heads, zero_init=True)

    def forward(self, h, c, context, mask):  # h (B, N, D), c (B, D), context (B, L, D), mask (B, L)
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=1)
        h = h + gate1[:, None] * self.attn(modulate(self.norm1(h), shift1, scale1))
        h = h + self.cross(self.norm_cross(h), context, mask)
        return h + gate2[:, None] * self.mlp(modulate(self.norm2(h), shift2, scale2))


class TextDiT(nn.Module):
    """Text-conditioned DiT. ``forward(x (B, C, H, W), t_index (B,) int64, y (B, L) token ids | None)
    -> (B, C, H, W)``, the quantity ``config.prediction`` names; ``y=None`` is the null caption."""

    def __init__(self, config: TextDiTConfig):
        super().__init__()
        if not isinstance(config, TextDiTConfig):
            raise TypeError(f"config must be a TextDiTConfig, got {type(config).__name__}")
        self.config = c = config
        patch_dim = c.patch_size ** 2 * c.in_channels
        self.text = TextEncoder(c.vocab_size, c.max_tokens, c.hidden, c.heads, c.text_layers, c.mlp_ratio)
        self.embed = nn.Linear(patch_dim, c.hidden)
        self.register_buffer("pos", sincos_position_embedding(c.hidden, c.grid), persistent=False)
        self.time = _TimeLabelEmbedding(c.hidden, c.hidden, 0)
        self.pooled = nn.Linear(c.hidden, c.hidden)
        self.words = nn.Embedding(c.vocab_size, c.hidden)   # bag of words -> adaLN (class-style conditioning)
        self.blocks = nn.ModuleList([TextDiTBlock(c.hidden, c.heads, c.mlp_ratio) for _ in range(c.depth)])
        self.final = _FinalLayer(c.hidden, patch_dim)

    def tokens_for(self, y, x) -> torch.Tensor:
        """``y`` checked as ``(B, max_tokens)`` token ids on x's device (``None``: the null caption)."""
        c = self.config
        if y is None:
            return null_tokens(x.shape[0], c.max_tokens).to(x.device)
        y = _check_tokens(y, "y (caption tokens)", c.max_tokens)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y must hold one caption per sample ({x.shape[0]}), got {y.shape[0]}")
        return y.to(x.device)

    def bag_of_words(self, tokens) -> torch.Tensor:
        """``(B, D)``: the sum of the caption's word embeddings (``<cls>`` and ``<pad>`` excluded; the null
        caption gives 0), added to the adaLN conditioning as a class embedding is (Peebles & Xie 2023,
        Sec. 3.2): each attribute word, the character included, reaches every block's scale and shift
        directly, while cross-attention carries the rest."""
        words = (tokens != _ID[PAD]) & (tokens != _ID[CLS])                 # (B, L)
        return (self.words(tokens) * words[..., None]).sum(1)

    def forward(self, x, t_index, y=None):
        c = self.config
        if x.ndim != 4 or tuple(x.shape[1:]) != (c.in_channels, c.image_size, c.image_size):
            raise ValueError(f"x must be (B, {c.in_channels}, {c.image_size}, {c.image_size}), got {tuple(x.shape)}")
        tokens = self.tokens_for(y, x)                                        # (B, L)
        context, mask, pooled = self.text(tokens)                             # (B, L, D), (B, L), (B, D)
        cond = self.time(_t_index(t_index, x), None) + self.pooled(pooled) + self.bag_of_words(tokens)  # (B, D)
        h = self.embed(patchify(x, c.patch_size)) + self.pos                  # (B, N, D)
        for block in self.blocks:
            h = block(h, cond, context, mask)
        return unpatchify(self.final(h, cond), c.patch_size, c.in_channels, c.image_size, c.image_size)


_unet._KINDS["text_dit"] = (TextDiTConfig, TextDiT)  # build_model / config_to_dict / config_from_dict / weights


# ============================================================================ guidance and sampling
def caption_eps_model(model: TextDiT, schedule, tokens, guidance_scale: float | None = None):
    """``eps_fn(x, t_index)`` for the samplers, conditioned on caption ``tokens (B, L)``; with
    ``guidance_scale = w`` classifier-free guidance on the caption, ``eps = (1 + w) eps(x, c) - w eps(x, null)``
    (Ho & Salimans 2022, eq. 6); ``w = 0`` (or ``None``) is the conditional prediction."""
    from . import forward

    if not isinstance(model, TextDiT):
        raise TypeError(f"model must be a TextDiT, got {type(model).__name__}")
    w = None if guidance_scale is None else _c.check_nonnegative(guidance_scale, "guidance_scale")
    tokens = _check_tokens(tokens, "tokens", model.config.max_tokens)

    @torch.no_grad()
    def eps_fn(x, t_index):
        t_index = _t_index(t_index, x)
        y = tokens.to(x.device)
        if not w:
            pred = model(x, t_index, y)
        else:
            both = model(torch.cat([x, x]), torch.cat([t_index, t_index]), torch.cat([y, null_tokens(len(y)).to(x.device)]))
            cond, uncond = both.chunk(2)
            pred = (1 + w) * cond - w * uncond
        alpha_bar = schedule.at("alpha_bar", t_index.cpu().numpy(), x)
        return forward.convert(pred, x, alpha_bar, source=model.config.prediction, target="eps")

    return eps_fn


def sample_from_captions(model: TextDiT, schedule, captions, *, guidance_scale: float | None = None,
                         n_steps: int = 25, generator: torch.Generator | None = None) -> torch.Tensor:
    """Glyphs ``(B, 1, S, S)`` for ``captions`` (strings, or token ids ``(B, L)``): deterministic DDIM
    (Song et al. 2021b, eq. 12, ``eta = 0``, x0 clipped to ``[-1, 1]``) from ``N(0, I)`` drawn with
    ``generator``, with guidance ``guidance_scale`` (:func:`caption_eps_model`)."""
    from . import samplers

    tokens = captions if isinstance(captions, torch.Tensor) else tokenize(captions, model.config.max_tokens)
    eps_fn = caption_eps_model(model, schedule, tokens, guidance_scale)
    c = model.config
    x_T = torch.randn((tokens.shape[0], c.in_channels, c.image_size, c.image_size), generator=generator)
    return samplers.final(samplers.ddim(eps_fn, x_T, schedule, n_steps, clip_x0=1.0, backend="torch"))


@torch.no_grad()
def cross_attention_maps(model: TextDiT, x, t_index, captions) -> torch.Tensor:
    """Cross-attention weights of one forward pass, ``(depth, B, heads, grid*grid, L)``: for each image
    patch (row-major) the weights over the caption's tokens (padding exactly 0; rows sum to 1)."""
    tokens = captions if isinstance(captions, torch.Tensor) else tokenize(captions, model.config.max_tokens)
    for b in model.blocks:
        b.cross.keep_maps = True
    try:
        model(x, t_index, tokens)
        return torch.stack([b.cross.maps for b in model.blocks])
    finally:
        for b in model.blocks:
            b.cross.keep_maps, b.cross.maps = False, None


# ============================================================================ data and training
def is_held_out(labels: "G.GlyphLabels") -> torch.Tensor:
    """``(N,)`` bool: which images have one of the :data:`HELD_OUT` attribute combinations."""
    out = torch.zeros(len(labels), dtype=torch.bool)
    for ch, fam, wt, sl in HELD_OUT:
        out |= ((labels.char == G.CHARSET.index(ch)) & (labels.family == G.FAMILIES.index(fam))
                & (labels.weight == G.WEIGHTS.index(wt)) & (labels.slant == G.SLANTS.index(sl)))
    return out


def training_set(size: int = 16) -> tuple[torch.Tensor, torch.Tensor, "G.GlyphLabels"]:
    """``(images, tokens, labels)`` of the glyph ``"train"`` split at ``size`` with the :data:`HELD_OUT`
    combinations removed; ``tokens`` are the images' captions (:func:`minidiff.glyphs.caption`)."""
    x, labels = G.load_glyphs("train", size)
    keep = ~is_held_out(labels)
    labels = labels[keep]
    return x[keep], tokenize(labels.captions()), labels


def _caption_batch(seed: int, step: int, x, tokens, schedule, batch_size: int, p_uncond: float):
    """Step ``step``'s :class:`~minidiff.train.Batch` -- the order of :func:`minidiff.train.draw_batch`
    (indices, then the DDPM draws, then caption dropout), from ``step_generator(seed, step)``; a dropped
    caption becomes the null caption (Ho & Salimans 2022, Alg. 1)."""
    from .train import Batch, DDPMObjective, step_generator

    g = step_generator(seed, step)
    idx = torch.randint(0, x.shape[0], (batch_size,), generator=g)                               # (B,)
    t_index, noise = DDPMObjective().draw(g, batch_size, tuple(x.shape[1:]), schedule)
    drop = torch.rand(batch_size, generator=g) < p_uncond                                        # (B,)
    y = torch.where(drop[:, None], null_tokens(batch_size, tokens.shape[1]), tokens[idx])       # (B, L)
    return Batch(x[idx], y, t_index, noise)


def train_text2image(state, x, tokens, schedule, *, steps: int, batch_size: int = 64, lr: float = 2e-3,
                     warmup: int = 100, p_uncond: float = 0.1, seed: int = 0, ema_decay: float = 0.999):
    """Train ``state`` (a :class:`~minidiff.train.TrainState` of a :class:`TextDiT`) up to ``steps``
    steps on ``(x, tokens)``, yielding :class:`~minidiff.train.TrainRecord`. Each step is
    :mod:`minidiff.train`'s (its ``_train_step``: lr schedule, clipped AdamW, EMA) on a
    :func:`_caption_batch`; deterministic given ``seed``."""
    from .train import DDPMObjective, TrainConfig, _train_step

    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, p_uncond=p_uncond, seed=seed,
                      ema_decay=ema_decay)
    _check_tokens(tokens, "tokens", state.model.config.max_tokens)
    if tokens.shape[0] != x.shape[0]:
        raise ValueError(f"tokens must hold one caption per image ({x.shape[0]}), got {tokens.shape[0]}")
    state.model.train()
    objective = DDPMObjective()
    while state.step < cfg.steps:
        batch = _caption_batch(cfg.seed, state.step, x, tokens, schedule, cfg.batch_size, cfg.p_uncond)
        yield _train_step(state, state.model, batch, schedule, cfg, objective, 1)


# ============================================================================ prompts and adherence
def prompts(n_per_char: int, seed: int = 0, *, held_out: bool = False) -> tuple[list[str], dict]:
    """Prompts for measuring adherence: every character of :data:`minidiff.glyphs.CHARSET` ``n_per_char``
    times with a random face of :data:`minidiff.glyphs.FONTS` (numpy PCG64 ``seed``), redrawn while the
    combination is one of :data:`HELD_OUT`; with ``held_out=True`` instead the :data:`HELD_OUT`
    combinations, each ``n_per_char`` times. Returns ``(captions, attrs)``, ``attrs`` ``{"char",
    "family", "weight", "slant"}`` of ``(B,)`` int64 indexing the tuples of :mod:`minidiff.glyphs`."""
    n_per_char = _c.check_count(n_per_char, "n_per_char")
    rng = np.random.default_rng(_c.check_count(seed, "seed", low=0))
    if held_out:
        combos = [c for c in HELD_OUT for _ in range(n_per_char)]
    else:
        combos = []
        for ch in G.CHARSET * n_per_char:
            while True:
                f = G.FONTS[int(rng.integers(len(G.FONTS)))]
                if (ch, f.family, f.weight, f.slant) not in HELD_OUT:
                    break
            combos.append((ch, f.family, f.weight, f.slant))
    attrs = {k: torch.tensor([table.index(c[i]) for c in combos], dtype=torch.int64)
             for i, (k, table) in enumerate((("char", G.CHARSET), ("family", G.FAMILIES), ("weight", G.WEIGHTS),
                                              ("slant", G.SLANTS)))}
    return [G.caption(*c) for c in combos], attrs


@dataclass(frozen=True)
class Proportion:
    """``k`` of ``n`` samples right, with the Wilson 95 % interval ``(low, high)`` (Wilson 1927)."""

    k: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.k / self.n

    def overlaps(self, other: "Proportion") -> bool:
        """Whether the intervals overlap (then: not distinguishable at this n)."""
        return self.low <= other.high and other.low <= self.high

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] (n = {self.n})"


def adherence(samples, attrs: dict, classifier=None) -> dict:
    """Prompt adherence: ``{head: Proportion}`` of ``samples`` whose attribute the glyph classifier
    (:func:`minidiff.metrics.classify_glyphs`) reads as the requested one in ``attrs`` (from :func:`prompts`)."""
    from .discrete import wilson_interval
    from .metrics import classify_glyphs

    pred = classify_glyphs(samples, classifier)
    out = {}
    for head, want in attrs.items():
        if want.shape != (samples.shape[0],):
            raise ValueError(f"attrs[{head!r}] must hold one value per sample ({samples.shape[0]}), got {tuple(want.shape)}")
        k, n = int((pred[head] == want).sum()), int(want.numel())
        low, high = wilson_interval(k, n)
        out[head] = Proportion(k, n, max(0.0, low), min(1.0, high))
    return out


def evaluate(model: TextDiT, schedule, *, n_per_char: int = 1, guidance_scale: float = 2.0, n_steps: int = 20,
             seed: int = 0, n_held: int = 8) -> dict:
    """The shipped model's bar, measured: :func:`adherence` of samples for :func:`prompts` ``(n_per_char,
    seed)`` at ``guidance_scale`` (``"guided"``), of null-caption samples scored against the same requests
    (``"null"``, the unguided baseline), and of the :data:`HELD_OUT` prompts (``"held_out"``, ``n_held``
    each); x_T from generators seeded ``seed + 10`` and ``seed + 20``."""
    caps, want = prompts(n_per_char, seed)
    held_caps, held_want = prompts(n_held, held_out=True)
    gen = lambda k: torch.Generator().manual_seed(seed + k)  # noqa: E731
    guided = sample_from_captions(model, schedule, caps, guidance_scale=guidance_scale, n_steps=n_steps, generator=gen(10))
    null = sample_from_captions(model, schedule, [""] * len(caps), n_steps=n_steps, generator=gen(10))
    held = sample_from_captions(model, schedule, held_caps, guidance_scale=guidance_scale, n_steps=n_steps,
                                generator=gen(20))
    return {"guided": adherence(guided, want), "null": adherence(null, want), "held_out": adherence(held, held_want)}


@torch.no_grad()
def caption_losses(model: TextDiT, schedule, x, tokens, *, seed: int = 1) -> dict:
    """Whether the conditioning is used: the DDPM loss (Ho et al. 2020, eq. 14; :func:`minidiff.train.diffusion_loss`)
    of ``model`` on images ``x`` with their own captions ``tokens`` (``"caption"``), with the null caption
    (``"null"``) and with the captions shuffled across images (``"shuffled"``), all on the same ``t_index``
    and noise (torch generator ``seed``). Equal losses mean the caption is ignored."""
    from .train import diffusion_loss

    tokens = _check_tokens(tokens, "tokens", model.config.max_tokens)
    if tokens.shape[0] != x.shape[0]:
        raise ValueError(f"tokens must hold one caption per image ({x.shape[0]}), got {tokens.shape[0]}")
    g = torch.Generator().manual_seed(_c.check_count(seed, "seed", low=0))
    t_index = torch.randint(0, schedule.T, (x.shape[0],), generator=g)                        # (B,)
    noise = torch.randn(x.shape, generator=g)                                                   # (B, C, H, W)
    perm = torch.randperm(x.shape[0], generator=g)
    return {name: float(diffusion_loss(model, x, schedule, t_index, noise, y))
            for name, y in (("caption", tokens), ("null", None), ("shuffled", tokens[perm]))}


T2I_WEIGHTS = "glyph_t2i"


def load_text2image(path=None):
    """The shipped text-to-image model ``(model, schedule)`` (``minidiff/weights/glyph_t2i.safetensors``)."""
    from .train import WEIGHTS_DIR, load_weights

    model, schedule, _ = load_weights(path or (WEIGHTS_DIR / f"{T2I_WEIGHTS}.safetensors"))
    return model, schedule


# ============================================================================ CLI
def main(argv=None) -> int:
    from .train import ScheduleSpec, TrainState, save_weights
    from .unet import build_model, count_parameters

    p = argparse.ArgumentParser(prog="python -m minidiff.text2image", description="Train the glyph text-to-image model.")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--steps", type=int, default=4000)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--log-every", type=int, default=100)
    t.add_argument("--out", required=True)
    e = sub.add_parser("eval")
    e.add_argument("--weights", default=None)
    e.add_argument("--guidance", type=float, default=2.0)
    e.add_argument("--n-per-char", type=int, default=1)
    e.add_argument("--steps", type=int, default=20)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(_c.check_count(a.threads, "threads"))
    if a.cmd == "eval":
        model, schedule = load_text2image(a.weights)
        t0 = time.perf_counter()
        res = evaluate(model, schedule, n_per_char=a.n_per_char, guidance_scale=a.guidance, n_steps=a.steps, seed=a.seed)
        for part, heads in res.items():
            print(part, {h: str(v) for h, v in heads.items()})
        print(f"{time.perf_counter() - t0:.1f} s")
        return 0
    x, tokens, _ = training_set(16)
    torch.manual_seed(a.seed)
    state = TrainState.create(build_model(TextDiTConfig()), lr=a.lr)
    spec = ScheduleSpec()
    t0, losses = time.perf_counter(), []
    for rec in train_text2image(state, x, tokens, spec.build(), steps=a.steps, batch_size=a.batch_size, lr=a.lr,
                                seed=a.seed):
        losses.append(rec.loss)
        if rec.step % a.log_every == 0:
            print(f"step {rec.step} loss {np.mean(losses[-a.log_every:]):.4f} {time.perf_counter() - t0:.0f} s", flush=True)
    wall = time.perf_counter() - t0
    save_weights(a.out, state.ema, spec, preset="glyph_t2i", steps=a.steps, seed=a.seed, batch_size=a.batch_size)
    print(f"trained {a.steps} steps in {wall:.1f} s ({a.steps / wall:.3f} steps/s), "
          f"{count_parameters(state.ema)} parameters; final loss (mean of last 200) {np.mean(losses[-200:]):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
