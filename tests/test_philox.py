"""Philox4x32-10 (Salmon et al. 2011) against the Random123 known-answer vectors, and its normals:
statistics, independence, and identical numbers across thread counts, task splits and entry points."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats

import naive
from minidiff import backend as B
from minidiff.kernels import formulas as F

M = 0xFFFFFFFF
# Random123 tests/kat_vectors, lines "philox4x32 10 <counter x4> <key x2>  <output x4>".
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M, M, M, M), (M, M), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr,key,want", KAT)
def test_known_answers_plain_python(ctr, key, want):
    assert F.philox4x32_10(*ctr, *key) == want


@pytest.mark.parametrize("ctr,key,want", KAT)
def test_known_answers_compiled(ctr, key, want):
    from minidiff.kernels import cpu

    assert tuple(int(v) for v in cpu.philox_block(*ctr, *key)) == want


def plain_normals(shape, seed, step):
    """``formulas.normal4`` run as plain CPython, element by element."""
    B_, n = shape[0], int(np.prod(shape[1:]))
    k0, k1 = F.seed_key(seed)
    return np.array([[F.normal4(k0, k1, i // 4, b, step)[i % 4] for i in range(n)] for b in range(B_)]).reshape(shape)


def test_normal_matches_the_plain_python_definition_bitwise():
    got = B.normal((3, 2, 5), seed=2**64 - 1, step=7, dtype=torch.float64).numpy()
    np.testing.assert_array_equal(got, plain_normals((3, 2, 5), 2**64 - 1, 7))
    got32 = B.normal((3, 10), seed=5, dtype=torch.float32).numpy()
    np.testing.assert_array_equal(got32, plain_normals((3, 10), 5, 0).astype(np.float32))


def test_normal_matches_the_textbook_box_muller():
    """Against ``sqrt(-2 ln u1) (cos, sin)(2 pi u2)`` written independently in tests/naive.py."""
    got = B.normal((4, 999), seed=77, step=3, dtype=torch.float64).numpy()
    np.testing.assert_allclose(got, naive.normals((4, 999), 77, 3), rtol=1e-13, atol=1e-14)


def test_normal_is_a_pure_function_of_seed_sample_element_step():
    a = B.normal((4, 1000), seed=1, step=3).numpy()
    np.testing.assert_array_equal(a[:2, :7], B.normal((2, 7), seed=1, step=3).numpy())  # prefix-stable
    assert not np.array_equal(a, B.normal((4, 1000), seed=1, step=4).numpy())
    assert not np.array_equal(a, B.normal((4, 1000), seed=2, step=3).numpy())


def test_long_rows_split_into_tasks_give_the_same_numbers():
    """Rows longer than a CPU task: elements near the split points match the plain definition."""
    from minidiff.kernels import cpu

    n = 2 * cpu.CHUNK + 7
    got = B.normal((2, n), seed=9, step=1, dtype=torch.float64).numpy()
    for i in (0, cpu.CHUNK - 1, cpu.CHUNK, cpu.CHUNK + 3, n - 1):
        g, k = divmod(i, 4)
        np.testing.assert_array_equal(got[1, i], F.normal4(9, 0, g, 1, 1)[k])


def test_moments_and_ks_against_standard_normal():
    z = B.normal((1000, 1000), seed=123, dtype=torch.float64).numpy().ravel()
    n = z.size
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(stats.skew(z)) < 5 * np.sqrt(6 / n)
    assert abs(stats.kurtosis(z)) < 5 * np.sqrt(24 / n)
    assert stats.kstest(z[:200_000], "norm").pvalue > 1e-3


def test_independence_across_samples_steps_seeds_and_lanes():
    a = B.normal((2, 100_000), seed=0, step=0, dtype=torch.float64).numpy()
    b = B.normal((2, 100_000), seed=0, step=1, dtype=torch.float64).numpy()
    c = B.normal((2, 100_000), seed=1, step=0, dtype=torch.float64).numpy()
    bound = 5 / np.sqrt(100_000)
    pairs = [(a[0], a[1]), (a[0], b[0]), (a[0], c[0]), (a[0, 0::4], a[0, 1::4]), (a[0, 0::4], a[0, 2::4]),
             (a[0, :-1], a[0, 1:])]
    for u, v in pairs:
        assert abs(np.corrcoef(u, v)[0, 1]) < bound * np.sqrt(len(a[0]) / len(u))


def _noise_digest():
    import hashlib

    s = B.normal((3, 50_001), seed=4, step=2).numpy().tobytes()
    s += B.normal((5_000, 3), seed=4, step=2).numpy().tobytes()
    x = np.zeros((700, 33), np.float32)
    s += B.langevin_step(x, x, 0.1, seed=8, step=1).tobytes()
    return hashlib.sha256(s).hexdigest()


def test_identical_across_thread_counts_in_process():
    import numba

    old = numba.get_num_threads()
    try:
        digests = set()
        for k in range(1, numba.config.NUMBA_NUM_THREADS + 1):
            numba.set_num_threads(k)
            digests.add(_noise_digest())
        assert len(digests) == 1
    finally:
        numba.set_num_threads(old)


def test_identical_with_numba_num_threads_1_and_2_in_subprocesses():
    code = ("import sys; sys.path.insert(0, 'tests'); import numba, test_philox as t; "
            "print(numba.get_num_threads(), t._noise_digest())")
    out = []
    for k in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=k)
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                           cwd=os.path.dirname(os.path.dirname(__file__)))
        assert r.returncode == 0, r.stderr
        threads, digest = r.stdout.split()
        assert threads == k
        out.append(digest)
    assert out[0] == out[1] == _noise_digest()


def test_libm_free_log_and_sincos_match_math_to_a_few_ulp():
    """formulas.log_unit / cos_sin_quarter (polynomials, so the Box-Muller loop vectorises) against libm."""
    import math

    rng = np.random.default_rng(3)
    words = [0, 1, 2, 3, 65535, 65536, 2**31, 2**32 - 2, 2**32 - 1] + rng.integers(0, 2**32, 5000).tolist()
    for w in words:
        want = math.log((w + 1) * 2.0**-32)
        assert abs(F.log_unit(w) - want) <= 4 * np.spacing(abs(want)) + 1e-300, w
    for phi in np.concatenate([np.linspace(0, math.pi / 2, 4001)[:-1], [math.pi / 2 - 1e-9]]):
        c, s = F.cos_sin_quarter(float(phi))
        assert abs(c - math.cos(phi)) <= 4e-16 and abs(s - math.sin(phi)) <= 4e-16, phi


def test_serial_twin_and_parallel_kernel_give_identical_bits():
    """cpu.run takes the serial twin below SERIAL_BELOW: it must compute exactly what the parallel kernel does."""
    from minidiff.kernels import cpu

    x = np.random.default_rng(0).standard_normal((37, 101)).astype(np.float32)
    outs = []
    for k in (cpu.ddpm, cpu.serial(cpu.ddpm)):
        o, o0 = np.empty_like(x), np.empty_like(x)
        k(x, x * 0.5, x, 1.2, 0.4, 1.0, 0.3, 0.9, 0.1, 2, 7, 0, 3, o, o0)  # NOISE_PHILOX
        outs.append((o, o0))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
