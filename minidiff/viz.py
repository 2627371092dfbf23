"""Plot helpers that return PNG bytes, for the chain player and for static figures.

Everything here draws on a detached :class:`matplotlib.figure.Figure` (no pyplot, so nothing is
shown twice by the inline backend) unless you hand in a pyplot figure yourself, which
:func:`figure_to_png` then closes.

* :func:`figure_to_png` -- any Figure to PNG bytes.
* :func:`digits_png` -- a grid of small greyscale images (e.g. 8x8 digits in ``[-1, 1]``), drawn by
  array composition and nearest-neighbour upscaling: about a millisecond, no axes.
* :func:`scatter_png` -- a 2-D point cloud in fixed limits (so frames of a chain line up).
* :func:`curve_png` -- a curve (e.g. a schedule's ``alpha_bar``) with the current step marked.
* :func:`png_strip` -- a row (or rows) of PNGs with captions: the static fallback of a widget.

High-density screens: sizes here (``figsize`` x ``dpi``, ``scale``) are *display* sizes in CSS
pixels. Inside :func:`pixel_ratio_context` (the chain player renders its frames in one, at 2) every
helper draws ``ratio`` times as many pixels per displayed pixel, and the player shows each PNG at
its pixel width divided by the ratio (:func:`png_size`), so frames stay sharp on 2x screens. Outside
it the ratio is 1 and nothing changes.
"""
from __future__ import annotations

import contextlib
import contextvars
import io
import math
import struct
import sys
from typing import Sequence

import numpy as np

from . import _checks

