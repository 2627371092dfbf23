"""minidiff.backend: what it accepts, what it refuses (errors name the argument), numba vs torch
parity for the same seed, the versioned cache, and CUDA requests without a GPU."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from minidiff import GaussianMixture, Schedule
from minidiff import backend as B

S = Schedule.linear(T=100)


def calls(x, s=S, **kw):
    """Every public update with small valid arguments, as (name, thunk(backend, x)); ``kw`` (e.g.
    ``out=``) goes to every call, ``x0_out`` only to DDPM and DDIM."""
    e = torch.ones_like(x) * 0.3 if isinstance(x, torch.Tensor) else np.ones_like(x) * 0.3
    k1 = {k: v for k, v in kw.items() if k != "x0_out"}
    return {
        "q_sample": lambda bk, x=x: B.q_sample(x, 5, None, s, seed=1, backend=bk, **k1),
        "ddpm": lambda bk, x=x: B.ddpm_step(x, e, 50, s, seed=1, clip_x0=1.0, backend=bk, **kw),
        "ddim": lambda bk, x=x: B.ddim_step(x, e, 50, 10, s, eta=1.0, seed=1, backend=bk, **kw),
        "langevin": lambda bk, x=x: B.langevin_step(x, e, 0.1, seed=1, backend=bk, **k1),
        "sde": lambda bk, x=x: B.reverse_sde_step(x, e, drift_coef=-0.5, diffusion=1.0, dt=0.01, seed=1, backend=bk,
                                                  **k1),
        "pf_euler": lambda bk, x=x: B.pf_ode_euler_step(x, e, drift_coef=-0.5, diffusion=1.0, dt=0.01, backend=bk,
                                                        **k1),
        "pf_heun": lambda bk, x=x: B.pf_ode_heun_step(x, e, x, e, drift_coef=-0.5, diffusion=1.0,
                                                      drift_coef_next=-0.4, diffusion_next=0.9, dt=0.01, backend=bk,
                                                      **k1),
        "ftcs1d": lambda bk, x=x: B.ftcs_step_1d(x, 0.4, 1.0, 1.0, bc="neumann", backend=bk, **k1),
        "ftcs2d": lambda bk, x=x: B.ftcs_step_2d(x, 0.2, 1.0, 1.0, bc="dirichlet", backend=bk, **k1),
        "walker": lambda bk, x=x: B.walker_step(x, 0.5, 0.1, drift_coef=-1.0, seed=1, backend=bk, **k1),
    }


NAMES = list(calls(torch.zeros(1, 1, 1)))


def as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numba_and_torch_backends_agree_for_the_same_seed(name, dtype):
    x = torch.randn(3, 6, 7, dtype=dtype)
    got, want = as_tuple(calls(x)[name]("numba")), as_tuple(calls(x)[name]("torch"))
    for g, w in zip(got, want):
        assert g.dtype == dtype and g.shape == x.shape
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(g, w, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", NAMES)
def test_numpy_in_numpy_out_and_torch_in_torch_out(name):
    x = np.random.default_rng(0).standard_normal((2, 5, 4)).astype(np.float32)
    r_np = as_tuple(calls(x)[name]("numba"))
    r_t = as_tuple(calls(torch.from_numpy(x))[name]("numba"))
    for a, b in zip(r_np, r_t):
        assert isinstance(a, np.ndarray) and isinstance(b, torch.Tensor)
        np.testing.assert_array_equal(a, b.numpy())


@pytest.mark.parametrize("name", NAMES)
def test_non_contiguous_input(name):
    base = torch.randn(4, 7, 6, dtype=torch.float64)
    x = base.transpose(1, 2)
    assert not x.is_contiguous()
    for a, b in zip(as_tuple(calls(x)[name]("numba")), as_tuple(calls(x.contiguous())[name]("numba"))):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_empty_batch_returns_empty(name, backend):
    x = torch.zeros(0, 4, 5)
    for r in as_tuple(calls(x)[name](backend)):
        assert r.shape == x.shape and r.dtype == x.dtype


def test_inputs_are_not_modified_and_outputs_are_fresh():
    x = torch.randn(3, 10)
    x0 = x.clone()
    out = B.langevin_step(x, x, 0.1, seed=0)
    assert torch.equal(x, x0) and out.data_ptr() != x.data_ptr()


def test_in_kernel_noise_equals_backend_normal():
    x = torch.zeros(3, 2, 9)
    got = B.langevin_step(x, x, 1.0, seed=42, step=5)
    torch.testing.assert_close(got, B.normal(x.shape, 42, 5), rtol=0, atol=0)
    got = B.q_sample(x, torch.tensor([0, 5, 9]), 42, S, step=5)
    torch.testing.assert_close(got, B.normal(x.shape, 42, 5) * torch.as_tensor(
        S.sqrt_one_minus_alpha_bar[[0, 5, 9]], dtype=torch.float32).view(3, 1, 1))


# ---------------------------------------------------------------------------- out=
def _outs(name, like):
    """Output buffers for an update: ``{"out": ...}`` plus ``x0_out`` for DDPM/DDIM, filled with NaN
    so an element the kernel forgot to write shows."""
    if isinstance(like, np.ndarray):
        mk = lambda: np.full_like(like, np.nan)  # noqa: E731
    else:
        mk = lambda: torch.full_like(like, math.nan)  # noqa: E731
    return {"out": mk(), "x0_out": mk()} if name in ("ddpm", "ddim") else {"out": mk()}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_out_receives_the_result_and_is_returned(name, backend):
    x = torch.randn(3, 6, 7, dtype=torch.float64)
    want = as_tuple(calls(x)[name](backend))
    bufs = _outs(name, x)
    got = as_tuple(calls(x, **bufs)[name](backend))
    for g, w, b in zip(got, want, bufs.values()):
        assert g is b
        torch.testing.assert_close(g, w, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_numpy_out_is_returned_as_the_same_numpy_array(name):
    x = np.random.default_rng(1).standard_normal((2, 5, 4))
    want = as_tuple(calls(x)[name]("numba"))
    bufs = _outs(name, x)
    got = as_tuple(calls(x, **bufs)[name]("numba"))
    for g, w, b in zip(got, want, bufs.values()):
        assert g is b
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("name", [n for n in NAMES if not n.startswith("ftcs")])
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_out_x_updates_in_place(name, backend):
    x = torch.randn(4, 300, dtype=torch.float32)
    want = as_tuple(calls(x)[name](backend))
    xi = x.clone()
    got = as_tuple(calls(xi, **{**_outs(name, x), "out": xi})[name](backend))
    assert got[0] is xi
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_in_place_over_many_threads_matches_out_of_place():
    """Large enough for the parallel path: every task reads its elements before writing them."""
    x = torch.randn(8, 2**16 + 12)
    e = torch.randn_like(x)
    want, want0 = B.ddpm_step(x, e, 30, S, seed=3, clip_x0=1.0)
    got, got0 = B.ddpm_step(x, e, 30, S, seed=3, clip_x0=1.0, out=x, x0_out=e)
    assert got is x and got0 is e
    torch.testing.assert_close(x, want, rtol=0, atol=0)
    torch.testing.assert_close(e, want0, rtol=0, atol=0)


def test_in_place_through_another_view_of_the_same_memory():
    """``a[None]`` and ``a.reshape(1, n)`` are the same memory with different strides on the length-1 axis."""
    a = np.linspace(-1, 1, 6)
    want = B.langevin_step(a[None].copy(), np.ones((1, 6)), 0.1, seed=0)
    got = B.langevin_step(a[None], np.ones((1, 6)), 0.1, seed=0, out=a.reshape(1, 6))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(a, want[0])


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_bad_out_is_refused_naming_the_argument(backend):
    x = torch.randn(4, 6)
    e = torch.randn(4, 6)
    lang = lambda **kw: B.langevin_step(x, e, 0.1, seed=0, backend=backend, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="out must have shape"):
        lang(out=torch.empty(4, 5))
    with pytest.raises(TypeError, match="out must have dtype"):
        lang(out=torch.empty(4, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="out must be contiguous"):
        lang(out=torch.empty(6, 4).t())
    with pytest.raises(ValueError, match="out must not require grad"):
        lang(out=torch.zeros(4, 6, requires_grad=True))
    with pytest.raises(ValueError, match="noise must have shape .* like x0"):
        B.q_sample(x, 0, torch.zeros(3, 6), S, backend=backend)
    with pytest.raises(ValueError, match="out must be writeable"):
        ro = np.empty((4, 6), np.float32)
        ro.flags.writeable = False
        B.langevin_step(x.numpy(), e.numpy(), 0.1, seed=0, out=ro, backend=backend)
    big = torch.randn(5, 6)
    with pytest.raises(ValueError, match="out partly overlaps x"):  # x = rows 0-3, out = rows 1-4
        B.langevin_step(big[:4], e, 0.1, seed=0, out=big[1:], backend=backend)
    o = torch.empty_like(x)
    with pytest.raises(ValueError, match="x0_out must not overlap out"):
        B.ddim_step(x, e, 5, 2, S, out=o, x0_out=o, backend=backend)
    x_before = x.clone()
    with pytest.raises(ValueError, match="out overlaps u"):
        B.ftcs_step_1d(x, 0.1, 1.0, 1.0, out=x, backend=backend)
    grid = torch.randn(1, 6, 5)
    grid_before = grid.clone()
    with pytest.raises(ValueError, match="out overlaps u"):  # u = rows 0-4 of the grid, out = rows 1-5
        B.ftcs_step_2d(grid[:, :5], 0.1, 1.0, 1.0, out=grid[:, 1:], backend=backend)
    assert torch.equal(x, x_before) and torch.equal(grid, grid_before)  # refused before anything was written


# ---------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64])
def test_unsupported_dtype_raises_type_error_naming_the_argument(dtype):
    x = torch.zeros(2, 3, dtype=dtype)
    with pytest.raises(TypeError, match="x must be float32 or float64"):
        B.langevin_step(x, x, 0.1, seed=0)
    with pytest.raises(TypeError, match="x0 must be float32 or float64"):
        B.q_sample(x, 0, 1, S)
    with pytest.raises(TypeError, match="u must be float32 or float64"):
        B.ftcs_step_1d(x, 1, 0.1, 1)


def test_mismatched_shapes_and_dtypes_name_the_argument():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="eps must have shape"):
        B.ddpm_step(x, torch.zeros(2, 4), 3, S, seed=0)
    with pytest.raises(TypeError, match="eps must have dtype"):
        B.ddim_step(x, torch.zeros(2, 3, dtype=torch.float64), 3, 2, S)
    with pytest.raises(ValueError, match="noise must have shape"):
        B.langevin_step(x, x, 0.1, noise=torch.zeros(3, 3))
    with pytest.raises(TypeError, match="noise must have dtype"):
        B.q_sample(x, 0, torch.zeros(2, 3, dtype=torch.float64), S)
    with pytest.raises(ValueError, match="score_euler must have shape"):
        B.pf_ode_heun_step(x, x, x, torch.zeros(1, 3), drift_coef=0, diffusion=1, drift_coef_next=0,
                           diffusion_next=1, dt=0.1)
    with pytest.raises(ValueError, match="t_index must be a scalar or have one entry per sample"):
        B.q_sample(x, [1, 2, 3], 0, S)


def test_t_index_outside_schedule_raises_index_error_naming_it():
    x = torch.zeros(2, 3)
    with pytest.raises(IndexError, match="t_index"):
        B.q_sample(x, torch.tensor([0, S.T]), 0, S)
    with pytest.raises(IndexError, match="t_index"):
        B.q_sample(x, -1, 0, S)
    with pytest.raises(IndexError, match="t_index"):
        B.ddpm_step(x, x, S.T, S, seed=0)
    with pytest.raises(IndexError, match="t_index_prev"):
        B.ddim_step(x, x, 5, -2, S)
    with pytest.raises(ValueError, match="t_index_prev must be < t_index"):
        B.ddim_step(x, x, 5, 5, S)


def test_missing_noise_and_seed_and_bad_step():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="noise=.*seed="):
        B.langevin_step(x, x, 0.1)
    with pytest.raises(ValueError, match="step must be"):
        B.langevin_step(x, x, 0.1, seed=0, step=-1)
    B.ddpm_step(x, x, 0, S)  # t_index 0 adds no noise: neither needed
    B.ddim_step(x, x, 5, 2, S, eta=0.0)


@pytest.mark.parametrize("fn,bound,shape", [(B.ftcs_step_1d, 0.5, (2, 10)), (B.ftcs_step_2d, 0.25, (2, 6, 6))])
def test_unstable_stencil_raises_unless_allowed(fn, bound, shape):
    u = torch.zeros(shape, dtype=torch.float64)
    u[(..., 3) if len(shape) == 2 else (..., 3, 3)] = 1.0  # a point: contains the checkerboard mode
    dt = 1.01 * bound  # D = dx = 1
    with pytest.raises(ValueError, match=r"r = D dt / dx\^2 = .* exceeds the bound " + str(bound)):
        fn(u, 1.0, dt, 1.0)
    for backend in ("numba", "torch"):
        v = u
        for _ in range(100):
            v = fn(v, 1.0, 2 * bound, 1.0, allow_unstable=True, backend=backend)
        assert float(v.abs().max()) > 1e6  # the checkerboard mode grows: the blow-up notebook 01 shows
    with pytest.raises(ValueError, match="bc must be one of"):
        fn(u, 1.0, 0.1, 1.0, bc="open")
    with pytest.raises(ValueError, match="dx must be > 0"):
        fn(u, 1.0, 0.1, 0.0)


# ---------------------------------------------------------------------------- edge input, both backends alike
@pytest.mark.parametrize("shape", [(2, 0), (0, 3), (2, 0, 3)])
@pytest.mark.parametrize("fn", ["ftcs1d", "ftcs2d"])
def test_stencils_on_empty_input_agree(fn, shape):
    """Issue 14.21: a ``(2, 0)`` stencil gives an empty result on both backends (torch raised)."""
    if fn == "ftcs2d" and len(shape) < 3:
        shape = shape + (4,)
    got = {bk: calls(torch.zeros(shape))[fn](bk) for bk in ("numba", "torch")}
    assert got["numba"].shape == got["torch"].shape == shape


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("clip", ["1", b"1", True, [1.0]])
def test_clip_x0_must_be_a_real_number_on_both_backends(backend, clip):
    """Issue 14.21: ``clip_x0='1'`` was accepted by numba and a bare TypeError from torch."""
    x = torch.zeros(2, 3)
    with pytest.raises(TypeError, match="clip_x0 must be a real number"):
        B.ddpm_step(x, x, 5, S, seed=0, clip_x0=clip, backend=backend)
    with pytest.raises(TypeError, match="clip_x0 must be a real number"):
        B.ddim_step(x, x, 5, 2, S, clip_x0=clip, backend=backend)


@pytest.mark.parametrize("name", NAMES)
def test_neither_backend_tracks_gradients_as_documented(name):
    """Issue 14.21: the module docs say results never require grad; the same on both backends."""
    assert "neither backend tracks them" in B.__doc__
    x = torch.full((2, 1, 3, 3), 0.1, dtype=torch.float64, requires_grad=True)
    for bk in ("numba", "torch"):
        for r in as_tuple(calls(x)[name](bk)):
            assert not r.requires_grad, bk


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_meta_tensor_error_names_the_argument_not_a_backend(backend):
    """Issue 14.21: the torch backend's message for a meta tensor named "the numba backend"."""
    m = torch.zeros(2, 3, device="meta")
    with pytest.raises(ValueError, match=r"^x must be on a CPU or CUDA device, got device meta"):
        B.ddpm_step(m, m, 5, S, seed=0, backend=backend)
    with pytest.raises(ValueError, match=r"^eps must be on a CPU or CUDA device"):
        B.ddpm_step(torch.zeros(2, 3), m, 5, S, seed=0, backend=backend)


