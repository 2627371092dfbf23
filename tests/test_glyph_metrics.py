"""Glyph quality (minidiff.metrics.glyphs): the classifier trains on its own split only; real glyphs sit
on the real-vs-real floor while degraded ones are told apart; shapes and bad input."""
import pytest
import torch

from minidiff import glyphs, metrics
from minidiff.metrics import glyphs as mg


def test_classifier_trains_on_its_split_only(monkeypatch):
    seen = []
    real = glyphs.load_glyphs

    def spy(split="train", size=32, n=None):
        seen.append(split)
        return real("test", size, n=64)  # small stand-in data, same shapes

    monkeypatch.setattr(glyphs, "load_glyphs", spy)
    model = mg.train_glyph_classifier(epochs=1, batch_size=32)
    assert set(seen) == {"classifier"}
    assert not model.training and all(not p.requires_grad for p in model.parameters())


def test_heads_and_feature_shapes():
    x, lab = glyphs.load_glyphs("test", 32, n=10)
    logits = metrics.glyph_logits(x)
    assert {k: tuple(v.shape) for k, v in logits.items()} == {
        "char": (10, 62), "family": (10, 5), "weight": (10, 2), "slant": (10, 2)}
    assert metrics.glyph_features(x).shape == (10, 128)
    x16, _ = glyphs.load_glyphs("test", 16, n=10)
    assert metrics.glyph_features(x16).dtype == torch.float64


@pytest.mark.slow
def test_real_glyphs_sit_on_the_floor_and_degraded_ones_do_not():
    n = 500
    real = glyphs.load_glyphs("train", 32)[0][-n:]  # real glyphs the classifier never saw
    q = metrics.glyph_quality(real, seed=1)
    assert not q.beyond_floor(2.0), str(q)
    blurred = torch.nn.functional.avg_pool2d(real, 3, stride=1, padding=1)
    noisy = (real + 0.5 * torch.randn(real.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    for bad in (blurred, noisy):
        qb = metrics.glyph_quality(bad, seed=1)
        assert qb.beyond_floor(2.0), str(qb)
        assert qb.kid.value > q.kid.value
    # at 16x16 the same holds (images upsampled for the classifier)
    q16 = metrics.glyph_quality(glyphs.load_glyphs("train", 16)[0][-n:], seed=1)
    assert not q16.beyond_floor(2.0), str(q16)


@pytest.mark.parametrize("x, exc", [
    (torch.zeros(2, 1, 28, 28), ValueError), (torch.zeros(0, 1, 32, 32), ValueError),
    (torch.full((2, 1, 32, 32), float("nan")), ValueError), ([[0.0]], TypeError),
])
def test_bad_input(x, exc):
    with pytest.raises(exc):
        metrics.glyph_features(x)


def test_load_refuses_other_files(tmp_path):
    from minidiff.metrics.classifier import DigitClassifier, save_classifier

    p = tmp_path / "digits.safetensors"
    save_classifier(DigitClassifier(), p)
    with pytest.raises(ValueError, match="not the glyph classifier"):
        metrics.load_glyph_classifier(p)
