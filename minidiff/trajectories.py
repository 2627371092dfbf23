"""Fused exact-score trajectories: whole samplers on a Gaussian-mixture target, one kernel call.

For a :class:`minidiff.data.GaussianMixture` target the score of every noised marginal is closed-form
(``gm.noised(alpha_t, sigma_t).score``), so a sampler needs no network: the kernels in ``kernels/trajectories.py``
evaluate the mixture score inside the loop and run the whole sampler per sample (CPU: ``prange`` over
samples; CUDA: a thread per sample). Each function here returns the final samples ``x_0`` of the
matching step-by-step sampler driven by the exact score --

===============================  =============================================================================
:func:`ddpm_exact`               :func:`minidiff.samplers.ddpm` with ``gm.eps_model(schedule)``
:func:`ddim_exact`               :func:`minidiff.samplers.ddim` (any ``eta``)
:func:`dpm_solver_2m_exact`      :func:`minidiff.solvers.dpm_solver_2m`
:func:`euler_maruyama_exact`     :func:`minidiff.samplers.euler_maruyama` with the exact score
:func:`pf_ode_euler_exact`       :func:`minidiff.samplers.pf_ode_euler`
:func:`pf_ode_heun_exact`        :func:`minidiff.samplers.pf_ode_heun`
:func:`langevin_exact`           :func:`minidiff.samplers.langevin` with ``gm.score``
:func:`annealed_langevin_exact`  :func:`minidiff.samplers.annealed_langevin` with ``gm.at_sigma(sigma).score``
:func:`flow_euler_exact`         :func:`minidiff.flow.euler` with ``gm.velocity_model(interpolant)``
:func:`flow_heun_exact`          :func:`minidiff.flow.heun` with the exact velocity
:func:`flow_midpoint_exact`      :func:`minidiff.flow.midpoint` with the exact velocity
===============================  =============================================================================

-- and :func:`predictor_corrector_exact`, :func:`minidiff.samplers.predictor_corrector` (its corrector's
step uses batch means: phased drivers on both targets) -- equal to rounding in float64 (``tests/test_trajectories.py``). Noise is counter-based Philox
(Salmon et al. 2011): with ``seed=S`` a trajectory sees exactly the noise the step-by-step sampler
sees with ``noise=lambda step: minidiff.backend.normal(x.shape, S, step, dtype=x.dtype)``.

Arithmetic is float64 inside the kernel whatever ``x_T``'s dtype; the result has ``x_T``'s dtype
(numpy in, numpy out). Any number of components; any dimension on the CPU, up to 64 on CUDA.
The coefficient tables are built here from :mod:`minidiff.kernels.formulas`' ``*_coefficients``
(each formula written once); the level tables (precision matrices of ``alpha_t^2 S_k + sigma_t^2 I``) once per
noise level.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from . import _checks
from . import backend as _backend

__all__ = ["ddpm_exact", "ddim_exact", "dpm_solver_2m_exact", "euler_maruyama_exact", "pf_ode_euler_exact",
           "pf_ode_heun_exact", "langevin_exact", "annealed_langevin_exact", "flow_euler_exact", "flow_heun_exact",
           "flow_midpoint_exact", "predictor_corrector_exact", "flops_per_sample_step"]


# ============================================================================ validation and tables
def _check_gm(gm):
    for attr in ("weights", "means", "covs"):
        if not isinstance(getattr(gm, attr, None), torch.Tensor):
            raise TypeError(f"gm must be a minidiff.GaussianMixture, got {type(gm).__name__}")
    return gm


def _check_x(x_T, gm, name="x_T"):
    numpy_in = isinstance(x_T, np.ndarray)
    x = _backend._as_tensor(x_T, name)
    if x.ndim != 2 or x.shape[1] != gm.dim:
        raise ValueError(f"{name} must have shape (B, {gm.dim}) (the mixture's dimension), got {tuple(x.shape)}")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite (it holds NaN or inf)")
    if x.device.type == "cuda" and gm.dim > 64:
        raise ValueError(f"the CUDA trajectory kernels take dimension <= 64 (MAX_DIM_CUDA), got {gm.dim}; "
                         f"use CPU tensors")
    return x, numpy_in


def _check_seed(seed, needed: bool):
    if seed is not None:
        _checks.check_int(seed, "seed")
    if needed and seed is None:
        raise ValueError("this sampler draws noise: pass seed= (an int)")
    return 0 if seed is None else int(seed)


def _check_clip(clip_x0) -> float:
    return _backend._clip_value(clip_x0)


def _is_isotropic(gm) -> bool:
    c = gm.covs
    d = gm.dim
    diag = torch.diagonal(c, dim1=-2, dim2=-1)
    return bool(torch.equal(c, diag[:, :1, None] * torch.eye(d, dtype=c.dtype)))


def level_tables(gm, levels):
    """For noise levels ``[(alpha_t, sigma_t), ...]`` (``x_t = alpha_t x_0 + sigma_t eps``):
    ``(prec, const, iso, alpha_t, sigma_t)`` with ``prec[L, k] = (alpha_t^2 S_k + sigma_t^2 I)^-1``
    (``(L, K, 1, 1)`` scalars when every ``S_k`` is isotropic, else ``(L, K, d, d)``),
    ``const[L, k] = log w_k - 1/2 log det(alpha_t^2 S_k + sigma_t^2 I)`` (the Gaussian constant cancels
    in the softmax) and the two level tables, float64."""
    K, d = gm.n_components, gm.dim
    iso = _is_isotropic(gm)
    logw = torch.log(gm.weights).numpy()
    alpha_t = np.array([lv[0] for lv in levels], dtype=np.float64)
    sigma_t = np.array([lv[1] for lv in levels], dtype=np.float64)
    if iso:
        var = (alpha_t[:, None] ** 2 * torch.diagonal(gm.covs, dim1=-2, dim2=-1)[:, 0].numpy()[None, :]
               + sigma_t[:, None] ** 2)
        prec = (1.0 / var)[:, :, None, None]
        const = logw[None, :] - 0.5 * d * np.log(var)
    else:
        eye = torch.eye(d, dtype=torch.float64)
        cov = (torch.as_tensor(alpha_t)[:, None, None, None] ** 2 * gm.covs[None]
               + torch.as_tensor(sigma_t)[:, None, None, None] ** 2 * eye)
        chol = torch.linalg.cholesky(cov)  # (L, K, d, d)
        prec = torch.cholesky_inverse(chol).numpy()
        logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1).numpy()
        const = logw[None, :] - 0.5 * logdet
    return np.ascontiguousarray(prec), np.ascontiguousarray(const), iso, alpha_t, sigma_t


def velocity_tables(gm, prec, iso, alpha_t, sigma_t, rates):
    """``(wacc, mu_c)`` of the exact velocity ``u = E[alpha_t' x_0 + sigma_t' eps | x_t]`` (the mixed field of
    ``kernels/trajectories.py``, module notes, from :meth:`minidiff.data.GaussianMixture.posterior_means`'s
    per-component terms): ``wacc[L, k] = -(alpha_t' alpha_t S_k + sigma_t' sigma_t I) P[L, k]`` with ``P = prec``
    of :func:`level_tables`, ``mu_c[L] = alpha_t'``. ``rates``: ``[(d_alpha_t, d_sigma_t), ...]`` per level."""
    d_alpha_t = np.array([r[0] for r in rates], dtype=np.float64)
    d_sigma_t = np.array([r[1] for r in rates], dtype=np.float64)
    a_rate = (d_alpha_t * alpha_t)[:, None]  # (L, 1): alpha_t' alpha_t
    s_rate = (d_sigma_t * sigma_t)[:, None, None, None]
    if iso:
        s_k = torch.diagonal(gm.covs, dim1=-2, dim2=-1)[:, 0].numpy()[None, :]  # (1, K)
        wacc = -((a_rate * s_k)[:, :, None, None] + s_rate) * prec
    else:
        covs = gm.covs.numpy()[None]  # (1, K, d, d)
        wacc = -(a_rate[:, :, None, None] * covs @ prec + s_rate * prec)
    return np.ascontiguousarray(wacc), np.ascontiguousarray(d_alpha_t)