__all__ = ["new_figure", "figure_to_png", "digits_png", "scatter_png", "curve_png", "png_strip",
           "decode_png", "png_size", "pixel_ratio", "pixel_ratio_context", "palette_png"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

_PIXEL_RATIO: contextvars.ContextVar[int] = contextvars.ContextVar("minidiff_pixel_ratio", default=1)


def pixel_ratio() -> int:
    """Device pixels drawn per displayed (CSS) pixel by the helpers here: 1 unless inside
    :func:`pixel_ratio_context`."""
    return _PIXEL_RATIO.get()


@contextlib.contextmanager
def pixel_ratio_context(ratio: int):
    """Within the block, every helper here (and :func:`figure_to_png`) renders at ``ratio`` x its
    display size; the caller shows the PNG at ``png_size(png)[0] / ratio`` CSS pixels wide."""
    ratio = _checks.check_count(ratio, "ratio", 1, 4)
    token = _PIXEL_RATIO.set(ratio)
    try:
        yield ratio
    finally:
        _PIXEL_RATIO.reset(token)


def png_size(png: bytes) -> tuple[int, int]:
    """``(width, height)`` in pixels of PNG bytes, read from the IHDR chunk (no decoding)."""
    b = bytes(png[:24])
    if len(b) < 24 or not b.startswith(PNG_MAGIC) or b[12:16] != b"IHDR":
        raise ValueError("png must be PNG bytes starting with an IHDR chunk")
    return struct.unpack(">II", b[16:24])


def new_figure(figsize=(3.0, 3.0), dpi: int = 80):
    """A Figure not registered with pyplot (never auto-displayed), with an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def figure_to_png(fig, *, dpi=None, close: bool = True) -> bytes:
    """Render ``fig`` to PNG bytes at ``dpi`` (default: the figure's own, times :func:`pixel_ratio`).
    A pyplot figure is closed afterwards (``close=True``) so the inline backend does not show it
    again at the end of the cell."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi if dpi is not None else fig.dpi * pixel_ratio())
    plt = sys.modules.get("matplotlib.pyplot")
    if close and plt is not None:
        plt.close(fig)  # a no-op for figures pyplot does not manage
    return buf.getvalue()


def palette_png(png: bytes) -> bytes:
    """The same picture as an 8-bit palette PNG (what the chain player stores: a third to a half
    of the bytes). Exact when the image has at most 256 colours (digit grids, flat plots);
    otherwise the colours are reduced to 256 by Pillow's fast octree, without dithering, then each
    palette entry is set to the mean colour of its pixels. Transparent pixels are composed over
    white first (the players sit on white)."""
    from PIL import Image

    im = Image.open(io.BytesIO(png))
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        rgb = Image.new("RGB", im.size, (255, 255, 255))
        rgb.paste(im, mask=im.getchannel("A"))
    else:
        rgb = im.convert("RGB")
    arr = np.asarray(rgb)
    packed = (arr[..., 0].astype(np.uint32) << 16) | (arr[..., 1].astype(np.uint32) << 8) | arr[..., 2]
    colours = rgb.getcolors(256)                  # None when there are more than 256
    if colours is not None:
        keys = np.sort(np.array([(r << 16) | (g << 8) | b for _, (r, g, b) in colours], dtype=np.uint32))
        index = np.searchsorted(keys, packed).astype(np.uint8)
        pal = np.stack([(keys >> 16) & 255, (keys >> 8) & 255, keys & 255], axis=1)
        q = Image.fromarray(index, mode="L").convert("P")
    else:
        q = rgb.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        # One k-means step: each palette entry becomes the mean colour of the pixels mapped to it
        # (the octree's entries are cell centres; a white background would come out off-white).
        idx = np.asarray(q).reshape(-1)
        count = np.bincount(idx, minlength=256)
        pal = np.asarray(q.getpalette()[:768], dtype=np.float64).reshape(-1, 3)
        pal = np.pad(pal, ((0, 256 - len(pal)), (0, 0)))
        used = count > 0
        flat = arr.reshape(-1, 3)
        for c in range(3):
            pal[used, c] = np.bincount(idx, weights=flat[:, c], minlength=256)[used] / count[used]
        pal = np.round(pal)
    q.putpalette(pal.astype(np.uint8).reshape(-1).tolist())
    buf = io.BytesIO()
    q.save(buf, format="PNG")
    return buf.getvalue()


def decode_png(png: bytes) -> np.ndarray:
    """PNG bytes to an ``(H, W, C)`` float array in ``[0, 1]``."""
    import matplotlib.image as mpimg

    return mpimg.imread(io.BytesIO(png), format="png")


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def digits_png(images, *, ncol: int | None = None, scale: int = 8, vmin: float = -1.0,
               vmax: float = 1.0, pad: int = 1, cmap: str = "gray") -> bytes:
    """A grid of greyscale images as PNG bytes.

    ``images``: ``(N, 1, H, W)``, ``(N, H, W)`` or ``(H, W)`` (tensor or array), values mapped from
    ``[vmin, vmax]`` (default: the course's ``[-1, 1]`` pixel range) to black..white and clipped.
    ``ncol`` defaults to ``ceil(sqrt(N))``; each pixel becomes a ``scale x scale`` block of display
    pixels (``scale * pixel_ratio()`` PNG pixels); ``pad`` pixels (of the grid, before scaling) of
    mid-grey separate the images.
    """
    import matplotlib.image as mpimg

    a = _to_numpy(images)
    if a.ndim == 2:
        a = a[None]
    if a.ndim == 4:
        if a.shape[1] != 1:
            raise ValueError(f"images must have one channel: expected (N, 1, H, W), got {a.shape}")
        a = a[:, 0]
    if a.ndim != 3 or a.shape[0] == 0:
        raise ValueError(f"images must be (N, 1, H, W), (N, H, W) or (H, W) with N >= 1, got {a.shape}")
    n, h, w = a.shape
    ncol = int(ncol or math.ceil(math.sqrt(n)))
    nrow = math.ceil(n / ncol)
    a = np.clip((a - vmin) / (vmax - vmin), 0.0, 1.0)
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad), 0.5)
    for k in range(n):
        r, c = divmod(k, ncol)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y:y + h, x:x + w] = a[k]
    k = int(scale) * pixel_ratio()
    grid = np.kron(grid, np.ones((k, k)))
    buf = io.BytesIO()
    mpimg.imsave(buf, grid, cmap=cmap, vmin=0.0, vmax=1.0, format="png")
    return buf.getvalue()


