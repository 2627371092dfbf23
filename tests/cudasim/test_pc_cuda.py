"""Predictor-corrector on CUDA (kernels/cuda.py, ``pc_trajectories``: phased launches, the batch means reduced on
the device) under the simulator, against the CPU fused driver with the same host tables and against the
step-by-step torch sampler ``samplers.predictor_corrector`` on the exact score with the same Philox noise.

Tolerance: both fused paths draw bitwise the same noise (``normal4`` on (seed, sample, element, step)); they differ
in the score for isotropic mixtures (the CPU's two-pass score, ~1e-16 relative a step) and, for every mixture, in
the order the corrector's norm sums are added (CPU: 128-lane blocks then blocks; CUDA: a thread's samples, its
block, then the blocks; torch: its own reduction). Each order is within ``B eps`` relative of the exact sum, so the
step sizes agree to a few 1e-16 relative at this B, and the steps carry that forward. Against the CPU fused path
1e-12 (as the per-sample kernels here; measured at most 2e-15 over these cases), against the torch sampler 1e-10
(as the CPU test in tests/test_trajectories.py, 300 samples and 20 steps there)."""
import numpy as np
import pytest
import torch

from minidiff import GaussianMixture, samplers
from minidiff import backend as B
from minidiff import trajectories as TR
from minidiff.kernels import formulas as F
from minidiff.sde import VESDE, VPSDE

pytestmark = pytest.mark.cudasim
GRIDS = [(1, 32), (2, 16)]
SEED = 2**40 + 5
GRID = GaussianMixture.grid_2d(2, 1.0, 0.2)  # isotropic
FULL = GaussianMixture(torch.tensor([0.4, 0.6]), torch.tensor([[0.0, 1.0, 0.5], [1.0, -1.0, 0.0]]),
                       torch.stack([torch.tensor([[1.0, 0.3, 0.0], [0.3, 0.5, 0.1], [0.0, 0.1, 0.2]]),
                                    0.3 * torch.eye(3)]))


@pytest.fixture(scope="module")
def kc():
    from numba import config

    assert config.ENABLE_CUDASIM, "these tests need NUMBA_ENABLE_CUDASIM=1 set before numba is imported"
    from minidiff.kernels import cuda as kc

    assert kc.SIMULATOR and kc.is_available()
    return kc


def tables_of(monkeypatch, gm, x, sde, n_steps, n_corrector):
    """The CPU fused result and the host tables ``predictor_corrector_exact`` hands the backend."""
    seen = {}
    real = B.gm_trajectories

    def spy(kernel, x_, tables, seed=None):
        seen.update(kernel=kernel, tables=tables, seed=seed)
        return real(kernel, x_, tables, seed)

    monkeypatch.setattr(B, "gm_trajectories", spy)
    want = TR.predictor_corrector_exact(gm, x, sde, n_steps, snr=0.16, n_corrector=n_corrector, seed=SEED)
    assert seen["kernel"] == "pc_trajectories"
    return want.numpy(), list(seen["tables"])


def run_pc(kc, x, tables, grid, seed=SEED):
    """``tables`` as handed to the backend (the mixture means first)."""
    from numba import cuda

    args = [x] + tables + list(F.seed_key(seed)) + [np.zeros_like(x)]
    dev = [cuda.to_device(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a for a in args]
    kc.launch(kc.pc_trajectories, x.shape[0], *dev, blocks=grid[0], threads=grid[1])
    return dev[-1].copy_to_host()


CASES = [(VPSDE(), 1, GRID), (VPSDE(), 2, FULL), (VESDE(sigma_min=0.01, sigma_max=5.0), 1, FULL),
         (VPSDE(), 0, GRID)]


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("sde,n_corrector,gm", CASES, ids=["vp-1-iso", "vp-2-full", "ve-1-full", "vp-0-iso"])
def test_pc_cuda_equals_cpu_fused_and_torch_path(kc, monkeypatch, grid, sde, n_corrector, gm):
    x = B.normal((37, gm.dim), seed=11, step=10**6, dtype=torch.float64)  # 37: blocks and threads end partial
    want_cpu, tables = tables_of(monkeypatch, gm, x, sde, 4, n_corrector)
    got = run_pc(kc, x.numpy(), tables, grid)
    scale = max(1.0, float(np.abs(want_cpu).max()))
    np.testing.assert_allclose(got, want_cpu, rtol=0, atol=1e-12 * scale)
    score = lambda x_, t: gm.noised(sde.mean_scale(t), sde.marginal_std(t)).score(x_)  # noqa: E731
    want_torch = samplers.final(samplers.predictor_corrector(
        score, x, sde, 4, snr=0.16, n_corrector=n_corrector,
        noise=lambda step: B.normal(x.shape, SEED, step, dtype=x.dtype))).numpy()
    np.testing.assert_allclose(got, want_torch, rtol=0, atol=1e-10 * scale)
    assert np.abs(got - x.numpy()).max() > 0.1  # it moved


def test_pc_cuda_float32_input_runs_in_float64(kc, monkeypatch):
    """float32 in: the state is float64 on the device as on the CPU; only the stored result is rounded."""
    x = B.normal((20, 2), seed=3, dtype=torch.float32)
    want, tables = tables_of(monkeypatch, GRID, x, VPSDE(), 3, 1)
    got = run_pc(kc, x.numpy(), tables, GRIDS[1])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=2 * np.finfo(np.float32).eps * max(1.0, np.abs(want).max()))


def test_pc_cuda_corrector_couples_the_batch(kc, monkeypatch):
    """The batch means are over all samples on the device too: the first 10 of 40 end elsewhere than 10 alone."""
    x = B.normal((40, 2), seed=5, dtype=torch.float64)
    _, tables = tables_of(monkeypatch, GRID, x, VPSDE(), 3, 1)
    whole = run_pc(kc, x.numpy(), tables, GRIDS[0])
    alone = run_pc(kc, x.numpy()[:10].copy(), tables, GRIDS[0])
    assert np.abs(whole[:10] - alone).max() > 1e-9


def test_pc_cuda_bad_tables_raise_clear_errors(kc, monkeypatch):
    x = B.normal((8, 2), seed=5, dtype=torch.float64)
    _, tables = tables_of(monkeypatch, GRID, x, VPSDE(), 3, 1)
    xn = x.numpy()
    bad_lev = list(tables)
    bad_lev[4] = np.array([0, 1, 99], dtype=np.int64)  # lev: a level the tables lack
    with pytest.raises(ValueError, match="level index out of range"):
        run_pc(kc, xn, bad_lev, GRIDS[0])
    short = list(tables)
    short[10] = short[10][:2]  # cz one step short
    with pytest.raises(ValueError, match="differ in length"):
        run_pc(kc, xn, short, GRIDS[0])
    with pytest.raises(ValueError, match=r"x and out must be \(B, d\)"):
        run_pc(kc, np.zeros((8, 3)), tables, GRIDS[0])
    with pytest.raises(ValueError, match="n_corrector"):
        run_pc(kc, xn, tables[:12] + [-1] + tables[13:], GRIDS[0])
