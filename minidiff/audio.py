"""Short synthetic sounds with a pitch label, their spectra, and a pitch-conditioned diffusion model on them.

Sounds are made offline by code at a low sample rate (:data:`SAMPLE_RATE` = 4000 Hz, :data:`N_SAMPLES` = 512,
so 128 ms a clip), one of :data:`NOTES` (the A-minor pentatonic scale from A3, equal temperament) in one of
three timbres:

* ``"pluck"``: the Karplus-Strong plucked string (Karplus & Strong 1983): a burst of noise circulating in a
  delay line of ``L = round(sr / f - 1/2)`` samples through a two-point average, whose fundamental is
  ``sr / (L + 1/2)``;
* ``"organ"``: additive synthesis of the first harmonics with ``1/k`` amplitudes under an attack-release envelope;
* ``"drum"``: a tuned percussion hit: a decaying sine at the pitch plus a short burst of decaying noise.

The model is a 1-D convolutional U-Net (:class:`minidiff.unet1d.UNet1D`, :func:`sound_model_config`) on
frames of 8 samples, told the note twice: as a label embedding added to the time embedding, and as a sine
source at the note's frequency fed beside the noisy clip (Wang et al. 2019's source-filter idea). It is trained
with the DDPM loss by :func:`minidiff.train.train_steps` and sampled with DDIM and classifier-free guidance
(Ho & Salimans 2022). Pitch accuracy is measured from the spectrum: the peak of the Hann-windowed,
zero-padded magnitude spectrum, snapped to the nearest note.

CLI (the shipped ``sound`` weights; command, seed and figures in ``minidiff/weights/sound.json``)::

    python -m minidiff.audio train --steps 800 --threads 1 --snapshot-every 200 --out runs/sound/sound.safetensors
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch

from . import _checks as _c

__all__ = [
    "SAMPLE_RATE", "N_SAMPLES", "NOTES", "NOTE_NAMES", "TIMBRES", "karplus_strong", "organ", "drum", "synthesize",
    "make_dataset", "spectrum", "estimate_pitch", "nearest_note", "pitch_hits", "pitch_accuracy", "sample_sounds", "spectrogram", "sound_model_config", "train_sound_model",
    "load_sound_model", "main",
]

SAMPLE_RATE = 4000
N_SAMPLES = 512
NOTE_NAMES = ("A3", "C4", "D4", "E4", "G4", "A4", "C5", "D5")
_SEMITONES = (0, 3, 5, 7, 10, 12, 15, 17)                            # above A3
NOTES = tuple(220.0 * 2.0 ** (s / 12.0) for s in _SEMITONES)         # Hz, equal temperament (A4 = 440 Hz)
TIMBRES = ("pluck", "organ", "drum")


def _check_freq(freq) -> float:
    freq = _c.check_positive(freq, "freq")
    if freq >= SAMPLE_RATE / 2:
        raise ValueError(f"freq must lie below the Nyquist frequency {SAMPLE_RATE / 2} Hz, got {freq}")
    return freq


def _time_axis(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / SAMPLE_RATE


def karplus_strong(freq: float, rng: np.random.Generator, n: int = N_SAMPLES, decay: float = 0.996) -> np.ndarray:
    """The Karplus-Strong plucked string (Karplus & Strong 1983): ``y[i] = decay (y[i-L] + y[i-L-1]) / 2`` seeded
    with ``L + 1`` samples of uniform noise, ``L = round(sr / freq - 1/2)``; the averaging filter's half-sample
    delay puts the fundamental at ``sr / (L + 1/2)``. ``(n,)`` float64."""
    freq = _check_freq(freq)
    L = max(2, int(round(SAMPLE_RATE / freq - 0.5)))
    y = np.empty(n + L + 1)
    y[: L + 1] = rng.uniform(-1.0, 1.0, L + 1)
    for i in range(L + 1, n + L + 1):
        y[i] = decay * 0.5 * (y[i - L] + y[i - L - 1])
    return y[L + 1:]


def organ(freq: float, rng: np.random.Generator, n: int = N_SAMPLES, n_harmonics: int = 4) -> np.ndarray:
    """Additive synthesis: ``sum_k (1/k) sin(2 pi k f t + phi_k)`` over harmonics below Nyquist, random phases,
    under a 10 ms linear attack and a release over the last quarter. ``(n,)`` float64."""
    freq = _check_freq(freq)
    t = _time_axis(n)
    y = np.zeros(n)
    for k in range(1, n_harmonics + 1):
        if k * freq < SAMPLE_RATE / 2:
            y += np.sin(2 * math.pi * k * freq * t + rng.uniform(0, 2 * math.pi)) / k
    env = np.minimum(1.0, t / 0.01) * np.minimum(1.0, (n - np.arange(n)) / (n / 4))
    return y * env


def drum(freq: float, rng: np.random.Generator, n: int = N_SAMPLES) -> np.ndarray:
    """A tuned percussion hit: ``exp(-t / 40 ms) sin(2 pi f t)`` plus noise decaying with ``exp(-t / 8 ms)``. ``(n,)``."""
    freq = _check_freq(freq)
    t = _time_axis(n)
    tone = np.exp(-t / 0.04) * np.sin(2 * math.pi * freq * t)
    return tone + 0.5 * np.exp(-t / 0.008) * rng.standard_normal(n)


_SYNTHS = {"pluck": karplus_strong, "organ": organ, "drum": drum}


def synthesize(note: int, timbre: str, rng: np.random.Generator, n: int = N_SAMPLES) -> np.ndarray:
    """One clip: note index ``note`` (into :data:`NOTES`) in ``timbre``, scaled to peak amplitude 0.9. ``(n,)``."""
    note = _c.check_count(note, "note", 0, len(NOTES) - 1)
    if timbre not in _SYNTHS:
        raise ValueError(f"timbre must be one of {TIMBRES}, got {timbre!r}")
    y = _SYNTHS[timbre](NOTES[note], rng, n)
    return 0.9 * y / max(float(np.abs(y).max()), 1e-12)


def make_dataset(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``n`` clips with uniformly random notes and timbres: ``(x (n, 512) float32 in [-1, 1], notes (n,) int64,
    timbres)``. A pure function of ``(n, seed)``."""
    n = _c.check_count(n, "n")
    rng = np.random.default_rng(_c.check_int(seed, "seed"))
    notes = rng.integers(0, len(NOTES), n)
    timbres = [TIMBRES[i] for i in rng.integers(0, len(TIMBRES), n)]
    x = np.stack([synthesize(int(k), tb, rng) for k, tb in zip(notes, timbres)])
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(notes.astype(np.int64)), timbres


