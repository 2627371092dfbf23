"""The Gumbel-max categorical kernel (minidiff.kernels.categorical) through minidiff.backend: against a
naive float64 reference written from the formula (scalar Philox, -log(-log u), argmax), invariant to
the thread count, the torch path equal to the kernel, and the draws' frequencies against the probabilities."""
from __future__ import annotations

import math

import numba
import numpy as np
import pytest
import torch

from minidiff import backend as B
from minidiff.kernels import formulas as F


def naive_categorical(p, seed, step):
    p = np.asarray(p, dtype=np.float64)
    k0, k1 = F.seed_key(seed)
    out = np.empty(p.shape[0], dtype=np.int64)
    for b in range(p.shape[0]):
        scores = []
        for k in range(p.shape[1]):
            w = F.philox4x32_10(k // 4, b, step, 0, k0, k1)[k % 4]
            g = -math.log(-math.log((w + 0.5) / 2.0**32))
            scores.append(math.log(p[b, k]) + g if p[b, k] > 0 else -math.inf)
        out[b] = int(np.argmax(scores))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", B.BACKENDS)
def test_matches_the_naive_reference(dtype, backend):
    g = torch.Generator().manual_seed(0)
    p = torch.rand(37, 11, generator=g, dtype=torch.float64).to(dtype)
    p[p < 0.2] = 0
    p[:, 0] += 1e-3
    got = B.categorical(p, seed=2**40 + 5, step=7, backend=backend)
    np.testing.assert_array_equal(got.numpy(), naive_categorical(p.numpy(), 2**40 + 5, 7))
    assert (torch.gather(p, 1, got[:, None]) > 0).all()  # zero-probability categories never drawn


def test_thread_count_invariance_and_shape():
    p = torch.rand(40_000, 7, generator=torch.Generator().manual_seed(1)).reshape(200, 200, 7)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = B.categorical(p, seed=3, step=2)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = B.categorical(p, seed=3, step=2)
    finally:
        numba.set_num_threads(old)
    assert one.shape == (200, 200) and one.dtype == torch.int64
    assert torch.equal(one, two)
    assert not torch.equal(one, B.categorical(p, seed=3, step=3))  # a new step, new draws


def test_frequencies_match_the_probabilities():
    probs = torch.tensor([0.05, 0.5, 0.0, 0.3, 0.15], dtype=torch.float64)
    n = 200_000
    x = B.categorical(probs.expand(n, 5).contiguous() * 3.0, seed=11)  # rows need not be normalised
    freq = torch.bincount(x, minlength=5).double() / n
    assert float(freq[2]) == 0.0
    assert float(((freq - probs).abs() / torch.sqrt(probs * (1 - probs) / n + 1e-30))[probs > 0].max()) < 4.5


def test_numpy_in_numpy_out_and_bad_inputs():
    p = np.full((3, 4), 0.25)
    assert isinstance(B.categorical(p, seed=0), np.ndarray)
    with pytest.raises(ValueError, match="seed"):
        B.categorical(p, seed=None)
    with pytest.raises(ValueError, match="positive mass"):
        B.categorical(np.zeros((2, 3)), seed=0)
    with pytest.raises(ValueError, match="non-negative"):
        B.categorical(np.array([[0.5, -0.1]]), seed=0)
    with pytest.raises(ValueError, match="non-negative"):
        B.categorical(np.array([[0.5, np.nan]]), seed=0)
    with pytest.raises(TypeError, match="probs"):
        B.categorical(torch.ones(2, 3, dtype=torch.int64), seed=0)
    with pytest.raises(ValueError, match="step"):
        B.categorical(p, seed=0, step=-1)
