"""Sample-quality metrics, split by concern; every public name is re-exported here
(``from minidiff.metrics import digits_quality, fd_digits, ...``).

* :mod:`~minidiff.metrics.estimate`: :class:`Estimate` (value, standard error, ``n``; intervals and
  overlap) and :class:`MetricResult` (a value beside its real-vs-real floor).
* :mod:`~minidiff.metrics.classifier`: the digits classifier, trained on the ``fit`` half of the train
  split only (:func:`classifier_split`), whose penultimate features the digits measures use.
* :mod:`~minidiff.metrics.quality`: the headline :func:`digits_quality` -- unbiased KID (Bińkowski et
  al. 2018) with a standard error beside a real-vs-real floor on digits the classifier never saw,
  precision and recall (Kynkäänniemi et al. 2019) --, FD-digits (Heusel et al. 2017's recipe with a
  domain classifier) as a secondary column, :func:`memorisation`, and :func:`compare`, which says
  "not distinguishable at this n" instead of ranking noise.
* :mod:`~minidiff.metrics.glyphs`: the same measures on glyph images (:func:`glyph_quality`) with a
  glyph classifier (character, family, weight, slant) trained on a split disjoint from both sides of
  the floor.
* :mod:`~minidiff.metrics.sliced`: sliced Wasserstein distance for 2-D data, with its floor.
* :mod:`~minidiff.metrics.likelihood`: ``log p(x)`` by the probability-flow ODE and bits/dim.

Always report a sample-quality figure beside its real-vs-real floor and its interval: at small
sample sizes FD is biased upwards and every estimator is noisy.
"""
from __future__ import annotations

from .estimate import Estimate, MetricResult
from .classifier import (CLASSIFIER_FIT_FRACTION, CLASSIFIER_PATH, DigitClassifier, class_histogram, classifier_accuracy,
                         classifier_features, classifier_logits, classifier_split, classify, load_classifier,
                         parameters_digest, save_classifier, train_classifier)
from .classifier import _reference_features  # noqa: F401  (tests inspect the cache)
from .quality import (MemorisationReport, QualityReport, compare, digits_quality, fd_digits, fd_digits_floor,
                      frechet_distance, kid, memorisation, polynomial_kernel, precision_recall)
from .sliced import sliced_wasserstein, sliced_wasserstein_floor, sliced_wasserstein_result
from .likelihood import DIGITS_BIN_WIDTH, NLLResult, bits_per_dim, digits_bits_per_dim, log_likelihood
from .cli import main
from .glyphs import (GLYPH_CLASSIFIER_PATH, GlyphClassifier, classify_glyphs, glyph_accuracy, glyph_features,
                     glyph_logits, glyph_quality, load_glyph_classifier, save_glyph_classifier, train_glyph_classifier)

__all__ = [
    "MetricResult", "NLLResult", "DigitClassifier", "train_classifier", "load_classifier", "save_classifier",
    "classifier_accuracy", "classify", "classifier_features", "frechet_distance", "fd_digits", "fd_digits_floor",
    "class_histogram", "sliced_wasserstein", "sliced_wasserstein_floor", "sliced_wasserstein_result",
    "log_likelihood", "bits_per_dim", "digits_bits_per_dim", "DIGITS_BIN_WIDTH",
    "Estimate", "kid", "polynomial_kernel", "precision_recall", "QualityReport", "digits_quality",
    "MemorisationReport", "memorisation", "compare", "classifier_split", "parameters_digest",
    "classifier_logits",
    "GlyphClassifier", "GLYPH_CLASSIFIER_PATH", "train_glyph_classifier", "save_glyph_classifier",
    "load_glyph_classifier", "glyph_logits", "classify_glyphs", "glyph_features", "glyph_accuracy", "glyph_quality",
]
