"""Step-through widgets: one reusable chain player for every notebook.

:class:`ChainPlayer` shows a sequence of states of a process -- a forward or reverse diffusion chain,
Langevin particles, SDE trajectories, Brownian walkers -- with a Play button, a slider, a step label
and an optional side panel::

    from minidiff.widgets import ChainPlayer
    from minidiff.viz import digits_png, curve_png

    records = list(sampler(...))                       # or pass the generator itself
    player = ChainPlayer(records,
                         render=lambda r: digits_png(r.x),           # the main panel
                         side=lambda r: digits_png(r.x0_hat),        # optional: beside it
                         labels=lambda r: f"t_index = {r.t_index}",  # or a list of str, or None
                         title="Reverse chain")
    player                                             # last expression of the cell displays it

Design (see shared/design/notebooks.md):

* ``frames`` is any iterable -- a list, a tensor/array (split along its first axis) or a generator,
  which is consumed once and materialised into :attr:`ChainPlayer.frames`.
* Every frame is rendered to PNG bytes once, at construction (:attr:`frames_png`,
  :attr:`side_png`). Moving the slider only swaps ``Image.value``, so it is instant, and no
  plotting code runs inside a widget callback (nothing there can raise).
* Play and the slider are linked in the browser (``jslink``); a kernel-side
  ``observe(names="value")`` on the slider swaps the image(s) and the label.
* Where no widget front end exists (nbconvert HTML, GitHub, a notebook reopened without its kernel)
  the displayed bundle also carries ``image/png``: a static strip of a few evenly spaced frames
  (:meth:`static_strip`), and ``text/plain``.

``render`` and ``side`` take one frame and return a matplotlib Figure (closed after rendering) or
PNG bytes (e.g. from :func:`minidiff.viz.digits_png`). If a panel needs the step index, make it part
of the frame: ``ChainPlayer(list(zip(t_indices, xs)), render=lambda f: ...)``.
"""
from __future__ import annotations

import base64
import inspect
from typing import Any, Callable, Iterable, Sequence

from .viz import PNG_MAGIC, curve_png, digits_png, figure_to_png, png_strip, scatter_png

__all__ = ["ChainPlayer", "to_png", "digits_png", "scatter_png", "curve_png"]

Renderer = Callable[[Any], Any]


