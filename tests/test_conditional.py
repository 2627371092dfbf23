"""Conditional generation (minidiff.conditional) against references: naive float64 block averages, the
projector identities of ILVR's filter, the exact Gaussian-mixture posterior of a linear measurement
against self-normalised importance sampling and the scalar Kalman formula, ILVR with the exact score of a
Gaussian prior against its closed-form posterior, DDIM inversion against the closed-form probability-flow
map of Gaussian data, partial DDIM grids against samplers.ddim, and SDEdit's faithfulness trade-off on an
exact mixture."""
import math

import numpy as np
import pytest
import torch

from minidiff import GaussianMixture, Schedule, samplers
from minidiff import conditional as C
from minidiff.train import OBJECTIVES, PRESETS, get_objective

SCHED = Schedule.linear(1000)


def _naive_downsample(x, f):
    x = x.double().numpy()
    B, Ch, H, W = x.shape
    out = np.zeros((B, Ch, H // f, W // f))
    for i in range(H // f):
        for j in range(W // f):
            out[:, :, i, j] = x[:, :, i * f:(i + 1) * f, j * f:(j + 1) * f].mean(axis=(2, 3))
    return out


def _image_eps(gm, schedule, side):
    """The exact eps of a mixture on flattened ``side x side`` images, as an image eps-model."""
    flat = gm.eps_model(schedule)
    return lambda x, t_index: flat(x.reshape(x.shape[0], -1), t_index).reshape(x.shape)


# ------------------------------------------------------------------------ the measurement
@pytest.mark.parametrize("factor", [2, 4])
def test_downsample_matches_naive_block_means(factor):
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(C.downsample(x, factor).numpy(), _naive_downsample(x, factor), atol=1e-12)
    A = C.measurement_matrix(8, factor)
    np.testing.assert_allclose((x[:, :1].reshape(3, -1) @ A.T).numpy(),
                               _naive_downsample(x[:, :1], factor).reshape(3, -1), atol=1e-12)


def test_lowpass_is_an_orthogonal_projector_and_the_lift_is_a_right_inverse():
    g = torch.Generator().manual_seed(1)
    x, z = (torch.randn(4, 1, 8, 8, dtype=torch.float64, generator=g) for _ in range(2))
    y = torch.randn(4, 1, 4, 4, dtype=torch.float64, generator=g)
    assert torch.equal(C.downsample(C.upsample_nearest(y)), y)
    torch.testing.assert_close(C.lowpass(C.lowpass(x)), C.lowpass(x))                  # idempotent
    torch.testing.assert_close((C.lowpass(x) * z).sum(), (x * C.lowpass(z)).sum())     # symmetric
    assert float(C.consistency_error(C.upsample_nearest(y), y).max()) == 0.0
    assert float(C.consistency_error(C.upsample_bicubic(y), y).max()) > 1e-3           # bicubic is not


def test_psnr_matches_its_formula():
    g = torch.Generator().manual_seed(2)
    x, r = torch.rand(5, 1, 8, 8, generator=g), torch.rand(5, 1, 8, 8, generator=g)
    mse = ((x.double() - r.double()) ** 2).reshape(5, -1).mean(1).numpy()
    np.testing.assert_allclose(C.psnr(x, r).numpy(), 10 * np.log10(4.0 / mse), rtol=1e-5)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="factor"):
        C.downsample(torch.zeros(1, 1, 8, 8), 3)
    with pytest.raises(ValueError, match="images"):
        C.downsample(torch.zeros(8, 8), 2)
    with pytest.raises(TypeError, match="x"):
        C.downsample(np.zeros((1, 1, 8, 8)), 2)
    with pytest.raises(ValueError, match="noise_std"):
        C.measurement_posterior(GaussianMixture.grid_2d(2), torch.eye(2), torch.zeros(2), 0.0)
    with pytest.raises(ValueError, match="A must be"):
        C.measurement_posterior(GaussianMixture.grid_2d(2), torch.eye(3), torch.zeros(3), 0.1)
    with pytest.raises(IndexError, match="t_index_start"):
        C.partial_timesteps(SCHED, 1000, 10)


# ------------------------------------------------------------------------ the exact posterior
def _prior_4d():
    g = torch.Generator().manual_seed(3)
    L = torch.randn(3, 4, 4, dtype=torch.float64, generator=g) * 0.3
    covs = L @ L.transpose(1, 2) + 0.05 * torch.eye(4, dtype=torch.float64)
    means = torch.tensor([[1.0, 1.0, -0.5, 0.0], [-1.0, 0.5, 0.5, -1.0], [0.0, -1.0, 1.0, 1.0]],
                         dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), means, covs)


def test_measurement_posterior_matches_importance_sampling():
    prior, s = _prior_4d(), 0.3
    A = C.measurement_matrix(2, 1)[:2] + C.measurement_matrix(2, 2)  # (2, 4): two pixels plus the mean
    y = torch.tensor([0.2, 0.1], dtype=torch.float64)
    post = C.measurement_posterior(prior, A, y, s)
    x = prior.sample(400_000, generator=torch.Generator().manual_seed(4))
    logw = -0.5 * ((x @ A.T - y) ** 2).sum(1) / s**2
    w = torch.softmax(logw, 0)
    ess = float(1.0 / (w**2).sum())
    assert ess > 5000
    mean_is = (w[:, None] * x).sum(0)
    cov_is = (w[:, None, None] * (x - mean_is)[:, :, None] * (x - mean_is)[:, None, :]).sum(0)
    sd = post.covariance().diagonal().sqrt()
    assert torch.all((mean_is - post.mean()).abs() < 5 * sd / math.sqrt(ess)), (mean_is, post.mean())
    torch.testing.assert_close(cov_is, post.covariance(), atol=0.03, rtol=0.05)
    k = torch.multinomial(prior.weights, 400_000, replacement=True, generator=torch.Generator().manual_seed(4))
    resp_is = torch.stack([w[k == j].sum() for j in range(3)])
    torch.testing.assert_close(resp_is, post.weights, atol=0.03, rtol=0.0)


def test_measurement_posterior_of_one_gaussian_is_the_scalar_kalman_update():
    prior = GaussianMixture(torch.ones(1), torch.tensor([[0.5]]), torch.tensor([[[2.0]]]))
    post = C.measurement_posterior(prior, torch.tensor([[3.0]]), torch.tensor([1.0]), 0.5)
    gain = 2.0 * 3.0 / (9.0 * 2.0 + 0.25)
    assert float(post.means[0, 0]) == pytest.approx(0.5 + gain * (1.0 - 1.5), rel=1e-12)
    assert float(post.covs[0, 0, 0]) == pytest.approx(2.0 - gain * 3.0 * 2.0, rel=1e-12)


# ------------------------------------------------------------------------ ILVR
def test_ilvr_with_the_exact_score_of_a_gaussian_prior_samples_its_posterior():
    """Isotropic Gaussian prior on 2x2 images: given the block mean y, the posterior is the lift of y plus
    N((I - P) mu, s^2 (I - P)), and ILVR is exact there (the two subspaces are independent) up to its base
    sampler's discretisation: on the full grid (eta = 1: DDPM's ancestral steps) that is below the
    Monte-Carlo error of 4000 samples."""
    s, mu = 0.5, torch.tensor([0.3, -0.2, 0.6, 0.1], dtype=torch.float64)
    prior = GaussianMixture.isotropic(mu[None], s)
    n = 4000
    y = torch.full((n, 1, 1, 1), 0.25, dtype=torch.float64)
    out = samplers.final(C.ilvr(_image_eps(prior, SCHED, 2), SCHED, y, n_steps=1000,
                                generator=torch.Generator().manual_seed(5)))
    assert float(C.consistency_error(out, y).max()) < 1e-6
    perp = (out - C.lowpass(out)).reshape(n, 4)
    mu_perp = mu - mu.mean()
    assert torch.all((perp.mean(0) - mu_perp).abs() < 4 * s / math.sqrt(n))
    cov = torch.cov(perp.T)
    expected = s**2 * (torch.eye(4, dtype=torch.float64) - 0.25)
    torch.testing.assert_close(cov, expected, atol=0.015, rtol=0.0)


def test_ilvr_fails_the_consistency_check_when_its_projection_is_dropped():
    """The same unconditional sampler without ILVR's replacement does not explain the measurement."""
    prior = GaussianMixture.isotropic(torch.zeros(1, 4, dtype=torch.float64), 0.5)
    y = torch.full((500, 1, 1, 1), 0.25, dtype=torch.float64)
    free = samplers.final(samplers.ddim(_image_eps(prior, SCHED, 2), torch.randn(500, 1, 2, 2, dtype=torch.float64,
                                        generator=torch.Generator().manual_seed(6)), SCHED, 100, backend="torch"))
    assert float(C.consistency_error(free, y).mean()) > 0.1


# ------------------------------------------------------------------------ SR3
class _Echo(torch.nn.Module):
    """Returns its input channels: output channel 0 is x_t, channel 1 the conditioning."""

    class config:
        in_channels, prediction = 2, "eps"

    def forward(self, x, t_index, y=None):
        return x


def test_sr3_objective_feeds_the_lifted_low_res_image_and_regresses_eps():
    assert OBJECTIVES["sr3"] is C.SR3Objective and PRESETS["sr_digits"].objective == "sr3"
    obj = get_objective("sr3")
    g = torch.Generator().manual_seed(7)
    x0 = torch.randn(6, 1, 8, 8, generator=g)
    t_index, noise = obj.draw(g, 6, (1, 8, 8), SCHED)
    seen = {}

    class Spy(_Echo):
        def forward(self, x, t_index, y=None):
            seen["x"] = x
            return x

    loss = obj.loss(Spy(), x0, t_index, noise, None, SCHED)
    ab = torch.as_tensor(SCHED.alpha_bar[t_index.numpy()], dtype=torch.float32)[:, None, None, None]
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    torch.testing.assert_close(seen["x"][:, 1:], torch.as_tensor(_naive_downsample(x0, 2), dtype=torch.float32)
                               .repeat_interleave(2, 2).repeat_interleave(2, 3))
    torch.testing.assert_close(loss, ((x_t - noise) ** 2).mean())
    eps_fn = C.sr3_eps_model(_Echo(), SCHED, C.downsample(x0))
    torch.testing.assert_close(eps_fn(x_t, t_index), x_t)
    with pytest.raises(ValueError, match="match"):
        eps_fn(x_t[:2], t_index[:2])


# ------------------------------------------------------------------------ DDIM grids, inversion, SDEdit
def test_ddim_from_on_the_full_grid_is_samplers_ddim():
    prior = _prior_4d()
    eps = _image_eps(prior, SCHED, 2)
    x_T = torch.randn(50, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    assert np.array_equal(C.partial_timesteps(SCHED, 999, 25), SCHED.timesteps(25))
    a = samplers.final(C.ddim_from(eps, x_T, SCHED, C.partial_timesteps(SCHED, 999, 25)))
    b = samplers.final(samplers.ddim(eps, x_T, SCHED, 25, backend="torch"))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    grid = C.partial_timesteps(SCHED, 300, 7)
    assert grid[0] == 300 and len(np.unique(grid)) == 7 and np.all(np.diff(grid) < 0)


def test_ddim_inversion_converges_to_the_closed_form_flow_map_of_gaussian_data():
    """For x_0 ~ N(0, s^2 I) the probability-flow map is x_t = x_0 sqrt(ab s^2 + 1 - ab) / s."""
    s = 0.5
    prior = GaussianMixture.isotropic(torch.zeros(1, 4, dtype=torch.float64), s)
    x0 = torch.randn(20, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(9)) * s
    ab_T = SCHED.alpha_bar[-1]
    exact = x0 * math.sqrt(ab_T * s * s + 1 - ab_T) / s
    errs = {}
    for n in (10, 100, 1000):
        x_T = samplers.final(C.ddim_invert(_image_eps(prior, SCHED, 2), x0, SCHED, n))
        errs[n] = float((x_T - exact).abs().max())
    assert errs[1000] < errs[100] < errs[10] and errs[1000] < 0.02, errs
    back = samplers.final(samplers.ddim(_image_eps(prior, SCHED, 2), x_T, SCHED, 1000, backend="torch"))
    assert float((back - x0).abs().max()) < 0.02


def test_sdedit_trades_faithfulness_for_forgetting_the_guide():
    """Two-component prior at +-1 (std 0.2); a guide at +0.3: a low start stays near the guide, a start at
    T-1 forgets it and lands on each component with its prior weight."""
    prior = GaussianMixture.isotropic(torch.tensor([[1.0] * 4, [-1.0] * 4], dtype=torch.float64), 0.2)
    eps = _image_eps(prior, SCHED, 2)
    n = 2000
    guide = torch.full((n, 1, 2, 2), 0.3, dtype=torch.float64)
    g = torch.Generator().manual_seed(10)
    near = samplers.final(C.sdedit(eps, guide, SCHED, 50, n_steps=10, generator=g))
    mid = samplers.final(C.sdedit(eps, guide, SCHED, 400, n_steps=20, generator=g))
    far = samplers.final(C.sdedit(eps, guide, SCHED, 999, n_steps=20, generator=g))
    dist = {k: float((v - guide).pow(2).mean().sqrt()) for k, v in (("near", near), ("mid", mid), ("far", far))}
    assert dist["near"] < dist["mid"] < dist["far"], dist
    plus_mid = float((mid.mean((1, 2, 3)) > 0).double().mean())
    plus_far = float((far.mean((1, 2, 3)) > 0).double().mean())
    assert plus_mid > 0.6
    assert abs(plus_far - 0.5) < 4 * 0.5 / math.sqrt(n), plus_far
