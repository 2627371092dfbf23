"""Checkpoints: pickle-free, atomic, refusing foreign files, naming architecture mismatches."""
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from minidiff import checkpoint as ckpt
from minidiff.train import (PRESETS, ScheduleSpec, TrainState, load_checkpoint, load_weights, save_checkpoint,
                            save_weights)
from minidiff.unet import MLPConfig, UNetConfig, build_model


def test_roundtrip_tensors_and_meta(tmp_path):
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5), "c": torch.tensor(2.5)}
    ckpt.save(tmp_path / "x.safetensors", tensors, {"kind": "test", "step": 7})
    back, meta = ckpt.load(tmp_path / "x.safetensors")
    assert meta["step"] == 7 and meta["kind"] == "test" and meta["format"] == ckpt.FORMAT
    for k in tensors:
        assert torch.equal(back[k], tensors[k])
    assert ckpt.read_meta(tmp_path / "x.safetensors")["step"] == 7


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    p = tmp_path / "w.safetensors"
    ckpt.save(p, {"v": torch.zeros(3)}, {"kind": "test", "version_tag": "old"})

    def boom(fd):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk on fire"):
        ckpt.save(p, {"v": torch.ones(3)}, {"kind": "test", "version_tag": "new"})
    monkeypatch.undo()
    tensors, meta = ckpt.load(p)
    assert meta["version_tag"] == "old" and torch.equal(tensors["v"], torch.zeros(3))
    assert os.listdir(tmp_path) == ["w.safetensors"]


WRITER = textwrap.dedent("""
    import sys, torch
    from minidiff import checkpoint as ckpt
    path = sys.argv[1]
    i = 0
    while True:
        i += 1
        ckpt.save(path, {"v": torch.full((2_000_000,), float(i))}, {"kind": "test", "i": i})
""")


def test_sigkill_mid_write_leaves_a_complete_file(tmp_path):
    """Kill a process that rewrites an 8 MB checkpoint in a loop at arbitrary moments: the file on disk
    always loads, and its tensor matches its own metadata (never a torn mix)."""
    p = tmp_path / "c.safetensors"
    for k in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(p)])
        deadline = time.time() + 60
        while not p.exists() and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.05 + 0.13 * k)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        tensors, meta = ckpt.load(p)
        assert torch.all(tensors["v"] == float(meta["i"]))
    leftovers = [f for f in os.listdir(tmp_path) if f != "c.safetensors"]
    assert all(f.endswith(".tmp") for f in leftovers)  # a killed writer may leave its temp file, never a torn target


def test_pickle_file_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(pickle.dumps({"w": Evil()}))
    for loader in (ckpt.load, load_weights, load_checkpoint):
        with pytest.raises(ValueError, match="not a valid minidiff checkpoint"):
            loader(bad)
    assert not marker.exists()


def test_foreign_safetensors_and_garbage_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="no minidiff metadata"):
        ckpt.load(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(ValueError):
        ckpt.load(tmp_path / "junk.safetensors")
    (tmp_path / "short").write_bytes(b"ab")
    with pytest.raises(ValueError):
        ckpt.read_meta(tmp_path / "short")


def test_mismatched_architecture_names_keys_and_shapes(tmp_path):
    small = UNetConfig(base_channels=16, num_res_blocks=1, attn_heads=2, groups=4)
    save_weights(tmp_path / "w.safetensors", build_model(small), ScheduleSpec())
    tensors, _ = ckpt.load(tmp_path / "w.safetensors")
    wider = build_model(UNetConfig(base_channels=32, num_res_blocks=1, attn_heads=2, groups=4))
    with pytest.raises(ValueError, match=r"shape mismatch: .*conv_in\.weight: checkpoint \(16, 1, 3, 3\) vs model \(32, 1, 3, 3\)"):
        ckpt.load_state_into(wider, ckpt.subset(tensors, "ema"))
    deeper = build_model(UNetConfig(base_channels=16, num_res_blocks=2, attn_heads=2, groups=4))
    with pytest.raises(ValueError, match=r"missing keys: .*down\.2\.attn"):
        ckpt.load_state_into(deeper, ckpt.subset(tensors, "ema"))
    with pytest.raises(ValueError, match="unexpected keys: .*label.weight"):
        ckpt.load_state_into(build_model(small), {**ckpt.subset(tensors, "ema"),
                                                  "embed.label.weight": torch.zeros(11, 64)})


def test_weights_roundtrip_rebuilds_model_and_schedule(tmp_path):
    m = build_model(MLPConfig(hidden=32, depth=1))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    save_weights(tmp_path / "m.safetensors", m, ScheduleSpec("cosine", 200), note="hi")
    m2, sch, meta = load_weights(tmp_path / "m.safetensors")
    assert sch.T == 200 and sch.name == "cosine" and meta["info"]["note"] == "hi"
    x = torch.randn(4, 2)
    assert torch.equal(m(x, torch.arange(4)), m2(x, torch.arange(4)))
    assert not m2.training


def test_train_state_roundtrip_includes_optimizer(tmp_path):
    from minidiff.train import train_steps, training_data

    preset = PRESETS["toy2d"]
    torch.manual_seed(0)
    st = TrainState.create(build_model(preset.model), lr=1e-3)
    x, _ = training_data("moons")
    sch = preset.schedule.build()
    list(train_steps(st, x, sch, steps=3, batch_size=32, lr=1e-3))
    save_checkpoint(tmp_path / "s.safetensors", st, preset)
    st2, preset2 = load_checkpoint(tmp_path / "s.safetensors")
    assert preset2 == preset and st2.step == 3
    s1, s2 = st.optimizer.state_dict(), st2.optimizer.state_dict()
    for pid in s1["state"]:
        for k, v in s1["state"][pid].items():
            assert torch.equal(v, s2["state"][pid][k])
    assert s1["param_groups"] == s2["param_groups"]
    for a, b in zip(st.ema.parameters(), st2.ema.parameters()):
        assert torch.equal(a, b)
    # the same next steps from both states
    r1 = list(train_steps(st, x, sch, steps=5, batch_size=32, lr=1e-3))
    r2 = list(train_steps(st2, x, sch, steps=5, batch_size=32, lr=1e-3))
    assert [r.loss for r in r1] == [r.loss for r in r2]


def test_no_pickle_in_package_sources():
    from pathlib import Path

    import minidiff

    root = Path(minidiff.__file__).parent
    for name in ("checkpoint.py", "train.py", "metrics/__init__.py", "unet.py"):
        src = (root / name).read_text()
        for banned in ("torch.save", "torch.load", "import pickle", "all_gather_object", "broadcast_object"):
            assert banned not in src, f"{banned} in {name}"