def to_png(obj, *, name: str = "render") -> bytes:
    """What a renderer returned, as PNG bytes: a matplotlib Figure (rendered, then closed if pyplot
    owns it) or PNG bytes (passed through). Anything else raises ``TypeError`` naming ``name``."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        b = bytes(obj)
        if not b.startswith(PNG_MAGIC):
            raise ValueError(f"{name} returned bytes that are not a PNG image")
        return b
    if hasattr(obj, "savefig"):
        return figure_to_png(obj)
    raise TypeError(f"{name} must return a matplotlib Figure or PNG bytes, got {type(obj).__name__}")


def _materialise(frames) -> list:
    if frames is None:
        raise ValueError("frames must be a non-empty sequence, array or generator, got None")
    if isinstance(frames, (str, bytes)):
        raise ValueError("frames must be a sequence, array or generator of frames, not a string")
    if hasattr(frames, "shape") and hasattr(frames, "__getitem__") and not isinstance(frames, (list, tuple)):
        if len(frames.shape) == 0:
            raise ValueError("frames must have a first (step) axis; got a 0-d array")
        return [frames[i] for i in range(frames.shape[0])]
    if not isinstance(frames, Iterable):
        raise ValueError(f"frames must be iterable (a sequence, array or generator), got {type(frames).__name__}")
    return list(frames)


class ChainPlayer:
    """Play / slider / label over pre-rendered frames of a process, with an optional side panel.

    Parameters
    ----------
    frames : sequence, array/tensor (first axis = step) or generator
        The states to show, in order. A generator is consumed once (:attr:`frames` keeps them).
    render : callable ``frame -> Figure | PNG bytes``
        Draws the main panel of one frame.
    side : callable ``frame -> Figure | PNG bytes``, optional
        Draws a second panel shown to the right (e.g. the x0 estimate, a schedule curve marking
        the current step, a density plot).
    labels : sequence of str (one per frame), callable ``frame -> str``, or None
        The step label; ``None`` gives ``"step i / n-1"``.
    interval_ms : int
        Milliseconds between frames while playing.
    title : str, optional
        A heading shown above the player and on the static strip.
    start : int
        The frame shown first (negative counts from the end, like list indices).
    strip_frames : int
        How many evenly spaced frames the static strip shows (default 6; fewer if there are fewer).
    loop : bool
        Whether Play starts over after the last frame.

    Attributes for code and tests: :attr:`frames`, :attr:`frames_png`, :attr:`side_png`,
    :attr:`labels`, and the widgets :attr:`play`, :attr:`slider`, :attr:`label`, :attr:`image`,
    :attr:`side_image` (``None`` without ``side``), :attr:`widget` (the whole ``VBox``).
    """

    def __init__(self, frames, render: Renderer, *, side: Renderer | None = None,
                 labels: Sequence[str] | Callable[[Any], str] | None = None, interval_ms: int = 200,
                 title: str | None = None, start: int = 0, strip_frames: int = 6, loop: bool = False):
        import ipywidgets as widgets

        if not callable(render):
            raise ValueError(f"render must be callable (frame -> Figure or PNG bytes), got {type(render).__name__}")
        if side is not None and not callable(side):
            raise ValueError(f"side must be callable (frame -> Figure or PNG bytes) or None, got {type(side).__name__}")
        if not isinstance(interval_ms, int) or isinstance(interval_ms, bool) or interval_ms < 1:
            raise ValueError(f"interval_ms must be a positive int, got {interval_ms!r}")
        if not isinstance(strip_frames, int) or strip_frames < 1:
            raise ValueError(f"strip_frames must be a positive int, got {strip_frames!r}")
        if inspect.isgeneratorfunction(frames):
            raise ValueError("frames is a generator function: call it to pass the generator")

        self.frames: list = _materialise(frames)
        n = len(self.frames)
        if n == 0:
            raise ValueError("frames is empty: a chain player needs at least one frame")
        if callable(labels):
            self.labels: list[str] = [str(self._call(labels, f, i, "labels")) for i, f in enumerate(self.frames)]
        else:
            self.labels = self._make_labels(labels, n)
        if not -n <= start < n:
            raise ValueError(f"start must index a frame (-{n} <= start < {n}), got {start}")
        start = start % n

        self.frames_png: list[bytes] = [self._render(render, f, i, "render") for i, f in enumerate(self.frames)]
        self.side_png: list[bytes] | None = (None if side is None else
                                             [self._render(side, f, i, "side") for i, f in enumerate(self.frames)])
        self.title = title
        self.strip_frames = strip_frames
        self._strip: bytes | None = None

        self.play = widgets.Play(value=start, min=0, max=n - 1, step=1, interval=interval_ms,
                                 repeat=loop, description="Play", layout=widgets.Layout(width="auto"))
        self.slider = widgets.IntSlider(value=start, min=0, max=n - 1, step=1, readout=False,
                                        continuous_update=True, description="step",
                                        layout=widgets.Layout(width="320px"))
        widgets.jslink((self.play, "value"), (self.slider, "value"))
        self.label = widgets.Label(value=self.labels[start])
        self.image = widgets.Image(value=self.frames_png[start], format="png")
        self.side_image = None if self.side_png is None else widgets.Image(value=self.side_png[start], format="png")
        panels = [self.image] if self.side_image is None else [self.image, self.side_image]
        children = [widgets.HBox([self.play, self.slider, self.label]), widgets.HBox(panels)]
        if title:
            children.insert(0, widgets.HTML(value=f"<b>{_escape(title)}</b>"))
        self.widget = widgets.VBox(children)
        self.slider.observe(self._on_step, names="value")

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _make_labels(labels, n: int) -> list[str]:
        if labels is None:
            return [f"step {i} / {n - 1}" for i in range(n)]
        if isinstance(labels, str):
            raise ValueError("labels must be a sequence of str (one per frame) or a callable, not a str")
        out = [str(s) for s in labels]
        if len(out) != n:
            raise ValueError(f"labels must have one entry per frame: expected {n}, got {len(out)}")
        return out

    @staticmethod
    def _call(fn, frame, i: int, name: str):
        try:
            return fn(frame)
        except Exception as e:  # name the callable and the frame that failed
            msg = f"{name} failed on frame {i}: {type(e).__name__}: {e}"
            try:
                err = type(e)(msg)
            except Exception:
                err = RuntimeError(msg)
            raise err from e

    def _render(self, fn, frame, i: int, name: str) -> bytes:
        return to_png(self._call(fn, frame, i, name), name=name)

    # ------------------------------------------------------------------ behaviour
    def _on_step(self, change) -> None:
        self.show(change["new"], _from_slider=True)

    def show(self, i: int, *, _from_slider: bool = False) -> None:
        """Show frame ``i`` (moves the slider, which swaps image and label)."""
        n = len(self.frames)
        i = int(i) % n if -n <= int(i) < n else None
        if i is None:
            raise IndexError(f"frame index out of range for {n} frames")
        if not _from_slider and self.slider.value != i:
            self.slider.value = i  # fires _on_step
            return
        self.image.value = self.frames_png[i]
        if self.side_image is not None:
            self.side_image.value = self.side_png[i]
        self.label.value = self.labels[i]

    @property
    def step(self) -> int:
        """The index of the frame shown."""
        return int(self.slider.value)

    def __len__(self) -> int:
        return len(self.frames)

    # ------------------------------------------------------------------ static fallback
    def strip_indices(self, k: int | None = None) -> list[int]:
        """``k`` (default :attr:`strip_frames`) evenly spaced frame indices, first and last included."""
        n = len(self.frames)
        k = min(k or self.strip_frames, n)
        if k == 1:
            return [n - 1] if n > 1 else [0]
        return sorted({round(j * (n - 1) / (k - 1)) for j in range(k)})

    def static_strip(self, k: int | None = None) -> bytes:
        """PNG bytes of ``k`` evenly spaced frames (side panels in a second row), captioned with
        their labels: what non-interactive renderers show instead of the widget."""
        if k is None and self._strip is not None:
            return self._strip
        idx = self.strip_indices(k)
        rows = [[self.frames_png[i] for i in idx]]
        if self.side_png is not None:
            rows.append([self.side_png[i] for i in idx])
        png = png_strip(rows, [self.labels[i] for i in idx], title=self.title)
        if k is None:
            self._strip = png
        return png

    def __repr__(self) -> str:
        t = f", title={self.title!r}" if self.title else ""
        return f"ChainPlayer(n_frames={len(self.frames)}{t}, side={self.side_png is not None})"

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        data = dict(self.widget._repr_mimebundle_(**kwargs))
        data["image/png"] = base64.b64encode(self.static_strip()).decode("ascii")
        data["text/plain"] = repr(self)
        return data

    def _repr_png_(self) -> bytes:
        return self.static_strip()


def _escape(s: str) -> str:
    import html

    return html.escape(str(s))