def scatter_png(points, *, lim: float | tuple = 3.0, size: float = 3.0, dpi: int = 80, s: float = 4.0,
                alpha: float = 0.6, color="C0", title: str | None = None, background=None) -> bytes:
    """A 2-D point cloud ``(N, 2)`` as PNG bytes, in fixed limits ``lim`` (a half-width, or
    ``(xmin, xmax, ymin, ymax)``) so consecutive frames line up. ``background``: optional second
    cloud drawn in light grey underneath (e.g. the data)."""
    p = _to_numpy(points)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {p.shape}")
    lims = (-lim, lim, -lim, lim) if np.isscalar(lim) else tuple(lim)
    fig = new_figure((size, size), dpi)
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.96 if title is None else 0.88))
    if background is not None:
        b = _to_numpy(background)
        ax.scatter(b[:, 0], b[:, 1], s=s, c="0.8", linewidths=0)
    ax.scatter(p[:, 0], p[:, 1], s=s, alpha=alpha, c=color, linewidths=0)
    ax.set_xlim(lims[0], lims[1])
    ax.set_ylim(lims[2], lims[3])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=9)
    return figure_to_png(fig)


def curve_png(x, y, *, at=None, xlabel: str = "", ylabel: str = "", title: str | None = None,
              size=(3.2, 2.4), dpi: int = 80, logy: bool = False) -> bytes:
    """A curve ``y(x)`` as PNG bytes with a vertical marker and dot at ``x = at`` (e.g. the current
    ``t_index`` on a schedule's ``alpha_bar``)."""
    xa, ya = _to_numpy(x), _to_numpy(y)
    fig = new_figure(size, dpi)
    ax = fig.add_subplot(111)
    ax.plot(xa, ya, lw=1.5)
    if logy:
        ax.set_yscale("log")
    if at is not None:
        k = int(np.argmin(np.abs(xa - float(at))))
        ax.axvline(xa[k], color="C3", lw=1)
        ax.plot([xa[k]], [ya[k]], "o", color="C3")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    if title is not None:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return figure_to_png(fig)


def png_strip(rows: Sequence[Sequence[bytes]], captions: Sequence[str] | None = None, *,
              title: str | None = None, max_width_px: int = 1400, dpi: int = 80) -> bytes:
    """Lay out PNGs in a grid (``rows[r][c]``), one caption per column, as one PNG: the static
    figure strip a chain player shows where no widget front end is present. Panels keep their
    native size unless the strip would be wider than ``max_width_px`` (display pixels), then all
    shrink together. Inside :func:`pixel_ratio_context` the panels are taken to hold ``ratio`` PNG
    pixels per display pixel, and the strip is drawn at that density too."""
    rows = [list(r) for r in rows]
    if not rows or not rows[0]:
        raise ValueError("png_strip needs at least one image")
    ncol = len(rows[0])
    if any(len(r) != ncol for r in rows):
        raise ValueError("every row of png_strip must have the same number of images")
    if captions is not None and len(captions) != ncol:
        raise ValueError(f"captions must have one entry per column ({ncol}), got {len(captions)}")
    decoded = [[decode_png(p) for p in r] for r in rows]
    col_w = [max(decoded[r][c].shape[1] for r in range(len(rows))) for c in range(ncol)]
    row_h = [max(im.shape[0] for im in r) for r in decoded]
    r = pixel_ratio()  # panels hold r PNG pixels per display pixel; so does the strip
    scale = min(1.0, max_width_px * r / sum(col_w))
    cap_px, title_px = (20 if captions is not None else 0), (28 if title else 0)
    width = sum(col_w) * scale / (r * dpi)
    height = (sum(row_h) * scale / r + cap_px * len(rows) + title_px) / dpi
    fig = new_figure((width, height), dpi)
    axes = fig.subplots(len(rows), ncol, squeeze=False,
                        gridspec_kw={"height_ratios": row_h, "width_ratios": col_w,
                                     "left": 0, "right": 1, "bottom": 0,
                                     "top": 1 - title_px / (height * dpi), "wspace": 0.02,
                                     "hspace": cap_px / max(1.0, sum(row_h) * scale / r / len(rows))})
    for r, row in enumerate(decoded):
        for c, im in enumerate(row):
            ax = axes[r][c]
            ax.imshow(im, interpolation="antialiased")
            ax.set_axis_off()
            if r == 0 and captions is not None:
                ax.set_title(captions[c], fontsize=10)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 4 / (height * dpi), va="top")
    return figure_to_png(fig)
