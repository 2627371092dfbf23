"""The digits classifier behind the feature-space measures: :class:`DigitClassifier`, its data split
(:func:`classifier_split`: trained on one half of the train split, the other half held out for the
real-vs-real floor), training, shipped weights, predictions, features, and the reference features
cached per classifier and parameter digest."""
from __future__ import annotations

import hashlib
import math
import weakref
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .estimate import _check_count

CLASSIFIER_PATH = Path(__file__).resolve().parents[1] / "weights" / "classifier.safetensors"


class DigitClassifier(nn.Module):
    """conv(32)-conv(64)-pool-conv(64)-pool-fc(128)-fc(10) on ``(B, 1, 8, 8)`` digits in ``[-1, 1]``.
    :meth:`features` is the 128-d penultimate layer used by FD-digits."""

    feature_dim = 128

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 2 * 2, self.feature_dim)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(self.feature_dim, 10)

    def features(self, x):  # (B, 1, 8, 8) -> (B, 128)
        h = F.relu(self.conv1(x))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (B, 64, 4, 4)
        h = F.max_pool2d(F.relu(self.conv3(h)), 2)  # (B, 64, 2, 2)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x):  # logits (B, 10)
        return self.fc2(self.drop(self.features(x)))


CLASSIFIER_FIT_FRACTION = 0.5


@lru_cache(maxsize=1)
def classifier_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The digits classifier's data: indices ``(fit, held_out)`` into ``load_digits("train")``.

    A fixed stratified split (per class, a shuffle with ``seed``) of the 1438 train digits: the
    classifier is trained on ``fit`` (half of each class) only, so the real-vs-real floor of the
    quality measures -- ``held_out`` train digits against the test split -- compares two sets the
    classifier never saw, and generated samples are compared with the test split, unseen by both the
    classifier and the diffusion models (which train on the whole train split)."""
    from ..data import load_digits

    labels = load_digits("train")[1].numpy()
    rng = np.random.default_rng(seed)
    fit, held = [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_fit = int(round(CLASSIFIER_FIT_FRACTION * idx.size))
        fit.append(idx[:n_fit])
        held.append(idx[n_fit:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(held))


def train_classifier(*, epochs: int = 120, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
                     progress: bool = False) -> DigitClassifier:
    """Train :class:`DigitClassifier` on the ``fit`` half of the digits train split
    (:func:`classifier_split`) with +-1 pixel shift augmentation, AdamW and a cosine learning rate;
    deterministic for ``seed`` and thread count."""
    from tqdm.auto import tqdm

    from ..data import augment_shift, load_digits

    epochs = _check_count(epochs, "epochs")
    batch_size = _check_count(batch_size, "batch_size")
    x, y = load_digits("train")
    fit = torch.from_numpy(classifier_split()[0])
    x, y = x[fit], y[fit]
    torch.manual_seed(seed)
    model = DigitClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(x.shape[0] / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    model.train()
    for epoch in tqdm(range(epochs), disable=not progress, desc="classifier"):
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        perm = torch.randperm(x.shape[0], generator=g)
        xa = augment_shift(x, 1, generator=g)
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(model(xa[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval().requires_grad_(False)


def save_classifier(model: DigitClassifier, path, **info) -> None:
    """Write ``model`` to ``path`` (safetensors + JSON metadata, :mod:`minidiff.checkpoint`)."""
    from .. import checkpoint as ckpt

    ckpt.save(path, {f"classifier.{k}": v for k, v in model.state_dict().items()},
              {"kind": "classifier", "info": info})


def load_classifier(path=None) -> DigitClassifier:
    """The shipped digits classifier (eval mode, frozen). Cached for the default path."""
    if path is None:
        return _load_default_classifier()
    return _load_classifier(Path(path))


@lru_cache(maxsize=1)
def _load_default_classifier():
    return _load_classifier(CLASSIFIER_PATH)


def _load_classifier(path: Path) -> DigitClassifier:
    return load_frozen(path, DigitClassifier(), "classifier", "the digits classifier")


def load_frozen(path: Path, model: nn.Module, kind: str, what: str) -> nn.Module:
    """``model`` with the weights of the minidiff file ``path`` whose kind (and tensor prefix) is ``kind``, in eval
    mode and frozen; a file of another kind is refused naming ``what`` was expected."""
    from .. import checkpoint as ckpt

    tensors, meta = ckpt.load(path)
    if meta.get("kind") != kind:
        raise ValueError(f"{path} is a minidiff {meta.get('kind')!r} file, not {what}")
    ckpt.load_state_into(model, ckpt.subset(tensors, kind), f"{kind.replace('_', ' ')} {path}")
    return model.eval().requires_grad_(False)


def _prep_digits(x) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
        raise ValueError(f"digits must be (N, 1, 8, 8), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("digits must hold at least one image, got an empty batch (N = 0)")
    if not torch.isfinite(x).all():
        raise ValueError("digits must be finite (a sampler diverged?)")
    return x.detach().to(torch.float32).cpu().clamp(-1.0, 1.0)


@torch.no_grad()
def classifier_logits(x, classifier=None, batch: int = 2048) -> torch.Tensor:
    clf = classifier or load_classifier()
    x = _prep_digits(x)
    return torch.cat([clf(x[i:i + batch]) for i in range(0, x.shape[0], batch)])


def classify(x, classifier=None) -> torch.Tensor:
    """Predicted class ``(N,)`` of digits ``(N, 1, 8, 8)`` in ``[-1, 1]`` (clamped to the range)."""
    return classifier_logits(x, classifier).argmax(1)


def classifier_accuracy(classifier=None, split: str = "test") -> float:
    """Accuracy of the classifier on a digits split: ``"test"``, ``"train"``, ``"all"``, or the
    classifier's own parts of the train split, ``"fit"`` and ``"held_out"`` (:func:`classifier_split`)."""
    from ..data import load_digits

    if split in ("fit", "held_out"):
        x, y = load_digits("train")
        idx = torch.from_numpy(classifier_split()[0 if split == "fit" else 1])
        x, y = x[idx], y[idx]
    else:
        x, y = load_digits(split)
    return float((classify(x, classifier) == y).double().mean())


