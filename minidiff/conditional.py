"""Conditional generation with diffusion models: super-resolution, inverse problems, image-to-image.

* **Measurement.** A low-resolution image is ``y = A x_0`` with ``A`` = average pooling by ``factor``
  (:func:`downsample`). Its nearest-neighbour lift :func:`upsample_nearest` satisfies ``A lift(y) = y``,
  so ``P = lift o A`` (:func:`lowpass`) is the orthogonal projector onto the images that are constant on
  each ``factor x factor`` block: ILVR's low-pass filter ``phi_N`` (Choi et al. 2021, eq. 3).
* **SR3** (Saharia et al. 2022, Sec. 2): a denoiser trained on ``p(x_0 | y)`` that sees the upsampled
  low-resolution image concatenated to ``x_t`` as extra input channels. Here the network is a plain
  :class:`minidiff.unet.UNet` with ``in_channels = 2`` (channel 0: ``x_t``, channel 1: ``lift(y)``); only its
  output channel 0 is trained, as ``eps`` (:class:`SR3Objective`, registered as ``"sr3"`` in
  :data:`minidiff.train.OBJECTIVES`; preset ``sr_digits``).
* **ILVR** (Choi et al. 2021, Alg. 1): training-free, with an unconditional model; after each reverse step
  the low-pass part of the state is replaced by that of the noised reference,
  ``x_{t-1} <- phi(y_{t-1}) + (I - phi) x'_{t-1}`` with ``y_{t-1} ~ q(y_{t-1} | lift(y))``.
* **Exact check.** For a Gaussian-mixture prior and a linear measurement ``y = A x_0 + n``,
  ``n ~ N(0, s^2 I)``, the posterior is again a Gaussian mixture (:func:`measurement_posterior`).
* **SDEdit** (Meng et al. 2022, Sec. 3): noise a guide image to an intermediate ``t_index`` and denoise.
* **DDIM inversion** (Song et al. 2021b, Sec. 4.3; reconstruction against the steps, Sec. 5.4): run the deterministic
  DDIM update towards higher noise to encode a real image as ``x_T``; decoding with DDIM returns it.

Tensors are images ``(B, C, H, W)`` in ``[-1, 1]``; ``t_index`` is an integer in ``0 .. T-1``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from . import _checks as _c
from . import backend as _backend
from . import forward
from .schedule import Schedule

__all__ = [
    "downsample", "upsample_nearest", "upsample_bicubic", "lowpass", "psnr", "consistency_error",
    "SR3Objective", "sr3_eps_model", "super_resolve", "ilvr", "measurement_posterior", "measurement_matrix",
    "sdedit", "partial_timesteps", "ddim_from", "ddim_invert", "load_sr_model",
]


# ============================================================================ the measurement
def _check_images(x, name: str) -> torch.Tensor:
    forward.check_batch(x, name)
    if x.ndim != 4:
        raise ValueError(f"{name} must be images (B, C, H, W), got shape {tuple(x.shape)}")
    return x


def _check_factor(factor, x=None) -> int:
    factor = _c.check_count(factor, "factor")
    if x is not None and (x.shape[-1] % factor or x.shape[-2] % factor):
        raise ValueError(f"factor {factor} must divide the image size {tuple(x.shape[-2:])}")
    return factor


def downsample(x, factor: int = 2) -> torch.Tensor:
    """The measurement ``A x``: mean over each ``factor x factor`` block, ``(B, C, H, W) -> (B, C, H/f, W/f)``."""
    x = _check_images(x, "x")
    return F.avg_pool2d(x, _check_factor(factor, x))


def upsample_nearest(y, factor: int = 2) -> torch.Tensor:
    """The lift ``A^+ y`` (``f^2 A^T y``): each pixel repeated over a ``factor x factor`` block, so
    ``downsample(upsample_nearest(y)) == y`` exactly."""
    y = _check_images(y, "y")
    return F.interpolate(y, scale_factor=_check_factor(factor), mode="nearest")


def upsample_bicubic(y, factor: int = 2) -> torch.Tensor:
    """Bicubic interpolation (Keys 1981, ``a = -0.75`` as in torch), the classical baseline."""
    y = _check_images(y, "y")
    return F.interpolate(y, scale_factor=_check_factor(factor), mode="bicubic", align_corners=False)


def lowpass(x, factor: int = 2) -> torch.Tensor:
    """ILVR's filter ``phi_N(x) = lift(A x)`` (Choi et al. 2021, eq. 3): the orthogonal projection of
    ``x`` onto images constant on ``factor x factor`` blocks (idempotent, symmetric)."""
    return upsample_nearest(downsample(x, factor), factor)


def psnr(x, reference, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, ``10 log10(range^2 / MSE)`` in dB, ``(B,)``; ``data_range = 2``
    for images in ``[-1, 1]``."""
    x, reference = _check_images(x, "x"), _check_images(reference, "reference")
    if x.shape != reference.shape:
        raise ValueError(f"x and reference must have the same shape, got {tuple(x.shape)} and "
                         f"{tuple(reference.shape)}")
    mse = ((x - reference) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return 10.0 * torch.log10(_c.check_positive(data_range, "data_range") ** 2 / mse)


def consistency_error(x, y, factor: int = 2) -> torch.Tensor:
    """Root-mean-square of ``A x - y`` per image, ``(B,)``: how far the output is from explaining the input
    (SR3's consistency check: 0 means downsampling the output returns the low-res input exactly)."""
    y = _check_images(y, "y")
    return ((downsample(x, factor) - y) ** 2).flatten(1).mean(1).sqrt()


# ============================================================================ SR3
@dataclass(frozen=True)
class SR3Objective:
    """SR3's training objective (Saharia et al. 2022, eq. 2 with the eps-parameterisation): the DDPM loss
    on ``x_0``, with the network fed ``[x_t, lift(A x_0)]`` as two input channels and regressed on ``eps``
    through its output channel 0. ``factor``: the downsampling factor (2: 8x8 digits from 4x4)."""

    name: str = "sr3"
    factor: int = 2

    def draw(self, g: torch.Generator, batch_size: int, shape: tuple[int, ...], schedule: Schedule):
        t_index = torch.randint(0, schedule.T, (batch_size,), generator=g)        # (B,)
        noise = torch.randn((batch_size,) + tuple(shape), generator=g)           # (B, 1, H, W)
        return t_index, noise

    def loss(self, net, x0, time, noise, y, schedule: Schedule) -> torch.Tensor:
        noise = noise.to(dtype=x0.dtype)
        x_t = forward.q_sample(x0, time, noise, schedule, backend="torch")        # (B, 1, H, W)
        cond = lowpass(x0, self.factor)                                           # (B, 1, H, W)
        pred = net(torch.cat([x_t, cond], 1), time, y)[:, : x0.shape[1]]          # eps estimate
        return torch.mean((pred - noise) ** 2)


def sr3_eps_model(model, schedule: Schedule, y_low, factor: int = 2):
    """``eps_fn(x, t_index)`` for the samplers from an SR3 network and the low-res input ``y_low``
    ``(B, C, H/f, W/f)``: ``model([x, lift(y_low)], t_index)[:, :C]``. The batch of ``x`` must equal
    ``y_low``'s (one low-res input per sample)."""
    y_low = _check_images(y_low, "y_low")
    cond = upsample_nearest(y_low, factor)  # (B, C, H, W)
    if getattr(model.config, "in_channels", None) != 2 * cond.shape[1]:
        raise ValueError(f"model must take {2 * cond.shape[1]} input channels (x_t and the lifted low-res "
                         f"image), got in_channels={getattr(model.config, 'in_channels', None)}")
    if getattr(model.config, "prediction", "eps") != "eps":
        raise ValueError("sr3_eps_model expects an eps-prediction network")

    def eps_fn(x, t_index):
        if x.shape != cond.shape:
            raise ValueError(f"x must match the lifted low-res batch {tuple(cond.shape)}, got {tuple(x.shape)}")
        with torch.no_grad():
            return model(torch.cat([x, cond.to(x.dtype)], 1), t_index)[:, : x.shape[1]]

    return eps_fn


def super_resolve(model, schedule: Schedule, y_low, *, n_steps: int = 50, eta: float = 1.0, factor: int = 2,
                  generator: torch.Generator | None = None) -> Iterator:
    """SR3 sampling (Saharia et al. 2022, Alg. 2 on the DDIM grid of Song et al. 2021b): ``x_T ~ N(0, I)``
    shaped like ``lift(y_low)``, then :func:`minidiff.samplers.ddim` on :func:`sr3_eps_model`. ``eta = 1``
    keeps the sampler stochastic (samples from ``p(x_0 | y)``). Yields the sampler's Steps."""
    from . import samplers

    eps_fn = sr3_eps_model(model, schedule, y_low, factor)
    shape = (y_low.shape[0], y_low.shape[1], y_low.shape[2] * factor, y_low.shape[3] * factor)
    x_T = torch.randn(shape, generator=generator, dtype=y_low.dtype)
    return samplers.ddim(eps_fn, x_T, schedule, n_steps, eta=eta, generator=generator, backend="torch")


def load_sr_model():
    """The shipped SR3 digits model ``(model, schedule)`` (``minidiff/weights/sr_digits.*``): 4x4 -> 8x8."""
    from .train import WEIGHTS_DIR, load_weights

    model, schedule, _ = load_weights(WEIGHTS_DIR / "sr_digits.safetensors")
    return model, schedule


# ============================================================================ ILVR (training-free)
def _t_vector(t_index: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), int(t_index), dtype=torch.int64, device=x.device)  # (B,)