def flops_per_sample_step(gm, heun: bool = False, velocity: bool = False) -> int:
    """Floating-point operations of one sample-step (score evaluations counted by
    :func:`minidiff.kernels.trajectories.flops_gm_score`, plus ~10 per coordinate for the update);
    ``heun``: two evaluations a step (Heun, midpoint); ``velocity``: the exact velocity instead of the score."""
    from minidiff.kernels.trajectories import flops_gm_score

    f = flops_gm_score(gm.n_components, gm.dim, _is_isotropic(gm), field=velocity) + 10 * gm.dim
    return 2 * f if heun else f


def _run(kernel, x, numpy_in, gm, tables, seed):
    out = _backend.gm_trajectories(kernel, x, [gm.means.numpy()] + tables, seed)
    if out.numel() and not bool(torch.isfinite(out).all()):
        raise FloatingPointError(f"{kernel}: the trajectories left the finite range (non-finite samples)")
    return out.numpy() if numpy_in else out


def _f64(v):
    return np.ascontiguousarray(np.asarray(v, dtype=np.float64))


def _i64(v):
    return np.ascontiguousarray(np.asarray(v, dtype=np.int64))


# ============================================================================ eps/x0-form samplers
def _eps_run(gm, x, numpy_in, levels, cx, cx0, ceps, cx0p, cz, nstep, recompute, c, seed):
    prec, const, iso, alpha_t, sigma_t = level_tables(gm, levels)
    n = len(cx)
    tables = [prec, const, iso, _i64(np.arange(n)), alpha_t, sigma_t, _f64(cx), _f64(cx0), _f64(ceps), _f64(cx0p), _f64(cz),
              _i64(nstep), bool(recompute), float(c)]
    return _run("eps_trajectories", x, numpy_in, gm, tables, seed)