@pytest.mark.parametrize("name", NAMES)
def test_negative_stride_numpy_input_is_accepted(name):
    """Issue 14.22: a reversed numpy array is an ordinary input (torch.from_numpy refused it)."""
    x = np.linspace(-1, 1, 2 * 9 * 4).reshape(4, 1, 3, 6)[::-1, :, :, ::-2]
    assert any(st < 0 for st in x.strides)
    want = calls(np.ascontiguousarray(x))[name]("numba")
    for bk in ("numba", "torch"):
        for g, w in zip(as_tuple(calls(x)[name](bk)), as_tuple(want)):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_negative_stride_numpy_out_is_refused_naming_it():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        B.langevin_step(x, x, 0.1, seed=0, out=np.zeros((4, 3))[::-1])


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_huge_t_index_gets_the_range_message(backend):
    """Issue 14.22: ``t_index=10**20`` said "got dtype object"; now the range, naming t_index."""
    x = torch.zeros(2, 3)
    for t in (10**20, [0, 10**20], -(10**20)):
        with pytest.raises(IndexError, match=r"t_index must lie in \[0, 99\]"):
            B.q_sample(x, t, 0, S, backend=backend)
    with pytest.raises(IndexError, match=r"t_index must lie in \[0, 99\]"):
        B.ddpm_step(x, x, 10**20, S, seed=0, backend=backend)


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        B.langevin_step(torch.zeros(1, 1), torch.zeros(1, 1), 0.1, seed=0, backend="jax")


