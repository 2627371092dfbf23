"""Computed-or-checked prose: the course's rule that no result is typed by hand.

A notebook states a measured result in one of two ways:

* :func:`report` renders a short Markdown sentence *from* measured values, so the number a reader sees
  is the number the cell computed (``report("DDIM-20 reaches KID {kid:.2f}", kid=result.value)``);
* a checked claim (:func:`claim`, :func:`at_most`, :func:`at_least`, :func:`between`) prints the
  statement beside the measured value and raises :class:`ClaimError`, failing the notebook under nbval,
  when the statement is false.

Both print ordinary text (and Markdown where a front end renders it), so the numbers they show are
part of the notebook's outputs: ``tests/test_notebook_prose.py`` fails on any decimal typed in a
Markdown cell that appears in no output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ClaimError", "Claim", "claim", "at_most", "at_least", "between", "report", "fmt"]


class ClaimError(AssertionError):
    """A statement made in a notebook is contradicted by the measurement beside it."""


@dataclass(frozen=True)
class Claim:
    """A checked statement: what was said, what was measured, and whether it holds."""

    statement: str
    measured: str
    holds: bool

    def __str__(self) -> str:
        mark = "holds" if self.holds else "FALSE"
        return f"[{mark}] {self.statement} (measured: {self.measured})"


def fmt(value, digits: int = 3) -> str:
    """``value`` with ``digits`` significant figures (ints and strings unchanged; tuples joined)."""
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (tuple, list)):
        return ", ".join(fmt(v, digits) for v in value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v) or math.isinf(v):
        return str(v)
    return f"{v:.{digits}g}"


def claim(statement: str, holds, measured) -> Claim:
    """Print ``statement`` with the ``measured`` value(s); raise :class:`ClaimError` unless ``holds``.

    ``holds`` must be a plain truth value (a bool, or a 0-d numpy/torch boolean); ``measured`` is shown
    as given (numbers to 3 significant figures).
    """
    if not isinstance(statement, str) or not statement.strip():
        raise ValueError(f"statement must be a non-empty string, got {statement!r}")
    try:
        ok = bool(holds)
    except (TypeError, ValueError, RuntimeError) as exc:  # e.g. a multi-element array
        raise ValueError(f"holds must be a single truth value, got {type(holds).__name__}") from exc
    c = Claim(statement, fmt(measured), ok)
    print(c)
    if not ok:
        raise ClaimError(str(c))
    return c


def _finite(value, name: str) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ClaimError(f"{name} is {v}: a claim cannot be checked against a non-finite measurement")
    return v


def at_most(statement: str, measured, bound) -> Claim:
    """Checked claim ``measured <= bound`` (a NaN measurement is never within a bound)."""
    v = _finite(measured, "measured")
    return claim(statement, v <= float(bound), f"{fmt(v)} <= {fmt(bound)}")


def at_least(statement: str, measured, bound) -> Claim:
    """Checked claim ``measured >= bound``."""
    v = _finite(measured, "measured")
    return claim(statement, v >= float(bound), f"{fmt(v)} >= {fmt(bound)}")


def between(statement: str, measured, low, high) -> Claim:
    """Checked claim ``low <= measured <= high``."""
    v = _finite(measured, "measured")
    if float(low) > float(high):
        raise ValueError(f"low must be <= high, got low={low!r}, high={high!r}")
    return claim(statement, float(low) <= v <= float(high), f"{fmt(low)} <= {fmt(v)} <= {fmt(high)}")


def report(template: str, **values) -> str:
    """Render ``template`` (``str.format`` fields) from measured ``values`` and show it as Markdown.

    Returns the rendered text. In a notebook it is displayed as Markdown *and* printed as plain text,
    so the sentence is part of the stored outputs that nbval and the prose test read.
    """
    if not isinstance(template, str):
        raise ValueError(f"template must be a string, got {type(template).__name__}")
    try:
        text = template.format(**values)
    except KeyError as exc:
        raise ValueError(f"template names a value that was not given: {exc.args[0]!r}") from None
    try:  # IPython is present in a notebook; plain scripts just print
        from IPython import get_ipython
        from IPython.display import Markdown, display
        if get_ipython() is not None:
            display(Markdown(text))
            return text
    except ImportError:  # pragma: no cover - IPython ships with the course
        pass
    print(text)
    return text
