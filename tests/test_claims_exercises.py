"""The computed-or-checked helpers (minidiff.claims) and the exercise checks (minidiff.exercises)."""
import math

import numpy as np
import pytest
import torch

from minidiff import claims, exercises


def test_claim_prints_and_passes(capsys):
    c = claims.at_most("the error is below the floor", 0.012345, 0.02)
    out = capsys.readouterr().out
    assert c.holds and "0.0123 <= 0.02" in out and "holds" in out


@pytest.mark.parametrize("call", [
    lambda: claims.at_most("x small", 3.0, 2.0),
    lambda: claims.at_least("x big", 1.0, 2.0),
    lambda: claims.between("x in range", 5.0, 0.0, 1.0),
    lambda: claims.claim("it holds", False, 1.0),
    lambda: claims.at_most("nan is never within a bound", math.nan, 1.0),
])
def test_false_claims_raise(call):
    with pytest.raises(claims.ClaimError):
        call()


def test_claim_rejects_arrays_and_empty_statements():
    with pytest.raises(ValueError, match="holds"):
        claims.claim("s", np.array([True, False]), 0)
    with pytest.raises(ValueError, match="statement"):
        claims.claim("  ", True, 0)
    with pytest.raises(ValueError, match="low must be <= high"):
        claims.between("s", 1.0, 2.0, 1.0)


def test_report_formats_measured_values(capsys):
    text = claims.report("KID {kid:.3f} at n = {n}", kid=0.01234, n=500)
    assert text == "KID 0.012 at n = 500" and text in capsys.readouterr().out
    with pytest.raises(ValueError, match="'missing'"):
        claims.report("{missing}")


def test_exercise_checks_say_not_yet_without_raising(capsys):
    exercises.reset()
    assert not exercises.check_close("ex1", None, np.zeros(3))
    assert not exercises.check_shape("ex2", torch.zeros(4), (4, 2))
    assert not exercises.check_close("ex3", np.array([1.0, 2.0]), np.array([1.0, 2.5]))
    out = capsys.readouterr().out
    assert "ex1: not yet: the stub still returns None" in out
    assert "expected shape (4, 2), got (4,)" in out
    assert "at index (1,) got 2, expected 2.5" in out
    with pytest.raises(AssertionError, match="ex1.*ex2.*ex3"):
        exercises.assert_all_correct()


def test_exercise_checks_pass_on_correct_answers(capsys):
    exercises.reset()
    assert exercises.check_close("a", torch.ones(2, 3), np.ones((2, 3)))
    assert exercises.check_shape("b", np.zeros((5, 2)), (None, 2))
    assert exercises.check_true("c", 1 < 2, "compare")
    exercises.assert_all_correct()
    with pytest.raises(AssertionError, match="never checked"):
        exercises.assert_all_correct("a", "zzz")
    assert not exercises.check_close("d", np.array([np.nan]), np.array([0.0]))