def ddpm_exact(gm, x_T, schedule, *, seed=None, clip_x0=None):
    """Ancestral sampling (Ho et al. 2020, Alg. 2, posterior-mean form eq. 7) over all ``T`` steps with
    the exact eps ``-sqrt(1 - ab) grad log q_t``; noise counter ``step = index`` (none at ``t_index = 0``).
    ``x_T``: ``(B, d)``. Returns the samples ``(B, d)``."""
    from minidiff.kernels.formulas import ddpm_coefficients

    gm = _check_gm(gm)
    x, numpy_in = _check_x(x_T, gm)
    seed = _check_seed(seed, needed=schedule.T > 1)
    c = _check_clip(clip_x0)
    levels, cx, cx0, cz, nstep = [], [], [], [], []
    for i, t_index in enumerate(range(schedule.T - 1, -1, -1)):
        ab = float(schedule.alpha_bar[t_index])
        _, _, a0, a1, std = ddpm_coefficients(ab, schedule.alpha_bar_prev[t_index], schedule.betas[t_index], schedule.alphas[t_index],
                                              schedule.posterior_variance[t_index], add_noise=t_index > 0)
        levels.append((math.sqrt(ab), math.sqrt(1.0 - ab)))
        cx.append(a1), cx0.append(a0), cz.append(std), nstep.append(i if t_index > 0 else -1)
    zeros = [0.0] * len(cx)
    return _eps_run(gm, x, numpy_in, levels, cx, cx0, zeros, zeros, cz, nstep, False, c, seed)


def ddim_exact(gm, x_T, schedule, n_steps: int, eta: float = 0.0, seed=None, *, clip_x0=None):
    """DDIM (Song et al. 2021b, eq. 12, ``ddim_sigma(eta)`` of eq. 16) on ``schedule.timesteps(n_steps)``,
    the last step to the data, with the exact eps; with clipping, eps is recomputed from the clipped
    ``x0`` as :func:`minidiff.backend.ddim_step` does. Noise counter (``eta > 0``): ``step = index``,
    none on the last step. Returns the samples ``(B, d)``."""
    from minidiff.kernels.formulas import ddim_coefficients

    gm = _check_gm(gm)
    x, numpy_in = _check_x(x_T, gm)
    if isinstance(eta, bool) or not isinstance(eta, (int, float, np.integer, np.floating)) or not float(eta) >= 0 \
            or not math.isfinite(float(eta)):
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    t_indices = schedule.timesteps(n_steps).tolist()
    t_indices_prev = t_indices[1:] + [-1]
    seed = _check_seed(seed, needed=float(eta) > 0 and len(t_indices) > 1)
    c = _check_clip(clip_x0)
    levels, cx0, ceps, cz, nstep = [], [], [], [], []
    for i, (t_index, t_index_prev) in enumerate(zip(t_indices, t_indices_prev)):
        ab = float(schedule.alpha_bar[t_index])
        abp = 1.0 if t_index_prev < 0 else float(schedule.alpha_bar[t_index_prev])
        _, _, _, _, sap, cdir, ddim_sigma = ddim_coefficients(ab, abp, eta)
        levels.append((math.sqrt(ab), math.sqrt(1.0 - ab)))
        noisy = float(eta) > 0 and t_index_prev >= 0 and ddim_sigma > 0
        cx0.append(sap), ceps.append(cdir), cz.append(ddim_sigma if noisy else 0.0), nstep.append(i if noisy else -1)
    zeros = [0.0] * len(cx0)
    return _eps_run(gm, x, numpy_in, levels, zeros, cx0, ceps, zeros, cz, nstep, clip_x0 is not None, c, seed)


