"""Scale-out: the training CLI under torch.distributed.run with 2 CPU processes (gloo) keeps the ranks'
parameters identical and matches a single-process run with the same global batch."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minidiff import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(out):
    return ["-m", "minidiff.train", "--preset", "toy2d", "--steps", "8", "--batch-size", "64", "--threads", "1",
            "--checkpoint-every", "4", "--no-progress", "--out", str(out)]


def test_two_process_ddp_matches_single_process(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("WORLD_SIZE", None)
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                f"--master_port={_free_port()}"]
    r = subprocess.run(launcher + _args(ddp), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([sys.executable] + _args(single), env=env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]

    ranks = json.loads((ddp / "ranks.json").read_text())
    assert ranks["world_size"] == 2
    assert ranks["param_sha256"][0] == ranks["param_sha256"][1]  # bit-identical parameters on both ranks

    a, meta_a = ckpt.load(ddp / "last.safetensors")
    b, meta_b = ckpt.load(single / "last.safetensors")
    assert meta_a["step"] == meta_b["step"] == 8
    model_keys = [k for k in a if k.startswith("model.")]
    assert model_keys
    for k in model_keys:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4)
    la = [json.loads(x)["loss"] for x in (ddp / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (single / "log.jsonl").read_text().splitlines()]
    assert len(la) == len(lb) == 8
    assert la == pytest.approx(lb, rel=1e-4)
    # and training did something: the loss changed over the 8 steps
    assert la[0] != la[-1]