@torch.no_grad()
def classifier_features(x, classifier=None, batch: int = 2048) -> torch.Tensor:
    """Penultimate-layer features ``(N, 128)``, float64, of digits clamped to ``[-1, 1]``."""
    clf = classifier or load_classifier()
    x = _prep_digits(x)
    return torch.cat([clf.features(x[i:i + batch]) for i in range(0, x.shape[0], batch)]).double()


def class_histogram(x, classifier=None) -> torch.Tensor:
    """Fraction of samples predicted as each class, ``(10,)`` float64 summing to 1."""
    pred = classify(x, classifier)
    return torch.bincount(pred, minlength=10).double() / pred.numel()


# ---------------------------------------------------------------------------- reference features, cached
# Cached per classifier in a WeakKeyDictionary (so a classifier that goes away takes its cache
# with it) and keyed by a digest of its parameters, so training it further cannot serve stale features.
_feature_cache: "weakref.WeakKeyDictionary[nn.Module, tuple[str, dict]]" = weakref.WeakKeyDictionary()


def parameters_digest(model: nn.Module) -> str:
    """SHA-1 of every parameter and buffer (names, shapes, dtypes and bytes) of ``model``."""
    h = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return h.hexdigest()


def _reference_digits(which: str) -> torch.Tensor:
    """``"test"``: the test split; ``"held_out"``: the train digits the classifier did not see."""
    from ..data import load_digits

    if which == "test":
        return load_digits("test")[0]
    if which == "held_out":
        return load_digits("train")[0][torch.from_numpy(classifier_split()[1])]
    raise ValueError(f"which must be 'test' or 'held_out', got {which!r}")


def _reference_features(classifier, which: str) -> torch.Tensor:
    """Features of the reference digits ``which`` under ``classifier`` (``None``: the shipped one), cached."""
    clf = classifier if classifier is not None else load_classifier()
    digest = parameters_digest(clf)
    cached = _feature_cache.get(clf)
    if cached is None or cached[0] != digest:
        cached = (digest, {})
        _feature_cache[clf] = cached
    if which not in cached[1]:
        cached[1][which] = classifier_features(_reference_digits(which), clf)
    return cached[1][which]


def _floor_features(n: int, classifier, seed: int) -> torch.Tensor:
    """Features of ``min(n, H)`` held-out train digits, drawn without replacement with ``seed``."""
    held = _reference_features(classifier, "held_out")
    if n >= held.shape[0]:
        return held
    return held[torch.randperm(held.shape[0], generator=torch.Generator().manual_seed(seed))[:n]]
