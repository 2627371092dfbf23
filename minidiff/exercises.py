"""Exercise checks that help instead of crashing.

Every exercise in the course has three parts:

1. a *stub* the student fills in (kept in both editions), returning ``None`` until it is written;
2. a worked *solution* cell tagged ``solution`` (removed from the student edition by ``make student``);
3. a *check* cell (kept) calling one of the functions below, which prints ``correct: ...`` or
   ``not yet: <what is wrong>`` and never raises on a wrong or missing answer.

So the student edition runs top to bottom with every check saying "not yet". The instructor edition
must fail loudly when a solution is wrong: its last solution-tagged cell calls
:func:`assert_all_correct`, which raises if any check of this kernel session said "not yet".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Result", "check_close", "check_shape", "check_true", "results", "assert_all_correct", "reset"]


@dataclass(frozen=True)
class Result:
    """The outcome of one check: ``ok`` and the message that was printed."""

    name: str
    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return self.message


_RESULTS: dict[str, Result] = {}


def _record(name: str, ok: bool, detail: str) -> Result:
    msg = f"{name}: " + ("correct" if ok else "not yet") + (f": {detail}" if detail else "")
    r = Result(name, ok, msg)
    _RESULTS[name] = r
    print(msg)
    return r


def _as_array(x):
    if x is None:
        return None
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def check_shape(name: str, got, shape) -> Result:
    """``got`` has exactly ``shape`` (a tuple; ``None`` entries match any size)."""
    a = _as_array(got)
    if a is None:
        return _record(name, False, "the stub still returns None: fill it in")
    want = tuple(shape)
    ok = a.ndim == len(want) and all(w is None or w == s for w, s in zip(want, a.shape))
    shown = tuple("any" if w is None else w for w in want)
    return _record(name, ok, "" if ok else f"expected shape {shown}, got {tuple(a.shape)}")


def check_close(name: str, got, expected, *, rtol: float = 1e-5, atol: float = 1e-8) -> Result:
    """``got`` equals ``expected`` elementwise within ``atol + rtol * |expected|``; shapes must match."""
    a = _as_array(got)
    if a is None:
        return _record(name, False, "the stub still returns None: fill it in")
    b = _as_array(expected)
    if b is None:
        raise ValueError(f"{name}: expected must not be None")
    if a.shape != b.shape:
        return _record(name, False, f"expected shape {tuple(b.shape)}, got {tuple(a.shape)}")
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if not np.all(np.isfinite(a64)):
        return _record(name, False, f"{int(np.sum(~np.isfinite(a64)))} non-finite value(s) in the answer")
    err = np.abs(a64 - b64)
    tol = atol + rtol * np.abs(b64)
    if np.all(err <= tol):
        return _record(name, True, f"max |error| {err.max() if err.size else 0.0:.2g}")
    i = np.unravel_index(int(np.argmax(err - tol)), err.shape) if err.ndim else ()
    return _record(name, False, f"at index {tuple(int(j) for j in i)} got {a64[i]:.6g}, expected {b64[i]:.6g}"
                   f" (|error| {err[i]:.2g} > tolerance {tol[i]:.2g})")


def check_true(name: str, condition, hint: str) -> Result:
    """A yes/no check; ``hint`` says what to look at when it fails. ``condition=None`` means not attempted."""
    if condition is None:
        return _record(name, False, "not attempted yet: " + hint)
    ok = bool(condition)
    return _record(name, ok, "" if ok else hint)


def results() -> dict[str, Result]:
    """The latest result of every check run in this session, by name."""
    return dict(_RESULTS)


def reset() -> None:
    """Forget every recorded result (a fresh notebook session starts empty)."""
    _RESULTS.clear()


def assert_all_correct(*names: str) -> None:
    """Raise ``AssertionError`` listing every check (of ``names``, or all) whose latest result is not correct.

    The instructor edition calls this in a solution-tagged cell, so a wrong worked solution fails nbval.
    """
    wanted = names or tuple(_RESULTS)
    missing = [n for n in wanted if n not in _RESULTS]
    bad = [str(_RESULTS[n]) for n in wanted if n in _RESULTS and not _RESULTS[n].ok]
    if missing or bad:
        raise AssertionError("exercise checks not passed: " + "; ".join(bad + [f"{m}: never checked" for m in missing]))
    print(f"all {len(wanted)} exercise checks correct")
