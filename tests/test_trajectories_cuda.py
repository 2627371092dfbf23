"""The fused exact-score trajectories (minidiff.trajectories) on a real GPU against the CPU kernels, CUDA tensors
through minidiff.backend: float64, equal to the per-step rounding differences of libdevice and FMA contraction
(per-sample samplers) and of the order predictor-corrector sums its batch norms. Skipped without a GPU (the
simulator tests in tests/cudasim check the same kernels bitwise or to 1e-12 against the CPU)."""
import pytest
import torch

from minidiff import GaussianMixture, Schedule
from minidiff import backend as B
from minidiff import flow
from minidiff import trajectories as TR
from minidiff.interpolants import Interpolant
from minidiff.sde import VPSDE
from test_kernels_cuda import _gpu


pytestmark = pytest.mark.skipif(not _gpu(), reason="needs a CUDA GPU and numba-cuda")
S = Schedule.linear(T=40)
GRID = GaussianMixture.grid_2d(3, 1.0, 0.1)
FULL = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[0.0, 1.0, 2.0], [1.0, -1.0, 0.0]]),
                       torch.stack([torch.tensor([[1.0, 0.3, 0.0], [0.3, 0.5, 0.1], [0.0, 0.1, 0.2]]),
                                    0.3 * torch.eye(3)]))
RUNS = {
    "ddpm": lambda gm, x: TR.ddpm_exact(gm, x, S, seed=3),
    "ddim-eta1": lambda gm, x: TR.ddim_exact(gm, x, S, 10, 1.0, 3),
    "dpm2m": lambda gm, x: TR.dpm_solver_2m_exact(gm, x, S, 10),
    "em": lambda gm, x: TR.euler_maruyama_exact(gm, x, VPSDE(), 20, seed=3),
    "heun": lambda gm, x: TR.pf_ode_heun_exact(gm, x, VPSDE(), 10),
    "langevin": lambda gm, x: TR.langevin_exact(gm, x, step_size=0.01, n_steps=20, seed=3),
    "pc": lambda gm, x: TR.predictor_corrector_exact(gm, x, VPSDE(), 20, n_corrector=2, seed=3),
    "flow-midpoint": lambda gm, x: TR.flow_midpoint_exact(gm, x, flow.time_grid(10), Interpolant.linear()),
}


@pytest.mark.parametrize("gm", [GRID, FULL], ids=["isotropic", "full"])
@pytest.mark.parametrize("name", list(RUNS))
def test_trajectories_on_the_gpu_match_the_cpu(name, gm):
    x = B.normal((3000, gm.dim), seed=11, dtype=torch.float64)  # a dozen blocks of 256 threads
    want = RUNS[name](gm, x)
    got = RUNS[name](gm, x.cuda())
    assert got.is_cuda and got.dtype == torch.float64 and got.shape == x.shape
    torch.testing.assert_close(got.cpu(), want, rtol=0, atol=1e-9 * max(1.0, float(want.abs().max())))
    assert float((want - x).abs().max()) > 0.1
