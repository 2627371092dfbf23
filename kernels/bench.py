"""Benchmark of the fused kernels against a copy, torch eager code as libraries write it, and numpy.

    python -m minidiff.kernels.bench            # CPU, sizes 64 KB .. 256 MB per array
    python -m minidiff.kernels.bench --quick    # CPU, 1 MB and 64 MB
    python -m minidiff.kernels.bench --device cuda

For every case and size: GB/s on a minimum-bytes basis (each array the update must read or write,
once), the fraction of a copy's bandwidth measured in the same run (``np.copyto`` / ``Tensor.copy_``),
the speed-up over torch eager and over numpy, and normals/s where the kernel draws its noise. Then the
first-call time of a cached kernel in a fresh process. Results are printed as a markdown table
(kernels/BENCHMARKS.md records them). Times are the best of ``--repeat`` runs after a warm-up.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch

from minidiff import Schedule
from minidiff import backend as B

S = Schedule.linear()
T_MID = 500


# ============================================================================ the usual torch code
def torch_add_noise(x0, noise, t):
    """diffusers' DDPMScheduler.add_noise as written there: gather, pow, flatten, unsqueeze, 2 mul, add."""
    ab = torch.as_tensor(np.array(S.alpha_bar), dtype=x0.dtype, device=x0.device)
    sqrt_ab = ab[t] ** 0.5
    sqrt_1m = (1 - ab[t]) ** 0.5
    sqrt_ab, sqrt_1m = sqrt_ab.flatten(), sqrt_1m.flatten()
    while sqrt_ab.ndim < x0.ndim:
        sqrt_ab, sqrt_1m = sqrt_ab.unsqueeze(-1), sqrt_1m.unsqueeze(-1)
    return sqrt_ab * x0 + sqrt_1m * noise


def torch_ddpm_step(x, eps, t, noise=None):
    """diffusers' DDPMScheduler.step (epsilon prediction, clip_sample, fixed_small variance)."""
    ab, abp = float(S.alpha_bar[t]), float(S.alpha_bar_prev[t])
    beta_t, beta_prev = 1 - ab, 1 - abp
    cur_alpha = ab / abp
    x0 = (x - beta_t ** 0.5 * eps) / ab ** 0.5
    x0 = x0.clamp(-1.0, 1.0)
    mean = (abp ** 0.5 * (1 - cur_alpha) / beta_t) * x0 + (cur_alpha ** 0.5 * beta_prev / beta_t) * x
    z = torch.randn(x.shape, dtype=x.dtype, device=x.device) if noise is None else noise
    var = (1 - abp) / (1 - ab) * (1 - cur_alpha)
    return mean + var ** 0.5 * z, x0


def torch_ddim_step(x, eps, t, t_prev):
    """diffusers' DDIMScheduler.step with eta = 0, no clipping."""
    ab, abp = float(S.alpha_bar[t]), float(S.alpha_bar[t_prev])
    x0 = (x - (1 - ab) ** 0.5 * eps) / ab ** 0.5
    direction = (1 - abp) ** 0.5 * eps
    return abp ** 0.5 * x0 + direction, x0


def torch_em_step(x, score, f, g, dt, noise=None):
    """Euler-Maruyama of the reverse VP SDE as in score_sde's ReverseDiffusionPredictor/EulerMaruyama."""
    drift = f * x - g ** 2 * score
    z = torch.randn(x.shape, dtype=x.dtype, device=x.device) if noise is None else noise
    x_mean = x - drift * dt
    return x_mean + g * math.sqrt(dt) * z


def numpy_stencil(u, r):
    """5-point FTCS with numpy slicing (periodic via explicit edge slices)."""
    out = np.empty_like(u)
    c = u[:, 1:-1, 1:-1]
    out[:, 1:-1, 1:-1] = c + r * (u[:, :-2, 1:-1] + u[:, 2:, 1:-1] + u[:, 1:-1, :-2] + u[:, 1:-1, 2:] - 4 * c)
    return out


def torch_stencil(u, r):
    lap = torch.roll(u, 1, -1) + torch.roll(u, -1, -1) + torch.roll(u, 1, -2) + torch.roll(u, -1, -2) - 4 * u
    return u + r * lap