def test_use_backend_switches_the_default():
    assert B.get_backend() == "numba"
    with B.use_backend("torch"):
        assert B.get_backend() == "torch"
    assert B.get_backend() == "numba"


# ---------------------------------------------------------------------------- CUDA without a GPU
def test_cuda_request_without_gpu_raises_runtime_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="CUDA"):
        B.normal((2, 3), 0, device="cuda")
    with pytest.raises(RuntimeError, match="CUDA"):
        B._cuda_kernels()


def test_import_minidiff_imports_no_numba():
    code = "import minidiff, minidiff.backend, sys; assert 'numba' not in sys.modules, 'numba imported'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------- cache
def test_kernels_cache_in_a_versioned_directory(tmp_path, monkeypatch):
    from minidiff.kernels import _cache, cpu

    d = _cache.cache_dir()
    assert d.name.startswith("numba-") and _cache.source_hash() in d.name
    assert cpu.q_sample._cache._cache_path.startswith(str(d))
    # editing any kernel source (a called function in formulas.py included) changes the directory
    for name in _cache._SOURCES:
        (tmp_path / name).write_bytes((_cache.PACKAGE_DIR / name).read_bytes())
    monkeypatch.setattr(_cache, "PACKAGE_DIR", tmp_path)
    _cache.source_hash.cache_clear()
    try:
        same = _cache.source_hash()
        (tmp_path / "formulas.py").write_text((tmp_path / "formulas.py").read_text() + "\n# edit\n")
        _cache.source_hash.cache_clear()
        assert _cache.source_hash() != same
    finally:
        _cache.source_hash.cache_clear()


