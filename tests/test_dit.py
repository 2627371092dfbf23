"""DiT (minidiff.dit): shapes, patchify against a naive loop, adaLN-Zero identity at initialisation,
attention maps against the fused attention, FLOPs by torch's counter against the closed form, and the
same checkpoint round trip as the U-Net."""
import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from minidiff import train
import torch.nn.functional as F

from minidiff.dit import (DiT, DiTBlock, DiTConfig, dit_flops, forward_flops, patchify, sincos_position_embedding,
                          unpatchify)
from minidiff.schedule import Schedule
from minidiff.unet import as_eps_model, build_model, config_from_dict, config_to_dict, count_parameters

_FUSED = F.scaled_dot_product_attention
SMALL = DiTConfig(image_size=8, in_channels=2, patch_size=2, hidden=32, depth=2, heads=4)


def _randomise(model, seed=0):
    """Break the zero initialisation so the outputs depend on every weight."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("cfg", [SMALL, DiTConfig(), dataclasses.replace(SMALL, num_classes=5, prediction="v")])
def test_shapes(cfg):
    model = build_model(cfg)
    assert isinstance(model, DiT)
    x = torch.randn(3, cfg.in_channels, cfg.image_size, cfg.image_size)
    y = torch.tensor([0, 1, cfg.num_classes]) if cfg.num_classes else None
    out = model(x, torch.tensor([0, 10, 999]), y)
    assert out.shape == x.shape


def test_patchify_matches_a_naive_loop_and_unpatchify_inverts_it():
    x = torch.randn(2, 3, 8, 12)
    p = 4
    tok = patchify(x, p)
    assert tok.shape == (2, 6, p * p * 3)
    for b in range(2):
        n = 0
        for i in range(0, 8, p):
            for j in range(0, 12, p):
                patch = x[b, :, i:i + p, j:j + p].permute(1, 2, 0).reshape(-1)  # (p, p, C) flattened
                assert torch.equal(tok[b, n], patch)
                n += 1
    assert torch.equal(unpatchify(tok, p, 3, 8, 12), x)
    t = torch.randn(2, 6, p * p * 3)
    assert torch.equal(patchify(unpatchify(t, p, 3, 8, 12), p), t)
    with pytest.raises(ValueError, match="divisible"):
        patchify(torch.randn(1, 1, 6, 6), 4)


def test_position_embedding_is_distinct_and_bounded():
    pe = sincos_position_embedding(32, 4)
    assert pe.shape == (16, 32) and float(pe.abs().max()) <= 1.0
    assert torch.cdist(pe, pe).add(torch.eye(16)).min() > 0.1  # no two positions share an embedding


def test_adaln_zero_block_starts_as_identity_and_learns_away_from_it():
    blk = DiTBlock(32, 4, 4)
    h, c = torch.randn(3, 16, 32), torch.randn(3, 32)
    assert torch.equal(blk(h, c), h)                     # gates are exactly zero
    with torch.no_grad():
        blk.ada[1].bias.add_(0.1)
    assert not torch.allclose(blk(h, c), h)


def test_initial_model_outputs_zero_and_gets_gradients():
    model = build_model(SMALL)
    x = torch.randn(4, 2, 8, 8)
    out = model(x, torch.tensor([1, 2, 3, 4]))
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()  # the final linear layer's weight still gets a gradient (adaLN-Zero, DiT Sec. 3.2)
    assert model.final.linear.weight.grad.abs().sum() > 0


def test_conditioning_changes_the_output():
    cfg = dataclasses.replace(SMALL, num_classes=3)
    model = _randomise(build_model(cfg))
    x = torch.randn(2, 2, 8, 8)
    t = torch.tensor([5, 5])
    a, b = model(x, t, torch.tensor([0, 0])), model(x, t, torch.tensor([1, 1]))
    c = model(x, torch.tensor([500, 500]), torch.tensor([0, 0]))
    assert not torch.allclose(a, b) and not torch.allclose(a, c)
    with pytest.raises(ValueError, match="labels"):
        model(x, t, torch.tensor([0, 4]))


def test_attention_maps_match_the_fused_forward():
    model = _randomise(build_model(SMALL))
    x = torch.randn(2, 2, 8, 8)
    t = torch.tensor([3, 700])
    maps = model.attention_maps(x, t)
    assert len(maps) == SMALL.depth and maps[0].shape == (2, SMALL.heads, SMALL.tokens, SMALL.tokens)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, SMALL.heads, SMALL.tokens))
    assert all(b.attn.maps is None and not b.attn.keep_maps for b in model.blocks)  # nothing left behind
    # the explicit softmax path gives the same output as scaled_dot_product_attention
    for b in model.blocks:
        b.attn.keep_maps = True
    explicit = model(x, t)
    for b in model.blocks:
        b.attn.keep_maps = False
    torch.testing.assert_close(explicit, model(x, t), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cfg", [SMALL, DiTConfig(), DiTConfig(image_size=8, in_channels=4, patch_size=1, hidden=96)])
def test_flops_match_torch_flop_counter(cfg):
    model = build_model(cfg)
    x = torch.randn(2, cfg.in_channels, cfg.image_size, cfg.image_size)
    t = torch.tensor([1, 2])
    assert forward_flops(model, x, t) == dit_flops(cfg, batch=2)
    # the plain counter misses exactly the two attention products per block (CPU fused kernel)
    with FlopCounterMode(display=False) as fc:
        model(x, t)
    assert dit_flops(cfg, batch=2) - fc.get_total_flops() in (0, 2 * cfg.depth * 2 * 2 * cfg.tokens ** 2 * cfg.hidden)
    assert F.scaled_dot_product_attention is _FUSED  # restored


def test_forward_flops_counts_the_unet_attention():
    from minidiff.unet import UNetConfig

    model = build_model(UNetConfig(image_size=8, base_channels=16, channel_mults=(1, 2)))
    x = torch.randn(1, 1, 8, 8)
    with FlopCounterMode(display=False) as fc:
        model(x, torch.tensor([3]))
    # one attention layer per block at 4x4 (16 tokens, 32 channels): 2 products of 2*16*16*32 FLOPs each
    n_attn = sum(1 for m in model.modules() if type(m).__name__ == "SelfAttention")
    missing = forward_flops(model, x, torch.tensor([3])) - fc.get_total_flops()
    assert missing in (0, n_attn * 2 * 2 * 16 * 16 * 32)


def test_checkpoint_round_trip(tmp_path):
    cfg = dataclasses.replace(SMALL, num_classes=3, prediction="v")
    assert config_from_dict(config_to_dict(cfg)) == cfg and config_to_dict(cfg)["kind"] == "dit"
    model = _randomise(build_model(cfg))
    path = tmp_path / "dit.safetensors"
    train.save_weights(path, model, train.ScheduleSpec("cosine", 100), note="test")
    loaded, schedule, meta = train.load_weights(path)
    assert isinstance(loaded, DiT) and loaded.config == cfg and meta["info"]["note"] == "test"
    x, t, y = torch.randn(2, 2, 8, 8), torch.tensor([0, 99]), torch.tensor([1, 3])
    torch.testing.assert_close(loaded(x, t, y), model(x, t, y), rtol=0, atol=0)
    assert count_parameters(loaded) == count_parameters(model)
    # the samplers' eps wrapper takes it unchanged (v -> eps conversion included)
    eps = as_eps_model(loaded, schedule, y=1)(x, 50)
    assert eps.shape == x.shape and torch.isfinite(eps).all()


def test_train_steps_reduce_the_loss():
    """The course's training loop trains a DiT unchanged (no special case)."""
    cfg = DiTConfig(image_size=8, in_channels=1, patch_size=2, hidden=32, depth=2, heads=2)
    torch.manual_seed(0)
    state = train.TrainState.create(build_model(cfg), lr=3e-3)
    data = torch.randn(64, 1, 8, 8) * 0.1 + torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8)
    recs = list(train.train_steps(state, data, Schedule.linear(T=100), steps=150, batch_size=32, seed=0))
    first = sum(r.loss for r in recs[:10]) / 10
    last = sum(r.loss for r in recs[-10:]) / 10
    assert last < 0.6 * first


@pytest.mark.parametrize("kw, exc", [
    ({"image_size": 30}, ValueError), ({"hidden": 130}, ValueError), ({"heads": 3}, ValueError),
    ({"prediction": "score"}, ValueError), ({"depth": 0}, ValueError), ({"patch_size": 2.0}, TypeError),
    ({"num_classes": -1}, ValueError),
])
def test_bad_config(kw, exc):
    with pytest.raises(exc):
        DiTConfig(**kw)


def test_bad_input_shape():
    model = build_model(SMALL)
    with pytest.raises(ValueError, match="x must be"):
        model(torch.randn(2, 1, 8, 8), torch.tensor([0, 0]))
