"""``python -m minidiff.metrics train-classifier``."""
from __future__ import annotations

from .classifier import classifier_accuracy, classifier_split, save_classifier, train_classifier


def _positive_int(text: str) -> int:
    import argparse

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def main(argv=None) -> int:
    """``python -m minidiff.metrics train-classifier [--seed S --epochs E --out PATH]``.

    ``--out`` defaults to ``classifier.safetensors`` in the working directory, never into the
    installed package; to replace the shipped weights name ``minidiff/weights/classifier.safetensors``
    explicitly (see ``minidiff/weights/classifier.json`` for the recorded command)."""
    import argparse
    import time

    p = argparse.ArgumentParser(prog="python -m minidiff.metrics")
    sub = p.add_subparsers(dest="cmd", required=True)
    tc = sub.add_parser("train-classifier", help="train the digits classifier on its fit split and save it")
    tc.add_argument("--seed", type=int, default=0)
    tc.add_argument("--epochs", type=_positive_int, default=120)
    tc.add_argument("--out", default="classifier.safetensors",
                    help="output file (default: classifier.safetensors in the working directory)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    model = train_classifier(epochs=args.epochs, seed=args.seed, progress=True)
    acc = classifier_accuracy(model, "test")
    held_acc = classifier_accuracy(model, "held_out")
    secs = time.perf_counter() - t0
    save_classifier(model, args.out, seed=args.seed, epochs=args.epochs, test_accuracy=acc,
                    held_out_accuracy=held_acc)
    print(f"classifier: test accuracy {acc:.4f} ({len(classifier_split()[0])} fit digits), held-out train "
          f"accuracy {held_acc:.4f}, {secs:.1f} s -> {args.out}")
    return 0
