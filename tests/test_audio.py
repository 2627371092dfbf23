"""Synthetic sounds and spectral pitch (minidiff.audio) against closed forms: pure sines of known frequency,
the Karplus-Strong fundamental sr / (L + 1/2), 1/k harmonic amplitudes, exponential decay, equal
temperament; the 1-D U-Net's frames, sine source and configs against their definitions; and the sound
denoiser's loss falling in a short run."""
import math

import numpy as np
import pytest
import torch

from minidiff import audio as au

SR = au.SAMPLE_RATE


@pytest.mark.parametrize("freq", [183.7, 262.0, 441.3, 612.9])
def test_estimate_pitch_of_a_pure_sine(freq):
    t = np.arange(au.N_SAMPLES) / SR
    x = np.sin(2 * math.pi * freq * t + 0.3)
    assert abs(au.estimate_pitch(x)[0] - freq) < 1.0


@pytest.mark.parametrize("freq", [220.0, 330.0, 523.0])
def test_karplus_strong_fundamental_is_sr_over_delay_plus_half(freq):
    L = int(round(SR / freq - 0.5))
    x = au.karplus_strong(freq, np.random.default_rng(0), n=4096, decay=0.9995)
    est = au.estimate_pitch(x, low=0.8 * SR / (L + 0.5), high=1.2 * SR / (L + 0.5))[0]
    assert abs(est / (SR / (L + 0.5)) - 1) < 0.005


def test_organ_harmonics_fall_as_one_over_k():
    f = au.NOTES[2]
    x = au.organ(f, np.random.default_rng(1), n=4096)
    freqs, mag = au.spectrum(x)
    peak = lambda h: mag[0, np.abs(freqs - h * f) < 10].max()  # noqa: E731
    for k in (2, 3, 4):
        assert peak(k) / peak(1) == pytest.approx(1 / k, rel=0.1)


def test_drum_decays_and_every_clip_is_normalised():
    x = au.drum(au.NOTES[0], np.random.default_rng(2))
    q = au.N_SAMPLES // 4
    assert np.sqrt(np.mean(x[-q:] ** 2)) < 0.1 * np.sqrt(np.mean(x[:q] ** 2))
    clips, notes, timbres = au.make_dataset(60, seed=3)
    assert clips.shape == (60, au.N_SAMPLES) and clips.dtype == torch.float32
    np.testing.assert_allclose(clips.abs().max(1).values.numpy(), 0.9, rtol=1e-6)
    again, notes2, timbres2 = au.make_dataset(60, seed=3)
    assert torch.equal(clips, again) and torch.equal(notes, notes2) and timbres == timbres2
    assert set(timbres) == set(au.TIMBRES)


def test_notes_are_equal_tempered_and_snap_back():
    assert au.NOTES[5] == pytest.approx(440.0) and au.NOTES[0] == pytest.approx(220.0)
    cents = 1200 * np.log2(np.asarray(au.NOTES[1:]) / np.asarray(au.NOTES[:-1]))
    np.testing.assert_allclose(cents, np.round(cents / 100) * 100, atol=1e-9)
    assert cents.min() >= 200 - 1e-9
    f = np.asarray(au.NOTES) * 2 ** (40 / 1200)    # 40 cents sharp still names the note
    assert np.array_equal(au.nearest_note(f), np.arange(len(au.NOTES)))


def test_the_pitch_estimator_reads_the_data_set():
    clips, notes, timbres = au.make_dataset(300, seed=4)
    for tb in au.TIMBRES:
        sel = np.array([t == tb for t in timbres])
        assert au.pitch_accuracy(clips[sel], notes[sel]) >= 0.9, tb


def test_spectrogram_peaks_at_the_sine():
    t = np.arange(au.N_SAMPLES) / SR
    times, freqs, db = au.spectrogram(np.sin(2 * math.pi * 500.0 * t))
    assert db.shape == (times.size, freqs.size)
    assert np.all(np.abs(freqs[db.argmax(1)] - 500.0) <= freqs[1] - freqs[0])