# ============================================================================ spectra and pitch
def _as_batch(x) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] < 16:
        raise ValueError(f"x must be clips (B, n) or one clip (n,) with n >= 16 samples, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("x must be finite (no NaN or inf)")
    return a


def spectrum(x, pad: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``(freqs (F,), magnitude (B, F))`` of the Hann-windowed clips zero-padded to ``pad`` times their length
    (Harris 1978 for the window)."""
    a = _as_batch(x)
    pad = _c.check_count(pad, "pad")
    n_fft = pad * a.shape[1]
    mag = np.abs(np.fft.rfft(a * np.hanning(a.shape[1]), n=n_fft, axis=1))
    return np.fft.rfftfreq(n_fft, 1.0 / SAMPLE_RATE), mag


def estimate_pitch(x, low: float = 150.0, high: float = 700.0) -> np.ndarray:
    """The frequency (Hz) of the largest spectral peak in ``[low, high]`` per clip, refined by parabolic
    interpolation of the log magnitude (Smith 2011, "Spectral Audio Signal Processing", Sec. on quadratic
    interpolation). The band holds every note's fundamental and no second harmonic of the lowest. ``(B,)``."""
    freqs, mag = spectrum(x)
    band = np.flatnonzero((freqs >= low) & (freqs <= high))
    i = band[np.argmax(mag[:, band], axis=1)]                                 # (B,)
    lm = np.log(mag + 1e-12)
    rows = np.arange(mag.shape[0])
    a, b, c = lm[rows, i - 1], lm[rows, i], lm[rows, i + 1]
    denom = a - 2 * b + c
    offset = np.where(np.abs(denom) > 1e-12, 0.5 * (a - c) / np.where(denom == 0, 1, denom), 0.0)
    return freqs[i] + offset * (freqs[1] - freqs[0])


def nearest_note(freq) -> np.ndarray:
    """The index of the note of :data:`NOTES` nearest in log frequency (cents) to each ``freq``. ``(B,)`` int64."""
    f = np.asarray(freq, dtype=np.float64).reshape(-1)
    if not np.all(f > 0):
        raise ValueError("freq must be positive")
    return np.abs(np.log2(f[:, None] / np.asarray(NOTES)[None, :])).argmin(axis=1)


def spectrogram(x, window: int = 64, hop: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(times (S,), freqs (F,), magnitude in dB (S, F))`` of one clip: Hann windows of ``window`` samples every
    ``hop`` samples."""
    a = _as_batch(x)[0]
    window, hop = _c.check_count(window, "window", 4, a.size), _c.check_count(hop, "hop")
    starts = np.arange(0, a.size - window + 1, hop)
    frames = np.stack([a[s:s + window] * np.hanning(window) for s in starts])
    mag = np.abs(np.fft.rfft(frames, axis=1))
    return (starts + window / 2) / SAMPLE_RATE, np.fft.rfftfreq(window, 1.0 / SAMPLE_RATE), 20 * np.log10(mag + 1e-6)


# ============================================================================ the model
def sound_model_config():
    """The shipped sound denoiser's :class:`minidiff.unet1d.UNet1DConfig`: a 1-D U-Net on frames of 8 samples
    (64 frames a clip; levels of 64, 32 and 16 frames), base 32 channels, kernel 5, the 8 notes as labels with
    the source channels at each note's frequency (``NOTES / SAMPLE_RATE`` cycles per sample)."""
    from .unet1d import UNet1DConfig

    return UNet1DConfig(length=N_SAMPLES, in_channels=1, base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1,
                        kernel_size=5, patch_size=8, num_classes=len(NOTES),
                        label_sines=tuple(f / SAMPLE_RATE for f in NOTES))


def train_sound_model(steps: int, *, seed: int = 0, n_clips: int = 4000, batch_size: int = 64, lr: float = 2e-3,
                      warmup: int = 100, progress: bool = False, config=None):
    """Train the pitch-conditioned sound denoiser on :func:`make_dataset` ``(n_clips, seed)`` with
    :func:`minidiff.train.train_steps` (DDPM loss, Ho et al. 2020, eq. 14; EMA; label dropout 0.1 for guidance),
    linear schedule ``T = 1000``. ``config``: the network (default :func:`sound_model_config`). Returns an
    iterator of ``(state, record)``, one per step (``state.ema`` is the model to sample), so a caller can plot or snapshot."""
    from .train import ScheduleSpec, TrainState, train_steps
    from .unet import build_model

    steps = _c.check_count(steps, "steps")          # checked here, before the first step is asked for
    x, notes, _ = make_dataset(n_clips, seed)
    torch.manual_seed(seed)
    state = TrainState.create(build_model(config or sound_model_config()), lr=lr)
    records = train_steps(state, x[:, None], ScheduleSpec().build(), steps=steps, batch_size=batch_size, lr=lr,
                          seed=seed, labels=notes, warmup=warmup, lr_min_frac=0.05, progress=progress)
    return ((state, rec) for rec in records)


def load_sound_model(path=None):
    """The shipped sound model ``(model, schedule)`` (``minidiff/weights/sound.safetensors``)."""
    from .train import WEIGHTS_DIR, load_weights

    model, schedule, _ = load_weights(path or (WEIGHTS_DIR / "sound.safetensors"))
    return model, schedule


def sample_sounds(model, schedule, notes, *, n_steps: int = 50, guidance_scale: float | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Clips for the requested note indices ``notes`` ``(B,)``: DDIM (``eta = 0``, ``x0`` clipped to ``[-1, 1]``) from ``N(0, I)`` with
    classifier-free guidance ``guidance_scale`` (Ho & Salimans 2022, eq. 6). ``(B, 512)``."""
    from . import samplers
    from .unet import as_eps_model

    notes = torch.as_tensor(notes, dtype=torch.int64).reshape(-1)
    x_T = torch.randn((notes.numel(), 1, N_SAMPLES), generator=generator)                   # (B, 1, 512)
    eps_fn = as_eps_model(model, schedule, y=notes, guidance_scale=guidance_scale)
    return samplers.final(samplers.ddim(eps_fn, x_T, schedule, n_steps, clip_x0=1.0, backend="torch"))[:, 0]


def pitch_hits(clips, notes) -> np.ndarray:
    """Per clip, whether its spectral pitch (:func:`estimate_pitch`) snaps to the requested note index ``notes``.
    ``(B,)`` bool."""
    notes = np.asarray(notes).reshape(-1)
    est = nearest_note(estimate_pitch(clips))
    if est.shape != notes.shape:
        raise ValueError(f"notes must hold one note index per clip ({est.size}), got {notes.size}")
    return est == notes


def pitch_accuracy(clips, notes) -> float:
    """Fraction of ``clips`` whose spectral pitch snaps to the requested note index (:func:`pitch_hits`)."""
    return float(np.mean(pitch_hits(clips, notes)))


# ============================================================================ CLI
def main(argv=None) -> int:
    from pathlib import Path

    from .train import ScheduleSpec, save_weights

    p = argparse.ArgumentParser(prog="python -m minidiff.audio", description="Train the pitch-conditioned sound model.")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--snapshot-every", type=int, default=0, help="also save EMA snapshots OUT_STEM_<step>.safetensors every N steps")
    t.add_argument("--out", required=True)
    a = p.parse_args(argv)
    torch.set_num_threads(_c.check_count(a.threads, "threads"))
    every = _c.check_count(a.snapshot_every, "snapshot_every", low=0)
    t0, losses = time.perf_counter(), []
    for state, rec in train_sound_model(a.steps, seed=a.seed):
        losses.append(rec.loss)
        if rec.step % 50 == 0:
            print(f"step {rec.step} loss {np.mean(losses[-50:]):.4f} {time.perf_counter() - t0:.0f} s", flush=True)
        if every and rec.step % every == 0 and rec.step < a.steps:
            save_weights(Path(a.out).with_name(f"{Path(a.out).stem}_{rec.step}.safetensors"), state.ema, ScheduleSpec(), preset="sound", steps=rec.step,
                         seed=a.seed)
    wall = time.perf_counter() - t0
    save_weights(a.out, state.ema, ScheduleSpec(), preset="sound", steps=a.steps, seed=a.seed)
    print(f"trained {a.steps} steps in {wall:.1f} s ({a.steps / wall:.2f} steps/s); "
          f"final loss (mean of last 100) {np.mean(losses[-100:]):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
