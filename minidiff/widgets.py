"""Step-through widgets that play in the browser alone: one reusable chain player for every notebook.

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

:class:`ParameterPlayer` puts one control per parameter beside a player and swaps in the player
pre-rendered for the chosen values (the schedule of notebook 03, eta and the number of steps of a
reverse chain, D and theta in notebook 01)::

    ParameterPlayer(lambda eta, steps: ChainPlayer(...), {"eta": [0.0, 1.0], "steps": [10, 50]})

Design (see shared/design/notebooks.md):

* ``frames`` is any iterable -- a list, a tensor/array (split along its first axis) or a generator,
  which is consumed once and materialised into :attr:`ChainPlayer.frames`.
* Every frame is rendered to PNG bytes once, at construction (:attr:`frames_png`,
  :attr:`side_png`), at ``pixel_ratio`` (default 2) device pixels per displayed pixel
  (:func:`minidiff.viz.pixel_ratio_context`), and shown at its display size, so it is sharp on
  high-density screens.
* Everything that moves lives in the front end: each frame is its own ``Image`` in an ipywidgets 8
  ``Stack`` (as are the step labels), and ``Play``, the slider and the stacks' ``selected_index``
  are tied together with ``jslink``. So Play keeps going while other cells run, after the kernel
  has stopped, and in a notebook or web page that stores the widget state; no plotting code runs
  in a widget callback. (ipywidgets 8 was chosen over an anywidget: it needs no new dependency,
  its front end ships with JupyterLab already, and its saved state is read by every widget manager.)
* The saved widget state is what a notebook costs on disk, so a player stores little besides its
  frames: identical frames are one ``Image`` model (within a player, and among the players of a
  :class:`ParameterPlayer`), and all frames share one ``Layout`` model, all labels one ``Layout`` and
  one ``LabelStyle`` (ipywidgets would otherwise save two or three models per frame).
* Where no widget front end exists (GitHub, a notebook without saved widget state) the displayed
  bundle also carries ``image/png``: a static strip of a few evenly spaced frames
  (:meth:`static_strip`), and ``text/plain``.

``render`` and ``side`` take one frame and return a matplotlib Figure (closed after rendering) or
PNG bytes (e.g. from :func:`minidiff.viz.digits_png`). If a panel needs the step index, make it part
of the frame: ``ChainPlayer(list(zip(t_indices, xs)), render=lambda f: ...)``.
"""
from __future__ import annotations

import base64
import contextlib
import contextvars
import inspect
import itertools
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import _checks as _c
from .viz import (PNG_MAGIC, curve_png, digits_png, figure_to_png, palette_png, pixel_ratio_context, png_size,
                  png_strip, scatter_png)

__all__ = ["ChainPlayer", "ParameterPlayer", "to_png", "digits_png", "scatter_png", "curve_png",
           "PLAYER_CLASS", "PARAMETER_PLAYER_CLASS"]

