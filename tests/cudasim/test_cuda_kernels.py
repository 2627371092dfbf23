"""The CUDA kernels (minidiff.kernels.cuda) on tiny grids under the simulator, against the CPU
kernels: bitwise where the math allows (the simulator evaluates the same float64 formulas), else
within 2 ulp. Arrays go in through cuda.to_device: the simulator has no __cuda_array_interface__."""
import numpy as np
import pytest

from minidiff import Schedule
from minidiff.kernels import cpu
from minidiff.kernels import formulas as F

pytestmark = pytest.mark.cudasim
GRIDS = [(1, 32), (2, 16)]  # (blocks, threads): grid-stride loops cover any size
S = Schedule.cosine(T=30)


@pytest.fixture(scope="module")
def kc():
    from numba import config

    assert config.ENABLE_CUDASIM, "these tests need NUMBA_ENABLE_CUDASIM=1 set before numba is imported"
    from minidiff.kernels import cuda as kc

    assert kc.SIMULATOR and kc.is_available()
    return kc


def run(kc, name, args, grid, n_out=1, first=False):
    """Launch ``kc.<name>`` with numpy ``args`` copied to the device; the last ``n_out`` (or, with
    ``first``, the first) arguments are outputs, copied back."""
    from numba import cuda

    dev = [cuda.to_device(a) if isinstance(a, np.ndarray) else a for a in args]
    kc.launch(getattr(kc, name), 1, *dev, blocks=grid[0], threads=grid[1])
    return [d.copy_to_host() for d in (dev[:1] if first else dev[-n_out:])]


def same(got, want, ulps=0):
    if ulps == 0:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_array_max_ulp(got, want, maxulp=ulps)


def data(dtype, shape=(3, 13), k=3, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for _ in range(k)]


KEY = F.seed_key(2**40 + 17)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normal_fill_matches_cpu(kc, grid, dtype):
    out = np.zeros((3, 13), dtype)
    (got,) = run(kc, "normal_fill", [out, *KEY, 5], grid, first=True)
    want = np.zeros_like(out)
    cpu.normal_fill(want, *KEY, 5)
    same(got, want, ulps=0 if dtype == np.float32 else 2)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", [F.NOISE_GIVEN, F.NOISE_PHILOX])
def test_q_sample(kc, grid, dtype, mode):
    x, e, _ = data(dtype)
    t = np.array([0, 12, S.T - 1], dtype=np.int64)
    tabs = [np.array(S.sqrt_alpha_bar), np.array(S.sqrt_one_minus_alpha_bar)]
    args = [x, e, t, *tabs, mode, *KEY, 3, np.zeros_like(x)]
    (got,) = run(kc, "q_sample", args, grid)
    want = np.zeros_like(x)
    cpu.q_sample(x, e, t, *tabs, mode, *KEY, 3, want)
    same(got, want, ulps=0 if dtype == np.float32 else 2)


def test_q_sample_bad_index_gives_nan_not_out_of_bounds(kc):
    x, e, _ = data(np.float64)
    t = np.array([0, -1, S.T], dtype=np.int64)
    (got,) = run(kc, "q_sample", [x, e, t, np.array(S.sqrt_alpha_bar), np.array(S.sqrt_one_minus_alpha_bar),
                                  F.NOISE_GIVEN, 0, 0, 0, np.zeros_like(x)], GRIDS[0])
    assert np.isfinite(got[0]).all() and np.isnan(got[1:]).all()


