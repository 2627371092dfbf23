"""Interpolants and their conversions against references: finite differences of alpha_t and sigma_t,
the DDPM conversions of forward.convert (VP case), the defining formulas of each prediction kind; the
exact mixture velocity against autograd (Tweedie) and against the continuity equation by finite
differences of the transported density."""
import math

import pytest
import torch

from minidiff import GaussianMixture, forward
from minidiff.interpolants import PREDICTION_KINDS, Interpolant, convert
from minidiff.sde import VPSDE

INTERPOLANTS = [Interpolant.linear(), Interpolant.trig(), Interpolant.vp()]
IDS = ["linear", "trig", "vp"]
MIX = GaussianMixture.grid_2d(3, spacing=1.5, std=0.15)
ANISO = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[1.0, -0.5], [-1.0, 0.8]]),
                        torch.tensor([[[0.09, 0.03], [0.03, 0.04]], [[0.05, -0.02], [-0.02, 0.08]]]))


@pytest.mark.parametrize("interp", INTERPOLANTS, ids=IDS)
def test_derivatives_match_central_differences(interp):
    h = 1e-6
    for t in (0.05, 0.3, 0.7, 0.95):
        c, cp, cm = interp.coefficients(t), interp.coefficients(t + h), interp.coefficients(t - h)
        assert c.d_alpha_t == pytest.approx((cp.alpha_t - cm.alpha_t) / (2 * h), rel=1e-6, abs=1e-8)
        assert c.d_sigma_t == pytest.approx((cp.sigma_t - cm.sigma_t) / (2 * h), rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("interp", INTERPOLANTS, ids=IDS)
def test_endpoints_and_tensor_times(interp):
    c0, c1 = interp.coefficients(0.0), interp.coefficients(1.0)
    assert c0.alpha_t == pytest.approx(1.0) and c0.sigma_t == pytest.approx(0.0)
    assert c1.sigma_t > 0.99
    if interp.kind != "vp":
        assert c1.alpha_t == pytest.approx(0.0, abs=1e-15)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    ct = interp.coefficients(t)
    for i, ti in enumerate(t.tolist()):
        assert float(ct.alpha_t[i]) == interp.alpha_t(ti) and float(ct.sigma_t[i]) == interp.sigma_t(ti)
    assert interp.log_snr(0.5) == pytest.approx(2 * math.log(interp.alpha_t(0.5) / interp.sigma_t(0.5)))


def test_vp_is_the_vp_sde_and_its_ddpm_schedule():
    sde = VPSDE()
    interp = Interpolant.vp(sde)
    for t in (0.01, 0.4, 1.0):
        assert interp.alpha_t(t) ** 2 == pytest.approx(sde.alpha_bar(t), rel=1e-12)
        assert interp.alpha_t(t) ** 2 + interp.sigma_t(t) ** 2 == pytest.approx(1.0, rel=1e-12)


def _truth(kind, x0, eps, c):
    """Each prediction kind from its definition (written independently of the module)."""
    return {"eps": eps, "x0": x0, "v": c.alpha_t * eps - c.sigma_t * x0, "score": -eps / c.sigma_t,
            "velocity": c.d_alpha_t * x0 + c.d_sigma_t * eps}[kind]


@pytest.mark.parametrize("interp", INTERPOLANTS, ids=IDS)
def test_every_conversion_recovers_every_kind(interp):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(16, 3, generator=g, dtype=torch.float64)
    for t in (0.2, 0.6, 0.9):
        c = interp.coefficients(t)
        x_t = c.alpha_t * x0 + c.sigma_t * eps
        assert torch.allclose(interp.sample(x0, t, eps), x_t)
        for src in PREDICTION_KINDS:
            for dst in PREDICTION_KINDS:
                got = convert(_truth(src, x0, eps, c), x_t, t, interp, source=src, target=dst)
                assert torch.allclose(got, _truth(dst, x0, eps, c), rtol=1e-9, atol=1e-9), (src, dst, t)


def test_per_sample_times_broadcast():
    interp = Interpolant.trig()
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 1, 2, 2, generator=g), torch.randn(4, 1, 2, 2, generator=g)
    t = torch.tensor([0.1, 0.3, 0.5, 0.9], dtype=torch.float64)
    x_t = interp.sample(x0, t, eps)
    u = interp.conditional_velocity(x0, t, eps)
    for i in range(4):
        ti = float(t[i])
        assert torch.allclose(x_t[i], interp.sample(x0[i:i + 1], ti, eps[i:i + 1])[0])
        assert torch.allclose(u[i], interp.conditional_velocity(x0[i:i + 1], ti, eps[i:i + 1])[0])
    back = convert(u, x_t, t, interp, source="velocity", target="x0")
    assert back.dtype == torch.float32 and torch.allclose(back, x0, atol=1e-5)


def test_vp_conversions_agree_with_forward_convert():
    """The VP/DDPM case: alpha_bar = alpha_t^2 in the existing eps / x0 / v / score conversions."""
    interp = Interpolant.vp()
    g = torch.Generator().manual_seed(2)
    x_t = torch.randn(32, 2, generator=g, dtype=torch.float64)
    pred = torch.randn(32, 2, generator=g, dtype=torch.float64)
    for t in (0.05, 0.3, 0.8):
        ab = interp.alpha_t(t) ** 2
        for src in ("eps", "x0", "v", "score"):
            for dst in ("eps", "x0", "v", "score"):
                ours = convert(pred, x_t, t, interp, source=src, target=dst)
                theirs = forward.convert(pred, x_t, torch.tensor(ab, dtype=torch.float64), source=src, target=dst)
                assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-10), (src, dst, t)