def test_bad_inputs_are_named():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="Nyquist"):
        au.organ(SR, rng)
    with pytest.raises(ValueError, match="timbre"):
        au.synthesize(0, "violin", rng)
    with pytest.raises(ValueError, match="note"):
        au.synthesize(8, "pluck", rng)
    with pytest.raises(ValueError, match="finite"):
        au.estimate_pitch(np.full(64, np.nan))
    with pytest.raises(ValueError, match="steps"):
        au.train_sound_model(0, n_clips=4)
    with pytest.raises(ValueError, match="one note index per clip"):
        au.pitch_hits(np.zeros((3, 64)), [0, 1])


def _tiny_config(**kw):
    from minidiff.unet1d import UNet1DConfig

    base = dict(length=64, base_channels=8, channel_mults=(1, 2), kernel_size=3, patch_size=2, num_classes=3,
                label_sines=(0.05, 0.1, 0.2))
    return UNet1DConfig(**{**base, **kw})


def test_frames_round_trip_and_hold_consecutive_samples():
    from minidiff.unet1d import from_frames, to_frames

    x = torch.randn(3, 2, 32, generator=torch.Generator().manual_seed(0))
    f = to_frames(x, 4)                                             # (3, 8, 8)
    assert f.shape == (3, 8, 8)
    assert torch.equal(f[1, 1 * 4 + 2, 5], x[1, 1, 5 * 4 + 2])      # channel c*p + j, frame i = sample i*p + j
    assert torch.equal(from_frames(f, 4), x)


def test_source_channels_are_the_labelled_sinusoid_and_zero_for_the_null_label():
    from minidiff.unet1d import source_channels

    freqs = torch.tensor([0.05, 0.125], dtype=torch.float64)
    s = source_channels(torch.tensor([1, 0, 2]), freqs, 40).numpy()   # label 2 = null
    n = np.arange(40)
    np.testing.assert_allclose(s[0, 0], np.cos(2 * np.pi * 0.125 * n), atol=1e-6)
    np.testing.assert_allclose(s[0, 1], np.sin(2 * np.pi * 0.125 * n), atol=1e-6)
    np.testing.assert_allclose(s[1, 1], np.sin(2 * np.pi * 0.05 * n), atol=1e-6)
    assert np.all(s[2] == 0)


def test_unet1d_shapes_checkpoint_config_and_zero_start():
    from minidiff.unet import build_model, config_from_dict, config_to_dict

    cfg = _tiny_config()
    d = config_to_dict(cfg)
    assert d["kind"] == "unet1d" and config_from_dict(d) == cfg
    net = build_model(cfg)
    x = torch.randn(4, 1, 64)
    out = net(x, torch.tensor([0, 10, 500, 999]), torch.tensor([0, 1, 2, 3]))
    assert out.shape == x.shape and torch.all(out == 0)            # zero-initialised output convolution
    with pytest.raises(ValueError, match=r"x must be \(B, 1, 64\)"):
        net(torch.randn(4, 64), torch.zeros(4, dtype=torch.int64))


def test_the_label_reaches_the_output_through_the_source():
    from minidiff.unet import build_model

    torch.manual_seed(0)
    net = build_model(_tiny_config())
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)            # open the zero-initialised output
    x, t_index = torch.randn(2, 1, 64), torch.tensor([100, 100])
    same = net(torch.cat([x[:1], x[:1]]), t_index, torch.tensor([0, 0]))
    other = net(torch.cat([x[:1], x[:1]]), t_index, torch.tensor([0, 2]))
    assert torch.allclose(same[0], same[1]) and not torch.allclose(other[0], other[1], atol=1e-4)


@pytest.mark.parametrize("kw, match", [
    (dict(kernel_size=4), "odd"), (dict(length=63), "divisible"), (dict(label_sines=(0.1, 0.2)), "label_sines"),
    (dict(label_sines=(0.1, 0.2, 0.6)), "label_sines"), (dict(base_channels=6), "groups"),
])
def test_bad_unet1d_configs_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        _tiny_config(**kw)


def test_a_short_training_run_lowers_the_loss():
    losses = [rec.loss for _, rec in au.train_sound_model(60, n_clips=100, batch_size=16, warmup=10,
                                                           config=_tiny_config(length=au.N_SAMPLES, patch_size=8,
                                                                               num_classes=len(au.NOTES),
                                                                               label_sines=tuple(f / au.SAMPLE_RATE
                                                                                                 for f in au.NOTES)))]
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5])    # an untrained net stays at ~1
