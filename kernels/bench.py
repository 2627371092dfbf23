"""Benchmark of the fused kernels against a copy, torch eager code as libraries write it, and numpy.

    python -m minidiff.kernels.bench            # sizes 64 KB .. 1 GB per array
    python -m minidiff.kernels.bench --quick    # 1 MB and 64 MB
    python -m minidiff.kernels.bench --device cuda
    python -m minidiff.kernels.bench --course            # the course's sizes, Philox vs torch.randn, step breakdown
    python -m minidiff.kernels.bench --normals           # only Philox vs torch.randn and numpy
    python -m minidiff.kernels.bench --trajectories 10000 100000 1000000  # fused exact-score samplers vs torch
    python -m minidiff.kernels.bench --device cuda --trajectories 1000000  # the same kernels on CUDA vs 2 CPU threads

For every case and size: GB/s on a minimum-bytes basis (each array the update must read or write,
once), both for the call as the course makes it (allocating its outputs) and into preallocated
``out=`` arrays; each as a fraction of the fastest copy measured in the same run (``np.copyto`` or
``Tensor.copy_``); the speed-up over torch eager and over numpy; and normals/s where the kernel draws
its noise. Then the first-call times in a fresh process with a warm cache. Results are printed as a
markdown table (kernels/BENCHMARKS.md records them). Times are the best of ``--repeat`` runs after a
warm-up. 1 GB per array is there because these machines' L3 cache holds 480 MB: only past it is
every size a DRAM measurement.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
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
    """``(name, arrays moved, normals drawn, {impl: thunk})`` for ``n`` elements per array. Impls:
    ``numba`` (the backend call as the course makes it, allocating its outputs), ``out`` (the same
    call writing into preallocated ``out=`` arrays), ``torch`` (eager code as libraries write it) and
    ``numpy``."""
    batch = 16
    shape = (batch, n // batch)
    g = torch.Generator().manual_seed(0)
    mk = lambda: torch.randn(shape, generator=g, dtype=dtype).to(device)  # noqa: E731
    x, e, z, x2, e2 = mk(), mk(), mk(), mk(), mk()
    o, o0 = torch.zeros_like(x), torch.zeros_like(x)  # touched once here, so no page faults when timed
    t = torch.full((batch,), T_MID, dtype=torch.int64, device=device)
    xn, en = (x.numpy(), e.numpy()) if device == "cpu" else (None, None)
    side = int(math.isqrt(n // 4))
    u = torch.randn((4, side, side), generator=g, dtype=dtype).to(device)
    uo = torch.zeros_like(u)
    un = u.numpy() if device == "cpu" else None
    ab_mid = np.sqrt(S.alpha_bar[T_MID]), np.sqrt(1 - S.alpha_bar[T_MID])
    f, gg, dt = -0.5 * 10.0, math.sqrt(10.0), 1e-3
    heun = dict(drift_coef=f, diffusion=gg, drift_coef_next=f, diffusion_next=gg, dt=dt)
    npy = lambda fn: fn if device == "cpu" else None  # noqa: E731

    def backend(call, **outs):
        """``numba``: ``call()`` allocating its outputs; ``out``: the same call writing into ``outs``."""
        return {"numba": call, "out": lambda: call(**outs)}

    return [
        ("q_sample, noise given", 3, 0, {
            **backend(lambda **kw: B.q_sample(x, t, e, S, **kw), out=o),
            "torch": lambda: torch_add_noise(x, e, t),
            "numpy": npy(lambda: ab_mid[0] * xn + ab_mid[1] * en)}),
        ("q_sample, seed (in-kernel noise)", 2, n, {
            **backend(lambda **kw: B.q_sample(x, t, None, S, seed=1, **kw), out=o),
            "torch": lambda: torch_add_noise(x, torch.randn(shape, dtype=dtype, device=device), t)}),
        ("DDPM step + clip, noise given", 5, 0, {
            **backend(lambda **kw: B.ddpm_step(x, e, T_MID, S, noise=z, clip_x0=1.0, **kw), out=o, x0_out=o0),
            "torch": lambda: torch_ddpm_step(x, e, T_MID, z)}),
        ("DDPM step + clip, seed", 4, n, {
            **backend(lambda **kw: B.ddpm_step(x, e, T_MID, S, seed=1, clip_x0=1.0, **kw), out=o, x0_out=o0),
            "torch": lambda: torch_ddpm_step(x, e, T_MID)}),
        ("DDIM step, eta=0", 4, 0, {
            **backend(lambda **kw: B.ddim_step(x, e, T_MID, T_MID - 20, S, **kw), out=o, x0_out=o0),
            "torch": lambda: torch_ddim_step(x, e, T_MID, T_MID - 20)}),
        ("reverse-SDE EM step, noise given", 4, 0, {
            **backend(lambda **kw: B.reverse_sde_step(x, e, drift_coef=f, diffusion=gg, dt=dt, noise=z, **kw), out=o),
            "torch": lambda: torch_em_step(x, e, f, gg, dt, z)}),
        ("reverse-SDE EM step, seed", 3, n, {
            **backend(lambda **kw: B.reverse_sde_step(x, e, drift_coef=f, diffusion=gg, dt=dt, seed=1, **kw), out=o),
            "torch": lambda: torch_em_step(x, e, f, gg, dt)}),
        ("PF-ODE Heun step", 5, 0, {
            **backend(lambda **kw: B.pf_ode_heun_step(x, e, x2, e2, **heun, **kw), out=o),
            "torch": lambda: B.pf_ode_heun_step(x, e, x2, e2, **heun, backend="torch")}),
        ("FTCS 2-D stencil (periodic)", 2, 0, {
            **backend(lambda **kw: B.ftcs_step_2d(u, 1.0, 0.2, 1.0, **kw), out=uo),
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


def copy_gbs(n: int, device: str, repeat: int, dtype=torch.float32) -> tuple[float, str, float, str]:
    """The fastest copy this machine offers, into an existing array and into a fresh one: on the CPU
    the better of ``np.copyto`` (one thread) and ``Tensor.copy_`` (torch's threads; it can use
    non-temporal stores), and of ``np.copy`` and ``Tensor.clone`` for a fresh output, which pays the
    page faults that every call returning a new array pays (torch eager, and the backend without
    ``out=``). Returns ``(GB/s, which, fresh GB/s, which)``."""
    src = torch.randn(n, dtype=dtype).to(device)
    dst = torch.zeros_like(src)
    a, b = (src.numpy(), dst.numpy()) if device == "cpu" else (None, None)
    into = {"Tensor.copy_": lambda: dst.copy_(src)}
    fresh = {"Tensor.clone": lambda: src.clone()}
    if device == "cpu":
        into["np.copyto"] = lambda: np.copyto(b, a)
        fresh["np.copy"] = lambda: np.copy(a)
    nbytes = 2 * n * src.element_size()
    t_into = {k: best_time(f, repeat, device) for k, f in into.items()}
    t_fresh = {k: best_time(f, repeat, device) for k, f in fresh.items()}
    k_into, k_fresh = min(t_into, key=t_into.get), min(t_fresh, key=t_fresh.get)
    return nbytes / t_into[k_into] / 1e9, k_into, nbytes / t_fresh[k_fresh] / 1e9, k_fresh


FIRST_CALL = """
import sys, time
t0 = time.perf_counter()
import torch, minidiff
from minidiff import backend as B, Schedule
s = Schedule.linear(); x = torch.zeros(8, 64)
t1 = time.perf_counter(); import numba
t2 = time.perf_counter(); from minidiff.kernels import cpu
t3 = time.perf_counter()
try:
    import scipy.linalg.cython_blas  # what numba's BLAS check imports at start-up
