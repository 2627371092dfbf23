"""Synthetic sounds and spectral pitch (minidiff.audio) against closed forms: pure sines of known frequency,
the Karplus-Strong fundamental sr / (L + 1/2), 1/k harmonic amplitudes, exponential decay, equal
temperament; and the sound denoiser's loss falling in a short run."""
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


def test_a_short_training_run_lowers_the_loss():
    torch.manual_seed(0)
    _, _, losses = au.train_sound_model(100, n_clips=200, batch_size=32, warmup=10)
    assert np.mean(losses[-20:]) < 0.93 * np.mean(losses[:5])  # an untrained net stays at ~1
