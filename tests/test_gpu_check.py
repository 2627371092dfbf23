"""scripts/gpu_check.sh (the prepared GPU check, kernels/BENCHMARKS.md): its syntax, its argument handling, and
that it fails cleanly -- a message naming the cause, exit 3, nothing measured -- where no GPU is usable. What it
runs on a GPU is tests/test_kernels_cuda.py, tests/test_trajectories_cuda.py and the CUDA benchmarks."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from thorough import THOROUGH

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def run(*args, env=None):
    e = {k: v for k, v in os.environ.items() if k != "OUT"}
    e.update(env or {})
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=e, timeout=60)


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_is_clean():
    r = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_help_and_bad_arguments(tmp_path):
    r = run("--help")
    assert r.returncode == 0 and "OUTDIR" in r.stdout and "exit" in r.stdout.lower()
    r = run(tmp_path / "a", tmp_path / "b")
    assert r.returncode == 2 and "at most one argument" in r.stderr
    r = run("--fast")
    assert r.returncode == 2 and "unknown option '--fast'" in r.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = run(blocker / "sub")
    assert r.returncode == 2 and "cannot write to the output directory" in r.stderr
    assert not any(tmp_path.glob("a*"))


def test_without_a_usable_python_it_stops_with_exit_3(tmp_path):
    """An interpreter that cannot import anything: the environment step fails, the script says so, exits 3 and
    runs no test or benchmark."""
    stub = tmp_path / "python"
    stub.write_text("#!/bin/sh\necho 'stub interpreter' >&2\nexit 1\n")
    stub.chmod(0o755)
    out = tmp_path / "out"
    r = run(out, env={"PYTHON": str(stub)})
    assert r.returncode == 3, r.stdout + r.stderr
    summary = (out / "summary.txt").read_text()
    assert "NO GPU: the environment check failed" in summary and "nothing measured (exit 3)" in summary
    assert (out / "00_environment.log").exists() and not (out / "01_tests.log").exists()


def test_output_directory_defaults_to_OUT(tmp_path):
    stub = tmp_path / "python"
    stub.write_text("#!/bin/sh\nexit 1\n")
    stub.chmod(0o755)
    r = run(env={"PYTHON": str(stub), "OUT": str(tmp_path / "from_env")})
    assert r.returncode == 3
    assert (tmp_path / "from_env" / "summary.txt").exists()


@pytest.mark.skipif(not THOROUGH, reason="starts torch and numba (~4 s): MINIDIFF_THOROUGH=1")
def test_on_this_machine_without_a_gpu_it_names_the_cause(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script would run the whole check")
    r = run(tmp_path, env={"PYTHON": sys.executable})
    assert r.returncode == 3
    assert "NO GPU: torch sees no CUDA GPU" in (tmp_path / "summary.txt").read_text()
