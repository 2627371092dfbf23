"""Training: the loss against a hand computation, EMA, label dropout, determinism, the CLI and exact
resume after SIGKILL."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from minidiff import Schedule, forward
from minidiff import checkpoint as ckpt
from minidiff.train import (PRESETS, Preset, TrainConfig, TrainRecord, TrainState, diffusion_loss, draw_batch,
                            ema_decay_at, get_objective, lr_at, step_generator, train_steps, training_data)
from minidiff.unet import MLPConfig, UNetConfig, build_model

ROOT = Path(__file__).resolve().parents[1]
TINY = MLPConfig(dim=2, hidden=32, depth=1)


def _state(cfg=TINY, seed=0, lr=1e-3):
    torch.manual_seed(seed)
    return TrainState.create(build_model(cfg), lr=lr)


def test_records_are_frozen_and_count_steps():
    st = _state()
    x, _ = training_data("moons")
    recs = list(train_steps(st, x, Schedule.linear(T=100), steps=4, batch_size=16, lr=1e-3, warmup=2))
    assert [r.step for r in recs] == [1, 2, 3, 4] and st.step == 4
    assert [r.lr for r in recs] == [lr_at(s, 1e-3, 2, 4, TrainConfig().lr_min_frac) for s in range(4)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        recs[0].loss = 0.0
    assert isinstance(recs[0], TrainRecord) and all(r.loss > 0 for r in recs)


def test_lr_schedule_warmup_and_cosine():
    assert lr_at(0, 1.0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_at(10, 1.0, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_at(100, 1.0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_at(55, 1.0, 10, 100, 0.1) == pytest.approx(0.55)


@pytest.mark.parametrize("pred", ["eps", "v", "x0"])
def test_first_step_loss_matches_hand_computation(pred):
    """The first record's loss is eq. 14 of Ho et al. 2020 (or its v / x0 analogue) on the batch that
    step_generator(seed, 0) draws, computed here independently in float64."""
    cfg = dataclasses.replace(TINY, prediction=pred)
    st = _state(cfg)
    net = build_model(cfg)
    net.load_state_dict(st.model.state_dict())
    x, _ = training_data("moons")
    sch = Schedule.linear(T=50)
    rec = next(train_steps(st, x, sch, steps=1, batch_size=8, lr=1e-3, seed=5))
    g = step_generator(5, 0)
    idx = torch.randint(0, x.shape[0], (8,), generator=g)
    t_index = torch.randint(0, 50, (8,), generator=g)
    eps = torch.randn((8, 2), generator=g)
    ab = torch.as_tensor(sch.alpha_bar[t_index.numpy()], dtype=torch.float64)[:, None]
    x0 = x[idx].double()
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps.double()
    target = {"eps": eps.double(), "x0": x0, "v": ab.sqrt() * eps.double() - (1 - ab).sqrt() * x0}[pred]
    with torch.no_grad():
        out = net(xt.float(), t_index).double()
    assert rec.loss == pytest.approx(float(((out - target) ** 2).mean()), rel=1e-5)


def test_ema_update_formula():
    st = _state()
    init = [p.detach().clone() for p in st.model.parameters()]
    x, _ = training_data("moons")
    list(train_steps(st, x, Schedule.linear(T=50), steps=1, batch_size=8, lr=1e-2, ema_decay=0.999))
    d = min(0.999, 1 / 10)  # warm-up of the EMA decay at step 0
    assert ema_decay_at(0, 0.999) == d and ema_decay_at(10**6, 0.999) == 0.999
    for e, p0, p in zip(st.ema.parameters(), init, st.model.parameters()):
        torch.testing.assert_close(e, d * p0 + (1 - d) * p.detach())


def test_label_dropout_uses_null_class():
    seen = []
    cfg = MLPConfig(dim=2, hidden=16, depth=1, num_classes=3)
    st = _state(cfg)
    orig = st.model.forward

    def spy(x, t_index, y=None):
        seen.append(y.clone())
        return orig(x, t_index, y)

    st.model.forward = spy
    x = torch.randn(100, 2)
    labels = torch.randint(0, 3, (100,))
    list(train_steps(st, x, Schedule.linear(T=20), steps=20, batch_size=100, labels=labels, p_uncond=0.25))
    y = torch.cat(seen)
    frac_null = float((y == 3).double().mean())
    assert 0.18 < frac_null < 0.32
    with pytest.raises(ValueError, match="labels"):
        list(train_steps(_state(cfg), x, Schedule.linear(T=20), steps=1, batch_size=4))


def test_deterministic_for_a_seed_and_learns():
    x, _ = training_data("gmm")
    sch = Schedule.linear(T=100)
    runs = []
    for seed in (0, 0, 1):
        st = _state(seed=0, lr=3e-3)
        runs.append([r.loss for r in train_steps(st, x, sch, steps=150, batch_size=128, lr=3e-3, seed=seed)])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    first, last = sum(runs[0][:20]) / 20, sum(runs[0][-20:]) / 20
    assert last < 0.8 * first


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return env


def _cli(out, *extra):
    return [sys.executable, "-m", "minidiff.train", "--preset", "toy2d", "--steps", "150", "--batch-size", "32",
            "--checkpoint-every", "20", "--threads", "1", "--no-progress", "--out", str(out), *extra]


def _losses(out):
    return {d["step"]: d["loss"] for d in map(json.loads, (Path(out) / "log.jsonl").read_text().splitlines())}


def test_sigkill_and_resume_gives_identical_losses(tmp_path):
    """A run killed with SIGKILL and resumed produces exactly the losses and weights of an uninterrupted
    run (every random draw of step s is a function of (seed, s); optimizer and EMA state are restored)."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(_cli(full), check=True, env=_env(), cwd=tmp_path, timeout=600)
    proc = subprocess.Popen(_cli(cut), env=_env(), cwd=tmp_path)
    log = cut / "log.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 50:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = ckpt.read_meta(cut / "last.safetensors")["step"]
    assert 0 < killed_at < 150, "the run finished before it could be killed"
    subprocess.run(_cli(cut, "--resume"), check=True, env=_env(), cwd=tmp_path, timeout=600)
    a, b = _losses(full), _losses(cut)
    assert sorted(a) == sorted(b) == list(range(1, 151))
    assert [a[s] for s in range(killed_at + 1, 151)] == [b[s] for s in range(killed_at + 1, 151)]
    wa, _ = ckpt.load(full / "ema.safetensors")
    wb, _ = ckpt.load(cut / "ema.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_refuses_a_different_preset(tmp_path):
    from minidiff.train import main

    main(["--preset", "toy2d", "--steps", "2", "--batch-size", "8", "--no-progress", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="batch_size"):
        main(["--preset", "toy2d", "--steps", "4", "--batch-size", "16", "--no-progress", "--out", str(tmp_path),
              "--resume"])


def test_presets_roundtrip_and_cli_overrides(tmp_path):
    for p in PRESETS.values():
        assert Preset.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    from minidiff.train import main

    assert main(["--preset", "gmm", "--steps", "3", "--batch-size", "8", "--lr", "1e-4", "--seed", "7",
                 "--no-progress", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "preset.json").read_text())
    assert (saved["steps"], saved["batch_size"], saved["lr"], saved["seed"]) == (3, 8, 1e-4, 7)
    assert ckpt.read_meta(tmp_path / "last.safetensors")["step"] == 3
    assert (tmp_path / "ema.safetensors").exists()


def test_unet_preset_trains_a_step():
    cfg = UNetConfig(base_channels=16, num_res_blocks=1, attn_heads=2, groups=4, num_classes=10)
    st = _state(cfg)
    x, y = training_data("digits", conditional=True)
    rec = next(train_steps(st, x, Schedule.linear(), steps=1, batch_size=16, labels=y))
    assert rec.step == 1 and 0 < rec.loss < 10


# ------------------------------------------------------------------ the loop's parts
def test_train_config_defaults_agree_with_the_presets():
    """One set of defaults: every TrainConfig field has Preset's default, and a preset's loop config
    carries its own values."""
    preset_defaults = {f.name: f.default for f in dataclasses.fields(Preset)}
    for f in dataclasses.fields(TrainConfig):
        assert preset_defaults[f.name] == f.default, f.name
    p = PRESETS["digits"]
    assert {f.name: getattr(p.train_config(), f.name) for f in dataclasses.fields(TrainConfig)} == \
        {f.name: getattr(p, f.name) for f in dataclasses.fields(TrainConfig)}


def test_train_config_validates_and_names_options():
    with pytest.raises(TypeError, match="steps"):
        TrainConfig(steps=2.0)
    with pytest.raises(ValueError, match="lr_min_frac"):
        TrainConfig(lr_min_frac=1.5)
    with pytest.raises(TypeError, match="unknown training option.*'stepz'"):
        next(train_steps(_state(), torch.randn(16, 2), Schedule.linear(10), stepz=3))


def test_config_and_keyword_options_train_identically():
    x, _ = training_data("moons")
    sch = Schedule.linear(T=50)
    cfg = TrainConfig(steps=5, batch_size=16, lr=1e-3, warmup=2, seed=3)
    a = [r.loss for r in train_steps(_state(), x, sch, cfg)]
    b = [r.loss for r in train_steps(_state(), x, sch, steps=5, batch_size=16, lr=1e-3, warmup=2, seed=3)]
    c = [r.loss for r in train_steps(_state(), x, sch, TrainConfig(steps=5, batch_size=16), lr=1e-3, warmup=2,
                                     seed=3)]
    assert a == b == c


def test_draw_batch_is_the_hand_draw_of_step_generator():
    """The determinism contract, written out: indices, t_index, noise, then label dropout, all from
    step_generator(seed, step) in that order."""
    x = torch.randn(40, 3)
    labels = torch.randint(0, 4, (40,))
    sch = Schedule.linear(T=30)
    b = draw_batch(7, 11, x, sch, batch_size=12, labels=labels, null_label=4, p_uncond=0.5)
    g = step_generator(7, 11)
    idx = torch.randint(0, 40, (12,), generator=g)
    t_index = torch.randint(0, 30, (12,), generator=g)
    noise = torch.randn((12, 3), generator=g)
    drop = torch.rand(12, generator=g) < 0.5
    assert torch.equal(b.x0, x[idx]) and torch.equal(b.time, t_index) and torch.equal(b.noise, noise)
    assert torch.equal(b.y, torch.where(drop, torch.full_like(labels[idx], 4), labels[idx]))
    assert 0 < int(drop.sum()) < 12  # both branches exercised


def test_draw_batch_is_pure_and_independent_of_world_size():
    x = torch.randn(50, 2)
    labels = torch.randint(0, 3, (50,))
    sch = Schedule.linear(T=20)
    kw = dict(batch_size=8, labels=labels, null_label=3, p_uncond=0.3)
    whole = draw_batch(1, 4, x, sch, **kw)
    again = draw_batch(1, 4, x, sch, **kw)
    other = draw_batch(1, 5, x, sch, **kw)
    assert all(torch.equal(getattr(whole, k), getattr(again, k)) for k in ("x0", "y", "time", "noise"))
    assert not torch.equal(whole.noise, other.noise)
    for world in (2, 4, 8):
        parts = [draw_batch(1, 4, x, sch, rank=r, world=world, **kw) for r in range(world)]
        for k in ("x0", "y", "time", "noise"):
            assert torch.equal(torch.cat([getattr(p, k) for p in parts]), getattr(whole, k)), (world, k)
    with pytest.raises(ValueError, match="divisible"):
        draw_batch(1, 4, x, sch, batch_size=6, world=4)
    with pytest.raises(ValueError, match="rank"):
        draw_batch(1, 4, x, sch, batch_size=8, rank=2, world=2)
    with pytest.raises(TypeError, match="null_label"):
        draw_batch(1, 4, x, sch, batch_size=8, labels=labels)


def test_the_loop_trains_on_draw_batch():
    """train_steps' first loss is the objective's loss on draw_batch(seed, 0) with the initial weights."""
    x, _ = training_data("moons")
    sch = Schedule.linear(T=40)
    st = _state()
    net = build_model(TINY)
    net.load_state_dict(st.model.state_dict())
    rec = next(train_steps(st, x, sch, steps=3, batch_size=16, seed=9))
    b = draw_batch(9, 0, x, sch, batch_size=16)
    with torch.no_grad():
        ref = get_objective("ddpm").loss(net, b.x0, b.time, b.noise, None, sch)
    assert rec.loss == pytest.approx(float(ref), rel=1e-6)