_COMPILE_ONE = ("import warnings, numpy as np; warnings.simplefilter('always');"
                "from minidiff.kernels import cpu, _cache;"
                "assert cpu.philox_block(0, 0, 0, 0, 0, 0) == (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8);"
                "print(_cache.cache_dir())")


def _in_fresh_process(cache_root):
    env = dict(os.environ, MINIDIFF_CACHE_DIR=str(cache_root))
    return subprocess.run([sys.executable, "-c", _COMPILE_ONE], capture_output=True, text=True, timeout=300,
                          env=env)


def test_kernel_cache_directories_are_private(tmp_path):
    """Issue 14.8: the cache holds pickles numba loads, so its directories are 0700."""
    root = tmp_path / "cache"
    r = _in_fresh_process(root)
    assert r.returncode == 0, r.stderr
    d = type(tmp_path)(r.stdout.strip().splitlines()[-1])
    dirs = [root, d] + [p for p in d.rglob("*") if p.is_dir()]
    assert len(dirs) >= 3 and any(d.rglob("*.nbi"))
    for p in dirs:
        assert oct(p.stat().st_mode & 0o777) == "0o700", p


@pytest.fixture(scope="module")
def _compiled_cache(tmp_path_factory):
    """One fresh process's cache, compiled once for the module; each test damages its own copy."""
    root = tmp_path_factory.mktemp("compiled") / "cache"
    r = _in_fresh_process(root)
    assert r.returncode == 0, r.stderr
    return root


