import math

import numpy as np
import pytest
import torch

from minidiff import Schedule

ALL = [Schedule.linear(), Schedule.cosine(), Schedule.sigmoid()]


@pytest.mark.parametrize("s", ALL, ids=lambda s: s.name)
def test_tables_are_consistent(s):
    assert s.T == 1000
    np.testing.assert_allclose(np.cumprod(1 - s.betas), s.alpha_bar, rtol=1e-12)
    np.testing.assert_allclose(s.snr, s.alpha_bar / (1 - s.alpha_bar))
    np.testing.assert_allclose(s.sigma**2, 1 / s.snr)
    assert np.all(np.diff(s.alpha_bar) < 0)
    # The prior end really is (almost) pure noise: the lesson from other courses.
    assert s.alpha_bar[-1] < 1e-4
    with pytest.raises(ValueError):
        s.betas[0] = 0.5  # read-only


def test_linear_matches_ho_et_al():
    s = Schedule.linear()
    assert s.betas[0] == pytest.approx(1e-4) and s.betas[-1] == pytest.approx(0.02)


def test_cosine_matches_nichol_dhariwal_formula():
    s = Schedule.cosine(T=100)
    f = lambda t: math.cos((t / 100 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for i in (0, 10, 50, 90):
        assert s.alpha_bar[i] == pytest.approx(f(i + 1) / f(0), rel=1e-9)


@pytest.mark.parametrize("betas,match", [
    ([0.1, 1.0], "open interval"), ([0.0, 0.1], "open interval"), ([], "T >= 1"),
    ([0.1, float("nan")], "open interval"), (np.ones((2, 2)) * 0.1, "1-D"),
])
def test_invalid_schedules_raise(betas, match):
    with pytest.raises(ValueError, match=match):
        Schedule.from_betas(betas)


def test_invalid_T_raises():
    for bad in (0, -3):
        with pytest.raises(ValueError, match="T must be"):
            Schedule.linear(T=bad)
    for bad in (2.5, True, "12"):  # not integers (a bool is not a count)
        with pytest.raises(TypeError, match="T must be an integer"):
            Schedule.linear(T=bad)


@pytest.mark.parametrize("n", [1, 2, 7, 10, 50, 999, 1000])
def test_timesteps_unique_descending(n):
    s = Schedule.linear()
    ts = s.timesteps(n)
    assert len(ts) == n and ts[0] == s.T - 1 and ts.min() >= 0
    assert np.all(np.diff(ts) < 0)


def test_timesteps_bad_n():
    with pytest.raises(ValueError, match="n must be"):
        Schedule.linear().timesteps(0)
    with pytest.raises(ValueError, match="n must be"):
        Schedule.linear(T=10).timesteps(11)


def test_coordinate_conversions_round_trip():
    s = Schedule.cosine(T=200)
    idx = np.arange(200)
    np.testing.assert_array_equal(s.t_to_t_index(s.t_index_to_t(idx)), idx)
    np.testing.assert_array_equal(s.alpha_bar_to_t_index(s.alpha_bar[idx]), idx)
    np.testing.assert_array_equal(s.sigma_to_t_index(s.sigma[idx]), idx)


def test_t_index_out_of_range_names_argument():
    s = Schedule.linear(T=10)
    with pytest.raises(IndexError, match=r"t_index must lie in \[0, 9\]"):
        s.check_t_index([3, 10])
    with pytest.raises(TypeError, match="t_index must hold integers"):
        s.check_t_index(np.array([0.5]))


def test_at_casts_to_data_dtype_and_broadcasts():
    s = Schedule.linear()
    x = torch.zeros(3, 1, 8, 8, dtype=torch.float32)
    v = s.at("alpha_bar", np.array([0, 5, 999]), x)
    assert v.dtype == torch.float32 and v.shape == (3, 1, 1, 1)
    assert float(v[2]) == pytest.approx(s.alpha_bar[999], rel=1e-6)