except ImportError:
    pass
t4 = time.perf_counter()
from numba.core.registry import cpu_target
cpu_target.typing_context.refresh(); cpu_target.target_context.refresh()  # numba's CPU target start-up
t5 = time.perf_counter(); B.q_sample(x, 0, x, s)
t6 = time.perf_counter(); B.langevin_step(x, x, 0.1, noise=x)
t7 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6)
"""
FIRST_CALL_PARTS = ("import torch + minidiff", "import numba", "import minidiff.kernels.cpu (no compiling)",
                    "scipy.linalg.cython_blas (numba's BLAS check)", "numba's CPU target start-up (typing and "
                    "lowering registries)", "first kernel call (load its cached code, launch)",
                    "a second kernel's first call")


def first_call_seconds() -> tuple[float, ...]:
    """A fresh process with a warm cache (the run with the smallest total of 3), split into the parts
    named in :data:`FIRST_CALL_PARTS`: everything numba does before our first kernel runs (its import,
    the scipy BLAS import of its start-up, the registries its CPU target builds on the first compiled
    call of a process), then loading our cached machine code and launching. The scipy import is timed
    on its own here; without it numba's start-up would import it."""
    subprocess.run([sys.executable, "-c", FIRST_CALL], check=True, capture_output=True)  # warm the cache
    runs = [tuple(float(v) for v in subprocess.run([sys.executable, "-c", FIRST_CALL], check=True,
                                                   capture_output=True, text=True).stdout.split())
            for _ in range(3)]
    return min(runs, key=sum)


def first_call_rows() -> list[str]:
    """The first-call table: each part of :func:`first_call_seconds` in ms, and the total from
    ``import numba`` to the first result (the goal: <= 0.2 s)."""
    parts = first_call_seconds()
    lines = ["| fresh process, warm kernel cache | ms |", "|---|---:|"]
    lines += [f"| {name} | {v * 1e3:.0f} |" for name, v in zip(FIRST_CALL_PARTS, parts)]
    lines.append(f"| from `import numba` to the first result | {sum(parts[1:6]) * 1e3:.0f} |")
    lines.append(f"| of which our own code (kernels module import, cached kernel load and launch) "
                 f"| {(parts[2] + parts[5]) * 1e3:.0f} |")
    return lines


def fmt_size(nbytes: int) -> str:
    return f"{nbytes / 2**20:g} MB" if nbytes >= 2**20 else f"{nbytes / 2**10:g} KB"


