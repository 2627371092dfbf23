"""The chain player, headless: frames swap on slider moves, labels follow, the front-end links (Play ->
slider -> every Stack) are in place, frames are rendered at 2x their display size, inputs are checked,
and the displayed bundle carries a static PNG strip beside the widget view. The parameter player
builds one chain player per combination and switches among them with linked controls."""
from __future__ import annotations

import base64
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from minidiff.viz import (PNG_MAGIC, curve_png, decode_png, digits_png, new_figure, palette_png,  # noqa: E402
                          pixel_ratio, pixel_ratio_context, png_size, png_strip, scatter_png)
from minidiff.widgets import PLAYER_CLASS, ChainPlayer, ParameterPlayer, to_png  # noqa: E402

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _frames(n=5):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, 1, 8, 8, generator=g)  # n steps of a batch of 4 digits


@dataclass(frozen=True)
class Record:
    t_index: int
    x: torch.Tensor
    x0_hat: torch.Tensor


def _records(n=4):
    for t_index in reversed(range(n)):
        yield Record(t_index, torch.full((2, 1, 8, 8), t_index / n), torch.full((2, 1, 8, 8), -t_index / n))


def test_slider_swaps_image_and_label():
    p = ChainPlayer(_frames(), digits_png)
    assert len(p) == 5 and len(p.frames_png) == 5
    assert all(b.startswith(PNG_MAGIC) for b in p.frames_png)
    assert len(set(p.frames_png)) == 5  # distinct frames give distinct images
    assert p.image.value == p.frames_png[0] and p.label.value == "step 0 / 4"
    seen = set()
    for i in [3, 1, 4, 0, 2]:
        p.slider.value = i
        assert p.image.value == p.frames_png[i]
        assert p.label.value == f"step {i} / 4"
        assert p.step == i
        seen.add(bytes(p.image.value))
    assert len(seen) == 5
    assert p.side_image is None and p.side_png is None


def test_play_and_slider_are_linked_and_configured():
    p = ChainPlayer(_frames(3), digits_png, interval_ms=50, loop=True)
    assert (p.play.min, p.play.max, p.slider.min, p.slider.max) == (0, 2, 0, 2)
    assert p.play.interval == 50 and p.play.repeat is True
    box = p.widget
    assert p.play in box.children[0].children and p.slider in box.children[0].children
    assert p.label_stack in box.children[0].children and p.image_stack in box.children[1].children
    assert PLAYER_CLASS in box._dom_classes
    # Everything that moves is linked in the front end (jslink), so it plays with no kernel:
    # Play -> slider -> the selected child of the image and label stacks.
    links = {(l.source[0].model_id, l.source[1], l.target[0].model_id, l.target[1]) for l in p._links}
    assert (p.play.model_id, "value", p.slider.model_id, "value") in links
    for stack in (p.image_stack, p.label_stack):
        assert (p.slider.model_id, "value", stack.model_id, "selected_index") in links
        assert len(stack.children) == 3
    assert [im.value for im in p.image_stack.children] == p.frames_png
    assert [lab.value for lab in p.label_stack.children] == p.labels
    p.slider.value = 2  # the kernel-side observer keeps the stored selection in step
    assert p.image_stack.selected_index == p.label_stack.selected_index == 2


def test_frames_are_rendered_at_twice_their_display_size():
    x = torch.linspace(-1, 1, 64).reshape(1, 8, 8)
    native = digits_png(x, scale=4)
    assert png_size(native) == (40, 40) and pixel_ratio() == 1
    p = ChainPlayer([x], lambda f: digits_png(f, scale=4))
    assert png_size(p.frames_png[0]) == (80, 80)
    # the same picture, each displayed pixel drawn as 2x2 device pixels
    np.testing.assert_array_equal(decode_png(p.frames_png[0])[::2, ::2, :3], decode_png(native)[..., :3])
    assert p.image.width == "40"  # shown at its display size
    assert pixel_ratio() == 1               # the context ends with the construction

    def fig_render(_):
        fig = new_figure((2.0, 1.5), dpi=80)
        fig.add_subplot(111).plot([0, 1])
        return fig

    q = ChainPlayer([0], fig_render, side=lambda _: scatter_png(np.zeros((3, 2)), size=2.0, dpi=50))
    assert png_size(q.frames_png[0]) == (2 * 160, 2 * 120) and q.image.width == "160"
    assert png_size(q.side_png[0]) == (200, 200) and q.side_image.width == "100"
    assert png_size(ChainPlayer([0], fig_render, pixel_ratio=1).frames_png[0]) == (160, 120)
    # stored as a palette PNG: the same pixels (over white), fewer bytes
    raw = ChainPlayer([0], fig_render, palette=False).frames_png[0]
    a, b = decode_png(q.frames_png[0])[..., :3], decode_png(raw)[..., :3]
    assert np.abs(a - b).mean() < 2 / 255 and (a == 1).mean() > 0.5   # white stays white
    assert len(q.frames_png[0]) < len(raw)
    # the static strip is drawn at the same density and displayed at half its pixel size
    data, meta = q._repr_mimebundle_()
    w, h = png_size(base64.b64decode(data["image/png"]))
    assert meta["image/png"] == {"width": round(w / 2), "height": round(h / 2)}
    with pytest.raises(ValueError, match="ratio"):
        with pixel_ratio_context(0):
            pass