def dpm_solver_2m_exact(gm, x_T, schedule, n_steps: int, *, clip_x0=None):
    """DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2, data prediction, multistep) on
    ``schedule.timesteps(n_steps)``, first and last steps first order, as
    :func:`minidiff.solvers.dpm_solver_2m`: ``x_t = (sigma_t / sigma_s) x_s - alpha_t expm1(-h) D``,
    ``D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev``. Deterministic. Returns the samples ``(B, d)``."""
    from minidiff.solvers import _alpha_t_sigma_t_lambda

    gm = _check_gm(gm)
    x, numpy_in = _check_x(x_T, gm)
    c = _check_clip(clip_x0)
    t_indices = schedule.timesteps(n_steps).tolist()
    t_indices_next = t_indices[1:] + [-1]
    levels, cx, cx0, cx0p = [], [], [], []
    h_prev = None
    for t_index_s, t_index_t in zip(t_indices, t_indices_next):
        a_s, s_s, lam_s = _alpha_t_sigma_t_lambda(schedule, t_index_s)
        a_t, s_t, lam_t = _alpha_t_sigma_t_lambda(schedule, t_index_t)
        levels.append((a_s, s_s))
        if t_index_t < 0:  # to the data: x = x0_hat
            cx.append(0.0), cx0.append(1.0), cx0p.append(0.0)
            continue
        h = lam_t - lam_s
        k = -a_t * math.expm1(-h)
        if h_prev is None:  # Alg. 2, line 3: first order
            cx.append(s_t / s_s), cx0.append(k), cx0p.append(0.0)
        else:               # Alg. 2, lines 5-6
            r = h_prev / h
            cx.append(s_t / s_s), cx0.append(k * (1.0 + 0.5 / r)), cx0p.append(-k * 0.5 / r)
        h_prev = h
    zeros = [0.0] * len(cx)
    return _eps_run(gm, x, numpy_in, levels, cx, cx0, zeros, cx0p, zeros, [-1] * len(cx), False, c, 0)


# ============================================================================ SDE / ODE samplers
def _sde_grid(sde, n_steps, t_min):
    for name in ("drift_coef", "diffusion", "mean_scale", "marginal_std", "time_grid"):
        if not callable(getattr(sde, name, None)):
            raise TypeError(f"sde must be a VPSDE or VESDE (minidiff.sde), got {type(sde).__name__}")
    return sde.time_grid(n_steps, t_min).tolist()


def _score_tables_run(gm, x, numpy_in, levels, lev, lev2, cx, cs, cz, heun, hx, hs, hxe, hse, nstep, seed,
                      rates=None):
    """The score-form kernel (``kernels/trajectories.py``, ``score_rows``) with per-step tables; with
    ``rates`` (``[(d_alpha_t, d_sigma_t), ...]`` per level) on the exact velocity instead of the score
    (:func:`velocity_tables`)."""
    prec, const, iso, alpha_t, sigma_t = level_tables(gm, levels)
    if rates is None:
        field = [False, prec, alpha_t]
    else:
        field = [True, *velocity_tables(gm, prec, iso, alpha_t, sigma_t, rates)]
    tables = [prec, const, iso, *field, _i64(lev), _i64(lev2), alpha_t, sigma_t, _f64(cx), _f64(cs), _f64(cz),
              np.ascontiguousarray(np.asarray(heun, dtype=np.bool_)), _f64(hx), _f64(hs), _f64(hxe), _f64(hse),
              _i64(nstep)]
    return _run("score_trajectories", x, numpy_in, gm, tables, seed)


