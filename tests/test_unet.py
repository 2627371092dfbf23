"""The denoisers: shapes, conditioning, parameterisations and classifier-free guidance, checked against
the foundation's conversions and hand-computed references."""
import dataclasses

import pytest
import torch

from minidiff import Schedule, forward
from minidiff.unet import (MLPConfig, UNet, UNetConfig, as_eps_model, build_model, config_from_dict,
                           config_to_dict, count_parameters, timestep_embedding)

SMALL = UNetConfig(base_channels=16, num_res_blocks=1, attn_heads=2, groups=4)


def _perturb(model):
    """Zero-initialised output layers make a fresh net output 0; perturb so tests see real outputs."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("cfg", [SMALL, dataclasses.replace(SMALL, image_size=16, channel_mults=(1, 2, 2)),
                                 dataclasses.replace(SMALL, num_classes=10)])
def test_unet_shapes_and_zero_init(cfg):
    m = build_model(cfg)
    x = torch.randn(3, 1, cfg.image_size, cfg.image_size)
    out = m(x, torch.tensor([0, 500, 999]))
    assert out.shape == x.shape
    assert torch.all(out == 0)  # zero-initialised last conv: the untrained net predicts eps = 0
    assert torch.isfinite(_perturb(m)(x, torch.tensor([0, 500, 999]))).all()


def test_default_digits_unet_is_small():
    from minidiff.train import PRESETS

    n = count_parameters(build_model(PRESETS["digits"].model))
    assert n * 4 <= 5 * 1024 * 1024  # float32 weights <= 5 MB


def test_unet_rejects_wrong_input_shape_and_labels():
    m = build_model(SMALL)
    with pytest.raises(ValueError, match="must be"):
        m(torch.randn(2, 1, 16, 16), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="unconditional"):
        m(torch.randn(2, 1, 8, 8), torch.tensor([1, 2]), torch.tensor([0, 1]))
    c = build_model(dataclasses.replace(SMALL, num_classes=10))
    with pytest.raises(ValueError, match="labels must lie"):
        c(torch.randn(2, 1, 8, 8), torch.tensor([1, 2]), torch.tensor([0, 11]))
    with pytest.raises(TypeError):
        m(torch.randn(2, 1, 8, 8), torch.tensor([1.0, 2.0]))


def test_time_embedding_is_sinusoidal():
    e = timestep_embedding(torch.tensor([0, 7]), 8)
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(4) / 4)
    ref = torch.cat([torch.cos(7 * freqs), torch.sin(7 * freqs)])
    torch.testing.assert_close(e[1], ref)
    torch.testing.assert_close(e[0], torch.cat([torch.ones(4), torch.zeros(4)]))


def test_batch_independence_and_time_dependence():
    """Each sample's output depends only on its own input (GroupNorm is per sample), and on t_index."""
    m = _perturb(build_model(SMALL)).eval()
    x = torch.randn(4, 1, 8, 8)
    t_index = torch.tensor([10, 20, 30, 40])
    full = m(x, t_index)
    torch.testing.assert_close(full[2:3], m(x[2:3], t_index[2:3]), atol=1e-5, rtol=1e-5)
    assert (m(x, t_index + 400) - full).abs().max() > 1e-3


def test_labels_change_output_and_null_is_default():
    m = _perturb(build_model(dataclasses.replace(SMALL, num_classes=10))).eval()
    x, t_index = torch.randn(2, 1, 8, 8), torch.tensor([100, 100])
    null = m(x, t_index, torch.tensor([10, 10]))
    torch.testing.assert_close(m(x, t_index, None), null)
    assert (m(x, t_index, torch.tensor([3, 3])) - null).abs().max() > 1e-3


def test_mlp_interface_and_conditioning():
    m = _perturb(build_model(MLPConfig(dim=2, hidden=32, depth=2, num_classes=3)))
    x = torch.randn(5, 2)
    out = m(x, torch.arange(5), torch.tensor([0, 1, 2, 3, 3]))
    assert out.shape == (5, 2)
    with pytest.raises(ValueError):
        m(torch.randn(5, 3), torch.arange(5))


@pytest.mark.parametrize("pred", ["eps", "v", "x0"])
def test_as_eps_model_converts_with_forward(pred):
    sch = Schedule.linear(T=100)
    m = _perturb(build_model(dataclasses.replace(SMALL, prediction=pred))).eval()
    x, t_index = torch.randn(3, 1, 8, 8), torch.tensor([5, 50, 99])
    raw = m(x, t_index)
    ab = sch.at("alpha_bar", t_index.numpy(), x)
    ref = {"eps": lambda: raw, "v": lambda: forward.v_to_eps(x, raw, ab),
           "x0": lambda: forward.x0_to_eps(x, raw, ab)}[pred]()
    torch.testing.assert_close(as_eps_model(m, sch)(x, t_index), ref)


def test_classifier_free_guidance_formula():
    """eps = (1 + w) eps(x, y) - w eps(x, null) (Ho & Salimans 2022, eq. 6), for v-prediction too
    (the conversion is affine in the prediction, so guiding raw outputs equals guiding eps)."""
    sch = Schedule.linear(T=100)
    for pred in ("eps", "v"):
        m = _perturb(build_model(dataclasses.replace(SMALL, num_classes=10, prediction=pred))).eval()
        x, t_index = torch.randn(4, 1, 8, 8), torch.full((4,), 60)
        y = torch.tensor([0, 3, 5, 9])
        cond = as_eps_model(m, sch, y=y)(x, t_index)
        uncond = as_eps_model(m, sch)(x, t_index)
        w = 2.5
        torch.testing.assert_close(as_eps_model(m, sch, y=y, guidance_scale=w)(x, t_index), (1 + w) * cond - w * uncond,
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(as_eps_model(m, sch, y=y, guidance_scale=0.0)(x, t_index), cond)
        # an int label broadcasts and an int t_index works as the samplers pass it
        torch.testing.assert_close(as_eps_model(m, sch, y=3)(x, 60), as_eps_model(m, sch, y=torch.full((4,), 3))(x, t_index))


def test_as_eps_model_grad_only_when_x_requires_grad():
    sch = Schedule.linear(T=100)
    m = _perturb(build_model(SMALL))
    f = as_eps_model(m, sch)
    assert not f(torch.randn(2, 1, 8, 8), 3).requires_grad
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    (g,) = torch.autograd.grad(f(x, 3).sum(), x)
    assert g.abs().sum() > 0


def test_config_json_roundtrip_and_validation():
    for cfg in (SMALL, MLPConfig(num_classes=4, prediction="v")):
        assert config_from_dict(config_to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="prediction"):
        UNetConfig(prediction="score")
    with pytest.raises(ValueError, match="unknown"):
        config_from_dict({**config_to_dict(SMALL), "evil": 1})
    with pytest.raises(ValueError):
        config_from_dict({"kind": "os.system"})
    assert isinstance(build_model(SMALL), UNet)
