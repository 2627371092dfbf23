"""The categorical Gumbel-max CUDA kernel under the simulator, bitwise against the CPU kernel on tiny
grids (grid-stride loops cover any size), float32 and float64 probabilities."""
import numpy as np
import pytest

from minidiff.kernels import categorical as kcat
from minidiff.kernels import formulas as F

pytestmark = pytest.mark.cudasim
KEY = F.seed_key(2**40 + 17)


@pytest.mark.parametrize("grid", [(1, 32), (2, 16), (3, 7)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_categorical_bitwise_against_cpu(grid, dtype):
    from numba import config, cuda

    assert config.ENABLE_CUDASIM, "these tests need NUMBA_ENABLE_CUDASIM=1 set before numba is imported"
    from minidiff.kernels import cuda as kc

    rng = np.random.default_rng(0)
    p = rng.random((45, 9)).astype(dtype)
    p[p < 0.3] = 0
    p[:, 4] += dtype(1e-3)
    want = np.empty(45, dtype=np.int64)
    kcat.categorical(p, KEY[0], KEY[1], 5, want)
    dp, dout = cuda.to_device(p), cuda.to_device(np.full(45, -7, dtype=np.int64))
    kc.launch(kcat.cuda_kernels()["categorical"], 1, dp, KEY[0], KEY[1], 5, dout, blocks=grid[0], threads=grid[1])
    np.testing.assert_array_equal(dout.copy_to_host(), want)
