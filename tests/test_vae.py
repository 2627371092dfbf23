"""The KL autoencoder (minidiff.vae): the KL term against torch.distributions, PCA against scikit-learn,
the scaling factor, files, and latent diffusion through the unchanged training loop and samplers."""
import dataclasses

import pytest
import torch

from minidiff import samplers, train, vae
from minidiff.schedule import Schedule
from minidiff.unet import UNetConfig, as_eps_model, build_model

TINY = vae.VAEConfig(image_size=16, channels=(8, 16), latent_channels=2)


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(5, 4, 2, 2, generator=g), torch.randn(5, 4, 2, 2, generator=g)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    ref = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    torch.testing.assert_close(vae.kl_divergence(mean, logvar), ref)


def test_shapes_and_reparameterisation():
    m = vae.AutoencoderKL(vae.VAEConfig())
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    mean, logvar = m.encode(x)
    assert mean.shape == logvar.shape == (3, 4, 8, 8) == (3, *m.config.latent_shape)
    recon, mu, lv = m(x)  # noise=None decodes the mean
    torch.testing.assert_close(recon, m.decode(mean))
    noise = torch.randn(3, 4, 8, 8)
    torch.testing.assert_close(m(x, noise)[0], m.decode(mean + (0.5 * logvar).exp() * noise))


def test_training_lowers_the_loss():
    from minidiff.glyphs import load_glyphs

    x, _ = load_glyphs("test", 16, n=64)
    _, hist = vae.train_vae(TINY, x, steps=60, batch_size=16, lr=3e-3, warmup=5)
    first = sum(h[1] for h in hist[:5]) / 5
    last = sum(h[1] for h in hist[-5:]) / 5
    assert last < 0.7 * first
    with pytest.raises(ValueError, match="data must be"):
        vae.train_vae(TINY, torch.zeros(4, 1, 32, 32), steps=1)


def test_pca_error_matches_sklearn():
    from sklearn.decomposition import PCA

    g = torch.Generator().manual_seed(1)
    train_x = torch.randn(200, 1, 4, 4, generator=g) @ torch.randn(4, 4, generator=g)
    test_x = torch.randn(50, 1, 4, 4, generator=g) @ torch.randn(4, 4, generator=g)
    for k in (1, 5, 16):
        pca = PCA(k).fit(train_x.reshape(200, -1).double().numpy())
        t = test_x.reshape(50, -1).double().numpy()
        ref = float(((pca.inverse_transform(pca.transform(t)) - t) ** 2).mean())
        assert vae.pca_reconstruction_error(train_x, test_x, k) == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert vae.pca_reconstruction_error(train_x, test_x, 16) == pytest.approx(0.0, abs=1e-20)
    with pytest.raises(ValueError, match="k must"):
        vae.pca_reconstruction_error(train_x, test_x, 17)


def test_latent_scale_gives_unit_variance_codes():
    m = vae.AutoencoderKL(TINY)
    x = torch.rand(100, 1, 16, 16) * 2 - 1
    z = vae.encode_dataset(m, x)
    scale = vae.latent_scale(z)
    assert scale == pytest.approx(1.0 / float(z.double().std()))
    codec = vae.LatentCodec(m, scale)
    assert float(codec.encode(x).double().std()) == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(codec.decode(codec.encode(x)), m.decode(z).clamp(-1, 1), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="positive"):
        vae.latent_scale(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="z must"):
        codec.decode(torch.zeros(2, 3, 4, 4))


def test_save_load_round_trip(tmp_path):
    m = vae.AutoencoderKL(TINY)
    p = tmp_path / "vae.safetensors"
    vae.save_vae(p, m, 0.5, note="x")
    loaded, scale, meta = vae.load_vae(p)
    assert loaded.config == TINY and scale == 0.5 and meta["info"]["note"] == "x"
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(loaded(x)[0], m(x)[0], rtol=0, atol=0)
    train.save_weights(tmp_path / "w.safetensors", build_model(UNetConfig()), train.ScheduleSpec())
    with pytest.raises(ValueError, match="not a VAE"):
        vae.load_vae(tmp_path / "w.safetensors")


def test_latent_diffusion_uses_the_course_loop_and_samplers():
    """Train a U-Net on codes with train_steps, sample with DDIM, decode: nothing special-cased."""
    m = vae.AutoencoderKL(TINY)
    x = torch.rand(64, 1, 16, 16) * 2 - 1
    codec = vae.LatentCodec(m, vae.latent_scale(vae.encode_dataset(m, x)))
    z = codec.encode(x)                                    # (64, 2, 4, 4)
    cfg = UNetConfig(image_size=4, in_channels=2, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, groups=4)
    state = train.TrainState.create(build_model(cfg))
    schedule = Schedule.linear(T=100)
    recs = list(train.train_steps(state, z, schedule, steps=5, batch_size=16))
    assert len(recs) == 5
    z0 = samplers.final(samplers.ddim(as_eps_model(state.ema, schedule), torch.randn(3, 2, 4, 4), schedule, 10))
    img = codec.decode(z0)
    assert img.shape == (3, 1, 16, 16) and float(img.abs().max()) <= 1.0


@pytest.mark.parametrize("kw, exc", [
    ({"image_size": 30}, ValueError), ({"channels": ()}, ValueError), ({"channels": (1, 8)}, ValueError),
    ({"kl_weight": -1.0}, ValueError), ({"latent_channels": 0}, ValueError), ({"in_channels": 1.5}, TypeError),
])
def test_bad_config(kw, exc):
    with pytest.raises(exc):
        vae.VAEConfig(**kw)