def _randn_like(x, generator):
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


def ilvr(eps_fn, schedule: Schedule, y_low, *, n_steps: int = 100, eta: float = 1.0, factor: int = 2,
         x_T=None, generator: torch.Generator | None = None) -> Iterator:
    """Iterative latent variable refinement (Choi et al. 2021, Alg. 1) on the DDIM grid
    ``schedule.timesteps(n_steps)`` (``eta = 1``: ancestral, as the paper's DDPM steps):

    1. ``x'_{t-1}`` = one unconditional reverse step from ``x_t`` (``eps_fn`` of an unconditional model);
    2. ``y_{t-1} ~ q(y_{t-1} | lift(y_low))`` (the reference noised to the same level, eq. 4; no noise at
       the last step);
    3. ``x_{t-1} = phi(y_{t-1}) + x'_{t-1} - phi(x'_{t-1})`` with ``phi`` = :func:`lowpass` (Alg. 1, line 5).

    The last step sets ``phi(x_0) = lift(y_low)``, so ``downsample(x_0) == y_low`` up to rounding.
    ``x_T``: the start (default ``N(0, I)`` from ``generator``). Yields :class:`minidiff.samplers.Step`."""
    from .samplers import Step

    y_low = _check_images(y_low, "y_low")
    factor = _check_factor(factor)
    n_steps = _c.check_count(n_steps, "n_steps", 1, schedule.T)
    eta = _c.check_nonnegative(eta, "eta")
    ref = upsample_nearest(y_low, factor)  # (B, C, H, W)
    if x_T is None:
        x_T = _randn_like(ref, generator)
    elif tuple(x_T.shape) != tuple(ref.shape):
        raise ValueError(f"x_T must have the lifted low-res shape {tuple(ref.shape)}, got {tuple(x_T.shape)}")
    return _ilvr(eps_fn, schedule, ref, x_T, n_steps, float(eta), factor, generator, Step)


