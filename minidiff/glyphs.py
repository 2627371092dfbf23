"""Glyph images: characters rendered offline from the fonts that ship inside matplotlib.

The course's 8x8 digits are too small to show why latent diffusion or a transformer denoiser exist; these
32x32 (and 16x16) glyphs are big enough and still train on two CPU cores. Every image is one of the 62
characters ``0-9 A-Z a-z`` drawn from one of :data:`FONTS` (DejaVu Sans / Serif / Sans Mono, STIX General
and Computer Modern, each with its bold and oblique/italic faces where matplotlib ships them), then moved by
a small seeded affine jitter (scale, shift, rotation) and a stroke-width change. Each image keeps its
attributes -- character, case, family, weight, slant and the jitter itself -- as labels
(:class:`GlyphLabels`), and :func:`caption` turns them into text ("bold serif capital R") for
text-to-image.

How an image is made (all in torch, float32, deterministic on CPU):

1. Each (character, font) pair is rasterised once by FreeType (matplotlib's ``FT2Font``, no hinting) at a
   size that makes the font's capital ``H`` :data:`_CAP_HEIGHT` pixels tall, and centred by its ink
   bounding box on a ``64 x 64`` master canvas (lowercase letters stay smaller than capitals).
2. Per image, the master is blended towards its 3x3 max-pool dilation or erosion (``stroke`` in
   ``[-1/2, 1]``; 1 is one master pixel thicker) and resampled through the inverse of ``A = shift . rotate . scale``
   (``torch.nn.functional.grid_sample``, bilinear).
3. Area-averaged down to 32x32 or 16x16 and mapped to ``[-1, 1]`` (background -1, ink +1, as
   :func:`minidiff.data.load_digits`).

Splits are fixed: each has its own seed and size (:data:`SPLITS`); ``"classifier"`` trains the glyph
classifier of :mod:`minidiff.metrics.glyphs` and is disjoint from ``"train"`` and ``"test"``, the two
sides of the real-vs-real floor. A split is rendered in full once (about a second per 10 000 images)
and cached as safetensors (no pickle) with a SHA-256 of its arrays under a versioned directory
(``$MINIDIFF_CACHE_DIR`` or ``~/.cache/minidiff``, then ``glyphs-<hash of this file, matplotlib and
FreeType versions>``); a missing, truncated or altered cache file is rendered again (with a warning
for a bad one). Nothing touches the network.
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import _checks as _c

__all__ = [
    "CHARSET", "CASES", "FAMILIES", "WEIGHTS", "SLANTS", "FONTS", "SPLITS", "JITTER_FIELDS", "GlyphFont",
    "GlyphLabels", "load_glyphs", "render_glyphs", "caption", "glyph_cache_path", "font_files",
]

CHARSET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CASES = ("digit", "upper", "lower")
FAMILIES = ("sans", "serif", "mono", "stix", "cm")
WEIGHTS = ("regular", "bold")
SLANTS = ("upright", "italic")
JITTER_FIELDS = ("scale", "shift_x", "shift_y", "rotation_deg", "stroke")
SIZES = (32, 16)

# Jitter ranges (uniform): scale factor, shift in units of the image width, rotation in degrees, stroke
# in [-1/2, 1] (-1 would thin by one master pixel, which erases the hairlines of the light serif faces;
# +1 thickens by one, i.e. 1/2 pixel at 32x32).
_SCALE = (0.85, 1.1)
_SHIFT = 0.06
_ROTATION_DEG = 10.0
_STROKE = (-0.5, 1.0)
_MASTER = 64          # master canvas side, pixels
_CAP_HEIGHT = 38      # height of capital H on the master canvas, pixels


@dataclass(frozen=True)
class GlyphFont:
    """One face: its family, weight and slant names and the TrueType file in matplotlib's mpl-data."""

    family: str
    weight: str
    slant: str
    file: str


