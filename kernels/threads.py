"""Thread pools side by side: numba's and torch's OpenMP pools in one process, and two processes at once.

    python -m minidiff.kernels.threads            # prints a table (figures in kernels/BENCHMARKS.md)

Each case runs in fresh subprocesses (the pools read their settings when they start), the same short
loop of a course-sized sampling step -- a torch op the size of a small U-Net layer (a 3x3 convolution on
200 digits' feature maps) followed by a fused numba update drawing its noise -- timed per step:

* ``solo``: one process;
* ``pair``: two processes started together (a student with two notebooks running).

Each under the default OpenMP wait policy and under ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep after a
parallel region instead of spinning), with 2 threads per pool and with 1. Printed: median and worst step
time, and the pair/solo ratio (the goal: pair within 2.5x of solo, no step 10x slower than solo's median).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np, torch
from minidiff import backend as B, Schedule
S = Schedule.linear()
conv = torch.nn.Conv2d(32, 32, 3, padding=1)
h = torch.randn(200, 32, 8, 8)
x = torch.randn(2000, 1, 16, 16); e = torch.randn_like(x)
B.ddpm_step(x, e, 500, S, seed=1)  # compile / load
with torch.no_grad():
    conv(h)
times = []
t_end = time.perf_counter() + float(sys.argv[1])
i = 0
while time.perf_counter() < t_end:
    t0 = time.perf_counter()
    with torch.no_grad():
        conv(h)
    B.ddpm_step(x, e, 500, S, seed=1, step=i)
    times.append(time.perf_counter() - t0)
    i += 1
print(json.dumps(times))
"""


def _run(n_proc: int, threads: int, passive: bool, seconds: float) -> list[list[float]]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.pop("OMP_WAIT_POLICY", None)
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(seconds)], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(n_proc)]
    return [json.loads(p.communicate()[0]) for p in procs]


def _median(v):
    s = sorted(v)
    return s[len(s) // 2]


def rows(seconds: float = 3.0) -> list[str]:
    lines = ["| threads per pool | wait policy | solo median / worst (ms) | pair median / worst (ms) | "
             "pair / solo (median) | worst pair step / solo median |", "|---|---|---|---|---|---|"]
    for threads in (2, 1):
        for passive in (False, True):
            solo = _run(1, threads, passive, seconds)[0]
            pair = _run(2, threads, passive, seconds)
            both = pair[0] + pair[1]
            ms, mp = _median(solo), _median(both)
            lines.append(f"| {threads} | {'PASSIVE' if passive else 'default'} | {ms * 1e3:.1f} / {max(solo) * 1e3:.1f} | "
                         f"{mp * 1e3:.1f} / {max(both) * 1e3:.1f} | {mp / ms:.2f} | {max(both) / ms:.1f} |")
    return lines


if __name__ == "__main__":
    print(f"# load average {os.getloadavg()[0]:.1f} at start, {os.cpu_count()} cores")
    print("\n".join(rows(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0)))
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")