@pytest.mark.parametrize("damage", ["truncate_nbc", "garble_nbc", "garble_nbi", "truncate_nbi"])
def test_a_corrupt_cache_entry_is_dropped_and_recompiled(tmp_path, damage, _compiled_cache):
    """Issue 14.8: a truncated .nbc or garbled .nbi is dropped with a warning, not an UnpicklingError
    in every later process; the process after that loads the rewritten entry silently."""
    import shutil

    root = tmp_path / "cache"
    shutil.copytree(_compiled_cache, root)
    kind = damage.split("_")[1]
    files = sorted(root.rglob(f"*philox_block*.{kind}"))
    assert files, list(root.rglob("*"))
    for f in files:
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2] if damage.startswith("truncate") else b"\x80\x05garbage" + data[::-1])
    r = _in_fresh_process(root)
    assert r.returncode == 0, r.stderr
    assert "corrupt kernel cache entry" in r.stderr
    r = _in_fresh_process(root)
    assert r.returncode == 0 and "corrupt" not in r.stderr, r.stderr


# ---------------------------------------------------------------------------- a whole sampler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ddpm_sampling_same_samples_through_both_backends(dtype):
    """Ancestral sampling of a 2-D Gaussian mixture with its exact eps: numba and torch agree."""
    s = Schedule.linear(T=50)
    gm = GaussianMixture.isotropic([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]], 0.2)
    model = gm.eps_model(s)
    outs = {}
    for bk in ("numba", "torch"):
        x = B.normal((256, 2), seed=3, step=10**6, dtype=dtype)
        for i, t in enumerate(range(s.T - 1, -1, -1)):
            x, _ = B.ddpm_step(x, model(x, t), t, s, seed=3, step=i, backend=bk)
        outs[bk] = x
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(outs["numba"], outs["torch"], rtol=tol, atol=tol)
    assert math.isfinite(float(outs["numba"].abs().max()))


def test_import_sets_a_passive_openmp_wait_policy_unless_one_is_set():
    """kernels/threads.py measured spinning OpenMP pools 3x slower on a shared machine: import minidiff
    defaults OMP_WAIT_POLICY to PASSIVE, and keeps a value the user set."""
    code = "import os, minidiff; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "PASSIVE", r.stderr
    r = subprocess.run([sys.executable, "-c", code], env=dict(env, OMP_WAIT_POLICY="ACTIVE"), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ACTIVE", r.stderr