FONTS: tuple[GlyphFont, ...] = (
    GlyphFont("sans", "regular", "upright", "DejaVuSans.ttf"),
    GlyphFont("sans", "bold", "upright", "DejaVuSans-Bold.ttf"),
    GlyphFont("sans", "regular", "italic", "DejaVuSans-Oblique.ttf"),
    GlyphFont("sans", "bold", "italic", "DejaVuSans-BoldOblique.ttf"),
    GlyphFont("serif", "regular", "upright", "DejaVuSerif.ttf"),
    GlyphFont("serif", "bold", "upright", "DejaVuSerif-Bold.ttf"),
    GlyphFont("serif", "regular", "italic", "DejaVuSerif-Italic.ttf"),
    GlyphFont("serif", "bold", "italic", "DejaVuSerif-BoldItalic.ttf"),
    GlyphFont("mono", "regular", "upright", "DejaVuSansMono.ttf"),
    GlyphFont("mono", "bold", "upright", "DejaVuSansMono-Bold.ttf"),
    GlyphFont("mono", "regular", "italic", "DejaVuSansMono-Oblique.ttf"),
    GlyphFont("mono", "bold", "italic", "DejaVuSansMono-BoldOblique.ttf"),
    GlyphFont("stix", "regular", "upright", "STIXGeneral.ttf"),
    GlyphFont("stix", "bold", "upright", "STIXGeneralBol.ttf"),
    GlyphFont("stix", "regular", "italic", "STIXGeneralItalic.ttf"),
    GlyphFont("stix", "bold", "italic", "STIXGeneralBolIta.ttf"),
    GlyphFont("cm", "regular", "upright", "cmr10.ttf"),
    GlyphFont("cm", "bold", "upright", "cmb10.ttf"),
    GlyphFont("cm", "regular", "italic", "cmti10.ttf"),
)

# split -> (seed, number of images). Different seeds give disjoint draws (tested: no image repeats).
SPLITS = {"train": (0, 12000), "test": (1, 2000), "classifier": (2, 8000)}

_CASE_WORD = {"digit": "digit", "upper": "capital", "lower": "lowercase"}
_FAMILY_WORD = {"sans": "sans", "serif": "serif", "mono": "monospace", "stix": "stix", "cm": "computer modern"}


def _case_of(ch: str) -> int:
    return 0 if ch.isdigit() else (1 if ch.isupper() else 2)


# ============================================================================ labels
@dataclass(frozen=True, eq=False)
class GlyphLabels:
    """Per-image attributes, each an ``(N,)`` int64 tensor indexing the tuple of the same name
    (``char`` -> :data:`CHARSET`, ``case`` -> :data:`CASES`, ``family`` -> :data:`FAMILIES`, ``weight`` ->
    :data:`WEIGHTS`, ``slant`` -> :data:`SLANTS`, ``font`` -> :data:`FONTS`), plus ``jitter``: ``(N, 5)``
    float32 with columns :data:`JITTER_FIELDS`."""

    char: torch.Tensor
    case: torch.Tensor
    family: torch.Tensor
    weight: torch.Tensor
    slant: torch.Tensor
    font: torch.Tensor
    jitter: torch.Tensor

    def __len__(self) -> int:
        return int(self.char.shape[0])

    def __getitem__(self, idx) -> "GlyphLabels":
        """The labels of a subset (slice, index tensor or boolean mask), as a new :class:`GlyphLabels`."""
        return GlyphLabels(**{k: getattr(self, k)[idx] for k in self.__dataclass_fields__})

    def characters(self) -> list[str]:
        return [CHARSET[int(i)] for i in self.char]

    def attributes(self, i: int) -> dict:
        """Image ``i``'s attributes as names: ``{"char": "R", "case": "upper", "family": "serif", ...}``."""
        i = _c.check_index(i, "i", len(self))
        d = {"char": CHARSET[int(self.char[i])], "case": CASES[int(self.case[i])],
             "family": FAMILIES[int(self.family[i])], "weight": WEIGHTS[int(self.weight[i])],
             "slant": SLANTS[int(self.slant[i])]}
        d.update({f: float(v) for f, v in zip(JITTER_FIELDS, self.jitter[i].tolist())})
        return d

    def caption(self, i: int) -> str:
        """Image ``i``'s caption, see :func:`caption`."""
        a = self.attributes(i)
        return caption(a["char"], a["family"], a["weight"], a["slant"])

    def captions(self) -> list[str]:
        return [self.caption(i) for i in range(len(self))]