def _score_run(gm, sde, x_T, n_steps, t_min, kind, seed):
    from minidiff.kernels.formulas import heun_coefficients, pf_ode_euler_coefficients, reverse_sde_coefficients

    gm = _check_gm(gm)
    x, numpy_in = _check_x(x_T, gm)
    ts = _sde_grid(sde, n_steps, t_min)
    seed = _check_seed(seed, needed=kind == "em")
    n = len(ts) - 1
    levels = [(sde.mean_scale(t), sde.marginal_std(t)) for t in ts]  # level i is time ts[i]
    cx, cs, cz, heun, hx, hs, hxe, hse, nstep = ([] for _ in range(9))
    for i, (t, tn) in enumerate(zip(ts[:-1], ts[1:])):
        f, g, dt = sde.drift_coef(t), sde.diffusion(t), t - tn
        coef = reverse_sde_coefficients(f, g, dt) if kind == "em" else pf_ode_euler_coefficients(f, g, dt)
        cx.append(coef[0]), cs.append(coef[1]), cz.append(coef[2]), nstep.append(i if kind == "em" else -1)
        h = kind == "heun" and i < n - 1  # Karras et al. 2022, Alg. 1: the last step is Euler
        hc = heun_coefficients(f, g, sde.drift_coef(tn), sde.diffusion(tn), dt) if h else (0.0, 0.0, 0.0, 0.0)
        heun.append(h), hx.append(hc[0]), hs.append(hc[1]), hxe.append(hc[2]), hse.append(hc[3])
    if kind != "heun":
        levels = levels[:-1]  # the score is never evaluated at t_min
    lev = np.arange(n)
    return _score_tables_run(gm, x, numpy_in, levels, lev, np.minimum(lev + 1, len(levels) - 1), cx, cs, cz, heun,
                             hx, hs, hxe, hse, nstep, seed)


def _langevin_run(gm, x_init, sigmas, n_steps_each, step_sizes, seed):
    """Langevin steps ``x <- x + (h_i/2) score_i + sqrt(h_i) z`` on ``gm.at_sigma(sigmas[i])``,
    ``n_steps_each`` per level, noise counter ``step = index``."""
    from minidiff.kernels.formulas import langevin_coefficients

    gm = _check_gm(gm)
    x, numpy_in = _check_x(x_init, gm, "x_init")
    seed = _check_seed(seed, needed=True)
    n = len(sigmas) * n_steps_each
    coef = np.repeat(np.array([langevin_coefficients(h) for h in step_sizes], dtype=np.float64), n_steps_each, 0)
    lev = np.repeat(np.arange(len(sigmas)), n_steps_each)
    zeros = np.zeros(n)
    return _score_tables_run(gm, x, numpy_in, [(1.0, float(sg)) for sg in sigmas], lev, lev, coef[:, 0], coef[:, 1],
                             coef[:, 2], np.zeros(n, dtype=bool), zeros, zeros, zeros, zeros, np.arange(n), seed)


def langevin_exact(gm, x_init, *, step_size: float, n_steps: int, seed=None):
    """Unadjusted Langevin dynamics on ``gm`` itself (Song & Ermon 2019, eq. 4):
    ``x <- x + (step_size / 2) grad log p(x) + sqrt(step_size) z``, ``n_steps`` times, as
    :func:`minidiff.samplers.langevin` with ``gm.score``; noise counter ``step = index``.
    ``x_init``: ``(B, d)``. Returns the final particles ``(B, d)``."""
    step_size = _checks.check_positive(step_size, "step_size")
    n_steps = _checks.check_count(n_steps, "n_steps")
    return _langevin_run(gm, x_init, [0.0], n_steps, [step_size], seed)


def annealed_langevin_exact(gm, x_init, sigmas, *, n_steps_each: int, step_size: float, seed=None):
    """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1) with the exact scores of
    ``gm.at_sigma(sigma_i)``: ``n_steps_each`` Langevin steps of size ``step_size sigma_i^2 / sigma_L^2``
    per level, as :func:`minidiff.samplers.annealed_langevin`; noise counter ``step = index``.
    Returns the final particles ``(B, d)``."""
    sig = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if sig.size < 1 or not np.all(np.isfinite(sig)) or np.any(sig <= 0) or np.any(np.diff(sig) > 0):
        raise ValueError(f"sigmas must be a non-empty sequence of positive, non-increasing noise levels, "
                         f"got {sig[:5].tolist()}{'...' if sig.size > 5 else ''}")
    n_steps_each = _checks.check_count(n_steps_each, "n_steps_each")
    step_size = _checks.check_positive(step_size, "step_size")
    return _langevin_run(gm, x_init, sig.tolist(), n_steps_each, (step_size * sig**2 / sig[-1] ** 2).tolist(), seed)