def test_generator_of_records_with_side_panel_and_callable_labels():
    gen = _records(4)
    p = ChainPlayer(gen, lambda r: digits_png(r.x), side=lambda r: digits_png(r.x0_hat),
                    labels=lambda r: f"t_index = {r.t_index}", title="reverse chain")
    assert [r.t_index for r in p.frames] == [3, 2, 1, 0]
    assert p.labels == ["t_index = 3", "t_index = 2", "t_index = 1", "t_index = 0"]
    assert p.side_image is not None and len(p.side_png) == 4
    p.slider.value = 2
    assert p.label.value == "t_index = 1"
    assert p.image.value == p.frames_png[2] and p.side_image.value == p.side_png[2]
    assert p.side_png[2] != p.side_png[1]
    with pytest.raises(StopIteration):
        next(gen)  # consumed once


def test_figure_renderer_is_closed_and_list_labels():
    def render(x):
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot(np.asarray(x))
        return fig

    before = len(plt.get_fignums())
    p = ChainPlayer([np.arange(3.0), np.arange(3.0)[::-1]], render, labels=["a", "b"], start=-1)
    assert len(plt.get_fignums()) == before  # no figure left open to be shown twice
    assert p.step == 1 and p.label.value == "b" and p.image.value == p.frames_png[1]
    p.show(0)
    assert p.slider.value == 0 and p.label.value == "a"


def test_mimebundle_has_widget_view_static_png_and_text():
    p = ChainPlayer(_frames(10), digits_png, labels=[f"t_index = {i}" for i in range(10)], title="forward")
    bundle, _ = p._repr_mimebundle_()
    assert WIDGET_MIME in bundle and bundle[WIDGET_MIME]["model_id"] == p.widget.model_id
    png = base64.b64decode(bundle["image/png"])
    assert png.startswith(PNG_MAGIC) and png == p.static_strip()
    assert bundle["text/plain"].startswith("ChainPlayer(n_frames=10")
    assert p.strip_indices() == [0, 2, 4, 5, 7, 9]
    assert p.strip_indices(3) == [0, 4, 9] or p.strip_indices(3) == [0, 5, 9]
    h, w, _ = decode_png(p.static_strip()).shape
    assert w > 3 * h  # a strip: wide, one row


def test_single_frame_and_static_strip_with_side():
    p = ChainPlayer([torch.zeros(1, 8, 8)], digits_png, side=lambda x: scatter_png(torch.zeros(3, 2)))
    assert p.strip_indices() == [0]
    assert p.static_strip().startswith(PNG_MAGIC)
    p.slider.value = 0


@pytest.mark.parametrize("kwargs, word", [
    (dict(frames=[]), "frames"),
    (dict(frames=(x for x in [])), "frames"),
    (dict(frames=None), "frames"),
    (dict(frames=[1, 2], labels=["only one"]), "labels"),
    (dict(frames=[1, 2], labels="ab"), "labels"),
    (dict(frames=[1, 2], render=None), "render"),
    (dict(frames=[1, 2], side="not callable"), "side"),
    (dict(frames=[1, 2], interval_ms=0), "interval_ms"),
    (dict(frames=[1, 2], start=2), "start"),
    (dict(frames=[1, 2], pixel_ratio=0), "pixel_ratio"),
])
def test_bad_input_raises_value_error_naming_the_argument(kwargs, word):
    kwargs.setdefault("render", lambda f: digits_png(np.zeros((8, 8))))
    frames = kwargs.pop("frames")
    with pytest.raises(ValueError, match=word):
        ChainPlayer(frames, **kwargs)


def test_renderer_returning_wrong_type_or_failing_names_it():
    with pytest.raises(TypeError, match="render"):
        ChainPlayer([1], lambda f: "not a png")
    with pytest.raises(ValueError, match="side"):
        ChainPlayer([1], lambda f: digits_png(np.zeros((8, 8))), side=lambda f: b"not a png")
    with pytest.raises(ZeroDivisionError, match="render failed on frame 1"):
        ChainPlayer([1, 0], lambda f: digits_png(np.full((8, 8), 1 / f)))


def test_to_png_and_viz_helpers():
    fig = plt.figure()
    assert to_png(fig).startswith(PNG_MAGIC)
    assert not plt.fignum_exists(fig.number)
    grid = decode_png(digits_png(torch.ones(6, 1, 8, 8), ncol=3, scale=2, pad=1))
    assert grid.shape[:2] == ((2 * 9 + 1) * 2, (3 * 9 + 1) * 2)
    assert scatter_png(np.random.default_rng(0).normal(size=(50, 2)), title="x").startswith(PNG_MAGIC)
    assert curve_png(np.arange(10), np.arange(10) ** 2, at=4, logy=False).startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="captions"):
        png_strip([[digits_png(np.zeros((8, 8)))]], captions=["a", "b"])
    with pytest.raises(ValueError, match="points"):
        scatter_png(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="images"):
        digits_png(np.zeros((2, 3, 8, 8)))


