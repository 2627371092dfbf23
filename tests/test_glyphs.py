"""Glyph images (minidiff.glyphs): determinism, disjoint splits, labels that match the pixels, the
affine jitter against torch's own affine_grid and closed forms, no network, and a cache that re-renders
a corrupt file."""
import socket

import numpy as np
import pytest
import torch

from minidiff import glyphs
from minidiff.glyphs import CHARSET, FAMILIES, FONTS, SLANTS, WEIGHTS, GlyphLabels, caption, load_glyphs

SMALL = {"train": (0, 300), "test": (1, 120), "classifier": (2, 200)}


@pytest.fixture
def small_cache(tmp_path, monkeypatch):
    """Small splits cached under a fresh directory (the real ones are the same code, only longer)."""
    monkeypatch.setenv("MINIDIFF_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(glyphs, "SPLITS", SMALL)
    glyphs._split_arrays.cache_clear()
    yield tmp_path
    glyphs._split_arrays.cache_clear()


def _labels(char, font, jitter):
    n = len(char)
    char = torch.as_tensor(char)
    font = torch.as_tensor(font)
    case = torch.as_tensor([glyphs._case_of(CHARSET[int(c)]) for c in char])
    fam = torch.as_tensor([FAMILIES.index(FONTS[int(f)].family) for f in font])
    wt = torch.as_tensor([WEIGHTS.index(FONTS[int(f)].weight) for f in font])
    sl = torch.as_tensor([SLANTS.index(FONTS[int(f)].slant) for f in font])
    return GlyphLabels(char=char, case=case, family=fam, weight=wt, slant=sl, font=font,
                       jitter=torch.as_tensor(jitter, dtype=torch.float32).reshape(n, 5))


def test_load_is_deterministic_across_fresh_caches(small_cache, tmp_path_factory, monkeypatch):
    x1, l1 = load_glyphs("train")
    assert x1.shape == (300, 1, 32, 32) and x1.dtype == torch.float32
    assert float(x1.min()) >= -1.0 and float(x1.max()) <= 1.0
    monkeypatch.setenv("MINIDIFF_CACHE_DIR", str(tmp_path_factory.mktemp("other")))
    glyphs._split_arrays.cache_clear()
    x2, l2 = load_glyphs("train")
    assert torch.equal(x1, x2) and torch.equal(l1.jitter, l2.jitter) and torch.equal(l1.char, l2.char)
    # the first n of a split are a prefix of the whole split, at both sizes
    x3, _ = load_glyphs("train", n=50)
    assert torch.equal(x3, x1[:50])
    x16, _ = load_glyphs("train", size=16, n=50)
    # 16x16 is the 2x2 average of the 32x32 rendering (up to the uint8 rounding of each)
    ref = torch.nn.functional.avg_pool2d(x3, 2)
    assert float((x16 - ref).abs().max()) <= 2.0 / 255 + 1e-6


def test_cached_images_equal_a_fresh_render(small_cache):
    x, lab = load_glyphs("test")
    fresh = glyphs.render_glyphs(lab, 32)
    assert float((x - fresh).abs().max()) <= 1.0 / 255 + 1e-6  # only the uint8 storage differs


def test_full_splits_are_disjoint():
    """No (character, font, jitter) draw is shared between the real splits, so no image is."""
    rows = {}
    for split, (seed, n) in glyphs.SPLITS.items():
        lab = glyphs._draw_attributes(n, seed)
        key = np.concatenate([lab.char[:, None].numpy(), lab.font[:, None].numpy(), lab.jitter.numpy()], 1)
        rows[split] = {r.tobytes() for r in key}
        assert len(rows[split]) == n
    names = sorted(rows)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not rows[a] & rows[b], (a, b)


def test_small_splits_share_no_image(small_cache):
    imgs = {s: load_glyphs(s)[0].reshape(SMALL[s][1], -1) for s in SMALL}
    for a in SMALL:
        for b in SMALL:
            if a < b:
                d = torch.cdist(imgs[a], imgs[b])
                assert float(d.min()) > 0.0, (a, b)


def test_attribute_labels_are_consistent(small_cache):
    _, lab = load_glyphs("train")
    for i in range(len(lab)):
        ch = CHARSET[int(lab.char[i])]
        f = FONTS[int(lab.font[i])]
        assert glyphs.CASES[int(lab.case[i])] == ("digit" if ch.isdigit() else "upper" if ch.isupper() else "lower")
        assert (FAMILIES[int(lab.family[i])], WEIGHTS[int(lab.weight[i])], SLANTS[int(lab.slant[i])]) == \
            (f.family, f.weight, f.slant)
        cap = lab.caption(i)
        assert cap.endswith(" " + ch) and (("bold" in cap) == (f.weight == "bold"))
        assert ("italic" in cap) == (f.slant == "italic")
    lo, hi = lab.jitter.min(0).values, lab.jitter.max(0).values
    assert float(lo[0]) >= glyphs._SCALE[0] and float(hi[0]) <= glyphs._SCALE[1]
    assert float(lab.jitter[:, 3].abs().max()) <= glyphs._ROTATION_DEG
    sub = lab[torch.arange(5)]
    assert len(sub) == 5 and sub.captions() == [lab.caption(i) for i in range(5)]


def test_character_labels_match_the_pixels(small_cache):
    """The nearest un-jittered template (62 characters x 19 fonts) of each image names its labelled
    character far above chance (pixel distance suffers from the jitter, so not always); labels shifted by
    one image fall to chance: the labels describe what is drawn."""
    x, lab = load_glyphs("train")
    chars, fonts = np.meshgrid(np.arange(len(CHARSET)), np.arange(len(FONTS)), indexing="ij")
    plain = np.tile([1.0, 0.0, 0.0, 0.0, 0.0], (chars.size, 1))
    templates = glyphs.render_glyphs(_labels(chars.ravel(), fonts.ravel(), plain), 32).reshape(chars.size, -1)
    nearest = torch.cdist(x.reshape(len(x), -1), templates).argmin(1)
    hit = (torch.as_tensor(chars.ravel())[nearest] == lab.char).float().mean()
    shifted = (torch.as_tensor(chars.ravel())[nearest] == lab.char.roll(1)).float().mean()
    assert float(hit) > 0.4 and float(shifted) < 0.1  # chance is 1/62


def test_affine_grid_matches_torch_and_moves_ink_as_stated():
    jit = torch.tensor([[1.0, 0.05, -0.04, 7.0, 0.0], [0.9, 0.0, 0.0, -9.0, 0.0]])
    for i in range(2):
        s, dx, dy, deg = (float(v) for v in jit[i, :4])
        th = np.deg2rad(deg)
        a = np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]]) / s
        theta = torch.tensor(np.concatenate([a, -(a @ np.array([[2 * dx], [2 * dy]]))], 1), dtype=torch.float32)
        ref = torch.nn.functional.affine_grid(theta[None], [1, 1, 64, 64], align_corners=False)
        torch.testing.assert_close(glyphs._affine_grid(jit[i:i + 1], 64), ref, atol=1e-5, rtol=0)
    # a shift of f image widths moves the ink's centroid by f * size pixels; scale s multiplies ink by s^2
    base = _labels([CHARSET.index("H")] * 3, [0] * 3,
                   [[1, 0, 0, 0, 0], [1, 0.05, -0.04, 0, 0], [0.9, 0, 0, 0, 0]])
    img = (glyphs.render_glyphs(base, 32)[:, 0] + 1) / 2  # ink in [0, 1]
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    cx = (img * xx).sum((1, 2)) / img.sum((1, 2))
    cy = (img * yy).sum((1, 2)) / img.sum((1, 2))
    assert float(cx[1] - cx[0]) == pytest.approx(0.05 * 32, abs=0.05)
    assert float(cy[1] - cy[0]) == pytest.approx(-0.04 * 32, abs=0.05)
    assert float(img[2].sum() / img[0].sum()) == pytest.approx(0.81, rel=0.03)