def euler_maruyama_exact(gm, x_T, sde, n_steps: int, *, seed=None, t_min: float = 1e-3):
    """Euler-Maruyama on the reverse SDE (Song et al. 2021a, eq. 6) from ``t = 1`` to ``t_min`` with the
    exact score of ``gm.noised(sde.mean_scale(t), sde.marginal_std(t))``, as
    :func:`minidiff.samplers.euler_maruyama`; noise counter ``step = index``. Returns ``(B, d)``."""
    return _score_run(gm, sde, x_T, n_steps, t_min, "em", seed)


def predictor_corrector_exact(gm, x_T, sde, n_steps: int, *, snr: float = 0.16, n_corrector: int = 1, seed=None,
                              t_min: float = 1e-3):
    """Predictor-corrector sampling (Song et al. 2021a, Alg. 2 (VE) / 3 (VP)) with the exact score, as
    :func:`minidiff.samplers.predictor_corrector`: the reverse-diffusion predictor
    ``x <- (1 - F) x + G^2 score(x, t) + G z`` with ``(F, G) = sde.discretize(t, t - t_next)``, then
    ``n_corrector`` Langevin steps at ``t_next`` whose size uses the batch means of ``||z||`` and ``||score||``
    (so every sample's step depends on the whole batch: the drivers ``pc_trajectories`` of ``kernels/cpu.py`` and
    ``kernels/cuda.py`` reduce over all samples each corrector step, the latter on the device in a fixed order).
    Noise counter ``step = index (1 + n_corrector) + j``. CPU or CUDA tensors, or numpy. Returns the samples
    ``(B, d)``."""
    from minidiff.kernels.formulas import reverse_sde_coefficients
    from minidiff.samplers import _corrector_alpha

    gm = _check_gm(gm)
    x, numpy_in = _check_x(x_T, gm)
    ts = _sde_grid(sde, n_steps, t_min)
    snr = _checks.check_positive(snr, "snr")
    n_corrector = _checks.check_count(n_corrector, "n_corrector", low=0)
    seed = _check_seed(seed, needed=True)
    prec, const, iso, alpha_t, sigma_t = level_tables(gm, [(sde.mean_scale(t), sde.marginal_std(t)) for t in ts])
    cx, cs, cz, alpha_c = [], [], [], []
    for t, tn in zip(ts[:-1], ts[1:]):
        F, G = sde.discretize(t, t - tn)
        coef = reverse_sde_coefficients(F, G, 1.0)
        cx.append(coef[0]), cs.append(coef[1]), cz.append(coef[2]), alpha_c.append(_corrector_alpha(F))
    n = len(ts) - 1
    tables = [prec, const, iso, _i64(np.arange(n)), _i64(np.arange(1, n + 1)), alpha_t, sigma_t, _f64(cx), _f64(cs),
              _f64(cz), _f64(alpha_c), int(n_corrector), float(snr)]
    return _run("pc_trajectories", x, numpy_in, gm, tables, seed)


def pf_ode_euler_exact(gm, x_T, sde, n_steps: int, *, t_min: float = 1e-3):
    """Euler on the probability-flow ODE (Song et al. 2021a, eq. 13) with the exact score, as
    :func:`minidiff.samplers.pf_ode_euler`. Deterministic. Returns ``(B, d)``."""
    return _score_run(gm, sde, x_T, n_steps, t_min, "euler", None)


def pf_ode_heun_exact(gm, x_T, sde, n_steps: int, *, t_min: float = 1e-3):
    """Heun on the probability-flow ODE (Karras et al. 2022, Alg. 1; the last step Euler), with the exact
    score, as :func:`minidiff.samplers.pf_ode_heun`. Deterministic. Returns ``(B, d)``."""
    return _score_run(gm, sde, x_T, n_steps, t_min, "heun", None)