# ============================================================================ cases
def cases(n: int, device: str, dtype=torch.float32):
    """``(name, arrays moved, normals drawn, {impl: thunk})`` for ``n`` elements per array."""
    batch = 16
    shape = (batch, n // batch)
    g = torch.Generator().manual_seed(0)
    mk = lambda: torch.randn(shape, generator=g, dtype=dtype).to(device)  # noqa: E731
    x, e, z, x2, e2 = mk(), mk(), mk(), mk(), mk()
    t = torch.full((batch,), T_MID, dtype=torch.int64, device=device)
    xn, en = (x.numpy(), e.numpy()) if device == "cpu" else (None, None)
    side = int(math.isqrt(n // 4))
    u = torch.randn((4, side, side), generator=g, dtype=dtype).to(device)
    un = u.numpy() if device == "cpu" else None
    ab_mid = np.sqrt(S.alpha_bar[T_MID]), np.sqrt(1 - S.alpha_bar[T_MID])
    f, gg, dt = -0.5 * 10.0, math.sqrt(10.0), 1e-3
    npy = lambda fn: fn if device == "cpu" else None  # noqa: E731
    return [
        ("q_sample, noise given", 3, 0, {
            "numba": lambda: B.q_sample(x, t, e, S),
            "torch": lambda: torch_add_noise(x, e, t),
            "numpy": npy(lambda: ab_mid[0] * xn + ab_mid[1] * en)}),
        ("q_sample, seed (in-kernel noise)", 2, n, {
            "numba": lambda: B.q_sample(x, t, None, S, seed=1),
            "torch": lambda: torch_add_noise(x, torch.randn(shape, dtype=dtype, device=device), t)}),
        ("DDPM step + clip, noise given", 5, 0, {
            "numba": lambda: B.ddpm_step(x, e, T_MID, S, noise=z, clip_x0=1.0),
            "torch": lambda: torch_ddpm_step(x, e, T_MID, z)}),
        ("DDPM step + clip, seed", 4, n, {
            "numba": lambda: B.ddpm_step(x, e, T_MID, S, seed=1, clip_x0=1.0),
            "torch": lambda: torch_ddpm_step(x, e, T_MID)}),
        ("DDIM step, eta=0", 4, 0, {
            "numba": lambda: B.ddim_step(x, e, T_MID, T_MID - 20, S),
            "torch": lambda: torch_ddim_step(x, e, T_MID, T_MID - 20)}),
        ("reverse-SDE EM step, noise given", 4, 0, {
            "numba": lambda: B.reverse_sde_step(x, e, drift_coef=f, diffusion=gg, dt=dt, noise=z),
            "torch": lambda: torch_em_step(x, e, f, gg, dt, z)}),
        ("reverse-SDE EM step, seed", 3, n, {
            "numba": lambda: B.reverse_sde_step(x, e, drift_coef=f, diffusion=gg, dt=dt, seed=1),
            "torch": lambda: torch_em_step(x, e, f, gg, dt)}),
        ("PF-ODE Heun step", 5, 0, {
            "numba": lambda: B.pf_ode_heun_step(x, e, x2, e2, drift_coef=f, diffusion=gg, drift_coef_next=f,
                                                diffusion_next=gg, dt=dt),
            "torch": lambda: B.pf_ode_heun_step(x, e, x2, e2, drift_coef=f, diffusion=gg, drift_coef_next=f,
                                                diffusion_next=gg, dt=dt, backend="torch")}),
        ("FTCS 2-D stencil (periodic)", 2, 0, {
            "numba": lambda: B.ftcs_step_2d(u, 1.0, 0.2, 1.0),
            "torch": lambda: torch_stencil(u, 0.2),
            "numpy": npy(lambda: numpy_stencil(un, 0.2))}),
        ("normal (Philox + Box-Muller)", 1, n, {
            "numba": lambda: B.normal(shape, seed=1, device=device),
            "torch": lambda: torch.randn(shape, dtype=dtype, device=device)}),
    ]


# ============================================================================ timing
def best_time(fn, repeat: int, device: str) -> float:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fn()
    sync()
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def copy_gbs(n: int, device: str, repeat: int, dtype=torch.float32) -> tuple[float, float]:
    """GB/s of a copy into an existing array (``np.copyto`` / ``copy_``) and of a copy into a fresh
    one (``np.copy`` / ``clone``), which pays the page faults that every call returning a new
    array (torch eager, and the backend, which allocates its outputs) pays as well."""
    src = torch.randn(n, dtype=dtype).to(device)
    dst = torch.empty_like(src)
    if device == "cpu":
        a, b = src.numpy(), dst.numpy()
        t = best_time(lambda: np.copyto(b, a), repeat, device)
        t_new = best_time(lambda: np.copy(a), repeat, device)
    else:
        t = best_time(lambda: dst.copy_(src), repeat, device)
        t_new = best_time(lambda: src.clone(), repeat, device)
    nbytes = 2 * n * src.element_size()
    return nbytes / t / 1e9, nbytes / t_new / 1e9


def first_call_seconds() -> float:
    """A fresh process with a warm cache: import numba, load the cached kernel, first launch."""
    code = ("import time, torch, minidiff; from minidiff import backend as B, Schedule; s = Schedule.linear(); "
            "x = torch.zeros(8, 64); B.q_sample(x, 0, x, s); "  # warm the cache if cold (separate from timing)
            )
    subprocess.run([sys.executable, "-c", code], check=True)
    code = ("import time, torch, minidiff; from minidiff import backend as B, Schedule; s = Schedule.linear(); "
            "x = torch.zeros(8, 64); t0 = time.perf_counter(); B.q_sample(x, 0, x, s); "
            "print(time.perf_counter() - t0)")
    runs = [float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                 text=True).stdout) for _ in range(3)]
    return min(runs)


def fmt_size(nbytes: int) -> str:
    return f"{nbytes / 2**20:g} MB" if nbytes >= 2**20 else f"{nbytes / 2**10:g} KB"


def run(sizes, device: str, repeat: int) -> list[str]:
    lines = ["| case | per array | GB/s | % of copy | % of allocating copy | x torch eager | x numpy | M normals/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for nbytes in sizes:
        n = nbytes // 4
        n -= n % 64
        copy, copy_new = copy_gbs(n, device, repeat)
        lines.append(f"| copy (np.copyto / copy_) | {fmt_size(nbytes)} | {copy:.1f} | 100 | | | | |")
        lines.append(f"| allocating copy (np.copy / clone) | {fmt_size(nbytes)} | {copy_new:.1f} "
                     f"| {100 * copy_new / copy:.0f} | 100 | | | |")
        for name, arrays, normals, impls in cases(n, device):
            times = {k: best_time(fn, repeat, device) for k, fn in impls.items() if fn is not None}
            gbs = arrays * n * 4 / times["numba"] / 1e9
            ratio = lambda k: f"{times[k] / times['numba']:.1f}" if k in times else ""  # noqa: E731
            mn = f"{normals / times['numba'] / 1e6:.0f}" if normals else ""
            lines.append(f"| {name} | {fmt_size(nbytes)} | {gbs:.1f} | {100 * gbs / copy:.0f} "
                         f"| {100 * gbs / copy_new:.0f} | {ratio('torch')} | {ratio('numpy')} | {mn} |")
            del times
        print("\n".join(lines[-(len(cases(64, 'cpu')) + 2):]), flush=True)
    return lines


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    import numba

    return (f"{name}, {os.cpu_count()} cores, numba {numba.__version__} ({numba.get_num_threads()} threads), "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}, "
            f"load average {os.getloadavg()[0]:.1f} at start")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="two sizes (1 MB, 64 MB) and fewer repeats")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--sizes-mb", type=float, nargs="*", help="bytes per array, in MB")
    p.add_argument("--repeat", type=int, default=None)
    a = p.parse_args(argv)
    if a.device == "cuda":
        B._cuda_kernels()  # a clear RuntimeError without numba-cuda or a GPU
    if a.sizes_mb:
        sizes = [int(s * 2**20) for s in a.sizes_mb]
    elif a.quick:
        sizes = [2**20, 64 * 2**20]
    else:
        sizes = [64 * 2**10, 2**20, 16 * 2**20, 64 * 2**20, 256 * 2**20]
        if a.device == "cuda":
            sizes.append(1024 * 2**20)
    repeat = a.repeat or (3 if a.quick else 5)
    print(f"# {machine()}\n# device {a.device}, float32, {' '.join(sys.argv)}\n", flush=True)
    run(sizes, a.device, repeat)
    print(f"\nfirst call of a cached kernel in a fresh process: {first_call_seconds() * 1e3:.0f} ms", flush=True)


if __name__ == "__main__":
    main()