@pytest.mark.parametrize("mode", [F.NOISE_GIVEN, F.NOISE_PHILOX])
def test_q_sample_checks_t_against_both_tables(kc, mode):
    """Issue 14.23: with a shorter second table, a t only the first covers gives NaN."""
    x, e, _ = data(np.float64)
    t = np.array([0, 12, S.T - 1], dtype=np.int64)
    short = np.ascontiguousarray(np.array(S.sqrt_one_minus_alpha_bar)[:10])
    (got,) = run(kc, "q_sample", [x, e, t, np.array(S.sqrt_alpha_bar), short, mode, *KEY, 3, np.zeros_like(x)],
                 GRIDS[0])
    assert np.isfinite(got[0]).all() and np.isnan(got[1:]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", [F.NOISE_NONE, F.NOISE_GIVEN, F.NOISE_PHILOX])
def test_ddpm_and_ddim(kc, dtype, mode):
    x, e, z = data(dtype)
    inv_sa, s1, cx0, cx, std = F.ddpm_coefficients(S.alpha_bar[9], S.alpha_bar_prev[9], S.betas[9], S.alphas[9],
                                               S.posterior_variance[9])
    ulps = 0 if dtype == np.float32 else 2
    args = [x, e, z, inv_sa, s1, 1.0, cx0, cx, std, mode, *KEY, 4, np.zeros_like(x), np.zeros_like(x)]
    got = run(kc, "ddpm", args, GRIDS[1], n_out=2)
    want = [np.zeros_like(x), np.zeros_like(x)]
    cpu.ddpm(*args[:-2], *want)
    for g, w in zip(got, want):
        same(g, w, ulps)
    coefs = F.ddim_coefficients(S.alpha_bar[9], S.alpha_bar[3], 0.7)
    args = [x, e, z, *coefs[:4], 1.0, True, *coefs[4:], mode, *KEY, 4, np.zeros_like(x), np.zeros_like(x)]
    got = run(kc, "ddim", args, GRIDS[0], n_out=2)
    want = [np.zeros_like(x), np.zeros_like(x)]
    cpu.ddim(*args[:-2], *want)
    for g, w in zip(got, want):
        same(g, w, ulps)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", [F.NOISE_NONE, F.NOISE_GIVEN, F.NOISE_PHILOX])
def test_em_and_heun(kc, dtype, mode):
    x, s, z = data(dtype, shape=(5, 3))
    ulps = 0 if dtype == np.float32 else 2
    args = [x, s, z, *F.reverse_sde_coefficients(-0.5, 1.3, 0.01), mode, *KEY, 8, np.zeros_like(x)]
    (got,) = run(kc, "em", args, GRIDS[1])
    want = np.zeros_like(x)
    cpu.em(*args[:-1], want)
    same(got, want, ulps)
    args = [x, s, z, x, *F.heun_coefficients(-0.5, 1.3, -0.4, 1.2, 0.01), np.zeros_like(x)]
    (got,) = run(kc, "heun", args, GRIDS[0])
    cpu.heun(*args[:-1], want)
    same(got, want, ulps)


@pytest.mark.parametrize("bc", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stencils(kc, bc, dtype):
    (u,) = data(dtype, shape=(2, 9), k=1)
    ulps = 0 if dtype == np.float32 else 2
    (got,) = run(kc, "ftcs1d", [u, 0.3, bc, np.zeros_like(u)], GRIDS[1])
    want = np.zeros_like(u)
    cpu.ftcs1d(u, 0.3, bc, want)
    same(got, want, ulps)
    (u,) = data(dtype, shape=(2, 5, 6), k=1)
    (got,) = run(kc, "ftcs2d", [u, 0.2, bc, np.zeros_like(u)], GRIDS[0])
    want = np.zeros_like(u)
    cpu.ftcs2d(u, 0.2, bc, want)
    same(got, want, ulps)


# ---------------------------------------------------------------------------- exact-score trajectories
@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("target", ["isotropic", "full"])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpm2m", "em", "heun", "flow-heun-linear", "flow-midpoint-vp"])
def test_trajectories_match_cpu(kc, monkeypatch, grid, target, sampler):
    """A thread per sample under the simulator against the CPU kernel with the same host tables:
    bitwise for full covariances (both run the one-pass score), within 1e-12 for isotropic ones
    (the CPU's two-pass score rounds differently)."""
    import torch

    from minidiff import GaussianMixture
    from minidiff import backend as B
    from minidiff import flow
    from minidiff import trajectories as TR
    from minidiff.interpolants import Interpolant
    from minidiff.sde import VPSDE

    gm = (GaussianMixture.grid_2d(2, 1.0, 0.2) if target == "isotropic" else
          GaussianMixture(torch.tensor([0.4, 0.6]), torch.tensor([[0.0, 1.0, 0.5], [1.0, -1.0, 0.0]]),
                          torch.stack([torch.tensor([[1.0, 0.3, 0.0], [0.3, 0.5, 0.1], [0.0, 0.1, 0.2]]),
                                       0.3 * torch.eye(3)])))
    seen = {}
    real = B.gm_trajectories

    def spy(kernel, x, tables, seed=None):
        seen.update(kernel=kernel, x=x, tables=tables, seed=seed)
        return real(kernel, x, tables, seed)

    monkeypatch.setattr(B, "gm_trajectories", spy)
    x = B.normal((5, gm.dim), seed=4, dtype=torch.float64)
    s = Schedule.linear(T=8)
    want = {"ddim": lambda: TR.ddim_exact(gm, x, s, 4, 0.5, 99),
            "ddpm": lambda: TR.ddpm_exact(gm, x, s, seed=99),
            "dpm2m": lambda: TR.dpm_solver_2m_exact(gm, x, s, 4),
            "em": lambda: TR.euler_maruyama_exact(gm, x, VPSDE(), 4, seed=99),
            "heun": lambda: TR.pf_ode_heun_exact(gm, x, VPSDE(), 4),
            "flow-heun-linear": lambda: TR.flow_heun_exact(gm, x, flow.time_grid(4), Interpolant.linear()),
            "flow-midpoint-vp": lambda: TR.flow_midpoint_exact(gm, x, flow.time_grid(4, 1.0, 1e-3),
                                                               Interpolant.vp())}[sampler]().numpy()
    k0, k1 = F.seed_key(0 if seen["seed"] is None else seen["seed"])
    xn = seen["x"].numpy()
    (got,) = run(kc, seen["kernel"], [xn] + list(seen["tables"]) + [k0, k1, np.zeros_like(xn)], grid)
    if target == "full":
        same(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