def _build_counter(calls):
    def build(eta, steps):
        calls.append((eta, steps))
        frames = [np.full((8, 8), eta * k / steps) for k in range(steps + 1)]
        return ChainPlayer(frames, lambda f: digits_png(f, scale=1), labels=[f"{eta}/{k}" for k in range(steps + 1)])
    return build


def test_parameter_player_builds_every_combination_and_switches_in_the_front_end():
    calls = []
    pp = ParameterPlayer(_build_counter(calls), {"eta": [0.0, 1.0], "steps": [2, 4, 5]}, value={"steps": 4})
    assert calls == [(0.0, 2), (0.0, 4), (0.0, 5), (1.0, 2), (1.0, 4), (1.0, 5)] and len(pp) == 6
    assert pp.value == {"eta": 0.0, "steps": 4} and len(pp.player) == 5
    assert [o for o, _ in pp.controls["steps"].options] == ["2", "4", "5"]
    # two levels of stacks: one for eta, two (one per eta) for steps, each linked to its control
    outer = pp.widget.children[1]
    assert len(outer.children) == 2 and outer.selected_index == 0
    assert all(inner.selected_index == 1 and len(inner.children) == 3 for inner in outer.children)
    links = {(l.source[0].model_id, l.target[0].model_id) for l in pp._links}
    assert (pp.controls["eta"].model_id, outer.model_id) in links
    assert all((pp.controls["steps"].model_id, inner.model_id) in links for inner in outer.children)
    assert outer.children[1].children[2] is pp.players[(1.0, 5)].widget
    p = pp.select(eta=1.0, steps=5)
    assert p is pp.players[(1.0, 5)] and outer.selected_index == 1
    assert all(inner.selected_index == 2 for inner in outer.children)
    assert p.labels[-1] == "1.0/5" and len(set(p.frames_png)) == 6
    data, _ = pp._repr_mimebundle_()
    assert base64.b64decode(data["image/png"]) == p.static_strip()
    assert data["text/plain"].startswith("ParameterPlayer(eta=[0.0, 1.0], steps=[2, 4, 5]")


@pytest.mark.parametrize("args, kwargs, err, word", [
    ((None, {"a": [1]}), {}, ValueError, "build"),
    ((lambda a: None, {}), {}, ValueError, "params"),
    ((lambda a: None, {"a": []}), {}, ValueError, "params"),
    ((lambda a: None, {"a": "xy"}), {}, ValueError, "params"),
    ((lambda a: None, {"a": [1]}), {"value": {"b": 1}}, ValueError, "value"),
    ((lambda a: None, {"a": [1]}), {"value": {"a": 2}}, ValueError, "value"),
    ((lambda a: None, {"a": [1]}), {}, TypeError, "build must return a ChainPlayer"),
])
def test_parameter_player_bad_input(args, kwargs, err, word):
    with pytest.raises(err, match=word):
        ParameterPlayer(*args, **kwargs)


def test_parameter_player_select_rejects_unknown_values():
    pp = ParameterPlayer(_build_counter([]), {"eta": [0.0], "steps": [2]})
    with pytest.raises(ValueError, match="unknown parameter"):
        pp.select(theta=1)
    with pytest.raises(ValueError, match="steps"):
        pp.select(steps=3)


def test_palette_png_is_exact_up_to_256_colours_and_close_beyond():
    rng = np.random.default_rng(0)
    few = digits_png(rng.normal(size=(4, 8, 8)), scale=3)                  # grey levels: few colours
    np.testing.assert_array_equal(decode_png(palette_png(few))[..., :3], decode_png(few)[..., :3])
    # many colours: reduced to 256, each pixel still close to the original
    fig = new_figure((2.0, 2.0), dpi=60)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(rng.uniform(size=(40, 40, 3)), interpolation="bilinear")
    ax.set_axis_off()
    many = to_png(fig)
    a, b = decode_png(many)[..., :3], decode_png(palette_png(many))[..., :3]
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 256 and a.shape == b.shape
    assert np.abs(a - b).mean() < 0.05 and np.abs(a - b).max() < 0.3
    # a typical frame (points with alpha over a grey cloud, axes, title): very close
    plot = scatter_png(rng.normal(size=(500, 2)), background=rng.normal(size=(500, 2)), title="t = 0.50")
    a, b = decode_png(plot)[..., :3], decode_png(palette_png(plot))[..., :3]
    assert np.abs(a - b).mean() < 2 / 255
    # transparency is composed over white
    rgba = new_figure((1.0, 1.0), dpi=20)
    rgba.patch.set_alpha(0.0)
    t = to_png(rgba)
    assert decode_png(t)[..., 3].max() == 0.0
    np.testing.assert_array_equal(decode_png(palette_png(t))[..., :3], 1.0)