def test_stroke_thickens_and_thins():
    lab = _labels([CHARSET.index("o")] * 3, [4] * 3, [[1, 0, 0, 0, -0.5], [1, 0, 0, 0, 0], [1, 0, 0, 0, 1.0]])
    ink = ((glyphs.render_glyphs(lab, 32) + 1) / 2).sum((1, 2, 3))
    assert float(ink[0]) < float(ink[1]) < float(ink[2])


def test_no_network_is_touched(small_cache, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("glyph rendering opened a socket")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    glyphs._masters.cache_clear()  # fonts are read again, from matplotlib's mpl-data
    x, _ = load_glyphs("classifier", size=16)
    assert x.shape == (200, 1, 16, 16)


def test_corrupt_cache_is_rendered_again(small_cache):
    x, _ = load_glyphs("test")
    path = glyphs.glyph_cache_path("test")
    assert path.is_file() and small_cache in path.parents
    # 1) truncated file
    path.write_bytes(path.read_bytes()[:1000])
    glyphs._split_arrays.cache_clear()
    with pytest.warns(RuntimeWarning, match="corrupt"):
        y, _ = load_glyphs("test")
    assert torch.equal(x, y)
    assert glyphs._read_cache(path) is not None  # rewritten whole
    # 2) one flipped byte in the image data (the file still parses; the SHA-256 catches it)
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    glyphs._split_arrays.cache_clear()
    with pytest.warns(RuntimeWarning, match="SHA-256"):
        z, _ = load_glyphs("test")
    assert torch.equal(x, z)
    # 3) not a safetensors file at all (e.g. a pickle someone dropped there): refused, never loaded
    path.write_bytes(b"\x80\x04K\x01.")
    glyphs._split_arrays.cache_clear()
    with pytest.warns(RuntimeWarning, match="corrupt"):
        w, _ = load_glyphs("test")
    assert torch.equal(x, w)


def test_caption():
    assert caption("R", "serif", "bold") == "bold serif capital R"
    assert caption("g", "mono", slant="italic") == "italic monospace lowercase g"
    assert caption("7", "sans") == "sans digit 7"
    assert caption("a", "cm", "bold", "italic") == "bold italic computer modern lowercase a"


@pytest.mark.parametrize("call, exc, match", [
    (lambda: load_glyphs("valid"), ValueError, "split"),
    (lambda: load_glyphs("train", size=28), ValueError, "size"),
    (lambda: load_glyphs("train", n=0), ValueError, "n must"),
    (lambda: load_glyphs("train", n=10**6), ValueError, "n must"),
    (lambda: load_glyphs("train", n=2.0), TypeError, "n must"),
    (lambda: load_glyphs("train", n=True), TypeError, "n must"),
    (lambda: glyphs.render_glyphs("abc"), TypeError, "labels"),
    (lambda: caption("RR", "serif"), ValueError, "char"),
    (lambda: caption("!", "serif"), ValueError, "char"),
    (lambda: caption("R", "gothic"), ValueError, "family"),
    (lambda: caption("R", "serif", "heavy"), ValueError, "weight"),
    (lambda: caption("R", "serif", slant="oblique"), ValueError, "slant"),
    (lambda: glyphs.glyph_cache_path("nope"), ValueError, "split"),
])
def test_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_reexported_from_data():
    from minidiff import data

    assert data.load_glyphs is load_glyphs and data.GlyphLabels is GlyphLabels and data.glyph_caption is caption