def caption(char: str, family: str, weight: str = "regular", slant: str = "upright") -> str:
    """A caption from attributes: ``caption("R", "serif", "bold")`` -> ``"bold serif capital R"``,
    ``caption("g", "mono", slant="italic")`` -> ``"italic monospace lowercase g"``, ``caption("7", "sans")``
    -> ``"sans digit 7"`` (regular and upright are left unsaid)."""
    if not isinstance(char, str) or len(char) != 1 or char not in CHARSET:
        raise ValueError(f"char must be one character of {CHARSET!r}, got {char!r}")
    for name, value, allowed in (("family", family, FAMILIES), ("weight", weight, WEIGHTS), ("slant", slant, SLANTS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    words = [w for w in (weight if weight != "regular" else "", slant if slant != "upright" else "") if w]
    words += [_FAMILY_WORD[family], _CASE_WORD[CASES[_case_of(char)]], char]
    return " ".join(words)


# ============================================================================ rendering
def font_files() -> dict[str, Path]:
    """``{file name: path}`` of :data:`FONTS` inside matplotlib's own mpl-data (never system fonts)."""
    import matplotlib

    root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    out = {}
    for f in FONTS:
        p = root / f.file
        if not p.is_file():
            raise FileNotFoundError(f"matplotlib's bundled font {p} is missing; reinstall matplotlib")
        out[f.file] = p
    return out


def _rasterise(path: Path, chars: str) -> np.ndarray:
    """``(len(chars), 64, 64)`` float32 in ``[0, 1]``: each character at the size that makes ``H``
    :data:`_CAP_HEIGHT` pixels tall, centred by its ink bounding box."""
    from matplotlib.ft2font import FT2Font, LoadFlags

    font = FT2Font(str(path))

    def draw(ch, size):
        font.set_size(size, 72)
        font.set_text(ch, 0.0, flags=LoadFlags.NO_HINTING)
        font.draw_glyphs_to_bitmap(antialiased=True)
        im = np.asarray(font.get_image(), dtype=np.float32) / 255.0
        rows, cols = np.flatnonzero(im.any(1)), np.flatnonzero(im.any(0))
        return im[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]

    size = 40.0 * _CAP_HEIGHT / draw("H", 40.0).shape[0]
    out = np.zeros((len(chars), _MASTER, _MASTER), np.float32)
    for k, ch in enumerate(chars):
        im = draw(ch, size)[:_MASTER, :_MASTER]
        h, w = im.shape
        r, c = (_MASTER - h) // 2, (_MASTER - w) // 2
        out[k, r:r + h, c:c + w] = im
    return out


@functools.lru_cache(maxsize=1)
def _masters() -> torch.Tensor:
    """``(3, len(FONTS), 62, 64, 64)``: every (font, character) master, eroded / as drawn / dilated by a
    3x3 max-pool (the stroke-width extremes)."""
    files = font_files()
    m = torch.from_numpy(np.stack([_rasterise(files[f.file], CHARSET) for f in FONTS]))
    pool = lambda v: torch.nn.functional.max_pool2d(v, 3, stride=1, padding=1)  # noqa: E731
    return torch.stack([-pool(-m), m, pool(m)])


def _draw_attributes(n: int, seed: int) -> GlyphLabels:
    """Characters, faces and jitter for ``n`` images from one seeded numpy stream (PCG64)."""
    rng = np.random.default_rng(seed)
    char = rng.integers(0, len(CHARSET), n)
    font = rng.integers(0, len(FONTS), n)
    jitter = np.stack([rng.uniform(*_SCALE, n), rng.uniform(-_SHIFT, _SHIFT, n), rng.uniform(-_SHIFT, _SHIFT, n),
                       rng.uniform(-_ROTATION_DEG, _ROTATION_DEG, n), rng.uniform(*_STROKE, n)], 1)
    fam = np.array([FAMILIES.index(f.family) for f in FONTS])[font]
    wt = np.array([WEIGHTS.index(f.weight) for f in FONTS])[font]
    sl = np.array([SLANTS.index(f.slant) for f in FONTS])[font]
    case = np.array([_case_of(ch) for ch in CHARSET])[char]
    t = lambda a: torch.as_tensor(a, dtype=torch.int64)  # noqa: E731
    return GlyphLabels(char=t(char), case=t(case), family=t(fam), weight=t(wt), slant=t(sl), font=t(font),
                       jitter=torch.as_tensor(jitter, dtype=torch.float32))


def _affine_grid(jitter: torch.Tensor, side: int) -> torch.Tensor:
    """``(N, side, side, 2)`` sampling grid for ``grid_sample``: output pixel centres ``p`` (normalised to
    ``[-1, 1]``, ``align_corners=False``) mapped through the inverse of ``x -> R(theta) s x + shift``,
    i.e. ``R(-theta) (p - shift) / s`` (a shift of ``f`` image widths is ``2f`` normalised)."""
    s, dx, dy, deg = (jitter[:, k].double() for k in range(4))
    th = deg * math.pi / 180.0
    cos, sin = torch.cos(th) / s, torch.sin(th) / s
    a = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], 1)  # (N, 2, 2)
    shift = torch.stack([2 * dx, 2 * dy], -1)[..., None]                           # (N, 2, 1)
    theta = torch.cat([a, -(a @ shift)], -1).float()                                # (N, 2, 3)
    c = (torch.arange(side, dtype=torch.float32) + 0.5) * (2.0 / side) - 1.0
    gy, gx = torch.meshgrid(c, c, indexing="ij")
    base = torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(-1, 3)           # (side^2, 3)
    return torch.einsum("pk,njk->npj", base, theta).reshape(-1, side, side, 2)


