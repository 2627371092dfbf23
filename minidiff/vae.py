"""A small KL-regularised autoencoder for latent diffusion (Rombach et al. 2022, Sec. 3.1 and App. G).

The encoder maps a ``32 x 32`` glyph to the mean and log-variance of a diagonal Gaussian over a latent
``z`` of shape ``(latent_channels, 8, 8)``; the decoder maps ``z`` back to pixels. Training minimises

    L = ||x - D(z)||^2 / n_pixels + kl_weight * KL(N(mu, diag(exp(logvar))) || N(0, I)) / n_pixels,
    z = mu + exp(logvar / 2) * eps                                  (Kingma & Welling 2014, eq. 10)

with ``KL = 1/2 sum(mu^2 + exp(logvar) - 1 - logvar)`` (Kingma & Welling 2014, App. B). The KL term is
small (Rombach et al. use a weight of about 1e-6 beside a perceptual loss; here plain MSE and 1e-3): it
only keeps the latent space from drifting to arbitrary scales, so the latents' spread is whatever the
encoder learns -- hence the **latent scaling factor**.

Latent scaling factor (Rombach et al. 2022, Sec. 4.3.2, App. D.1 and G): a diffusion schedule assumes data of
about unit variance -- at ``alpha_bar = 0.5`` half the variance is signal. Latents with standard
deviation ``s`` see a schedule whose signal-to-noise ratio is ``s^2`` times the intended one everywhere,
so the noise levels the network is trained and sampled at are not the ones the schedule names.
:func:`latent_scale` measures ``1 / std`` of the training latents and :class:`LatentCodec` multiplies by
it after encoding and divides before decoding, so the diffusion model sees unit-variance data.

Nothing else is special: a diffusion model on latents is a :mod:`minidiff.unet` / :mod:`minidiff.dit`
network with ``in_channels = latent_channels`` and ``image_size = 8``, trained by
:func:`minidiff.train.train_steps` and sampled by :mod:`minidiff.samplers`; :meth:`LatentCodec.decode`
turns its samples into images.

CLI (one recorded command per shipped file, see ``minidiff/weights/glyph_vae.json``)::

    python -m minidiff.vae train-vae --steps 800 --batch-size 64 --seed 0 --threads 1 --out glyph_vae.safetensors
    python -m minidiff.vae train-latent --vae glyph_vae.safetensors --model unet --steps 600 --batch-size 32 \
        --threads 1 --snapshots runs/latent_unet --save-ema-every 100 --out latent.safetensors
    python -m minidiff.vae train-pixel --size 16 --steps 200 --batch-size 32 --threads 1 --out pixel.safetensors

The latent denoisers predict ``v`` (Salimans & Ho 2022; why: :func:`_latent_model_config`); the pixel-space
baseline (``train-pixel``) is the same U-Net design on 16x16 glyphs.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks as _c

__all__ = ["VAEConfig", "AutoencoderKL", "kl_divergence", "vae_loss", "train_vae", "latent_scale",
           "LatentCodec", "save_vae", "load_vae", "pca_basis", "pca_reconstruction_error", "reconstruction_error",
           "encode_dataset", "x0_error_by_t_index", "VAE_PATH", "LATENT_UNET_PATH", "LATENT_DIT_PATH", "PIXEL_UNET_PATH", "load_codec", "main"]

_WEIGHTS = Path(__file__).resolve().parent / "weights"
VAE_PATH = _WEIGHTS / "glyph_vae.safetensors"
LATENT_UNET_PATH = _WEIGHTS / "glyph_latent_unet.safetensors"
LATENT_DIT_PATH = _WEIGHTS / "glyph_latent_dit.safetensors"
PIXEL_UNET_PATH = _WEIGHTS / "glyph_pixel_unet.safetensors"


@dataclass(frozen=True)
class VAEConfig:
    """The autoencoder's shape: each entry of ``channels`` is one stride-2 level of that width, so the
    latent side is ``image_size / 2^len(channels)`` (32 -> 8 by default) with ``latent_channels``
    channels; ``kl_weight`` weighs the KL term of :func:`vae_loss`."""

    image_size: int = 32
    in_channels: int = 1
    latent_channels: int = 4
    channels: tuple[int, ...] = (32, 64)
    kl_weight: float = 1e-3

    def __post_init__(self):
        for name in ("image_size", "in_channels", "latent_channels"):
            _c.check_count(getattr(self, name), f"VAEConfig.{name}")
        if not isinstance(self.channels, (tuple, list)) or not self.channels:
            raise ValueError(f"VAEConfig.channels must be a non-empty tuple of integers >= 1, got {self.channels!r}")
        object.__setattr__(self, "channels", tuple(_c.check_count(v, "VAEConfig.channels entries", low=2)
                                                   for v in self.channels))
        if self.image_size % (2 ** len(self.channels)):
            raise ValueError(f"VAEConfig.image_size {self.image_size} must be divisible by 2^len(channels)")
        if not _c.check_real(self.kl_weight, "VAEConfig.kl_weight") >= 0:
            raise ValueError(f"VAEConfig.kl_weight must be >= 0, got {self.kl_weight}")

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** len(self.channels)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.latent_channels, self.latent_size, self.latent_size)

    @property
    def latent_dim(self) -> int:
        return self.latent_channels * self.latent_size ** 2


class AutoencoderKL(nn.Module):
    """A convolutional VAE kept cheap enough to train on two CPU cores. Encoder: per entry ``w`` of
    ``channels`` a 4x4 stride-2 convolution to width ``w`` and a 3x3 convolution, then a 3x3 convolution
    to ``2 * latent_channels`` (mean, log-variance). Decoder: the mirror image with 4x4 stride-2
    transposed convolutions; SiLU between layers. ``(B, 1, 32, 32)`` <-> ``(B, 4, 8, 8)`` by default."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        if not isinstance(config, VAEConfig):
            raise TypeError(f"config must be a VAEConfig, got {type(config).__name__}")
        self.config = c = config
        ch = c.channels
        enc, prev = [], c.in_channels
        for w in ch:
            enc += [nn.Conv2d(prev, w, 4, stride=2, padding=1), nn.SiLU(), nn.Conv2d(w, w, 3, padding=1), nn.SiLU()]
            prev = w
        enc += [nn.Conv2d(prev, 2 * c.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec, prev = [nn.Conv2d(c.latent_channels, ch[-1], 3, padding=1), nn.SiLU()], ch[-1]
        for w in reversed(ch):
            dec += [nn.Conv2d(prev, prev, 3, padding=1), nn.SiLU(), nn.ConvTranspose2d(prev, w // 2, 4, stride=2, padding=1),
                    nn.SiLU()]
            prev = w // 2
        dec += [nn.Conv2d(prev, c.in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, logvar)``, each ``(B, latent_channels, 8, 8)``; logvar clamped to ``[-30, 20]`` as in
        Rombach et al.'s ``DiagonalGaussianDistribution``."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x, noise=None):
        """``(reconstruction, mean, logvar)`` with ``z = mean + exp(logvar/2) * noise`` (reparameterisation,
        Kingma & Welling 2014, eq. 10); ``noise=None`` decodes the mean."""
        mean, logvar = self.encode(x)
        z = mean if noise is None else mean + torch.exp(0.5 * logvar) * noise
        return self.decode(z), mean, logvar


def kl_divergence(mean, logvar) -> torch.Tensor:
    """``KL(N(mean, exp(logvar)) || N(0, I))`` per sample, summed over latent dims (Kingma & Welling 2014, App. B)."""
    return 0.5 * (mean ** 2 + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def vae_loss(model: AutoencoderKL, x, noise) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, mse, kl)``: the objective in the module docstring, averaged over the batch; ``mse`` per
    pixel, ``kl`` per image."""
    recon, mean, logvar = model(x, noise)
    n_pix = x[0].numel()
    mse = ((recon - x) ** 2).flatten(1).sum(1) / n_pix
    kl = kl_divergence(mean, logvar)
    return (mse + model.config.kl_weight * kl / n_pix).mean(), mse.mean(), kl.mean()


def train_vae(config: VAEConfig, data: torch.Tensor, *, steps: int = 3000, batch_size: int = 128, lr: float = 2e-3,
              seed: int = 0, warmup: int = 100, progress: bool = False):
    """Train an :class:`AutoencoderKL` on ``data (N, 1, 32, 32)``; AdamW with the course's warmup + cosine
    learning rate (:func:`minidiff.train.lr_at`) and per-step generators (:func:`minidiff.train.step_generator`).
    Returns ``(model in eval mode, history)``, ``history`` a list of ``(step, loss, mse, kl)``."""
    from tqdm.auto import tqdm

    from .train import lr_at, step_generator

    steps = _c.check_count(steps, "steps")
    batch_size = _c.check_count(batch_size, "batch_size")
    if not isinstance(data, torch.Tensor) or tuple(data.shape[1:]) != (config.in_channels, config.image_size, config.image_size):
        raise ValueError(f"data must be a tensor (N, {config.in_channels}, {config.image_size}, {config.image_size})")
    torch.manual_seed(seed)
    model = AutoencoderKL(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    history = []
    for s in tqdm(range(steps), disable=not progress, desc="vae"):
        g = step_generator(seed, s)
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=g)
        noise = torch.randn((batch_size, *config.latent_shape), generator=g)
        for grp in opt.param_groups:
            grp["lr"] = lr_at(s, lr, warmup, steps, 0.05)
        loss, mse, kl = vae_loss(model, data[idx], noise)
        if not bool(torch.isfinite(loss.detach())):
            raise _c.NonFiniteError(f"VAE training diverged at step {s + 1} (loss {float(loss)})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history.append((s + 1, float(loss.detach()), float(mse.detach()), float(kl.detach())))
    return model.eval().requires_grad_(False), history


@torch.no_grad()
def encode_dataset(vae: AutoencoderKL, x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """Posterior means ``(N, C, 8, 8)`` of ``x`` (deterministic; the latent diffusion model's data)."""
    return torch.cat([vae.encode(x[i:i + batch])[0] for i in range(0, x.shape[0], batch)])


def latent_scale(latents: torch.Tensor) -> float:
    """The latent scaling factor ``1 / std(latents)`` over every entry (Rombach et al. 2022, App. G: "we
    rescale the latents by the component-wise standard deviation"; one scalar here)."""
    std = float(latents.double().std())
    if not std > 0:
        raise ValueError(f"latents must have a positive standard deviation, got {std}")
    return 1.0 / std


@dataclass(frozen=True, eq=False)
class LatentCodec:
    """A frozen autoencoder and its scaling factor: :meth:`encode` images to unit-variance latents,
    :meth:`decode` latents back to images in ``[-1, 1]`` (clamped)."""

    vae: AutoencoderKL
    scale: float

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.vae.config.latent_shape

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return encode_dataset(self.vae, x) * self.scale

    @torch.no_grad()
    def decode(self, z: torch.Tensor, batch: int = 1024) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(f"z must be a tensor (N, {', '.join(map(str, self.latent_shape))}), got "
                             f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
        return torch.cat([self.vae.decode(z[i:i + batch] / self.scale) for i in range(0, z.shape[0], batch)]).clamp(-1, 1)


# ---------------------------------------------------------------------------- baselines
def reconstruction_error(vae: AutoencoderKL, x: torch.Tensor) -> float:
    """Mean squared error per pixel of decoding the posterior mean of ``x``."""
    with torch.no_grad():
        return float(((vae.decode(encode_dataset(vae, x)) - x) ** 2).mean())


def pca_basis(train: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean (D,), components (D, k))`` of PCA fitted on ``train (N, ...)`` in float64: the top ``k``
    right singular vectors of the centred data, the best rank-``k`` linear code (Eckart & Young 1936).
    Encode ``(x - mean) @ components``, decode ``code @ components.T + mean``."""
    k = _c.check_count(k, "k", high=min(train[0].numel(), train.shape[0]))
    a = train.reshape(train.shape[0], -1).double()
    mu = a.mean(0)
    _, _, vt = torch.linalg.svd(a - mu, full_matrices=False)
    return mu, vt[:k].T                                           # (D,), (D, k)


def pca_reconstruction_error(train: torch.Tensor, test: torch.Tensor, k: int) -> float:
    """Mean squared error per pixel of the best rank-``k`` linear code (:func:`pca_basis` fitted on
    ``train``): ``test`` projected on the top ``k`` principal directions and back."""
    mu, v = pca_basis(train, k)
    b = test.reshape(test.shape[0], -1).double() - mu
    return float(((b @ v @ v.T - b) ** 2).mean())


@torch.no_grad()
def x0_error_by_t_index(model, schedule, z: torch.Tensor, t_indices, *, generator: torch.Generator) -> dict:
    """Mean squared error per entry of a denoiser's x0 estimate on clean data ``z (N, ...)`` noised to each
    ``t_index`` (``x_t = sqrt(ab) z + sqrt(1 - ab) eps``, Ho et al. 2020, eq. 4), with the estimate
    ``x0_hat`` converted from whatever the model predicts (:func:`minidiff.unet.as_eps_model`, then
    ``x0 = (x_t - sqrt(1 - ab) eps_hat) / sqrt(ab)``). Returns ``{t_index: mse}`` plus ``"mean"``: the
    error of always answering the data mean ``z.mean(0)`` -- a model whose x0 estimate is worse than that
    at high noise sends DDIM off the data (the first latent U-Net did, see :func:`_latent_model_config`)."""
    from . import forward
    from .unet import as_eps_model

    eps_fn = as_eps_model(model, schedule)
    out = {}
    for t_index in t_indices:
        t_index = _c.check_index(t_index, "t_index", schedule.T)
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype)
        x_t = forward.q_sample(z, torch.full((z.shape[0],), t_index), noise, schedule, backend="torch")
        alpha_bar = schedule.at("alpha_bar", torch.full((z.shape[0],), t_index).numpy(), z)
        out[t_index] = float(((forward.eps_to_x0(x_t, eps_fn(x_t, t_index), alpha_bar) - z) ** 2).mean())
    out["mean"] = float(((z - z.mean(0)) ** 2).mean())
    return out


# ---------------------------------------------------------------------------- files
def _config_dict(c: VAEConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(c).items()}


def save_vae(path, vae: AutoencoderKL, scale: float, **info) -> None:
    """safetensors + JSON metadata (kind ``"vae"``, config, scaling factor, ``info``)."""
    from . import checkpoint as ckpt

    tensors = {f"vae.{k}": v for k, v in vae.state_dict().items()}
    ckpt.check_finite_weights(tensors, f"VAE {path}")
    ckpt.save(path, tensors, {"kind": "vae", "config": _config_dict(vae.config), "scale": float(scale), "info": info})


def load_vae(path=None) -> tuple[AutoencoderKL, float, dict]:
    """``(vae in eval mode, scaling factor, metadata)``; ``path=None``: the shipped glyph VAE."""
    from . import checkpoint as ckpt

    path = VAE_PATH if path is None else Path(path)
    tensors, meta = ckpt.load(path)
    if meta.get("kind") != "vae":
        raise ValueError(f"{path} is a minidiff {meta.get('kind')!r} file, not a VAE")
    config = VAEConfig(**_c.fields_from_dict(VAEConfig, meta.get("config"), f"{path}: config", skip=("channels",)))
    scale = _c.check_positive(meta.get("scale"), f"{path}: scale")
    vae = AutoencoderKL(config)
    ckpt.load_state_into(vae, ckpt.subset(tensors, "vae"), f"VAE {path}")
    return vae.eval().requires_grad_(False), scale, meta


def load_codec(path=None) -> LatentCodec:
    """The :class:`LatentCodec` of a saved VAE (the shipped one by default)."""
    vae, scale, _ = load_vae(path)
    return LatentCodec(vae, scale)


# ---------------------------------------------------------------------------- CLI
def _latent_model_config(kind: str, latent_shape):
    """The shipped latent denoisers, matched in parameters (about 0.7 M each), both **v-prediction**
    (Salimans & Ho 2022, Sec. 4: ``v = sqrt(ab) eps - sqrt(1 - ab) x0``).

    Why not eps: the x0 estimate of an eps-model is ``(x_t - sqrt(1 - ab) eps_hat) / sqrt(ab)``, so an eps
    error ``delta`` costs ``delta * sqrt((1 - ab) / ab)`` in x0 -- a factor 157 at ``t_index`` 999 of the
    linear schedule. The first eps-trained latent U-Net (600 steps) had an eps error floor of about 6e-3
    per entry at ``t_index >= 700`` (the DiT 7e-4): its x0 estimate there was worse than the data mean and
    DDIM drifted to latents of std 2.7 instead of 1. With v the x0 estimate is
    ``sqrt(ab) x_t - sqrt(1 - ab) v_hat``: the error is not amplified at high noise."""
    from .dit import DiTConfig
    from .unet import UNetConfig

    c, s, _ = latent_shape
    if kind == "unet":
        return UNetConfig(image_size=s, in_channels=c, base_channels=32, channel_mults=(1, 2), num_res_blocks=1,
                          prediction="v")
    if kind == "dit":
        return DiTConfig(image_size=s, in_channels=c, patch_size=2, hidden=96, depth=4, heads=4, prediction="v")
    raise ValueError(f"model must be 'unet' or 'dit', got {kind!r}")


def _pixel_model_config(size: int):
    """The pixel-space baseline: the latent U-Net's design on ``(1, size, size)`` glyphs (same widths, so
    about the same parameters; ``(size / 8)^2`` times its FLOPs), v-prediction."""
    from .unet import UNetConfig

    return UNetConfig(image_size=size, in_channels=1, base_channels=32, channel_mults=(1, 2), num_res_blocks=1,
                      prediction="v")


def _train_denoiser(cfg, data, args, **info):
    """Train ``cfg`` on ``data`` with the course's loop (DDPM objective, linear schedule T = 1000, warm-up
    100, cosine decay), saving EMA snapshots ``ema_<step>.safetensors`` (with their training time) every
    ``args.save_ema_every`` steps into ``args.snapshots``, then the EMA weights to ``args.out``."""
    import json
    import time

    from . import train as T
    from .unet import build_model, count_parameters

    torch.manual_seed(args.seed)
    state = T.TrainState.create(build_model(cfg), lr=args.lr)
    spec = T.ScheduleSpec("linear", 1000)
    snap = Path(args.snapshots) if args.snapshots else None
    if snap is not None:
        snap.mkdir(parents=True, exist_ok=True)
    losses, t0 = [], time.perf_counter()
    for r in T.train_steps(state, data, spec.build(), steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                           seed=args.seed, warmup=100, lr_min_frac=0.05, progress=True):
        losses.append(r.loss)
        if snap is not None and args.save_ema_every and r.step % args.save_ema_every == 0:
            T.save_weights(snap / f"ema_{r.step:06d}.safetensors", state.ema, spec, steps=r.step,
                           time_s=round(time.perf_counter() - t0, 1))
    secs = time.perf_counter() - t0
    tail = losses[-200:]
    info = dict(seed=args.seed, steps=args.steps, batch_size=args.batch_size, **info, train_wall_s=round(secs, 1),
                steps_per_s=round(args.steps / secs, 3), final_loss=sum(tail) / len(tail),
                parameters=count_parameters(state.ema),
                loss_curve=[round(sum(losses[i:i + 100]) / len(losses[i:i + 100]), 5) for i in range(0, len(losses), 100)])
    T.save_weights(args.out, state.ema, spec, **info)
    print(json.dumps({k: v for k, v in info.items() if k != "loss_curve"}))
    return 0


def main(argv=None) -> int:
    """``python -m minidiff.vae train-vae ...`` / ``train-latent ...`` / ``train-pixel ...`` (see the
    module docstring)."""
    import argparse
    import json
    import time

    from .glyphs import load_glyphs
    from .unet import count_parameters

    p = argparse.ArgumentParser(prog="python -m minidiff.vae")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("train-vae")
    a.add_argument("--steps", type=int, default=3000)
    a.add_argument("--batch-size", type=int, default=128)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", default="glyph_vae.safetensors")
    b = sub.add_parser("train-latent")
    b.add_argument("--vae", default=str(VAE_PATH))
    b.add_argument("--model", choices=("unet", "dit"), default="unet")
    c = sub.add_parser("train-pixel")
    c.add_argument("--size", type=int, choices=(16, 32), default=16)
    for q in (b, c):
        q.add_argument("--steps", type=int, default=4000)
        q.add_argument("--batch-size", type=int, default=128)
        q.add_argument("--lr", type=float, default=2e-3)
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--out", default="glyph_denoiser.safetensors")
        q.add_argument("--snapshots", default=None, help="folder for EMA snapshots (outside git)")
        q.add_argument("--save-ema-every", type=int, default=0, help="snapshot every N steps (0: none)")
    for q in (a, b, c):
        q.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    if args.cmd == "train-pixel":
        return _train_denoiser(_pixel_model_config(args.size), load_glyphs("train", args.size)[0], args,
                               network="unet", space=f"pixels {args.size}x{args.size}")
    x, _ = load_glyphs("train", 32)
    if args.cmd == "train-latent":
        codec = load_codec(args.vae)
        return _train_denoiser(_latent_model_config(args.model, codec.latent_shape), codec.encode(x), args,
                               network=args.model, vae=Path(args.vae).name, latent_scale=codec.scale)
    t0 = time.perf_counter()
    vae, hist = train_vae(VAEConfig(), x, steps=args.steps, batch_size=args.batch_size, seed=args.seed, progress=True)
    secs = time.perf_counter() - t0
    scale = latent_scale(encode_dataset(vae, x))
    test = load_glyphs("test", 32)[0]
    rec = reconstruction_error(vae, test)
    pca = pca_reconstruction_error(x, test, vae.config.latent_dim)
    info = dict(seed=args.seed, steps=args.steps, train_wall_s=round(secs, 1), test_mse=rec, pca_test_mse=pca,
                final_loss=hist[-1][1], parameters=count_parameters(vae))
    save_vae(args.out, vae, scale, **info)
    print(json.dumps({"scale": scale, **info}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