def _ilvr(eps_fn, schedule, ref, x, n_steps, eta, factor, generator, Step):
    t_indices = schedule.timesteps(n_steps)
    t_prev = np.append(t_indices[1:], -1)
    for i, (t_index, t_index_prev) in enumerate(zip(t_indices.tolist(), t_prev.tolist())):
        eps = eps_fn(x, _t_vector(t_index, x))                                     # (B, C, H, W)
        kw = {"noise": _randn_like(x, generator)} if eta > 0 and t_index_prev >= 0 else {}
        x_prime, x0 = _backend.ddim_step(x, eps, t_index, t_index_prev, schedule, eta=eta, backend="torch", **kw)
        if t_index_prev >= 0:                                                      # eq. 4: y_{t-1} ~ q(. | y)
            y_prev = forward.q_sample(ref, t_index_prev, _randn_like(ref, generator), schedule, backend="torch")
        else:
            y_prev = ref
        x = lowpass(y_prev, factor) + x_prime - lowpass(x_prime, factor)           # Alg. 1, line 5
        yield Step(index=i, x=x, x0=x0, t_index=t_index)


# ============================================================================ exact posterior of a mixture
def measurement_matrix(image_size: int, factor: int = 2) -> torch.Tensor:
    """The matrix ``A`` of :func:`downsample` on flattened ``image_size x image_size`` single-channel
    images, ``(image_size^2 / factor^2, image_size^2)`` float64 (each row averages one block)."""
    image_size = _c.check_count(image_size, "image_size")
    factor = _check_factor(factor)
    if image_size % factor:
        raise ValueError(f"factor {factor} must divide image_size {image_size}")
    d = image_size * image_size
    basis = torch.eye(d, dtype=torch.float64).reshape(d, 1, image_size, image_size)
    return downsample(basis, factor).reshape(d, -1).T.contiguous()


