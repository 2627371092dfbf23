"""Every kernel (through minidiff.backend, backend="numba") against the naive float64 references in
tests/naive.py, over random shapes, dtypes and per-sample indices; plus the edge cases."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import naive
from minidiff import Schedule
from minidiff import backend as B

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = [np.float32, np.float64]


def tol(dtype):
    return 2e-6 if dtype == np.float32 else 1e-12


def close(got, want, dtype):
    """Within a few ulps of the float64 reference (relative to the largest magnitude)."""
    got = np.asarray(got, dtype=np.float64)
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=tol(dtype), atol=tol(dtype) * scale)


@st.composite
def problems(draw, min_batch=1):
    """(schedule, x of random shape and dtype, rng)."""
    T = draw(st.integers(1, 60))
    batch = draw(st.integers(min_batch, 5))
    feat = draw(st.lists(st.integers(1, 9), min_size=0, max_size=3))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((batch, *feat)).astype(dtype)
    return Schedule.linear(T=T), x, rng


def randn_like(rng, x):
    return rng.standard_normal(x.shape).astype(x.dtype)


# ---------------------------------------------------------------------------- forward noising
@SETTINGS
@given(problems(), st.booleans(), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1))
def test_q_sample(p, given_noise, seed, step):
    s, x, rng = p
    t = rng.integers(0, s.T, size=x.shape[0])
    if given_noise:
        eps = randn_like(rng, x)
        got = B.q_sample(x, t, eps, s, backend="numba")
    else:
        eps = naive.normals(x.shape, seed, step)
        got = B.q_sample(x, t, None, s, seed=seed, step=step, backend="numba")
    assert isinstance(got, np.ndarray) and got.dtype == x.dtype and got.shape == x.shape
    close(got, naive.q_sample(x, t, eps, s), x.dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_q_sample_edges_batch_one_first_and_last_index(dtype):
    s = Schedule.cosine(T=100)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(dtype)
    for t in (0, s.T - 1):
        got = B.q_sample(x, t, None, s, seed=7, backend="numba")
        close(got, naive.q_sample(x, [t], naive.normals(x.shape, 7, 0), s), dtype)


# ---------------------------------------------------------------------------- samplers
@SETTINGS
@given(problems(), st.data())
def test_ddpm(p, data):
    s, x, rng = p
    eps = randn_like(rng, x)
    t = data.draw(st.integers(0, s.T - 1))
    clip = data.draw(st.sampled_from([None, 1.0, 3.0]))
    if data.draw(st.booleans()):
        z = randn_like(rng, x)
        got = B.ddpm_step(x, eps, t, s, noise=z, clip_x0=clip, backend="numba")
    else:
        z = naive.normals(x.shape, 11, 3)
        got = B.ddpm_step(x, eps, t, s, seed=11, step=3, clip_x0=clip, backend="numba")
    want = naive.ddpm(x, eps, t, s, z, clip)
    for g, w in zip(got, want):
        assert g.dtype == x.dtype
        close(g, w, x.dtype)


@SETTINGS
@given(problems(), st.data())
def test_ddim(p, data):
    s, x, rng = p
    eps = randn_like(rng, x)
    t = data.draw(st.integers(0, s.T - 1))
    t_prev = data.draw(st.integers(-1, t - 1))
    eta = data.draw(st.sampled_from([0.0, 0.5, 1.0]))
    clip = data.draw(st.sampled_from([None, 1.0]))
    z = naive.normals(x.shape, 5, 9)
    got = B.ddim_step(x, eps, t, t_prev, s, eta=eta, seed=5, step=9, clip_x0=clip, backend="numba")
    for g, w in zip(got, naive.ddim(x, eps, t, t_prev, s, eta, z, clip)):
        close(g, w, x.dtype)


@SETTINGS
@given(problems(), st.floats(1e-4, 1.0), st.booleans())
def test_langevin(p, h, given_noise):
    s, x, rng = p
    score = randn_like(rng, x)
    z = randn_like(rng, x) if given_noise else naive.normals(x.shape, 2, 1)
    kw = dict(noise=z) if given_noise else dict(seed=2, step=1)
    close(B.langevin_step(x, score, h, backend="numba", **kw), naive.langevin(x, score, h, z), x.dtype)


@SETTINGS
@given(problems(), st.floats(-2, 2), st.floats(0, 10), st.floats(1e-4, 0.1))
def test_reverse_sde(p, f, g, dt):
    s, x, rng = p
    score = randn_like(rng, x)
    z = naive.normals(x.shape, 3, 4)
    got = B.reverse_sde_step(x, score, drift_coef=f, diffusion=g, dt=dt, seed=3, step=4, backend="numba")
    close(got, naive.reverse_sde(x, score, f, g, dt, z), x.dtype)


@SETTINGS
@given(problems(), st.floats(-2, 2), st.floats(0, 10), st.floats(1e-4, 0.1))
def test_pf_ode_euler_and_heun(p, f, g, dt):
    s, x, rng = p
    score, xe, se = randn_like(rng, x), randn_like(rng, x), randn_like(rng, x)
    close(B.pf_ode_euler_step(x, score, drift_coef=f, diffusion=g, dt=dt, backend="numba"),
          naive.pf_euler(x, score, f, g, dt), x.dtype)
    got = B.pf_ode_heun_step(x, score, xe, se, drift_coef=f, diffusion=g, drift_coef_next=f / 2,
                             diffusion_next=g * 0.9, dt=dt, backend="numba")
    close(got, naive.pf_heun(x, score, xe, se, f, g, f / 2, g * 0.9, dt), x.dtype)


@SETTINGS
@given(st.integers(1, 300), st.integers(1, 3), st.sampled_from(DTYPES), st.floats(0, 2),
       st.floats(-1, 1), st.integers(0, 2**63))
def test_walkers(n, d, dtype, D, drift, seed):
    x = np.random.default_rng(seed % 2**32).standard_normal((n, d)).astype(dtype)
    got = B.walker_step(x, D, 0.01, drift_coef=drift, seed=seed, step=17, backend="numba")
    close(got, naive.walker(x, D, 0.01, drift, naive.normals(x.shape, seed, 17)), dtype)


# ---------------------------------------------------------------------------- stencils
@SETTINGS
@given(st.integers(1, 4), st.integers(1, 40), st.sampled_from(DTYPES), st.sampled_from(B.BOUNDARY_CONDITIONS),
       st.floats(0, 0.5))
def test_ftcs_1d(batch, n, dtype, bc, r):
    u = np.random.default_rng(n).standard_normal((batch, n)).astype(dtype)
    got = B.ftcs_step_1d(u, r, 1.0, 1.0, bc=bc, backend="numba")
    close(got, naive.ftcs1d(u, r, bc), dtype)


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 12), st.integers(1, 12), st.sampled_from(DTYPES),
       st.sampled_from(B.BOUNDARY_CONDITIONS), st.floats(0, 0.25))
def test_ftcs_2d(batch, H, W, dtype, bc, r):
    u = np.random.default_rng(H * W).standard_normal((batch, H, W)).astype(dtype)
    got = B.ftcs_step_2d(u, r, 1.0, 1.0, bc=bc, backend="numba")
    close(got, naive.ftcs2d(u, r, bc), dtype)


@pytest.mark.parametrize("bc", ["periodic", "dirichlet", "neumann"])
def test_ftcs_1d_long_rows_split_across_tasks(bc):
    """Rows longer than one task (CHUNK elements) are split; boundaries still right."""
    u = np.random.default_rng(1).standard_normal((2, 40003))
    close(B.ftcs_step_1d(u, 0.4, 1.0, 1.0, bc=bc, backend="numba"), naive.ftcs1d(u, 0.4, bc), np.float64)


def test_ftcs_conserves_mass_for_periodic_and_zero_flux():
    u = np.random.default_rng(0).random((3, 50, 40))
    for bc in ("periodic", "neumann"):
        np.testing.assert_allclose(B.ftcs_step_2d(u, 0.2, 1.0, 1.0, bc=bc).sum((1, 2)), u.sum((1, 2)), rtol=1e-12)
        np.testing.assert_allclose(B.ftcs_step_1d(u[:, 0], 0.4, 1.0, 1.0, bc=bc).sum(1), u[:, 0].sum(1), rtol=1e-12)


# ---------------------------------------------------------------------------- kernels never trust indices
def test_q_sample_kernel_writes_nan_for_out_of_range_index_and_stays_in_bounds():
    from minidiff.kernels import cpu

    s = Schedule.linear(T=10)
    x = np.ones((4, 5))
    out = np.zeros((4, 5))
    t = np.array([0, -1, 10, 9], dtype=np.int64)
    cpu.q_sample(x, x, t, s.sqrt_alpha_bar, s.sqrt_one_minus_alpha_bar, 1, 0, 0, 0, out)
    assert np.isnan(out[1]).all() and np.isnan(out[2]).all()
    close(out[[0, 3]], naive.q_sample(x[[0, 3]], [0, 9], x[[0, 3]], s), np.float64)


def test_q_sample_kernel_checks_t_against_both_tables():
    """Issue 14.23: a ``sqrt(1 - ab)`` table shorter than ``sqrt(ab)``'s is not read past its end;
    samples whose ``t`` only the longer table covers get NaN."""
    from minidiff.kernels import cpu

    s = Schedule.linear(T=10)
    x = np.ones((3, 4))
    short = np.ascontiguousarray(s.sqrt_one_minus_alpha_bar[:5])
    for a, b in [(s.sqrt_alpha_bar, short), (np.ascontiguousarray(s.sqrt_alpha_bar[:5]), s.sqrt_one_minus_alpha_bar)]:
        out = np.zeros((3, 4))
        cpu.q_sample(x, x, np.array([4, 5, 9], dtype=np.int64), a, b, 1, 0, 0, 0, out)
        assert np.isnan(out[1:]).all()
        close(out[0], naive.q_sample(x[:1], [4], x[:1], s)[0], np.float64)


# ---------------------------------------------------------------------------- one skeleton, cached
def test_elementwise_kernels_are_one_skeleton_and_load_from_the_cache_in_a_fresh_process():
    """Each elementwise CPU kernel is :func:`cpu._skeleton` (or its noise-free sibling) instantiated for its
    formula under its own name, and a new process loads it (and its serial twin) from numba's on-disk
    cache instead of compiling: plain closures would miss that cache (numba issue #6264)."""
    import subprocess
    import sys

    from minidiff.kernels import cpu

    names = ("q_sample", "ddpm", "ddim", "em", "heun")
    for name in names:
        f = getattr(cpu, name).py_func
        assert f.__code__ in (cpu._skeleton.__code__, cpu._skeleton_no_noise.__code__), name
        assert f.__qualname__ == name and f.__globals__["ROW"].py_func.__name__ == f"_{name}_row"
    x = torch.ones(2, 3)
    B.ddpm_step(x, x, 1, Schedule.linear(T=4), noise=x)  # compiled (or loaded) and written to the cache here
    code = ("import torch; from minidiff import backend as B, Schedule; from minidiff.kernels import cpu\n"
            "x = torch.ones(2, 3); B.ddpm_step(x, x, 1, Schedule.linear(T=4), noise=x)\n"
            "k = cpu._SERIAL[cpu.ddpm]; print(sum(k.stats.cache_misses.values()), sum(k.stats.cache_hits.values()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    misses, hits = (int(v) for v in out.stdout.split())
    assert (misses, hits) == (0, 1), out.stdout


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("use_out", [False, True])
def test_fused_rows_and_no_noise_path_are_bitwise_the_per_row_kernel(dtype, use_out):
    """Updates whose coefficients are the same for every sample run on the rows fused into one range,
    and "no noise" reads no array (``z = None``): bitwise the kernel on per-sample ``(B, n)`` rows with an
    explicit zero noise array (the path before both changes), across the task split (rows of 64 and
    more elements than one task)."""
    from minidiff.kernels import cpu
    from minidiff.kernels import formulas as F

    s = Schedule.linear(T=50)
    rng = np.random.default_rng(3)
    x, e, z, x2, e2 = (rng.standard_normal((300, 1, 8, 8)).astype(dtype) for _ in range(5))
    rows = lambda a: a.reshape(a.shape[0], -1)  # noqa: E731
    zero = np.zeros_like(x)

    def by_rows(name, arrays, coefs, noise=None, n_out=2):
        outs = [np.empty_like(rows(x)) for _ in range(n_out)]
        extra = [] if noise is False else [rows(zero if noise is None else noise)]
        tail = [] if noise is False else [F.NOISE_GIVEN, 0, 0, 0]
        getattr(cpu, name)(*[rows(a) for a in arrays], *extra, *coefs, *tail, *outs)
        return [o.reshape(x.shape) for o in outs]

    def call(fn, *args, n_out=2, **kw):
        if not use_out:
            got = fn(*args, **kw)
            return list(got) if n_out == 2 else [got]
        outs = [np.empty_like(x) for _ in range(n_out)]
        fn(*args, **kw, out=outs[0], **({"x0_out": outs[1]} if n_out == 2 else {}))
        return outs

    for eta in (0.0, 1.0):  # eta=0: no noise; eta=1: noise given
        c = F.ddim_coefficients(s.alpha_bar[30], float(s.alpha_bar[20]), eta)
        want = by_rows("ddim", [x, e], (*c[:4], 1.0, True, *c[4:]), None if eta == 0 else z)
        got = call(B.ddim_step, x, e, 30, 20, s, eta=eta, clip_x0=1.0, **({} if eta == 0 else {"noise": z}))
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    for t_index in (0, 30):  # t_index 0: the step adds no noise
        c = F.ddpm_coefficients(s.alpha_bar[t_index], s.alpha_bar_prev[t_index], s.betas[t_index],
                                s.alphas[t_index], s.posterior_variance[t_index], add_noise=t_index > 0)
        want = by_rows("ddpm", [x, e], (*c[:2], np.inf, *c[2:]), z if t_index else None)
        for g, w in zip(call(B.ddpm_step, x, e, t_index, s, noise=z), want):
            np.testing.assert_array_equal(g, w)
    t = np.full(x.shape[0], 30)  # the same t_index for every sample: q_sample fuses its rows too
    want = np.empty_like(rows(x))
    cpu.q_sample(rows(x), rows(e), t, s.sqrt_alpha_bar, s.sqrt_one_minus_alpha_bar, F.NOISE_GIVEN, 0, 0, 0, want)
    np.testing.assert_array_equal(call(B.q_sample, x, t, e, s, n_out=1)[0], want.reshape(x.shape))
    c = F.pf_ode_euler_coefficients(-0.5, 1.3, 0.01)
    np.testing.assert_array_equal(call(B.pf_ode_euler_step, x, e, drift_coef=-0.5, diffusion=1.3, dt=0.01,
                                       n_out=1)[0], by_rows("em", [x, e], c, None, n_out=1)[0])
    c = F.langevin_coefficients(0.1)
    np.testing.assert_array_equal(call(B.langevin_step, x, e, 0.1, noise=z, n_out=1)[0],
                                  by_rows("em", [x, e], c, z, n_out=1)[0])
    c = F.heun_coefficients(-0.5, 1.3, -0.4, 1.2, 0.01)
    np.testing.assert_array_equal(
        call(B.pf_ode_heun_step, x, e, x2, e2, drift_coef=-0.5, diffusion=1.3, drift_coef_next=-0.4,
             diffusion_next=1.2, dt=0.01, n_out=1)[0], by_rows("heun", [x, e, x2, e2], c, False, n_out=1)[0])