def _with_stroke(masters: torch.Tensor, labels: "GlyphLabels") -> torch.Tensor:
    """``(B, 1, 64, 64)`` masters blended towards their dilation (``stroke > 0``) or erosion
    (``stroke < 0``) by ``|stroke|``; blending before the (linear) resampling equals blending after."""
    w = labels.jitter[:, 4].view(-1, 1, 1)
    plain = masters[1, labels.font, labels.char]
    side = torch.where(w >= 0, masters[2, labels.font, labels.char], masters[0, labels.font, labels.char])
    return (plain + w.abs() * (side - plain))[:, None]


def render_glyphs(labels: GlyphLabels, size: int = 32, batch: int = 2048) -> torch.Tensor:
    """Images ``(N, 1, size, size)`` float32 in ``[-1, 1]`` for the characters, fonts and jitter in
    ``labels`` (any :class:`GlyphLabels`, so a caller can render its own attribute combinations)."""
    if not isinstance(labels, GlyphLabels):
        raise TypeError(f"labels must be GlyphLabels, got {type(labels).__name__}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    return _render(labels, (size,), batch)[size]


def _render(labels: "GlyphLabels", sizes, batch: int = 2048) -> dict:
    """``{size: (N, 1, size, size)}`` from one resampling at the master resolution."""
    masters = _masters()
    out = {s: [] for s in sizes}
    for lo in range(0, len(labels), batch):
        lab = labels[lo:lo + batch]
        x = _with_stroke(masters, lab)                                                  # (B, 1, 64, 64)
        x = torch.nn.functional.grid_sample(x, _affine_grid(lab.jitter, _MASTER), mode="bilinear",
                                            padding_mode="zeros", align_corners=False).clamp(0.0, 1.0)
        for s in sizes:
            out[s].append(2.0 * torch.nn.functional.avg_pool2d(x, _MASTER // s) - 1.0)  # (B, 1, s, s)
    return {s: torch.cat(v) if v else torch.empty(0, 1, s, s) for s, v in out.items()}


# ============================================================================ cache
@functools.lru_cache(maxsize=1)
def _version_tag() -> str:
    import matplotlib
    from matplotlib import ft2font

    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(f"{matplotlib.__version__}|{ft2font.__freetype_version__}|{torch.__version__}".encode())
    return h.hexdigest()[:16]


def glyph_cache_path(split: str) -> Path:
    """Where a split is cached: ``<cache root>/glyphs-<version tag>/<split>.safetensors``; the root is
    ``$MINIDIFF_CACHE_DIR``, else ``$XDG_CACHE_HOME/minidiff`` (``~/.cache/minidiff``)."""
    _check_split(split)
    root = os.environ.get("MINIDIFF_CACHE_DIR")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minidiff"
    return Path(root) / f"glyphs-{_version_tag()}" / f"{split}.safetensors"


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")


def _digest(arrays: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        h.update(k.encode())
        h.update(np.ascontiguousarray(arrays[k].numpy()).tobytes())
    return h.hexdigest()


def _render_split(split: str) -> dict:
    seed, n = SPLITS[split]
    labels = _draw_attributes(n, seed)
    arrays = {k: getattr(labels, k) for k in GlyphLabels.__dataclass_fields__}
    for s, x in _render(labels, SIZES).items():  # stored as uint8 grey levels (0..255), like a PNG
        arrays[f"images{s}"] = torch.round((x + 1.0) * 127.5).to(torch.uint8)
    return arrays


def _read_cache(path: Path):
    """The cached arrays, or None when the file is missing; a file that fails to load or whose digest
    does not match is reported (warning) and treated as missing."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("sha256") != _digest(arrays):
            raise ValueError("SHA-256 of the arrays does not match the recorded one")
    except Exception as err:  # noqa: BLE001  -- any unreadable file is re-rendered
        warnings.warn(f"minidiff: glyph cache file {path} is corrupt ({type(err).__name__}: {err}); rendering it again",
                      RuntimeWarning, stacklevel=3)
        return None
    return arrays


def _write_cache(path: Path, arrays: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({k: v.contiguous() for k, v in arrays.items()}, str(tmp), metadata={"sha256": _digest(arrays)})
    os.replace(tmp, path)  # atomic: a reader never sees half a file


@functools.lru_cache(maxsize=4)
def _split_arrays(split: str, path: str) -> dict:
    arrays = _read_cache(Path(path))
    if arrays is None:
        arrays = _render_split(split)
        try:
            _write_cache(Path(path), arrays)
        except OSError as err:  # a read-only home still gets its images
            warnings.warn(f"minidiff: could not write the glyph cache {path} ({err})", RuntimeWarning, stacklevel=3)
    return arrays


def load_glyphs(split: str = "train", size: int = 32, n: int | None = None):
    """Glyph images and their attributes: ``(images, labels)``, ``images`` ``(N, 1, size, size)`` float32
    in ``[-1, 1]`` (background -1), ``labels`` a :class:`GlyphLabels`.

    ``split``: ``"train"`` (12 000 images), ``"test"`` (2 000) or ``"classifier"`` (8 000; reserved for
    the glyph classifier); ``size``: 32 or 16; ``n``: the first ``n`` images of the split (all by
    default). Deterministic: the same call returns the same images on every run and machine with the
    same matplotlib / FreeType."""
    _check_split(split)
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    total = SPLITS[split][1]
    n = total if n is None else _c.check_count(n, "n", low=1, high=total)
    arrays = _split_arrays(split, str(glyph_cache_path(split)))
    images = arrays[f"images{size}"][:n].to(torch.float32) / 127.5 - 1.0
    labels = GlyphLabels(**{k: arrays[k][:n].clone() for k in GlyphLabels.__dataclass_fields__})
    return images.contiguous(), labels