def measurement_posterior(prior, A, y, noise_std: float):
    """The exact posterior ``p(x_0 | y)`` of a Gaussian-mixture prior ``sum_k w_k N(mu_k, S_k)`` given the
    linear measurement ``y = A x_0 + n``, ``n ~ N(0, noise_std^2 I)``: again a Gaussian mixture
    (Bishop 2006, eqs. 2.113-2.117, per component) with

    ``C_k = A S_k A^T + s^2 I``, ``G_k = S_k A^T C_k^{-1}``, mean ``mu_k + G_k (y - A mu_k)``,
    covariance ``S_k - G_k A S_k`` and weight ``w_k N(y; A mu_k, C_k)`` (renormalised).

    ``prior``: a :class:`minidiff.data.GaussianMixture` in ``d`` dims; ``A``: ``(m, d)``; ``y``: ``(m,)``;
    ``noise_std > 0`` (at 0 the posterior is degenerate on the plane ``A x = y``)."""
    from .data import GaussianMixture

    A = torch.as_tensor(A, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    if A.ndim != 2 or A.shape[1] != prior.dim:
        raise ValueError(f"A must be (m, {prior.dim}) for this {prior.dim}-d prior, got {tuple(A.shape)}")
    if y.shape[0] != A.shape[0]:
        raise ValueError(f"y must have A's {A.shape[0]} rows, got {y.shape[0]} entries")
    s = _c.check_positive(noise_std, "noise_std")
    S, mu = prior.covs, prior.means                                              # (K, d, d), (K, d)
    C = A @ S @ A.T + s * s * torch.eye(A.shape[0], dtype=torch.float64)         # (K, m, m)
    G = torch.linalg.solve(C, A @ S).transpose(1, 2)                             # (K, d, m) = S A^T C^{-1}
    resid = y[None, :] - mu @ A.T                                                # (K, m)
    means = mu + torch.einsum("kdm,km->kd", G, resid)
    covs = S - G @ A @ S
    covs = 0.5 * (covs + covs.transpose(1, 2))
    log_lik = torch.distributions.MultivariateNormal(mu @ A.T, covariance_matrix=C).log_prob(y)  # (K,)
    weights = torch.softmax(torch.log(prior.weights) + log_lik, 0)
    return GaussianMixture(weights, means, covs)


# ============================================================================ SDEdit and DDIM inversion
def partial_timesteps(schedule: Schedule, t_index_start: int, n_steps: int) -> np.ndarray:
    """``n_steps`` descending ``t_index`` values from ``t_index_start`` towards 0, by the same trailing rule
    as :meth:`Schedule.timesteps` on the first ``t_index_start + 1`` steps (so ``t_index_start = T - 1``
    gives exactly ``schedule.timesteps(n_steps)``)."""
    t_index_start = int(schedule.check_t_index(t_index_start, "t_index_start"))
    return Schedule.from_betas(schedule.betas[: t_index_start + 1]).timesteps(n_steps)


def ddim_from(eps_fn, x, schedule: Schedule, t_indices, *, eta: float = 0.0,
              generator: torch.Generator | None = None) -> Iterator:
    """DDIM (Song et al. 2021b, eq. 12) from a state ``x`` at ``t_indices[0]`` down the given descending
    ``t_indices`` to the data (the last step goes to ``t_index = -1``). Yields Steps."""
    from .samplers import Step

    t_indices = np.asarray(t_indices, dtype=np.int64).reshape(-1)
    schedule.check_t_index(t_indices, "t_indices")
    if t_indices.size < 1 or np.any(np.diff(t_indices) >= 0):
        raise ValueError(f"t_indices must be a non-empty strictly descending sequence, got {t_indices[:5].tolist()}")
    eta = _c.check_nonnegative(eta, "eta")

    def steps():
        nonlocal x
        t_prev = np.append(t_indices[1:], -1)
        for i, (t_index, t_index_prev) in enumerate(zip(t_indices.tolist(), t_prev.tolist())):
            eps = eps_fn(x, _t_vector(t_index, x))
            kw = {"noise": _randn_like(x, generator)} if eta > 0 and t_index_prev >= 0 else {}
            x, x0 = _backend.ddim_step(x, eps, t_index, t_index_prev, schedule, eta=eta, backend="torch", **kw)
            yield Step(index=i, x=x, x0=x0, t_index=t_index)

    return steps()


def sdedit(eps_fn, x_guide, schedule: Schedule, t_index_start: int, *, n_steps: int = 20, eta: float = 0.0,
           generator: torch.Generator | None = None) -> Iterator:
    """SDEdit (Meng et al. 2022, Alg. 1 with the DDIM solver): perturb the guide,
    ``x = sqrt(ab) x_guide + sqrt(1 - ab) z`` at ``t_index_start`` (eq. 4 of Ho et al. 2020), then denoise
    with :func:`ddim_from` on :func:`partial_timesteps`. A small ``t_index_start`` stays faithful to the guide;
    a large one gives realistic images that forget it. Yields Steps."""
    x_guide = _check_images(x_guide, "x_guide")
    t_index_start = int(schedule.check_t_index(t_index_start, "t_index_start"))
    n_steps = _c.check_count(n_steps, "n_steps", 1, t_index_start + 1)
    x = forward.q_sample(x_guide, t_index_start, _randn_like(x_guide, generator), schedule, backend="torch")
    return ddim_from(eps_fn, x, schedule, partial_timesteps(schedule, t_index_start, n_steps), eta=eta,
                     generator=generator)


def ddim_invert(eps_fn, x0, schedule: Schedule, n_steps: int) -> Iterator:
    """DDIM inversion (Song et al. 2021b, Sec. 4.3; reconstruction against the steps, Sec. 5.4): the deterministic
    DDIM update run towards noise on the ascending grid ``schedule.timesteps(n_steps)[::-1]``, approximating
    ``eps(x_{t_next}, t_next)`` by ``eps(x_t, t_next)`` (the convention of common inversion code; the plain
    Euler step of the ODE would use ``eps(x_t, t)``):

    ``x0_hat = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)``, ``x_{t_next} = sqrt(ab_next) x0_hat + sqrt(1 - ab_next) eps``

    (the second is the forward formula of Ho et al. 2020, eq. 4 with ``eps`` in place of fresh noise).
    The last record's ``x`` is the code ``x_T``; decoding it with ``samplers.ddim(eps_fn, x_T, schedule,
    n_steps)`` returns ``x0`` up to the approximation, which shrinks as ``n_steps`` grows. Yields Steps
    (``t_index`` = the level reached)."""
    from .samplers import Step

    x0 = forward.check_batch(x0, "x0")
    n_steps = _c.check_count(n_steps, "n_steps", 1, schedule.T)
    grid = schedule.timesteps(n_steps)[::-1]  # ascending

    def steps():
        x, t_index = x0, -1
        for i, t_next in enumerate(grid.tolist()):
            eps = eps_fn(x, _t_vector(t_next, x))
            if t_index < 0:
                x0_hat = x
            else:
                x0_hat = forward.eps_to_x0(x, eps, schedule.at("alpha_bar", t_index, x))
            x = forward.q_sample(x0_hat, t_next, eps, schedule, backend="torch")
            t_index = t_next
            yield Step(index=i, x=x, x0=x0_hat, t_index=t_next)

    return steps()