Renderer = Callable[[Any], Any]
# CSS classes on the outer boxes: how the browser test and the site renderer find the players.
PLAYER_CLASS = "minidiff-chain-player"
PARAMETER_PLAYER_CLASS = "minidiff-parameter-player"
LABEL_STYLE = {"font_size": "14px"}
# While a ParameterPlayer builds its players, identical frames are shared among them (bytes -> Image).
_SHARED_IMAGES: contextvars.ContextVar[dict | None] = contextvars.ContextVar("_SHARED_IMAGES", default=None)


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
    pixel_ratio : int
        PNG pixels per displayed pixel (default 2, for high-density screens; 1 halves the size of
        the stored frames).
    palette : bool
        Store each frame as an 8-bit palette PNG (:func:`minidiff.viz.palette_png`; exact up to
        256 colours): the frames are saved with the notebook's widget state, and this cuts their
        bytes by about half. ``False`` keeps the renderer's PNG as it is.

    Attributes for code and tests: :attr:`frames`, :attr:`frames_png`, :attr:`side_png`,
    :attr:`labels`, the widgets :attr:`play`, :attr:`slider`, :attr:`image_stack`,
    :attr:`side_stack` (``None`` without ``side``), :attr:`label_stack`, :attr:`widget` (the whole
    ``VBox``), and the widgets of the frame shown: :attr:`image`, :attr:`side_image`, :attr:`label`.
    """

    def __init__(self, frames, render: Renderer, *, side: Renderer | None = None,
                 labels: Sequence[str] | Callable[[Any], str] | None = None, interval_ms: int = 200,
                 title: str | None = None, start: int = 0, strip_frames: int = 6, loop: bool = False,
                 pixel_ratio: int = 2, palette: bool = True):
        import ipywidgets as widgets
        from ipywidgets.widgets.widget_string import LabelStyle as _LabelStyle

        if not callable(render):
            raise ValueError(f"render must be callable (frame -> Figure or PNG bytes), got {type(render).__name__}")
        if side is not None and not callable(side):
            raise ValueError(f"side must be callable (frame -> Figure or PNG bytes) or None, got {type(side).__name__}")
        _c.check_count(interval_ms, "interval_ms")
        _c.check_count(strip_frames, "strip_frames")
        _c.check_count(pixel_ratio, "pixel_ratio", 1, 4)
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

        self.pixel_ratio = pixel_ratio
        self.palette = bool(palette)
        with pixel_ratio_context(pixel_ratio):
            self.frames_png: list[bytes] = [self._render(render, f, i, "render") for i, f in enumerate(self.frames)]
            self.side_png: list[bytes] | None = (
                None if side is None else [self._render(side, f, i, "side") for i, f in enumerate(self.frames)])
        self.title = title
        self.strip_frames = strip_frames
        self._strip: bytes | None = None

        self.play = widgets.Play(value=start, min=0, max=n - 1, step=1, interval=interval_ms,
                                 repeat=loop, description="Play", layout=widgets.Layout(width="auto"))
        self.slider = widgets.IntSlider(value=start, min=0, max=n - 1, step=1, readout=False,
                                        continuous_update=True, description="step",
                                        layout=widgets.Layout(width="320px"))
        # One Layout for every frame, one Layout and one LabelStyle for every label; identical frames
        # are one Image model (see the module docstring: the saved widget state is the notebook's size).
        shared = _SHARED_IMAGES.get()
        self._image_cache: dict = shared if shared is not None else {}
        self._frame_layout = widgets.Layout()
        self._images = [self._image(p) for p in self.frames_png]
        self._side_images = None if self.side_png is None else [self._image(p) for p in self.side_png]
        label_layout, label_style = widgets.Layout(), _LabelStyle(**LABEL_STYLE)
        self._labels = [widgets.Label(value=s, style=label_style, layout=label_layout) for s in self.labels]
        self.image_stack = widgets.Stack(self._images, selected_index=start)
        self.side_stack = (None if self._side_images is None else
                           widgets.Stack(self._side_images, selected_index=start))
        self.label_stack = widgets.Stack(self._labels, selected_index=start)
        self._stacks = [s for s in (self.image_stack, self.side_stack, self.label_stack) if s is not None]
        # The front end moves everything: Play drives the slider, the slider selects each stack's child.
        self._links = [widgets.jslink((self.play, "value"), (self.slider, "value"))]
        self._links += [widgets.jslink((self.slider, "value"), (s, "selected_index")) for s in self._stacks]
        panels = [self.image_stack] if self.side_stack is None else [self.image_stack, self.side_stack]
        children = [widgets.HBox([self.play, self.slider, self.label_stack],
                                 layout=widgets.Layout(align_items="center")),
                    widgets.HBox(panels, layout=widgets.Layout(align_items="flex-start"))]
        if title:
            children.insert(0, widgets.HTML(value=f"<b style='font-size: 14px'>{_escape(title)}</b>"))
        self.widget = widgets.VBox(children)
        self.widget.add_class(PLAYER_CLASS)
        # Kernel side (while there is one): keep the stored selection in step with the slider.
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
        png = to_png(self._call(fn, frame, i, name), name=name)
        return palette_png(png) if self.palette else png

    def _image(self, png: bytes):
        """An Image widget showing ``png`` at its display size (pixel width / pixel_ratio); the same
        widget for the same bytes at the same ratio (a stack may hold one model several times)."""
        import ipywidgets as widgets

        key = (png, self.pixel_ratio)
        image = self._image_cache.get(key)
        if image is None:
            w, _ = png_size(png)
            image = widgets.Image(value=png, format="png", width=str(max(1, round(w / self.pixel_ratio))),
                                  layout=self._frame_layout)
            self._image_cache[key] = image
        return image

    # ------------------------------------------------------------------ behaviour
    def _on_step(self, change) -> None:
        i = int(change["new"])
        for s in self._stacks:
            if s.selected_index != i:
                s.selected_index = i

    def show(self, i: int) -> None:
        """Show frame ``i`` (negative counts from the end): moves the slider, which selects the frame."""
        n = len(self.frames)
        if not -n <= int(i) < n:
            raise IndexError(f"frame index {i} out of range for {n} frames")
        self.slider.value = int(i) % n

    @property
    def step(self) -> int:
        """The index of the frame shown."""
        return int(self.slider.value)

    @property
    def image(self):
        """The ``Image`` widget of the frame shown (its ``value`` is ``frames_png[step]``)."""
        return self._images[self.step]

    @property
    def side_image(self):
        """The side panel's ``Image`` widget of the frame shown, or ``None`` without ``side``."""
        return None if self._side_images is None else self._side_images[self.step]

    @property
    def label(self):
        """The ``Label`` widget of the frame shown (its ``value`` is ``labels[step]``)."""
        return self._labels[self.step]

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
        their labels: what non-interactive renderers show instead of the widget. Drawn at
        :attr:`pixel_ratio`; show it ``png_size(png)[0] / pixel_ratio`` pixels wide."""
        if k is None and self._strip is not None:
            return self._strip
        idx = self.strip_indices(k)
        rows = [[self.frames_png[i] for i in idx]]
        if self.side_png is not None:
            rows.append([self.side_png[i] for i in idx])
        with pixel_ratio_context(self.pixel_ratio):
            png = png_strip(rows, [self.labels[i] for i in idx], title=self.title)
        if k is None:
            self._strip = png
        return png

    def __repr__(self) -> str:
        t = f", title={self.title!r}" if self.title else ""
        return f"ChainPlayer(n_frames={len(self.frames)}{t}, side={self.side_png is not None})"

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        return _bundle(self.widget, self.static_strip(), self.pixel_ratio, repr(self), **kwargs)

    def _repr_png_(self) -> bytes:
        return self.static_strip()


def _bundle(widget, strip: bytes, ratio: int, text: str, **kwargs):
    """The display bundle of a player: its widget view, the static strip (shown at display size
    where no widget manager exists) and a text repr."""
    data = dict(widget._repr_mimebundle_(**kwargs))
    data["image/png"] = base64.b64encode(strip).decode("ascii")
    data["text/plain"] = text
    w, h = png_size(strip)
    meta = {"image/png": {"width": max(1, round(w / ratio)), "height": max(1, round(h / ratio))}}
    return data, meta


class ParameterPlayer:
    """A chain player with one control per parameter beside it, for where a parameter is the lesson.

    Every combination of the parameter values is built once by ``build(**values)`` (a
    :class:`ChainPlayer`); the controls (``ToggleButtons``) select among them in the front end
    (nested ``Stack`` widgets tied to the controls by ``jslink``), so switching, like playing, needs
    no kernel. The cost is one set of frames per combination: keep the grids small.

    Parameters
    ----------
    build : callable ``(**values) -> ChainPlayer``
    params : mapping ``name -> sequence of values`` (at least one name, each with >= 1 value)
    value : mapping ``name -> value``, optional
        The combination shown first (default: the first value of each parameter).
    title : str, optional
        A heading above the controls.
    format : callable ``(name, value) -> str``, optional
        The text of each option (default ``str(value)``).

    Attributes: :attr:`players` (``{tuple of values: ChainPlayer}``, in ``itertools.product``
    order), :attr:`controls` (``{name: ToggleButtons}``), :attr:`widget`, :attr:`player` (the one
    shown) and :meth:`select`.
    """

    def __init__(self, build: Callable[..., ChainPlayer], params: Mapping[str, Sequence], *,
                 value: Mapping[str, Any] | None = None, title: str | None = None,
                 format: Callable[[str, Any], str] | None = None):
        import ipywidgets as widgets

        if not callable(build):
            raise ValueError(f"build must be callable (**values -> ChainPlayer), got {type(build).__name__}")
        if not isinstance(params, Mapping) or not params:
            raise ValueError("params must be a non-empty mapping name -> sequence of values")
        self.params: dict[str, list] = {}
        for name, vals in params.items():
            if isinstance(vals, (str, bytes)) or not isinstance(vals, Iterable):
                raise ValueError(f"params[{name!r}] must be a sequence of values, got {type(vals).__name__}")
            vals = list(vals)
            if not vals:
                raise ValueError(f"params[{name!r}] is empty: give at least one value")
            self.params[name] = vals
        names = list(self.params)
        value = dict(value or {})
        unknown = set(value) - set(names)
        if unknown:
            raise ValueError(f"value names unknown parameters {sorted(unknown)}; expected some of {names}")
        start = []
        for name in names:
            v = value.get(name, self.params[name][0])
            if v not in self.params[name]:
                raise ValueError(f"value[{name!r}] = {v!r} is not one of {self.params[name]}")
            start.append(self.params[name].index(v))
        fmt = format or (lambda name, v: str(v))
        self.title = title

        self.players: dict[tuple, ChainPlayer] = {}
        with _sharing_images():
            for combo in itertools.product(*self.params.values()):
                p = build(**dict(zip(names, combo)))
                if not isinstance(p, ChainPlayer):
                    raise TypeError(f"build must return a ChainPlayer, got {type(p).__name__} for {dict(zip(names, combo))}")
                self.players[combo] = p

        self.controls = {
            name: widgets.ToggleButtons(options=[(fmt(name, v), k) for k, v in enumerate(vals)], index=start[j],
                                        description=name, style={"button_width": "auto"})
            for j, (name, vals) in enumerate(self.params.items())}
        # Nested stacks: level j selects the value of parameter j; every stack of level j follows control j.
        self._levels: list[list] = [[] for _ in names]
        self._links = []

        def nest(j: int, prefix: tuple):
            if j == len(names):
                return self.players[prefix].widget
            kids = [nest(j + 1, prefix + (v,)) for v in self.params[names[j]]]
            stack = widgets.Stack(kids, selected_index=start[j])
            self._levels[j].append(stack)
            self._links.append(widgets.jslink((self.controls[names[j]], "index"), (stack, "selected_index")))
            return stack

        body = nest(0, ())
        children = [widgets.VBox(list(self.controls.values())), body]
        if title:
            children.insert(0, widgets.HTML(value=f"<b style='font-size: 14px'>{_escape(title)}</b>"))
        self.widget = widgets.VBox(children)
        self.widget.add_class(PARAMETER_PLAYER_CLASS)
        for j, name in enumerate(names):
            self.controls[name].observe(lambda ch, j=j: self._on_control(j, ch["new"]), names="index")

    def _on_control(self, j: int, k) -> None:
        for s in self._levels[j]:
            if k is not None and s.selected_index != k:
                s.selected_index = k

    def select(self, **values) -> ChainPlayer:
        """Switch the controls to ``values`` (names of parameters); return the player now shown."""
        for name, v in values.items():
            if name not in self.params:
                raise ValueError(f"unknown parameter {name!r}; expected one of {list(self.params)}")
            if v not in self.params[name]:
                raise ValueError(f"{name} = {v!r} is not one of {self.params[name]}")
            self.controls[name].index = self.params[name].index(v)
        return self.player

    @property
    def value(self) -> dict[str, Any]:
        """The parameter values selected now."""
        return {name: self.params[name][self.controls[name].index] for name in self.params}

    @property
    def player(self) -> ChainPlayer:
        """The :class:`ChainPlayer` of the selected values."""
        return self.players[tuple(self.value.values())]

    def __len__(self) -> int:
        return len(self.players)

    def __repr__(self) -> str:
        grid = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"ParameterPlayer({grid}; {len(self.players)} players)"

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        p = self.player
        return _bundle(self.widget, p.static_strip(), p.pixel_ratio, repr(self), **kwargs)


@contextlib.contextmanager
def _sharing_images():
    """Within this block every ChainPlayer built shares one Image model per distinct frame."""
    token = _SHARED_IMAGES.set({} if _SHARED_IMAGES.get() is None else _SHARED_IMAGES.get())
    try:
        yield
    finally:
        _SHARED_IMAGES.reset(token)


def _escape(s: str) -> str:
    import html

    return html.escape(str(s))