# ============================================================================ flow-matching ODE solvers
def _flow_run(gm, x_T, ts, interpolant, solver):
    """The solvers of :mod:`minidiff.flow` on ``gm.velocity(x, t, interpolant)`` through the score-form kernel
    (``x_e = cx x + cs u``, then the optional second stage ``x <- hx x + hs u + hxe x_e + hse u(x_e)``), each
    update's coefficients from :func:`minidiff.kernels.formulas.pf_ode_euler_coefficients` /
    :func:`~minidiff.kernels.formulas.heun_coefficients` with ``f = 0, g = 1, dt = 2 h`` as :mod:`minidiff.flow`
    calls them (``x + h u`` and ``x + h/2 (u + u_e)``, ``h = t_next - t``)."""
    from minidiff.flow import _check_grid
    from minidiff.interpolants import Interpolant
    from minidiff.kernels.formulas import heun_coefficients, pf_ode_euler_coefficients

    gm = _check_gm(gm)
    x, numpy_in = _check_x(x_T, gm)
    if not isinstance(interpolant, Interpolant):
        raise TypeError(f"interpolant must be a minidiff.interpolants.Interpolant, got {type(interpolant).__name__}")
    ts = _check_grid(ts).tolist()
    n = len(ts) - 1
    pairs = list(zip(ts[:-1], ts[1:]))
    if solver == "euler":      # Liu et al. 2023, Alg. 1 (sampling): u at ts[:-1]
        times = ts[:-1]
        lev2 = list(range(n))
    elif solver == "heun":     # Karras et al. 2022, Alg. 1 with a velocity, every step corrected: u at every ts
        times = ts
        lev2 = list(range(1, n + 1))
    else:                      # explicit midpoint (Hairer et al. 1993, II.1): u at ts[:-1] and at t + h/2
        times = ts[:-1] + [t + 0.5 * (tn - t) for t, tn in pairs]
        lev2 = list(range(n, 2 * n))
    coef = [interpolant.coefficients(float(t)) for t in times]
    for t, c in zip(times, coef):
        if not all(math.isfinite(v) for v in (c.alpha_t, c.sigma_t, c.d_alpha_t, c.d_sigma_t)):
            raise ValueError(f"ts: the velocity of {interpolant!r} is not defined at t = {t} (evaluate it at "
                             f"t >= interpolant.t_min = {interpolant.t_min})")
    cx, cs, heun, hx, hs, hxe, hse = ([] for _ in range(7))
    for t, tn in pairs:
        h = tn - t
        first = pf_ode_euler_coefficients(0.0, 1.0, 2.0 * (0.5 * h if solver == "midpoint" else h))
        cx.append(first[0]), cs.append(first[1])
        if solver == "heun":
            second = heun_coefficients(0.0, 1.0, 0.0, 1.0, 2.0 * h)
        elif solver == "midpoint":
            e = pf_ode_euler_coefficients(0.0, 1.0, 2.0 * h)
            second = (e[0], 0.0, 0.0, e[1])
        else:
            second = (0.0, 0.0, 0.0, 0.0)
        heun.append(solver != "euler"), hx.append(second[0]), hs.append(second[1]), hxe.append(second[2])
        hse.append(second[3])
    zeros = [0.0] * n
    return _score_tables_run(gm, x, numpy_in, [(c.alpha_t, c.sigma_t) for c in coef], list(range(n)), lev2, cx, cs,
                             zeros, heun, hx, hs, hxe, hse, [-1] * n, None,
                             rates=[(c.d_alpha_t, c.d_sigma_t) for c in coef])


def flow_euler_exact(gm, x_T, ts, interpolant):
    """Euler's method ``x <- x + (t_next - t) u(x, t)`` on the grid ``ts`` with the exact velocity
    ``gm.velocity(x, t, interpolant)``, as :func:`minidiff.flow.euler` (Liu et al. 2023, Alg. 1, sampling).
    ``x_T``: ``(B, d)``, the state at ``ts[0]``. Deterministic. Returns the state at ``ts[-1]``."""
    return _flow_run(gm, x_T, ts, interpolant, "euler")


def flow_heun_exact(gm, x_T, ts, interpolant):
    """Heun's method (Karras et al. 2022, Alg. 1 with a velocity; every step corrected, the velocity
    evaluated at every grid time) with the exact velocity, as :func:`minidiff.flow.heun`. Returns ``(B, d)``."""
    return _flow_run(gm, x_T, ts, interpolant, "heun")


def flow_midpoint_exact(gm, x_T, ts, interpolant):
    """The explicit midpoint method (Hairer et al. 1993, II.1) ``x <- x + h u(x + h/2 u(x, t), t + h/2)``
    with the exact velocity, as :func:`minidiff.flow.midpoint`. Returns ``(B, d)``."""
    return _flow_run(gm, x_T, ts, interpolant, "midpoint")
