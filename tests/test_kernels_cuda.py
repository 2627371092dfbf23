"""The CUDA kernels on a real GPU through minidiff.backend (torch CUDA tensors, torch's stream):
outputs against the CPU kernels within 2 ulp (libdevice's log/cos and FMA contraction differ from the
CPU in the last place). Skipped without a GPU; the simulator tests in tests/cudasim cover the rest."""
import numpy as np
import pytest
import torch

from minidiff import Schedule
from minidiff import backend as B


def _gpu() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        B._cuda_kernels()
    except RuntimeError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _gpu(), reason="needs a CUDA GPU and numba-cuda")
S = Schedule.cosine(T=200)


def ulps(dtype):
    return 2 if dtype == torch.float64 else 2


def check(got_gpu, want_cpu):
    for g, w in zip(got_gpu if isinstance(got_gpu, tuple) else (got_gpu,),
                    want_cpu if isinstance(want_cpu, tuple) else (want_cpu,)):
        assert g.is_cuda and g.dtype == w.dtype and g.shape == w.shape
        g = g.cpu().numpy()
        w = w.numpy()
        scale = max(1.0, float(np.abs(w).max(initial=0)))
        eps = np.finfo(w.dtype).eps
        np.testing.assert_allclose(g, w, rtol=4 * eps, atol=4 * eps * scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_update_matches_the_cpu(dtype):
    gen = torch.Generator().manual_seed(0)
    x, e, z = (torch.randn(5, 3, 17, generator=gen, dtype=dtype) for _ in range(3))
    t = torch.tensor([0, 1, 50, 150, 199])
    cases = [
        lambda x, e, z, t: B.q_sample(x, t, None, S, seed=3, step=2),
        lambda x, e, z, t: B.q_sample(x, t, z, S),
        lambda x, e, z, t: B.ddpm_step(x, e, 120, S, seed=5, step=1, clip_x0=1.0),
        lambda x, e, z, t: B.ddim_step(x, e, 120, 60, S, eta=0.5, seed=5, clip_x0=1.0),
        lambda x, e, z, t: B.langevin_step(x, e, 0.01, seed=1),
        lambda x, e, z, t: B.reverse_sde_step(x, e, drift_coef=-0.5, diffusion=1.2, dt=0.01, noise=z),
        lambda x, e, z, t: B.pf_ode_heun_step(x, e, z, e, drift_coef=-0.5, diffusion=1.2, drift_coef_next=-0.4,
                                              diffusion_next=1.1, dt=0.01),
        lambda x, e, z, t: B.ftcs_step_2d(x, 0.2, 1.0, 1.0, bc="neumann"),
        lambda x, e, z, t: B.ftcs_step_1d(x, 0.4, 1.0, 1.0, bc="dirichlet"),
        lambda x, e, z, t: B.walker_step(x.reshape(-1, 3), 0.5, 0.01, drift_coef=-1.0, seed=2),
        lambda x, e, z, t: B.normal(x.shape, 9, 4, dtype=x.dtype, device=x.device),
    ]
    for fn in cases:
        check(fn(x.cuda(), e.cuda(), z.cuda(), t.cuda()), fn(x, e, z, t))


def test_runs_on_torch_current_stream_and_outputs_are_torch_allocated():
    x = torch.randn(64, 1024, device="cuda")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        y = B.langevin_step(x, x, 0.1, seed=0)
    s.synchronize()
    assert y.is_cuda and y.device == x.device
    check(y, B.langevin_step(x.cpu(), x.cpu(), 0.1, seed=0))


def test_out_on_the_gpu_is_written_in_place_and_returned():
    gen = torch.Generator().manual_seed(1)
    x, e = (torch.randn(4, 2000, generator=gen) for _ in range(2))
    want, want0 = B.ddpm_step(x, e, 100, S, seed=3, clip_x0=1.0)
    xg, eg = x.cuda(), e.cuda()
    o, o0 = torch.full_like(xg, float("nan")), torch.full_like(xg, float("nan"))
    got, got0 = B.ddpm_step(xg, eg, 100, S, seed=3, clip_x0=1.0, out=o, x0_out=o0)
    assert got is o and got0 is o0
    check((o, o0), (want, want0))
    got = B.langevin_step(xg, eg, 0.1, seed=0, out=xg)  # in place
    assert got is xg
    check(xg, B.langevin_step(x, e, 0.1, seed=0))
