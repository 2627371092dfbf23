#!/usr/bin/env bash
# The prepared GPU check of issue 22: the one script a session with a lent NVIDIA GPU runs.
#
#   scripts/gpu_check.sh [OUTDIR]        (or: make gpu-check GPU_CHECK_DIR=OUTDIR)
#
# OUTDIR defaults to $OUT when set, else test-output/gpu-check. Steps, each logged to OUTDIR/NN_name.log and
# summarised in OUTDIR/summary.txt:
#   00 environment  nvidia-smi, uptime, Python / torch / numba / numba-cuda versions, cuda.implementation;
#                   stops here (exit 3) when no CUDA GPU is usable
#   01 tests        the CUDA tests without the simulator: tests/test_kernels_cuda.py, tests/test_trajectories_cuda.py
#   02 bench        python -m minidiff.kernels.bench --device cuda (copy bandwidth and the fused updates,
#                   1 MB .. 1 GB per array)
#   03 trajectories python -m minidiff.kernels.bench --device cuda --trajectories 100000 1000000 (every fused
#                   exact-score sampler on CUDA against the same kernels on 2 CPU threads)
# Each step has a time limit (seconds, overridable: GPU_CHECK_TIMEOUT_TESTS, _BENCH, _TRAJ); the whole check is
# sized for ~8 minutes on one H200. Exit status: 0 all passed, 1 a step failed or timed out, 2 bad arguments or
# an unusable output directory, 3 no usable GPU. PYTHON selects the interpreter (default .venv/bin/python if
# present, else python3); it must import torch and numba with numba-cuda.
set -uo pipefail

usage() {
  sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  -*) echo "gpu_check.sh: unknown option '$1' (the one argument is the output directory)" >&2; exit 2 ;;
esac
if [ "$#" -gt 1 ]; then
  echo "gpu_check.sh: at most one argument (the output directory), got $#: $*" >&2
  exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUTDIR="${1:-${OUT:-$ROOT/test-output/gpu-check}}"
if ! mkdir -p "$OUTDIR" 2>/dev/null || [ ! -w "$OUTDIR" ]; then
  echo "gpu_check.sh: cannot write to the output directory '$OUTDIR'" >&2
  exit 2
fi
OUTDIR="$(cd "$OUTDIR" && pwd)"
cd "$ROOT" || exit 2

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
unset NUMBA_ENABLE_CUDASIM  # the real GPU, never the simulator
export PYTHONUNBUFFERED=1

SUMMARY="$OUTDIR/summary.txt"
: > "$SUMMARY"
FAILED=0

note() { echo "$*" | tee -a "$SUMMARY"; }

# A fresh GPU machine may have torch and numba-cuda but not this package: install the working tree in
# place (editable, no dependencies, no index: nothing is downloaded) so minidiff.kernels resolves to kernels/.
if "$PYTHON" -c 'import torch' 2>/dev/null && ! "$PYTHON" -c 'import minidiff.kernels' 2>/dev/null; then
  note "minidiff is not installed for $PYTHON: pip install --no-deps --no-index --no-build-isolation -e ."
  "$PYTHON" -m pip install -q --no-deps --no-index --no-build-isolation -e "$ROOT" > "$OUTDIR/00_install.log" 2>&1 \
    || note "the editable install failed (see $OUTDIR/00_install.log)"
fi

# step NAME LIMIT_S COMMAND...: run COMMAND with a time limit, its output to OUTDIR/NAME.log and the screen.
step() {
  local name="$1" limit="$2"
  shift 2
  local log="$OUTDIR/$name.log" t0 rc
  t0=$(date +%s)
  echo "== $name: $* (limit ${limit}s)" | tee "$log"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ]; then
    note "PASS $name ($(( $(date +%s) - t0 )) s)"
  else
    [ "$rc" -eq 124 ] && note "FAIL $name: timed out after ${limit} s" || note "FAIL $name: exit $rc (see $log)"
    FAILED=1
  fi
  return "$rc"
}

note "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) in $ROOT, output $OUTDIR, python $PYTHON"
{
  echo "== uptime: $(uptime)"
  echo "== git: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo 'not a git checkout')"
  echo "== nvidia-smi"
  if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi not found"; fi
  echo "== versions and the GPU minidiff can use (torch sees it, numba-cuda sees it, minidiff.kernels.cuda imports)"
  "$PYTHON" - <<'PY'
import platform, sys
print("python", sys.executable, sys.version.split()[0], platform.platform())
for mod in ("numpy", "torch", "numba", "numba_cuda"):
    try:
        print(mod, getattr(__import__(mod), "__version__", "?"))
    except Exception as e:  # noqa: BLE001
        print(mod, "not importable:", type(e).__name__, e)
try:
    import torch
    from minidiff import backend as B
except Exception as e:  # noqa: BLE001
    print(f"NO GPU: cannot import torch and minidiff with {sys.executable}: {e} (set PYTHON=..., or pip install -e .)")
    sys.exit(3)
from numba import cuda
print("torch.cuda.is_available", torch.cuda.is_available(), "torch CUDA", torch.version.cuda)
print("numba cuda.implementation", getattr(cuda, "implementation", "?"))
if not torch.cuda.is_available():
    print("NO GPU: torch sees no CUDA GPU (torch.cuda.is_available() is False)")
    sys.exit(3)
try:
    B._cuda_kernels()
except RuntimeError as e:
    print(f"NO GPU: {e}")
    sys.exit(3)
print("device", torch.cuda.get_device_name(), "numba sees", cuda.get_current_device().name)
PY
} > "$OUTDIR/00_environment.log" 2>&1
rc=$?
cat "$OUTDIR/00_environment.log"
if [ "$rc" -ne 0 ]; then
  if grep -q '^NO GPU: ' "$OUTDIR/00_environment.log"; then
    note "$(grep '^NO GPU: ' "$OUTDIR/00_environment.log" | tail -n 1)"
  else
    note "NO GPU: the environment check failed (exit $rc, see $OUTDIR/00_environment.log)"
  fi
  note "gpu_check.sh: no usable CUDA GPU here, nothing measured (exit 3)"
  exit 3
fi
note "PASS 00_environment"

step 01_tests "${GPU_CHECK_TIMEOUT_TESTS:-150}" "$PYTHON" -m pytest tests/test_kernels_cuda.py \
  tests/test_trajectories_cuda.py -q -p no:cacheprovider -rs --junitxml="$OUTDIR/01_tests.xml"
step 02_bench "${GPU_CHECK_TIMEOUT_BENCH:-150}" "$PYTHON" -m minidiff.kernels.bench --device cuda \
  --sizes-mb 1 16 256 1024 --repeat 3
step 03_trajectories "${GPU_CHECK_TIMEOUT_TRAJ:-200}" "$PYTHON" -m minidiff.kernels.bench --device cuda \
  --trajectories 100000 1000000 --repeat 2

if [ "$FAILED" -ne 0 ]; then
  note "gpu_check.sh: a step failed (summary: $SUMMARY)"
  exit 1
fi
note "gpu_check.sh: every step passed (summary: $SUMMARY)"