HEADER = ["| case | per array | GB/s | % of copy | GB/s into out= | % of copy | x torch eager | x numpy "
          "| M normals/s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]


def run(sizes, device: str, repeat: int) -> list[str]:
    """One markdown table. Per case: GB/s of the backend call as the course makes it (allocating its
    outputs) and into preallocated ``out=`` arrays, each as a % of the same run's fastest copy into
    an existing array; time ratios against torch eager and numpy (> 1: the kernel is faster)."""
    lines = list(HEADER)
    for nbytes in sizes:
        n = nbytes // 4
        n -= n % 64
        copy, how, fresh, how_fresh = copy_gbs(n, device, repeat)
        block = [f"| copy into an existing array ({how}) | {fmt_size(nbytes)} | {copy:.1f} | 100 | | | | | |",
                 f"| copy into a fresh array ({how_fresh}) | {fmt_size(nbytes)} | {fresh:.1f} "
                 f"| {100 * fresh / copy:.0f} | | | | | |"]
        for name, arrays, normals, impls in cases(n, device):
            times = {k: best_time(fn, repeat, device) for k, fn in impls.items() if fn is not None}
            gbs = lambda k: arrays * n * 4 / times[k] / 1e9  # noqa: E731
            ratio = lambda k: f"{times[k] / times['numba']:.1f}" if k in times else ""  # noqa: E731
            mn = f"{normals / times['numba'] / 1e6:.0f}" if normals else ""
            into = f"{gbs('out'):.1f} | {100 * gbs('out') / copy:.0f}" if "out" in times else " | "
            block.append(f"| {name} | {fmt_size(nbytes)} | {gbs('numba'):.1f} | {100 * gbs('numba') / copy:.0f} "
                         f"| {into} | {ratio('torch')} | {ratio('numpy')} | {mn} |")
            del times
        print("\n".join(block), flush=True)
        lines += block
    return lines


# ============================================================================ the course's sizes
def _time(fn, repeat: int, inner: int = 1, clock=time.perf_counter) -> float:
    """Best of ``repeat`` timings of ``inner`` calls, per call, after one warm-up call. ``clock``:
    wall time by default; ``time.thread_time`` (CPU time of this thread) for single-threaded work on a
    loaded machine, where wall time counts the other processes' turns."""
    fn()
    best = math.inf
    for _ in range(repeat):
        t0 = clock()
        for _ in range(inner):
            fn()
        best = min(best, (clock() - t0) / inner)
    return best


def _interleaved(fns: dict, repeat: int, inner: int = 1, clock=time.thread_time) -> dict:
    """``{name: median seconds per call}`` over ``repeat`` rounds that time every function of ``fns`` in
    turn (``inner`` calls each, after one warm-up call of each): on a shared machine the others' load then
    falls on all of them alike, and a difference of two medians is a figure of one run."""
    for f in fns.values():
        f()
    times: dict = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            t0 = clock()
            for _ in range(inner):
                f()
            times[k].append((clock() - t0) / inner)
    return {k: statistics.median(v) for k, v in times.items()}


def course_rows(repeat: int) -> list[str]:
    """The updates at 16 / 200 / 2000 digits (8x8) through ``minidiff.backend`` as the course calls them,
    against the torch backend (the same formula and coefficients in eager ops) and, for the step drawing
    its noise, plain torch with ``randn`` (diffusers' step); ratios > 1: numba is faster. Then each
    sampler's step with a free model and its Python overhead (:func:`sampler_steps`), the
    per-call cost of a 1-element update, and normals/s of the in-kernel Philox against ``torch.randn``
    and numpy's ``standard_normal`` (float32, 1M normals), with the ratio. Times are this thread's CPU
    time (every call here runs on the calling thread except the normals), so other processes on a
    loaded machine do not count."""
    lines = ["| what (us per call, thread CPU time) | 16 digits | 200 digits | 2000 digits |", "|---|---|---|---|"]
    res: dict = {}
    clock = time.thread_time
    for n in (16, 200, 2000):
        x = torch.randn(n, 1, 8, 8)
        e, z = torch.randn_like(x), torch.randn_like(x)
        t = torch.full((n,), T_MID, dtype=torch.int64)
        inner = 200 if n < 2000 else 20
        pairs = {
            "DDPM step, noise given": (lambda bk: B.ddpm_step(x, e, T_MID, S, noise=z, backend=bk), None),
            "DDIM step, eta=0": (lambda bk: B.ddim_step(x, e, T_MID, T_MID - 20, S, backend=bk), None),
            "q_sample, noise given": (lambda bk: B.q_sample(x, t, e, S, backend=bk), None),
            "DDPM step, seed= (in-kernel Philox)": (lambda bk: B.ddpm_step(x, e, T_MID, S, seed=1, backend=bk),
                                                    lambda: torch_ddpm_step(x, e, T_MID)),
        }
        for k, (call, eager) in pairs.items():
            nb = _time(lambda: call("numba"), repeat, inner=inner, clock=clock)
            tb = _time(lambda: call("torch"), repeat, inner=inner, clock=clock)
            res.setdefault(f"{k}: numba", []).append(f"{nb * 1e6:.1f}")
            res.setdefault(f"{k}: torch backend", []).append(f"{tb * 1e6:.1f}")
            res.setdefault(f"{k}: x torch backend", []).append(f"{tb / nb:.2f}")
            if eager is not None:
                te = _time(eager, repeat, inner=inner, clock=clock)
                res.setdefault(f"{k}: torch eager with randn (diffusers' step)", []).append(f"{te * 1e6:.1f}")
                res.setdefault(f"{k}: x torch eager with randn", []).append(f"{te / nb:.2f}")
        for k, (whole, upd) in sampler_steps(x, e, repeat, inner).items():
            res.setdefault(f"{k}: one step with a free model", []).append(f"{whole * 1e6:.1f}")
            res.setdefault(f"{k}: of which the sampler's Python (step - updates)", []).append(
                f"{max(whole - upd, 0.0) * 1e6:.1f}")
    for k, v in res.items():
        lines.append(f"| {k} | " + " | ".join(v) + " |")
    one = torch.zeros(1, 1)
    over = {bk: _time(lambda bk=bk: B.langevin_step(one, one, 0.1, noise=one, backend=bk), repeat, inner=500,
                      clock=clock) for bk in ("numba", "torch")}
    lines.append(f"| per-call cost of a 1-element update, numba / torch backend | "
                 f"{over['numba'] * 1e6:.1f} / {over['torch'] * 1e6:.1f} | | |")
    lines += [""] + normal_rows(repeat)
    return lines


def sampler_steps(x, e, repeat: int, inner: int) -> dict:
    """``{sampler: (seconds per step, seconds of its backend updates per step)}`` for every sampler of
    :mod:`minidiff.samplers` with a model that costs nothing (it returns ``e``): what remains of a step is
    the update and the sampler's own Python (checks on the model output and the state, the ``t_index``
    vector, the Tweedie ``x0`` of the SDE samplers, the record). Thread CPU time; 20 steps a run."""
    from minidiff import samplers
    from minidiff.sde import VPSDE

    clock, steps, sde = time.thread_time, 20, VPSDE()
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    em = dict(drift_coef=sde.drift_coef(0.5), diffusion=sde.diffusion(0.5), dt=0.05)
    heun = dict(em, drift_coef_next=sde.drift_coef(0.45), diffusion_next=sde.diffusion(0.45))
    short = Schedule.linear(T=steps)
    cases = {
        "DDPM sampler (seed)": (lambda: samplers.ddpm(lambda x_, t_: e, x, short, generator=gen()),
                                lambda: B.ddpm_step(x, e, 10, short, seed=1, step=3)),
        "DDIM sampler, eta=0": (lambda: samplers.ddim(lambda x_, t_: e, x, S, steps),
                                lambda: B.ddim_step(x, e, T_MID, T_MID - 20, S)),
        "Langevin sampler (seed)": (lambda: samplers.langevin(lambda x_: e, x, step_size=0.01, n_steps=steps,
                                                              generator=gen()),
                                    lambda: B.langevin_step(x, e, 0.01, seed=1, step=3)),
        "Euler-Maruyama sampler (seed)": (lambda: samplers.euler_maruyama(lambda x_, t_: e, x, sde, steps,
                                                                          generator=gen()),
                                          lambda: B.reverse_sde_step(x, e, **em, seed=1, step=3)),
        "PF-ODE Heun sampler": (lambda: samplers.pf_ode_heun(lambda x_, t_: e, x, sde, steps),
                                lambda: (B.pf_ode_euler_step(x, e, **em), B.pf_ode_heun_step(x, e, x, e, **heun))),
    }
    return {k: (_time(lambda: samplers.final(run()), repeat, clock=clock) / steps,
                _time(upd, repeat, inner=inner, clock=clock)) for k, (run, upd) in cases.items()}


def normal_rows(repeat: int) -> list[str]:
    """1M float32 normals: ``backend.normal`` (Philox4x32-10 + Box-Muller, numba's threads) against
    ``torch.randn`` (torch's threads) and numpy's ``standard_normal`` (one thread), in one run: per second
    of wall time, and per CPU-second of this process (all its threads; on a loaded machine wall time
    counts the other processes' turns)."""
    import numba

    n = 2**20
    g = np.random.default_rng(0)
    calls = {f"backend.normal (Philox4x32-10 + Box-Muller, {numba.get_num_threads()} numba threads)":
             lambda: B.normal((1024, 1024), 1),
             f"torch.randn ({torch.get_num_threads()} torch threads)": lambda: torch.randn(1024, 1024),
             "numpy standard_normal (float32, 1 thread)": lambda: g.standard_normal(n, dtype=np.float32)}
    lines = ["| 1M float32 normals | M normals/s (wall) | x torch.randn | M normals per CPU-second | x torch.randn |",
             "|---|---|---|---|---|"]
    wall = {k: _time(f, repeat, inner=5) for k, f in calls.items()}
    cpu = {k: _time(f, repeat, inner=5, clock=time.process_time) for k, f in calls.items()}
    ref = next(k for k in calls if k.startswith("torch.randn"))
    for k in calls:
        lines.append(f"| {k} | {n / wall[k] / 1e6:.0f} | {wall[ref] / wall[k]:.2f} | {n / cpu[k] / 1e6:.0f} "
                     f"| {cpu[ref] / cpu[k]:.2f} |")
    return lines


def overhead_rows(repeat: int) -> list[str]:
    """Per-call overhead of a backend update at the course's sizes (DDPM step, noise given, 16 / 200 /
    2000 digits of 8x8): the whole ``backend.ddpm_step`` call against the compiled kernel alone on
    prepared (fused-row) views (the part no Python can remove); the checks (arrays, noise source); the
    numpy views and the fresh outputs wrapped as torch tensors; and the torch reference of the same
    formula (``backend="torch"``).
    The pieces are timed in interleaved rounds and each figure is a median (:func:`_interleaved`), with
    the goal of issue 22 (``OVERHEAD_GOAL_US``) in the last row.
    Every case here runs on the calling thread (below ``cpu.SERIAL_BELOW`` elements), so the times are
    that thread's CPU time (``time.thread_time``): on a loaded machine wall time counts other processes."""
    from minidiff.kernels import cpu
    from minidiff.kernels.formulas import ddpm_coefficients

    lines = ["| DDPM step, noise given | 16 digits | 200 digits | 2000 digits |", "|---|---|---|---|"]
    rows: dict = {}
    for n in (16, 200, 2000):
        x = torch.randn(n, 1, 8, 8)
        e, z = torch.randn_like(x), torch.randn_like(x)
        inv_sa, s1, cx0, cx, std = ddpm_coefficients(S.alpha_bar[T_MID], S.alpha_bar_prev[T_MID], S.betas[T_MID],
                                                     S.alphas[T_MID], S.posterior_variance[T_MID])
        views = [B._host_rows(t).reshape(1, -1) for t in (x, e, z)]  # rows fused, as the backend passes them
        outs = [np.empty_like(views[0]), np.empty_like(views[0])]
        args = views + [inv_sa, s1, math.inf, cx0, cx, std, B._NOISE_GIVEN, 0, 0, 0] + outs
        med = _interleaved({
            "full": lambda: B.ddpm_step(x, e, T_MID, S, noise=z),
            "kern": lambda: cpu.run("ddpm", args, x.numel(), False),
            "checks": lambda: (B._as_tensor(x, "x"), B._like(x, e, "eps"), B._noise_source(x, z, None, 0, True)),
            "view": lambda: ([t.numpy().reshape(1, -1) for t in (x, e, z)],
                             [torch.from_numpy(np.empty(x.numpy().shape, np.float32)) for _ in range(2)])},
            10 * repeat, inner=20)
        full, kern, checks, view = (med[k] for k in ("full", "kern", "checks", "view"))
        # timed apart: the torch reference's temporaries would evict the others' arrays from the cache
        ref = _time(lambda: B.ddpm_step(x, e, T_MID, S, noise=z, backend="torch"), repeat, inner=50,
                    clock=time.thread_time)
        for k, v in (("whole backend call (us)", full * 1e6), ("compiled kernel alone (us)", kern * 1e6),
                     ("overhead = call - kernel (us)", (full - kern) * 1e6), ("of which checks (us)", checks * 1e6),
                     ("of which numpy views and fresh outputs as torch (us)", view * 1e6),
                     ("torch reference, same formula (us)", ref * 1e6), ("x torch reference", ref / full)):
            rows.setdefault(k, []).append(v)
    for k, v in rows.items():
        lines.append(f"| {k} | " + " | ".join(f"{t:.1f}" for t in v) + " |")
    over = rows["overhead = call - kernel (us)"]
    lines.append(f"| goal (issue 22): overhead <= {OVERHEAD_GOAL_US:g} us | "
                 + " | ".join("met" if t <= OVERHEAD_GOAL_US else "missed" for t in over) + " |")
    return lines


OVERHEAD_GOAL_US = 15.0  # issue 22, "No small-size penalty": validation, views and dispatch per update


def fused_rows(repeat: int) -> list[str]:
    """The compiled kernel alone at the course's sizes (serial, this thread's CPU time), before and after
    two changes in one run: per-sample ``(B, n)`` rows (the kernel makes views for every short row) against
    the rows fused into one ``(1, B n)`` range (what the backend passes when every sample gets the same
    coefficients and no Philox counter is needed); and DDIM eta=0 reading an array of zeros against
    ``z = None`` (no noise read). Results are bitwise equal (tests/test_kernels.py)."""
    from minidiff.kernels import cpu
    from minidiff.kernels.formulas import NOISE_GIVEN, NOISE_NONE, ddim_coefficients, ddpm_coefficients

    inv_sa, s1, cx0, cx, std = ddpm_coefficients(S.alpha_bar[T_MID], S.alpha_bar_prev[T_MID], S.betas[T_MID],
                                                 S.alphas[T_MID], S.posterior_variance[T_MID])
    sa, inv_sa2, s12, inv_s1, sap, cdir, ddim_sigma = ddim_coefficients(S.alpha_bar[T_MID],
                                                                        float(S.alpha_bar[T_MID - 20]), 0.0)
    lines = ["| kernel alone (us, thread CPU time) | 16 digits | 200 digits | 2000 digits |", "|---|---|---|---|"]
    rows: dict = {}
    for n in (16, 200, 2000):
        x, e, z = (np.random.default_rng(i).standard_normal((n, 64)).astype(np.float32) for i in range(3))
        zeros = np.zeros_like(x)
        inner = 200 if n < 2000 else 50

        def ddpm(shape, noise):
            a = [v.reshape(shape) for v in (x, e, noise)]
            o = [np.empty(shape, np.float32) for _ in range(2)]
            return lambda: cpu.run("ddpm", a + [inv_sa, s1, math.inf, cx0, cx, std, NOISE_GIVEN, 0, 0, 0] + o,
                                   x.size, False)

        def ddim(shape, mode):
            a = [v.reshape(shape) for v in (x, e, zeros if mode == NOISE_GIVEN else x)]
            o = [np.empty(shape, np.float32) for _ in range(2)]
            coefs = [sa, inv_sa2, s12, inv_s1, math.inf, False, sap, cdir, ddim_sigma, mode, 0, 0, 0]
            return lambda: cpu.run("ddim", a + coefs + o, x.size, False)

        cases = {"DDPM step, noise given: per-sample rows (before)": ddpm((n, 64), z),
                 "DDPM step, noise given: fused rows (now)": ddpm((1, n * 64), z),
                 "DDIM eta=0: per-sample rows, zero noise array (before)": ddim((n, 64), NOISE_GIVEN),
                 "DDIM eta=0: fused rows, no noise read (now)": ddim((1, n * 64), NOISE_NONE)}
        t = {k: _time(f, repeat, inner=inner, clock=time.thread_time) for k, f in cases.items()}
        for k, v in t.items():
            rows.setdefault(k, []).append(f"{v * 1e6:.1f}")
        keys = list(t)
        rows.setdefault("DDPM: x before", []).append(f"{t[keys[0]] / t[keys[1]]:.2f}")
        rows.setdefault("DDIM eta=0: x before", []).append(f"{t[keys[2]] / t[keys[3]]:.2f}")
    for k, v in rows.items():
        lines.append(f"| {k} | " + " | ".join(v) + " |")
    return lines


def check_rows(repeat: int) -> list[str]:
    """The samplers' per-step checks before and after, in one run (thread CPU time): the finiteness test
    of a state as ``torch.isfinite(x).all()`` (before) and as :func:`minidiff._checks.check_finite_state`
    now (a sum, ``isfinite`` only when the sum is not finite), and the model's ``(B,)`` ``t_index``
    input through the general conversion (before) and the one-op path for an int (now)."""
    from minidiff._checks import check_finite_state, t_index_vector

    lines = ["| a sampler's per-step check (us) | 16 digits | 200 digits | 2000 digits |", "|---|---|---|---|"]
    rows: dict = {}
    for n in (16, 200, 2000):
        x = torch.randn(n, 1, 8, 8)
        t = {"finite check: torch.isfinite(x).all() (before)": lambda: bool(torch.isfinite(x).all()),
             "finite check: check_finite_state (now)": lambda: check_finite_state(x, "x"),
             "t_index vector: general conversion (before)": lambda: t_index_vector(np.int64(T_MID), n),
             "t_index vector: int path (now)": lambda: t_index_vector(T_MID, n)}
        for k, f in t.items():
            rows.setdefault(k, []).append(f"{_time(f, repeat, inner=200, clock=time.thread_time) * 1e6:.1f}")
    for k, v in rows.items():
        lines.append(f"| {k} | " + " | ".join(v) + " |")
    return lines


def step_breakdown(repeat: int) -> list[str]:
    """One DDPM sampling step of 200 digits with the shipped U-Net: network forward vs the fused
    update vs the sampler's Python around them (from a whole ``samplers.ddpm`` step)."""
    from minidiff import samplers
    from minidiff.train import load_pretrained
    from minidiff.unet import as_eps_model

    model, sched = load_pretrained("digits")
    eps_model = as_eps_model(model, sched)
    x = torch.randn(200, 1, 8, 8)
    t = torch.full((200,), sched.T // 2, dtype=torch.int64)
    e = eps_model(x, t)
    net = _time(lambda: eps_model(x, t), repeat)
    upd = _time(lambda: B.ddpm_step(x, e, sched.T // 2, sched, seed=1), repeat, inner=20)

    def one_step():
        it = samplers.ddpm(eps_model, x, sched, generator=torch.Generator().manual_seed(0))
        next(it)

    whole = _time(one_step, repeat)
    py = max(whole - net - upd, 0.0)
    return ["| part of one DDPM step, 200 digits | ms | share |", "|---|---|---|",
            f"| U-Net forward | {net * 1e3:.2f} | {100 * net / whole:.1f} % |",
            f"| fused update (seed=) | {upd * 1e3:.3f} | {100 * upd / whole:.2f} % |",
            f"| sampler Python and checks (the rest) | {py * 1e3:.3f} | {100 * py / whole:.2f} % |",
            f"| whole step through samplers.ddpm | {whole * 1e3:.2f} | 100 % |"]


def peak_gflops() -> tuple[float, float, str]:
    """fp64 / fp32 peak of this CPU as cores x 2 FMA units x lanes x 2 flops x clock (AVX2: 4 / 8
    lanes; AVX-512: 8 / 16), from lscpu's flags and max clock (else /proc/cpuinfo's current one)."""
    flags, mhz = "", 0.0
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Flags"):
                flags = line
            if line.startswith("CPU max MHz"):
                mhz = float(line.split(":")[1])
        if not mhz:
            mhz = max(float(l.split(":")[1]) for l in open("/proc/cpuinfo") if l.startswith("cpu MHz"))
    except (OSError, ValueError, IndexError):
        mhz = 3000.0
    lanes64 = 8 if "avx512f" in flags else 4
    cores = os.cpu_count() or 1
    p64 = cores * 2 * lanes64 * 2 * mhz / 1e3
    return p64, 2 * p64, f"{cores} cores x 2 FMA x {lanes64} fp64 lanes x 2 x {mhz / 1e3:.2f} GHz"


def _trajectory_cases(n: int, device: str = "cpu"):
    """``(name, steps, score evaluations a step, fused, torch path[, velocity])`` on the exact 9-component 2-D
    mixture (``velocity``: the field evaluated is the flow velocity, counted by ``flops_per_sample_step``);
    ``device``: where ``x_T`` lives (the torch path is CPU only)."""
    from minidiff import GaussianMixture, flow, samplers
    from minidiff import trajectories as TR
    from minidiff.interpolants import Interpolant
    from minidiff.sde import VPSDE
    from minidiff.solvers import dpm_solver_2m

    gm = GaussianMixture.grid_2d(3, 1.0, 0.1)
    sde = VPSDE()
    score = lambda x, t: gm.noised(sde.mean_scale(t), sde.marginal_std(t)).score(x)  # noqa: E731
    x = B.normal((n, 2), seed=7, dtype=torch.float64, device=device)
    nz = lambda st: B.normal(x.shape, 3, st, dtype=x.dtype)  # noqa: E731
    eps = gm.eps_model(S)
    return gm, [
        ("DDIM-100, eta=0", 100, 1, lambda: TR.ddim_exact(gm, x, S, 100),
         lambda: samplers.final(samplers.ddim(eps, x, S, 100))),
        ("DDIM-100, eta=1 (Philox noise)", 100, 1, lambda: TR.ddim_exact(gm, x, S, 100, 1.0, 3),
         lambda: samplers.final(samplers.ddim(eps, x, S, 100, eta=1.0, noise=nz))),
        ("DPM-Solver++(2M)-20", 20, 1, lambda: TR.dpm_solver_2m_exact(gm, x, S, 20),
         lambda: samplers.final(dpm_solver_2m(eps, x, S, 20))),
        ("Euler-Maruyama-100 (VP)", 100, 1, lambda: TR.euler_maruyama_exact(gm, x, sde, 100, seed=3),
         lambda: samplers.final(samplers.euler_maruyama(score, x, sde, 100, noise=nz))),
        ("PF-ODE Heun-50 (VP)", 50, 2, lambda: TR.pf_ode_heun_exact(gm, x, sde, 50),
         lambda: samplers.final(samplers.pf_ode_heun(score, x, sde, 50))),
        ("Langevin-100, step 0.002", 100, 1, lambda: TR.langevin_exact(gm, x, step_size=0.002, n_steps=100, seed=3),
         lambda: samplers.final(samplers.langevin(gm.score, x, step_size=0.002, n_steps=100, noise=nz))),
        ("Predictor-corrector-100 (VP, 1 corrector)", 100, 2,
         lambda: TR.predictor_corrector_exact(gm, x, sde, 100, seed=3),
         lambda: samplers.final(samplers.predictor_corrector(score, x, sde, 100, noise=nz))),
    ] + [(f"Flow {solver}-{steps} ({ip.kind})", steps, 1 if solver == "euler" else 2,
          lambda s=solver, ip=ip, ts=flow.time_grid(steps): getattr(TR, f"flow_{s}_exact")(gm, x, ts, ip),
          lambda s=solver, ip=ip, ts=flow.time_grid(steps): flow.integrate(gm.velocity_model(ip), x, ts, solver=s),
          True)
         for solver, steps, ip in (("euler", 100, Interpolant.linear()), ("heun", 50, Interpolant.linear()),
                                   ("midpoint", 50, Interpolant.trig()))]


def trajectory_rows(sizes, repeat: int, only: str = "", clock=time.perf_counter) -> list[str]:
    """Whole samplers on the exact 9-component 2-D mixture (``GaussianMixture.grid_2d(3)``) at each of
    ``sizes`` samples: the fused trajectory kernel (:mod:`minidiff.trajectories`) against the
    step-by-step sampler with the torch mixture score (the notebooks' path before), same noise;
    the speed-up, sample-steps/s and GFLOP/s (flops counted by ``flops_per_sample_step``) against
    the fp64 peak of ``lscpu``'s cores x clock x vector width x FMA. ``only``: the samplers whose
    name contains it (all by default). ``clock``: ``time.thread_time`` for a single-threaded run on a loaded
    machine (both paths then measured in CPU time of the calling thread, interleaved sampler by sampler)."""
    from minidiff import trajectories as TR

    p64, _, how = peak_gflops()
    lines = ["| sampler | samples | torch path s | fused s | speed-up | M sample-steps/s | GFLOP/s | "
             "% of fp64 peak | max abs diff |", "|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for n in sizes:
        gm, cases = _trajectory_cases(n)
        for name, steps, evals, fused, ref, *velocity in cases:
            if only not in name:
                continue
            fused()  # compile / load the cached kernel
            tf = _time(fused, repeat, clock=clock)
            t0 = clock()
            want = ref()
            tr = clock() - t0
            diff = float((fused() - want).abs().max())
            gflops = TR.flops_per_sample_step(gm, evals == 2, bool(velocity)) * n * steps / tf / 1e9
            lines.append(f"| {name} | {n} | {tr:.2f} | {tf:.3f} | {tr / tf:.1f} | {n * steps / tf / 1e6:.1f} "
                         f"| {gflops:.2f} | {100 * gflops / p64:.1f} | {diff:.1e} |")
            print(lines[-1], flush=True)
    lines.append(f"\nfp64 peak {p64:.0f} GFLOP/s ({how}); the torch path timed once, the fused kernel best of "
                 f"{repeat}; Heun, midpoint and predictor-corrector count two evaluations a step; flops per "
                 f"sample-step {TR.flops_per_sample_step(gm)} (one score evaluation and the update), "
                 f"{TR.flops_per_sample_step(gm, velocity=True)} with the velocity")
    return lines


def trajectory_rows_cuda(sizes, repeat: int, only: str = "", cpu_threads: int = 2) -> list[str]:
    """The fused trajectory kernels of :func:`trajectory_rows` on CUDA (a thread per sample; predictor-corrector
    in phased launches) against the same fused kernels on ``cpu_threads`` numba threads (the 2-core CPU figure),
    same inputs and noise: seconds (CUDA: best of ``repeat``, synchronised; CPU: one call after a warm-up), the speed-up, sample-steps/s, GFLOP/s
    (``flops_per_sample_step``) and the max abs difference GPU - CPU (float64: libdevice's exp/log/cos and FMA
    contraction differ from the CPU in the last ulps; predictor-corrector also sums its norms in another order)."""
    import numba

    from minidiff import trajectories as TR

    cpu_threads = min(cpu_threads, numba.config.NUMBA_NUM_THREADS)
    lines = [f"| sampler | samples | fused CPU s ({cpu_threads} threads) | fused CUDA s | CUDA x CPU | "
             f"M sample-steps/s (CUDA) | GFLOP/s (CUDA) | max abs diff |", "|---|---|---|---|---|---|---|---|"]
    print(f"# {torch.cuda.get_device_name()}\n" + "\n".join(lines), flush=True)
    gpu = lambda f: lambda: (f(), torch.cuda.synchronize())  # noqa: E731
    for n in sizes:
        gm, on_cpu = _trajectory_cases(n)
        _, on_gpu = _trajectory_cases(n, "cuda")
        for (name, steps, evals, fused_cpu, _, *velocity), (_, _, _, fused_gpu, *_) in zip(on_cpu, on_gpu):
            if only not in name:
                continue
            tg = _time(gpu(fused_gpu), repeat)  # the warm-up call compiles
            threads = numba.get_num_threads()
            numba.set_num_threads(cpu_threads)
            try:  # one warm-up (it compiles on a fresh machine), one timed call that is also the reference
                fused_cpu()
                t0 = time.perf_counter()
                want = fused_cpu()
                tc = time.perf_counter() - t0
            finally:
                numba.set_num_threads(threads)
            diff = float((fused_gpu().cpu() - want).abs().max())
            gflops = TR.flops_per_sample_step(gm, evals == 2, bool(velocity)) * n * steps / tg / 1e9
            lines.append(f"| {name} | {n} | {tc:.3f} | {tg:.4f} | {tc / tg:.1f} | {n * steps / tg / 1e6:.0f} "
                         f"| {gflops:.1f} | {diff:.1e} |")
            print(lines[-1], flush=True)
    lines.append(f"\nfused kernels only, both float64; CUDA best of {repeat}, CPU one call, each after a warm-up "
                 f"(which compiles); the goal of issue 22 is CUDA >= 50x the 2-core CPU")
    return lines


def trajectory_part_rows(repeat: int, n_blocks: int = 4000) -> list[str]:
    """Where a fused trajectory step's time goes, per sample, on one block of ``ROWS`` samples of the exact
    9-component 2-D mixture, each part called ``n_blocks`` times from a compiled loop (thread CPU time, best of
    ``repeat``): the isotropic two-pass score, the step's Philox normals, an Euler / Langevin update and the
    predictor-corrector's two norm sums."""
    from numba import njit

    from minidiff import GaussianMixture
    from minidiff import trajectories as TR
    from minidiff.kernels import cpu
    from minidiff.kernels.trajectories import ROWS

    t = cpu._t
    score_block, noise_block, euler_block, norm_sum = (t["score_block"], t["noise_block"], t["euler_block"],
                                                       t["norm_sum_rows"])

    @njit
    def parts(what, n, X, Z, SC, LG, lanes, ti, wr, phi, quad, vec, means, prec, const):
        s = 0.0
        for it in range(n):
            if what == 0:
                score_block(X, ROWS, 0.8, 0, means, prec, const, True, True, False, prec, const[:, 0], LG, lanes, ti,
                            vec[0], vec[1], vec[2], SC)
            elif what == 1:
                noise_block(1, 2, it * ROWS, ROWS, it, Z, wr, phi, quad)
            elif what == 2:
                euler_block(X, X, ROWS, SC, Z, 1.0, 1e-9, 1e-9, True)
            else:
                s += norm_sum(Z, ROWS, lanes[0]) + norm_sum(SC, ROWS, lanes[0])
        return s

    gm = GaussianMixture.grid_2d(3, 1.0, 0.1)
    prec, const, _, _, _ = TR.level_tables(gm, [(0.8, 0.6)])
    X = B.normal((2, ROWS), seed=1, dtype=torch.float64).numpy()
    Z, SC = X.copy(), X.copy()
    LG, lanes, words = np.empty((9, ROWS)), np.empty((4, ROWS)), np.empty((4, ROWS))
    args = (X, Z, SC, LG, lanes, lanes[3].view(np.int64), words[:2], words[2:], np.empty((2, ROWS), np.int64),
            np.empty((3, 2)), gm.means.numpy(), prec, const)
    lines = ["| part of a step (one thread) | ns per sample |", "|---|---:|"]
    for what, name in enumerate(("mixture score (9 components, 2-D)", "Philox normals (2)", "Euler / Langevin update",
                                 "corrector's two norm sums")):
        sec = _time(lambda w=what: parts(w, n_blocks, *args), repeat, clock=time.thread_time)
        lines.append(f"| {name} | {sec / n_blocks / ROWS * 1e9:.1f} |")
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
    p.add_argument("--course", action="store_true", help="only the course-size rows, Philox vs torch.randn, "
                   "and the sampling-step breakdown")
    p.add_argument("--normals", action="store_true", help="only the normals/s rows (Philox vs torch.randn, numpy)")
    p.add_argument("--trajectories", type=int, nargs="*", default=None, metavar="N",
                   help="only the exact-score trajectory rows, at each N samples (default 10000 100000 1000000)")
    p.add_argument("--first-call", action="store_true", help="only the first-call breakdown of a fresh process")
    p.add_argument("--only", default="", metavar="NAME",
                   help="with --trajectories: only the samplers whose name contains NAME (e.g. DPM)")
    p.add_argument("--thread-cpu", action="store_true",
                   help="with --trajectories: time both paths in thread CPU time (run with one thread) and print "
                        "where a fused step's time goes")
    a = p.parse_args(argv)
    if a.repeat is not None and a.repeat < 1:
        p.error("--repeat must be >= 1")
    if a.trajectories is not None and not a.trajectories:
        a.trajectories = [10_000, 100_000, 1_000_000]
    if a.trajectories and any(n < 1 for n in a.trajectories):
        p.error(f"--trajectories: every size must be >= 1, got {a.trajectories}")
    if a.sizes_mb is not None and any(not (s >= 0.01) for s in a.sizes_mb):  # also refuses NaN
        p.error(f"--sizes-mb: every size must be at least 0.01 MB, got {a.sizes_mb}")
    if a.first_call:
        print(f"# {machine()}\n# {' '.join(sys.argv)}\n\n" + "\n".join(first_call_rows()), flush=True)
        return
    if a.course or a.trajectories or a.normals:
        repeat = a.repeat or 3
        print(f"# {machine()}\n# {' '.join(sys.argv)}\n", flush=True)
        if a.normals:
            print("\n".join(normal_rows(repeat)) + "\n", flush=True)
        if a.course:
            print("\n".join(course_rows(repeat)) + "\n", flush=True)
            print("\n".join(overhead_rows(repeat)) + "\n", flush=True)
            print("\n".join(fused_rows(repeat)) + "\n", flush=True)
            print("\n".join(check_rows(repeat)) + "\n", flush=True)
            print("\n".join(step_breakdown(repeat)) + "\n", flush=True)
        if a.trajectories and a.device == "cuda":
            B._cuda_kernels()  # a clear RuntimeError without numba-cuda or a GPU
            print(trajectory_rows_cuda(a.trajectories, repeat, a.only)[-1], flush=True)
        elif a.trajectories:
            lines = trajectory_rows(a.trajectories, repeat, a.only,
                                    time.thread_time if a.thread_cpu else time.perf_counter)
            print(lines[-1], flush=True)
            if a.thread_cpu:
                print("\n" + "\n".join(trajectory_part_rows(repeat)), flush=True)
        return
    if a.device == "cuda":
        B._cuda_kernels()  # a clear RuntimeError without numba-cuda or a GPU
    if a.sizes_mb:
        sizes = [int(s * 2**20) for s in a.sizes_mb]
    elif a.quick:
        sizes = [2**20, 64 * 2**20]
    else:
        sizes = [64 * 2**10, 2**20, 16 * 2**20, 64 * 2**20, 256 * 2**20, 1024 * 2**20]
    repeat = a.repeat or (3 if a.quick else 5)
    print(f"# {machine()}\n# device {a.device}, float32, {' '.join(sys.argv)}\n", flush=True)
    print("\n".join(HEADER), flush=True)
    run(sizes, a.device, repeat)
    print("\n" + "\n".join(first_call_rows()), flush=True)


if __name__ == "__main__":
    main()