def test_vp_velocity_is_the_angular_speed_times_v():
    """For a VP path alpha = cos(phi), sigma = sin(phi): d x_t/dt = (d phi/dt) v (Salimans & Ho 2022)."""
    interp = Interpolant.vp()
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(8, 2, generator=g, dtype=torch.float64), torch.randn(8, 2, generator=g, dtype=torch.float64)
    h = 1e-6
    for t in (0.1, 0.5, 0.9):
        phi = lambda s: math.atan2(interp.sigma_t(s), interp.alpha_t(s))  # noqa: E731
        dphi = (phi(t + h) - phi(t - h)) / (2 * h)
        c = interp.coefficients(t)
        v = c.alpha_t * eps - c.sigma_t * x0
        assert torch.allclose(interp.conditional_velocity(x0, t, eps), dphi * v, rtol=1e-6)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="kind"):
        Interpolant("cosine")
    with pytest.raises(ValueError, match="sde"):
        Interpolant("linear", VPSDE())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Interpolant.linear().coefficients(1.5)
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="source and target"):
        convert(x, x, 0.5, Interpolant.linear(), source="noise", target="x0")
    with pytest.raises(TypeError, match="Interpolant"):
        convert(x, x, 0.5, "linear", source="eps", target="x0")


# ---------------------------------------------------------------------------- exact mixture velocity
def _grad_log_p(mixture, x):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(mixture.log_prob(x).sum(), x)
    return g


@pytest.mark.parametrize("interp", INTERPOLANTS, ids=IDS)
@pytest.mark.parametrize("mix", [MIX, ANISO], ids=["grid", "anisotropic"])
def test_mixture_velocity_matches_autograd_tweedie(interp, mix):
    """u = alpha' E[x0|x] + sigma' E[eps|x] with Tweedie: E[eps|x] = -sigma grad log p_t and
    E[x0|x] = (x + sigma^2 grad log p_t) / alpha, grad log p_t by autograd of the closed-form density."""
    g = torch.Generator().manual_seed(4)
    x = 1.5 * torch.randn(64, 2, generator=g, dtype=torch.float64)
    for t in (0.05, 0.4, 0.9):
        c = interp.coefficients(t)
        s = _grad_log_p(mix.at_interpolant(interp, t), x)
        expected = c.d_alpha_t * (x + c.sigma_t**2 * s) / c.alpha_t - c.d_sigma_t * c.sigma_t * s
        assert torch.allclose(mix.velocity(x, t, interp), expected, rtol=1e-8, atol=1e-8), t


def test_mixture_velocity_at_the_ends_of_the_linear_path():
    """t = 0: x_t = x_0, so u = -x_0 + E[eps] = -x; t = 1: x_t = eps, so u = x - E[x_0]."""
    x = torch.randn(10, 2, dtype=torch.float64)
    interp = Interpolant.linear()
    assert torch.allclose(ANISO.velocity(x, 0.0, interp), -x)
    assert torch.allclose(ANISO.velocity(x, 1.0, interp), x - ANISO.mean())


def _continuity_residual(mix, interp, velocity, x, t, h=1e-4):
    """d_t log p_t + div u + u . grad log p_t, all by central finite differences (float64)."""
    logp = lambda y, s: mix.at_interpolant(interp, s).log_prob(y)  # noqa: E731
    dt_logp = (logp(x, t + h) - logp(x, t - h)) / (2 * h)
    u = velocity(x, t)
    div, grad = torch.zeros(x.shape[0], dtype=torch.float64), torch.zeros_like(x)
    for j in range(x.shape[1]):
        e = torch.zeros_like(x)
        e[:, j] = h
        div += (velocity(x + e, t)[:, j] - velocity(x - e, t)[:, j]) / (2 * h)
        grad[:, j] = (logp(x + e, t) - logp(x - e, t)) / (2 * h)
    return dt_logp + div + (u * grad).sum(1), dt_logp.abs()


@pytest.mark.parametrize("interp", INTERPOLANTS, ids=IDS)
def test_mixture_velocity_solves_the_continuity_equation(interp):
    """d p_t/dt + div(p_t u_t) = 0 for the transported closed-form density: the residual is at the level
    of the finite-difference error, and a 10 % wrong field (or another interpolant's) fails it."""
    g = torch.Generator().manual_seed(5)
    x = 1.2 * torch.randn(40, 2, generator=g, dtype=torch.float64)
    exact = lambda y, s: ANISO.velocity(y, s, interp)  # noqa: E731
    wrong = lambda y, s: 1.1 * ANISO.velocity(y, s, interp)  # noqa: E731
    other = Interpolant.trig() if interp.kind == "linear" else Interpolant.linear()
    swapped = lambda y, s: ANISO.velocity(y, s, other)  # noqa: E731
    for t in (0.2, 0.5, 0.8):
        res, scale = _continuity_residual(ANISO, interp, exact, x, t)
        assert float(res.abs().max()) < 1e-5 * max(1.0, float(scale.max())), (t, float(res.abs().max()))
        for bad in (wrong, swapped):
            res_bad, _ = _continuity_residual(ANISO, interp, bad, x, t)
            assert float(res_bad.abs().max()) > 1e-2, t