def test_bad_model_config():
    with pytest.raises(TypeError, match="VAEConfig"):
        vae.AutoencoderKL(dataclasses.asdict(TINY))


# The CLI reads the first CLI_GLYPHS glyphs of each split it asks for (more than the 256 PCA components train-vae
# fits): the whole 12 000-glyph train split, encoded three times plus a 12 000 x 1024 SVD, cost most of this test's
# time and enters none of its checks.
CLI_GLYPHS = 300


@pytest.mark.slow
def test_cli_writes_loadable_files(tmp_path, monkeypatch):
    """The recorded commands run end to end (a few steps, on the first CLI_GLYPHS glyphs of each split) and write
    files the loaders accept; the CLI asks for the splits and sizes the recorded runs use."""
    from minidiff import glyphs

    real_load, asked = glyphs.load_glyphs, []

    def first_glyphs(split="train", size=32, n=None):
        asked.append((split, size, n))
        return real_load(split, size, n=CLI_GLYPHS if n is None else min(n, CLI_GLYPHS))

    monkeypatch.setattr(glyphs, "load_glyphs", first_glyphs)
    out = tmp_path / "vae.safetensors"
    assert vae.main(["train-vae", "--steps", "2", "--batch-size", "8", "--out", str(out)]) == 0
    codec = vae.load_codec(out)
    for kind, cls in (("unet", "UNet"), ("dit", "DiT")):
        lat = tmp_path / f"{kind}.safetensors"
        assert vae.main(["train-latent", "--vae", str(out), "--model", kind, "--steps", "2", "--batch-size", "8",
                         "--out", str(lat)]) == 0
        model, _, meta = train.load_weights(lat)
        assert type(model).__name__ == cls and meta["info"]["network"] == kind
        assert meta["info"]["latent_scale"] == codec.scale and model.config.prediction == "v"
    pix = tmp_path / "pixel.safetensors"
    assert vae.main(["train-pixel", "--size", "16", "--steps", "2", "--batch-size", "8", "--snapshots",
                     str(tmp_path / "snap"), "--save-ema-every", "1", "--out", str(pix)]) == 0
    model, _, meta = train.load_weights(pix)
    assert model.config.image_size == 16 and meta["info"]["steps"] == 2
    assert sorted(p.name for p in (tmp_path / "snap").iterdir()) == ["ema_000001.safetensors", "ema_000002.safetensors"]
    assert asked == [("train", 32, None), ("test", 32, None), ("train", 32, None), ("train", 32, None),
                     ("train", 16, None)], asked


class _Oracle(torch.nn.Module):
    """The exact posterior mean E[x0 | x_t] for data N(m, s^2 I): an x0-predicting "network"."""

    def __init__(self, schedule, m, s, eps_error=0.0):
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(prediction="x0", num_classes=0)
        self.schedule, self.m, self.s, self.eps_error = schedule, m, s, eps_error

    def forward(self, x_t, t_index, y=None):
        ab = float(self.schedule.alpha_bar[int(t_index[0])])
        gain = ab ** 0.5 * self.s ** 2 / (ab * self.s ** 2 + 1 - ab)
        x0 = self.m + gain * (x_t - ab ** 0.5 * self.m)
        if self.eps_error:  # the same x0 seen through an eps head that is off by a constant delta
            eps = (x_t - ab ** 0.5 * x0) / (1 - ab) ** 0.5 + self.eps_error
            x0 = (x_t - (1 - ab) ** 0.5 * eps) / ab ** 0.5
        return x0


def test_x0_error_profile_matches_the_gaussian_posterior_and_shows_the_eps_amplification():
    """x0_error_by_t_index against closed forms: for data N(m, s^2) the exact posterior mean has error
    s^2 (1 - ab) / (ab s^2 + 1 - ab); an eps error delta adds delta^2 (1 - ab) / ab (the amplification
    that sent the first eps-trained latent U-Net off the data)."""
    schedule = Schedule.linear(T=1000)
    m, s = 0.5, 0.8
    z = m + s * torch.randn(4000, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t_indices = (100, 500, 900, 999)
    got = vae.x0_error_by_t_index(_Oracle(schedule, m, s), schedule, z, t_indices, generator=torch.Generator().manual_seed(1))
    for t_index in t_indices:
        ab = float(schedule.alpha_bar[t_index])
        assert got[t_index] == pytest.approx(s ** 2 * (1 - ab) / (ab * s ** 2 + 1 - ab), rel=0.05)
    assert got["mean"] == pytest.approx(s ** 2, rel=0.05)
    delta = 0.01
    off = vae.x0_error_by_t_index(_Oracle(schedule, m, s, delta), schedule, z, (900, 999),
                                  generator=torch.Generator().manual_seed(1))
    for t_index in (900, 999):
        ab = float(schedule.alpha_bar[t_index])
        assert off[t_index] == pytest.approx(got[t_index] + delta ** 2 * (1 - ab) / ab, rel=0.05)
        assert off[t_index] > got["mean"]          # worse than answering the data mean
    with pytest.raises(ValueError, match="t_index"):
        vae.x0_error_by_t_index(_Oracle(schedule, m, s), schedule, z, (1000,), generator=torch.Generator())
