"""The shipped weights meet the course's bar (issue 4): 1000 digits sampled with 50 DDIM steps reach
FD-digits <= 2x the real-vs-real floor with every class >= 5 % of samples; the class-conditional model's
samples are classified as the requested class >= 90 % of the time at the recorded guidance scale; the
2-D toy model's samples are close to the data in sliced Wasserstein distance. Each file <= 5 MB with
its recorded command, seed and figures."""
import json
from pathlib import Path

import pytest
import torch

from minidiff import make_2d, metrics
from minidiff.train import PRETRAINED, load_pretrained, pretrained_info
from minidiff.unet import as_eps_model

WEIGHTS = Path(__file__).resolve().parents[1] / "minidiff" / "weights"
pytestmark = pytest.mark.slow


def _ddim(eps_fn, shape, schedule, n_steps=50, seed=0, clip_x0=None):
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        try:
            from minidiff import samplers
        except ImportError:  # before samplers.py lands: the same update through the backend
            from minidiff.backend import ddim_step

            x, ts = x_T, schedule.timesteps(n_steps).tolist()
            for t, tp in zip(ts, ts[1:] + [-1]):
                x, _ = ddim_step(x, eps_fn(x, torch.full((x.shape[0],), t)), t, tp, schedule, clip_x0=clip_x0,
                                      backend="torch")
            return x
        return samplers.final(samplers.ddim(eps_fn, x_T, schedule, n_steps, clip_x0=clip_x0, backend="torch"))


@pytest.mark.parametrize("name", list(PRETRAINED) + ["classifier"])
def test_weights_are_small_and_documented(name):
    f = WEIGHTS / f"{name}.safetensors"
    assert f.stat().st_size <= 5 * 1024 * 1024
    info = json.loads((WEIGHTS / f"{name}.json").read_text())
    assert "command" in info and "seed" in info and info["measured"]
    assert ("python -m minidiff.train" in info["command"]) or ("python -m minidiff.metrics" in info["command"])


def test_load_pretrained_gives_eval_models():
    for name in PRETRAINED:
        model, schedule = load_pretrained(name)
        assert not model.training and schedule.T == 1000
        assert all(not p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError):
        load_pretrained("nope")


def test_unconditional_digits_meet_the_bar():
    model, schedule = load_pretrained("digits")
    x = _ddim(as_eps_model(model, schedule), (1000, 1, 8, 8), schedule,
              clip_x0=pretrained_info("digits").get("clip_x0"))
    fd = metrics.fd_digits(x)
    hist = metrics.class_histogram(x)
    assert fd.value <= 2.0 * fd.floor, str(fd)
    assert float(hist.min()) >= 0.05, hist


def test_conditional_digits_follow_their_labels():
    model, schedule = load_pretrained("digits_cond")
    w = pretrained_info("digits_cond")["guidance_scale"]
    y = torch.arange(1000) % 10
    x = _ddim(as_eps_model(model, schedule, y=y, guidance_scale=w), (1000, 1, 8, 8), schedule,
              clip_x0=pretrained_info("digits_cond").get("clip_x0"))
    acc = float((metrics.classify(x) == y).double().mean())
    assert acc >= 0.90, acc


def test_toy2d_samples_match_the_moons():
    model, schedule = load_pretrained("toy2d")
    x = _ddim(as_eps_model(model, schedule), (2000, 2), schedule)
    res = metrics.sliced_wasserstein_result(x, lambda n, g: make_2d("moons", n, generator=g))
    assert res.ratio <= 3.0, str(res)


def test_flow_matching_digits_meet_the_ddpm_bar_at_20_nfe():
    """The shipped flow-matching U-Net (issue 16) reaches the DDPM model's bar with 20 network
    evaluations (explicit midpoint, 10 steps): FD-digits <= 2x the real-vs-real floor, every class >= 5 %.
    (Measured margin is thin: ratio 1.91 with midpoint; Heun 2.06 and Euler 2.15 at the same NFE miss it.)"""
    from minidiff import flow
    from minidiff.train import load_weights

    f = WEIGHTS / "fm_digits.safetensors"
    assert f.stat().st_size <= 5 * 1024 * 1024
    info = json.loads((WEIGHTS / "fm_digits.json").read_text())
    assert "python -m minidiff.train --preset fm_digits" in info["command"] and info["measured"]
    model, _, _ = load_weights(f)
    assert model.config.prediction == "velocity" and not model.training
    x1 = torch.randn((1000, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    x = flow.integrate(flow.velocity_from_net(model), x1, flow.time_grid(10), solver="midpoint")
    assert flow.nfe("midpoint", 10) == 20
    fd = metrics.fd_digits(x)
    hist = metrics.class_histogram(x)
    assert fd.value <= 2.0 * fd.floor, str(fd)
    assert float(hist.min()) >= 0.05, hist
