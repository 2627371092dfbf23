"""kernels/bench.py still runs and prints a complete table (its figures live in BENCHMARKS.md; no
timing is asserted here)."""
import subprocess
import sys


def test_bench_prints_every_case_with_figures():
    r = subprocess.run([sys.executable, "-m", "minidiff.kernels.bench", "--sizes-mb", "0.0625", "--repeat", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in r.stdout.splitlines() if line.startswith("| ") and "KB" in line]
    names = [c[0].strip() for c in rows]
    for case in ("q_sample, noise given", "DDPM step + clip, seed", "DDIM step, eta=0", "PF-ODE Heun step",
                 "FTCS 2-D stencil (periodic)", "normal (Philox + Box-Muller)"):
        assert case in names, names
    for cells in rows[2:]:  # the kernels: GB/s, and x torch eager, are positive numbers
        assert float(cells[2]) > 0 and float(cells[6]) > 0, cells
        if not cells[0].strip().startswith("normal"):
            assert float(cells[4]) > 0, cells  # the out= column
    assert "a second kernel's first call" in r.stdout
