"""Sample quality on glyph images (:mod:`minidiff.glyphs`), as :func:`~minidiff.metrics.digits_quality`
is for digits: a small :class:`GlyphClassifier` (character, family, weight, slant) whose 128-d
penultimate features carry KID (Bińkowski et al. 2018) with its interval, precision and recall
(Kynkäänniemi et al. 2019) and the Fréchet distance (Heusel et al. 2017).

Three disjoint glyph splits keep the measure honest: the classifier trains on ``"classifier"`` only;
generated samples are compared with ``"test"``; the real-vs-real floor is ``n`` images of ``"train"``
against the same ``"test"`` images -- both sides of the floor unseen by the classifier. 16x16 glyphs are
measured by upsampling to 32x32 (bilinear); the classifier trains on both renderings.

Train: ``python -m minidiff.metrics.glyphs --seed 0 --epochs 8 --out glyph_classifier.safetensors``
(the command that made the shipped file is in ``minidiff/weights/glyph_classifier.json``).
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .classifier import load_frozen, parameters_digest
from .estimate import _check_count
from .quality import QualityReport, quality_report

__all__ = ["GlyphClassifier", "GLYPH_CLASSIFIER_PATH", "GLYPH_HEADS", "train_glyph_classifier",
           "save_glyph_classifier", "load_glyph_classifier", "glyph_logits", "classify_glyphs",
           "glyph_features", "glyph_accuracy", "glyph_quality"]

GLYPH_CLASSIFIER_PATH = Path(__file__).resolve().parents[1] / "weights" / "glyph_classifier.safetensors"


def _heads():
    from .. import glyphs as G

    return {"char": len(G.CHARSET), "family": len(G.FAMILIES), "weight": len(G.WEIGHTS), "slant": len(G.SLANTS)}


GLYPH_HEADS = ("char", "family", "weight", "slant")


class GlyphClassifier(nn.Module):
    """conv(32)-pool-conv(64)-pool-conv(64)-pool-fc(128) on ``(B, 1, 32, 32)`` glyphs in ``[-1, 1]``, then
    one linear head per attribute of :data:`GLYPH_HEADS` (62 characters, 5 families, 2 weights, 2 slants).
    :meth:`features` is the 128-d penultimate layer the quality measures use."""

    feature_dim = 128

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 4 * 4, self.feature_dim)
        self.drop = nn.Dropout(0.2)
        self.heads = nn.ModuleDict({k: nn.Linear(self.feature_dim, v) for k, v in _heads().items()})

    def features(self, x):  # (B, 1, 32, 32) -> (B, 128)
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, 32, 16, 16)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (B, 64, 8, 8)
        h = F.max_pool2d(F.relu(self.conv3(h)), 2)  # (B, 64, 4, 4)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x) -> dict:  # {head: logits (B, classes)}
        f = self.drop(self.features(x))
        return {k: head(f) for k, head in self.heads.items()}


def _targets(labels) -> dict:
    return {k: getattr(labels, k) for k in GLYPH_HEADS}


def _as_32(x: torch.Tensor) -> torch.Tensor:
    """16x16 glyphs are upsampled (bilinear) to 32x32; 32x32 pass through."""
    return x if x.shape[-1] == 32 else F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)


def train_glyph_classifier(*, epochs: int = 8, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                           progress: bool = False) -> GlyphClassifier:
    """Train :class:`GlyphClassifier` on the ``"classifier"`` glyph split only (8 000 images; each batch
    half at 32x32, half as 16x16 upsampled), summed cross-entropy of the four heads, AdamW with a cosine
    learning rate; deterministic for ``seed`` and thread count."""
    from tqdm.auto import tqdm

    from ..glyphs import load_glyphs

    epochs = _check_count(epochs, "epochs")
    batch_size = _check_count(batch_size, "batch_size")
    x32, labels = load_glyphs("classifier", 32)
    x16 = _as_32(load_glyphs("classifier", 16)[0])
    y = _targets(labels)
    torch.manual_seed(seed)
    model = GlyphClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    n = x32.shape[0]
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * math.ceil(n / batch_size))
    model.train()
    for epoch in tqdm(range(epochs), disable=not progress, desc="glyph classifier"):
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        perm = torch.randperm(n, generator=g)
        low = torch.rand(n, generator=g) < 0.5  # which images are seen at 16x16 this epoch
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb = torch.where(low[idx, None, None, None], x16[idx], x32[idx])
            out = model(xb)
            loss = sum(F.cross_entropy(out[k], y[k][idx]) for k in GLYPH_HEADS)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval().requires_grad_(False)


def save_glyph_classifier(model: GlyphClassifier, path, **info) -> None:
    """Write ``model`` to ``path`` (safetensors + JSON metadata, :mod:`minidiff.checkpoint`)."""
    from .. import checkpoint as ckpt

    ckpt.save(path, {f"glyph_classifier.{k}": v for k, v in model.state_dict().items()},
              {"kind": "glyph_classifier", "info": info})


def load_glyph_classifier(path=None) -> GlyphClassifier:
    """The shipped glyph classifier (eval mode, frozen); cached for the default path."""
    return _load_default() if path is None else _load(Path(path))


@lru_cache(maxsize=1)
def _load_default():
    return _load(GLYPH_CLASSIFIER_PATH)


def _load(path: Path) -> GlyphClassifier:
    return load_frozen(path, GlyphClassifier(), "glyph_classifier", "the glyph classifier")


def _prep(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"glyphs must be a torch.Tensor (N, 1, 32, 32) or (N, 1, 16, 16), got {type(x).__name__}")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or tuple(x.shape[1:]) not in ((1, 32, 32), (1, 16, 16)):
        raise ValueError(f"glyphs must be (N, 1, 32, 32) or (N, 1, 16, 16), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("glyphs must hold at least one image, got an empty batch (N = 0)")
    if not torch.isfinite(x).all():
        raise ValueError("glyphs must be finite (a sampler diverged?)")
    return _as_32(x.detach().to(torch.float32).cpu().clamp(-1.0, 1.0))


@torch.no_grad()
def glyph_logits(x, classifier=None, batch: int = 1024) -> dict:
    """``{head: (N, classes) logits}`` for glyphs ``x`` in ``[-1, 1]`` (clamped)."""
    clf = classifier or load_glyph_classifier()
    x = _prep(x)
    parts = [clf(x[i:i + batch]) for i in range(0, x.shape[0], batch)]
    return {k: torch.cat([p[k] for p in parts]) for k in GLYPH_HEADS}


def classify_glyphs(x, classifier=None) -> dict:
    """Predicted attributes ``{"char", "family", "weight", "slant"}``, each ``(N,)`` int64 indexing
    :data:`minidiff.glyphs.CHARSET` / ``FAMILIES`` / ``WEIGHTS`` / ``SLANTS`` (as :class:`GlyphLabels`)."""
    return {k: v.argmax(1) for k, v in glyph_logits(x, classifier).items()}


@torch.no_grad()
def glyph_features(x, classifier=None, batch: int = 1024) -> torch.Tensor:
    """Penultimate-layer features ``(N, 128)``, float64, of glyphs clamped to ``[-1, 1]``."""
    clf = classifier or load_glyph_classifier()
    x = _prep(x)
    return torch.cat([clf.features(x[i:i + batch]) for i in range(0, x.shape[0], batch)]).double()


def glyph_accuracy(classifier=None, split: str = "test", size: int = 32) -> dict:
    """Per-head accuracy ``{head: fraction}`` on a glyph split (``"test"``, ``"train"`` or the
    classifier's own ``"classifier"``) at ``size`` 32 or 16."""
    from ..glyphs import load_glyphs

    x, labels = load_glyphs(split, size)
    pred = classify_glyphs(x, classifier)
    return {k: float((pred[k] == getattr(labels, k)).double().mean()) for k in GLYPH_HEADS}


# ---------------------------------------------------------------------------- reference features
_reference_cache: dict = {}


def _reference(classifier, which: str, size: int) -> torch.Tensor:
    """Features of the whole ``which`` split (``"test"`` or ``"train"``) at ``size``, cached per
    classifier parameter digest."""
    from ..glyphs import load_glyphs

    clf = classifier if classifier is not None else load_glyph_classifier()
    key = (parameters_digest(clf), which, size)
    if key not in _reference_cache:
        _reference_cache[key] = glyph_features(load_glyphs(which, size)[0], clf)
    return _reference_cache[key]


def glyph_quality(samples, *, seed: int = 0, classifier=None, k: int = 3, n_test: int | None = None) -> QualityReport:
    """Sample quality of glyphs ``samples (n, 1, 32, 32)`` (or 16x16) in ``[-1, 1]`` in the glyph
    classifier's feature space: :func:`kid` against the test split (its first ``n_test`` images; all 2 000
    by default; fewer is faster and noisier), the floor :func:`kid` of ``n`` train-split glyphs (a draw
    without replacement with ``seed``) against the same test images -- both unseen by the classifier --, precision and recall with
    the test images as the real set (also for the floor's), and the Fréchet distance. Returns the same
    :class:`~minidiff.metrics.QualityReport` as :func:`~minidiff.metrics.digits_quality`."""
    from ..glyphs import load_glyphs

    seed = _check_count(seed, "seed", 0)
    if not isinstance(samples, torch.Tensor):
        raise TypeError(f"samples must be a torch.Tensor, got {type(samples).__name__}")
    size = int(samples.shape[-1]) if samples.ndim >= 3 else 32
    feats = glyph_features(samples, classifier)
    n = int(feats.shape[0])
    size = size if size in (16, 32) else 32
    if n_test is None:
        test = _reference(classifier, "test", size)
    else:  # the first n_test test images (features not cached)
        test = glyph_features(load_glyphs("test", size, n=_check_count(n_test, "n_test", 3))[0], classifier)
    train = load_glyphs("train", size)[0]
    pick = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(seed))[:min(n, train.shape[0])]
    floor_feats = glyph_features(train[pick], classifier)  # only the n floor images go through the network
    return quality_report(feats, floor_feats, test, k=k)


def main(argv=None) -> int:
    """``python -m minidiff.metrics.glyphs [--seed S --epochs E --out PATH]``: train, report test accuracy
    per head at 32x32 and 16x16, save (``--out`` defaults to the working directory, never the package)."""
    import argparse
    import time

    p = argparse.ArgumentParser(prog="python -m minidiff.metrics.glyphs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--out", default="glyph_classifier.safetensors")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    t0 = time.perf_counter()
    model = train_glyph_classifier(epochs=args.epochs, seed=args.seed, progress=True)
    secs = time.perf_counter() - t0
    acc32, acc16 = glyph_accuracy(model, "test", 32), glyph_accuracy(model, "test", 16)
    save_glyph_classifier(model, args.out, seed=args.seed, epochs=args.epochs,
                          test_accuracy_32=acc32, test_accuracy_16=acc16)
    print(f"glyph classifier: {secs:.1f} s; test accuracy 32x32 {acc32}; 16x16 {acc16} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
