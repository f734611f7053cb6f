"""Tests of smoothpin.targets against independent computations.

GaussianMixture: log-density against torch.distributions (MixtureSameFamily of MultivariateNormal),
score against autograd of that log-density (1e-10), responsibilities, moments, sampling.
Unnormalised targets: gradients against autograd, ln Z and moments by quadrature (midpoint rule,
spectrally accurate for these smooth, fast-decaying integrands), samples against those moments.
Bad inputs raise ValueError naming the argument. float64 unless a test says otherwise.
"""
import math

import pytest
import torch

import smoothpin as sp

from mixtures import CUDA, D64, TD, build, gen as _gen, mixture_params  # tests/mixtures.py


def reference(name):
    w, mu, S = mixture_params(name)
    return TD.MixtureSameFamily(TD.Categorical(probs=w), TD.MultivariateNormal(mu, covariance_matrix=S))


def points(d, n=64, seed=1, far=True):
    x = 2.0 * torch.randn(n, d, generator=_gen(seed), dtype=D64)
    if far:  # points far in the tails, where naive densities underflow
        x = torch.cat([x, torch.full((1, d), 30.0, dtype=D64), torch.full((1, d), -25.0, dtype=D64)])
    return x


def ref_score(ref, x):
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ref.log_prob(xr).sum(), xr)
    return g


MIXTURES = ["full2d", "iso5d", "narrow", "gaussian"]


# --------------------------------------------------------------------------- GaussianMixture

@pytest.mark.parametrize("name", MIXTURES)
def test_log_prob_matches_torch_distributions(name):
    gm, ref = build(name), reference(name)
    x = points(gm.dim)
    lp, lp_ref = gm.log_prob(x), ref.log_prob(x)
    assert lp.dtype == D64 and lp.shape == x.shape[:-1]
    # 1e-10 relative to the size of log p (which reaches ~1e6 at the far points)
    assert torch.all((lp - lp_ref).abs() <= 1e-10 * (1 + lp_ref.abs()))


@pytest.mark.parametrize("name", MIXTURES)
def test_score_matches_autograd_of_closed_form_log_density(name):
    gm, ref = build(name), reference(name)
    x = points(gm.dim)
    s, g = gm.score(x), ref_score(ref, x)
    assert torch.all((s - g).abs() <= 1e-10 * (1 + g.abs()))
    lp, s2 = gm.log_prob_and_score(x)
    assert torch.equal(s2, s) and torch.allclose(lp, gm.log_prob(x), rtol=1e-14, atol=0)


@pytest.mark.parametrize("name", ["full2d", "iso5d"])
def test_responsibilities_are_the_posterior_over_components(name):
    gm, ref = build(name), reference(name)
    x = points(gm.dim, far=False)
    comp = ref.component_distribution.log_prob(x[:, None, :]) + torch.log(ref.mixture_distribution.probs)
    r_ref = torch.softmax(comp, -1)
    r = gm.responsibilities(x)
    assert r.shape == (x.shape[0], gm.n_components)
    assert torch.allclose(r, r_ref, rtol=0, atol=1e-12)


def test_batched_shapes_follow_x():
    gm = build("full2d")
    x = points(2, n=12, far=False)
    xb = x.reshape(3, 4, 2)
    assert gm.log_prob(xb).shape == (3, 4) and gm.score(xb).shape == (3, 4, 2)
    assert torch.equal(gm.log_prob(xb).reshape(-1), gm.log_prob(x))
    assert torch.equal(gm.score(xb).reshape(-1, 2), gm.score(x))
    assert gm.log_prob(x[0]).shape == () and gm.responsibilities(xb).shape == (3, 4, 3)


def test_moments_match_the_law_of_total_variance():
    w, mu, S = mixture_params("full2d")
    gm = build("full2d")
    m = (w[:, None] * mu).sum(0)
    C = (w[:, None, None] * (S + (mu - m)[:, :, None] * (mu - m)[:, None, :])).sum(0)
    assert torch.allclose(gm.mean, m, rtol=0, atol=1e-14)
    assert torch.allclose(gm.covariance, C, rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", ["full2d", "iso5d"])
def test_samples_reproduce_mean_and_covariance(name):
    w, mu, S = mixture_params(name)
    m = (w[:, None] * mu).sum(0)
    C = (w[:, None, None] * (S + (mu - m)[:, :, None] * (mu - m)[:, None, :])).sum(0)
    n = 40000
    y = build(name).sample(n, generator=_gen(3))
    assert y.shape == (n, mu.shape[1]) and y.dtype == D64
    se_mean = (torch.diagonal(C) / n).sqrt()
    assert torch.all((y.mean(0) - m).abs() < 4 * se_mean)            # 4 standard errors
    yc = y - m
    prod = yc[:, :, None] * yc[:, None, :]
    se_cov = prod.std(0) / math.sqrt(n)                               # stderr of each covariance entry
    assert torch.all((prod.mean(0) - C).abs() < 4 * se_cov + 1e-12)


def test_sampling_is_deterministic_for_a_seed():
    gm = build("full2d")
    a, b = gm.sample(100, generator=_gen(7)), gm.sample(100, generator=_gen(7))
    c = gm.sample(100, generator=_gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_scaled_plus_noise_is_the_law_of_aY_plus_noise():
    w, mu, S = mixture_params("full2d")
    a, v = 0.6, 0.35
    ref = TD.MixtureSameFamily(TD.Categorical(probs=w), TD.MultivariateNormal(
        a * mu, covariance_matrix=a * a * S + v * torch.eye(2, dtype=D64)))
    law = build("full2d").scaled_plus_noise(a, v)
    x = points(2)
    assert torch.all((law.log_prob(x) - ref.log_prob(x)).abs() <= 1e-10 * (1 + ref.log_prob(x).abs()))
    g = ref_score(ref, x)
    assert torch.all((law.score(x) - g).abs() <= 1e-10 * (1 + g.abs()))


@pytest.mark.parametrize("name", ["full2d", "narrow", "iso5d"])
def test_float32_close_to_float64(name):
    gm = build(name)
    x = points(gm.dim, far=False)
    lp64, s64 = gm.log_prob_and_score(x)
    for mix in (gm, gm.to(dtype=torch.float32)):       # float64 parameters or float32 parameters
        lp32, s32 = mix.log_prob_and_score(x.float())
        assert lp32.dtype == torch.float32 and s32.dtype == torch.float32
        # float32 carries ~7 digits; the narrow (1e-3) components amplify rounding of x - mu by
        # 1/1e-3 relative to |score|, so allow 1e-4 relative to the scale of the value
        assert torch.all((lp32.double() - lp64).abs() <= 1e-4 * (1 + lp64.abs()))
        assert torch.all((s32.double() - s64).abs() <= 1e-4 * (1 + s64.abs()))


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_device_follows_x(device):
    gm = build("full2d").to(device=device)
    x = points(2, far=False)
    lp, s = gm.log_prob_and_score(x.to(device))
    assert lp.device.type == device and s.device.type == device
    assert torch.allclose(s.cpu(), build("full2d").score(x), rtol=1e-12, atol=1e-12)
    y = gm.sample(10, generator=torch.Generator(device=device).manual_seed(0))
    assert y.device.type == device


def test_narrow_components_stay_finite_far_away():
    gm = build("narrow")
    x = torch.tensor([[1e3, -1e3], [50.0, 50.0], [0.0, 1e-9], [1.0, 1.0 + 1e-9]], dtype=D64)
    lp, s = gm.log_prob_and_score(x)
    assert torch.isfinite(lp).all() and torch.isfinite(s).all()
    g = ref_score(reference("narrow"), x)
    assert torch.all((s - g).abs() <= 1e-10 * (1 + g.abs()))


# --------------------------------------------------------------------------- log f and as_mixture

def test_log_density_ratio_is_log_pi_minus_log_phi():
    sigma = 1.3
    ref = reference("full2d")
    log_f = sp.log_density_ratio(build("full2d"), sigma)
    x = points(2)
    phi = TD.Normal(torch.zeros((), dtype=D64), torch.tensor(sigma, dtype=D64))
    expect = ref.log_prob(x) - phi.log_prob(x).sum(-1)
    assert torch.all((log_f(x) - expect).abs() <= 1e-10 * (1 + expect.abs()))


def test_as_mixture():
    gm = build("full2d")
    assert sp.as_mixture(gm) is gm
    well = sp.MixtureWell()
    assert sp.as_mixture(well) is well.mixture
    with pytest.raises(ValueError, match="target"):
        sp.as_mixture(sp.Funnel())


# --------------------------------------------------------------------------- unnormalised targets

UNNORMALISED = {
    "funnel10": lambda: sp.Funnel(dim=10),
    "well": lambda: sp.MixtureWell(),
    "banana2": lambda: sp.Banana(dim=2),
    "banana4": lambda: sp.Banana(dim=4, b=0.2, scale=2.0),
    "doublewell2": lambda: sp.DoubleWell(dim=2),
    "doublewell3": lambda: sp.DoubleWell(dim=3, quartic=0.5, quadratic=2.0, linear=-0.3),
}


@pytest.mark.parametrize("name", list(UNNORMALISED))
def test_grad_log_unnormalised_matches_autograd(name):
    tgt = UNNORMALISED[name]()
    x = 1.5 * torch.randn(50, tgt.dim, generator=_gen(4), dtype=D64)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(tgt.log_unnormalised(xr).sum(), xr)
    s = tgt.grad_log_unnormalised(x)
    assert s.shape == x.shape and s.dtype == D64
    assert torch.all((s - g).abs() <= 1e-10 * (1 + g.abs()))
    lp = tgt.log_prob(x)
    assert torch.allclose(lp, tgt.log_unnormalised(x) - tgt.log_Z, rtol=1e-14, atol=0)


def _grid(lo, hi, h):
    n = int(round((hi - lo) / h))
    return lo + h * (torch.arange(n, dtype=D64) + 0.5), (hi - lo) / n


def quad2d(log_gamma, box, h, jacobian=None, transform=None):
    """Midpoint rule on a 2-D box: returns (log Z, mean, covariance, fourth central moments).

    ``transform`` maps grid coordinates to x (with log-Jacobian ``jacobian``) for the funnel."""
    (u, hu), (v, hv) = _grid(*box[0], h[0]), _grid(*box[1], h[1])
    g = torch.stack(torch.meshgrid(u, v, indexing="ij"), -1).reshape(-1, 2)
    x = g if transform is None else transform(g)
    lw = log_gamma(x) + (0 if jacobian is None else jacobian(g)) + math.log(hu * hv)
    logZ = torch.logsumexp(lw, 0)
    p = torch.exp(lw - logZ)
    m = p @ x
    xc = x - m
    C = (p[:, None, None] * xc[:, :, None] * xc[:, None, :]).sum(0)
    m4 = p @ xc ** 4
    return float(logZ), m, C, m4


def _check_samples(y, m, C, m4, k=4.5):
    """Sample mean / variance within k standard errors of the quadrature moments."""
    n = y.shape[0]
    var = torch.diagonal(C)
    assert torch.all((y.mean(0) - m).abs() < k * (var / n).sqrt())
    se_var = ((m4 - var ** 2) / n).sqrt()                 # stderr of a sample variance
    assert torch.all((y.var(0) - var).abs() < k * se_var)


def test_mixture_well_log_Z_is_log_pi_by_quadrature():
    well = sp.MixtureWell()
    # the DDS convention, written out here: gamma = sum_k exp(-|x - mu_k|^2 / (2 * 0.05))
    mu = torch.tensor([[a, b] for a in (-1.0, 1.0) for b in (-2.0, -1.0, 0.0, 1.0, 2.0)], dtype=D64)
    x = points(2, far=False)
    expect = torch.logsumexp(-((x[:, None, :] - mu) ** 2).sum(-1) / (2 * 0.05), -1)
    assert torch.allclose(well.log_unnormalised(x), expect, rtol=1e-12, atol=1e-12)
    # bumps of std 0.22 on a 0.02 grid; the box holds all but ~e^-100 of the mass
    logZ, m, C, m4 = quad2d(well.log_unnormalised, ((-3.5, 3.5), (-4.5, 4.5)), (0.02, 0.02))
    assert abs(logZ - math.log(math.pi)) < 1e-9 and abs(well.log_Z - math.log(math.pi)) < 1e-12
    _check_samples(well.sample(20000, generator=_gen(11), dtype=D64), m, C, m4)


def test_banana_log_Z_and_samples_by_quadrature():
    ban = sp.Banana(dim=2)              # b = 0.5, s = 1.5
    # x1 within 7 s (tail mass ~3e-12); the ridge x2 = -b(x1^2 - s^2) reaches -54; at |x1| = 10 the
    # conditional width in x1 is ~1/(2 b |x1|) = 0.1, so h1 = 0.02
    logZ, m, C, m4 = quad2d(ban.log_unnormalised, ((-10.5, 10.5), (-62.0, 9.0)), (0.02, 0.1))
    assert abs(logZ - ban.log_Z) < 1e-8
    _check_samples(ban.sample(20000, generator=_gen(12), dtype=D64), m, C, m4)


def test_double_well_log_Z_and_samples_by_quadrature():
    dw = sp.DoubleWell(dim=2)
    # log gamma at |x1| = 3.6 is ~90 below its maximum: the box holds all the mass
    logZ, m, C, m4 = quad2d(dw.log_unnormalised, ((-3.6, 3.6), (-10.0, 10.0)), (0.005, 0.1))
    assert abs(logZ - dw.log_Z) < 1e-8
    _check_samples(dw.sample(20000, generator=_gen(13), dtype=D64), m, C, m4)
    dw3 = sp.DoubleWell(dim=3)          # an extra standard normal coordinate adds ln sqrt(2 pi)
    assert abs(dw3.log_Z - logZ - 0.5 * math.log(2 * math.pi)) < 1e-8


def test_funnel_density_is_normalised():
    fun = sp.Funnel(dim=10)
    x = 2.0 * torch.randn(200, 10, generator=_gen(14), dtype=D64)
    # independent form: N(x1; 0, 9) prod_i N(x_i; 0, e^{x1}) by torch.distributions
    expect = (TD.Normal(torch.zeros((), dtype=D64), 3.0).log_prob(x[:, 0])
              + TD.Normal(torch.zeros_like(x[:, :1]), torch.exp(x[:, :1] / 2)).log_prob(x[:, 1:]).sum(-1))
    assert torch.all((fun.log_prob(x) - expect).abs() <= 1e-10 * (1 + expect.abs()))
    assert fun.log_Z == 0.0


def test_funnel_x1_marginal_integrates_to_one():
    # m(x1) = int gamma(x1, r) dr by importance sampling in u = r e^{-x1/2} (proposal N(0, I_9)),
    # then int m(x1) dx1 by the midpoint rule over 10 standard deviations of x1.
    fun = sp.Funnel(dim=10)
    x1, h = _grid(-30.0, 30.0, 0.05)
    u = torch.randn(256, 9, generator=_gen(15), dtype=D64)
    r = torch.exp(x1[:, None, None] / 2) * u                              # (n1, 256, 9)
    x = torch.cat([x1[:, None, None].expand(-1, 256, 1), r], -1)
    log_phi_u = -0.5 * (u * u).sum(-1) - 4.5 * math.log(2 * math.pi)
    lw = fun.log_unnormalised(x) - log_phi_u + 4.5 * x1[:, None]          # Jacobian e^{9 x1 / 2}
    log_m = torch.logsumexp(lw, 1) - math.log(256)
    w = torch.exp(lw - torch.logsumexp(lw, 1, keepdim=True)) * 256
    se_log_m = w.std(1) / 16                                              # delta method, per x1
    logZ = torch.logsumexp(log_m, 0) + math.log(h)
    assert abs(float(logZ)) < 1e-8 + 5 * float(se_log_m.max())


def test_funnel_samples_by_quadrature():
    # Funnel(dim=2) on the grid (x1, u), x2 = e^{x1/2} u (Jacobian e^{x1/2}): ln Z and the moments
    # of x1 and of the standardised u; Funnel(10) samples are compared with them (the law of
    # (x1, x_i e^{-x1/2}) does not depend on the dimension).
    fun2 = sp.Funnel(dim=2)
    tr = lambda g: torch.stack([g[:, 0], torch.exp(g[:, 0] / 2) * g[:, 1]], -1)
    logZ, *_ = quad2d(fun2.log_unnormalised, ((-30.0, 30.0), (-12.0, 12.0)), (0.05, 0.05),
                      jacobian=lambda g: g[:, 0] / 2, transform=tr)
    assert abs(logZ) < 1e-8
    _, m, C, m4 = quad2d(lambda g: fun2.log_unnormalised(tr(g)) + g[:, 0] / 2,
                         ((-30.0, 30.0), (-12.0, 12.0)), (0.05, 0.05))
    y = sp.Funnel(dim=10).sample(20000, generator=_gen(16), dtype=D64)
    assert y.shape == (20000, 10) and y.dtype == D64
    z = torch.stack([y[:, 0], y[:, 1] * torch.exp(-y[:, 0] / 2), y[:, 5] * torch.exp(-y[:, 0] / 2)], -1)
    _check_samples(z, torch.cat([m, m[1:]]), torch.diag(torch.cat([torch.diagonal(C), C[1:, 1]])),
                   torch.cat([m4, m4[1:]]))


def test_unnormalised_targets_float32_and_seeds():
    for name, make in UNNORMALISED.items():
        tgt = make()
        x = torch.randn(20, tgt.dim, generator=_gen(17), dtype=D64)
        lg, g = tgt.log_unnormalised(x), tgt.grad_log_unnormalised(x)
        lg32, g32 = tgt.log_unnormalised(x.float()), tgt.grad_log_unnormalised(x.float())
        assert lg32.dtype == torch.float32 and g32.dtype == torch.float32, name
        assert torch.all((lg32.double() - lg).abs() <= 1e-5 * (1 + lg.abs())), name
        assert torch.all((g32.double() - g).abs() <= 1e-5 * (1 + g.abs())), name
        a, b = tgt.sample(50, generator=_gen(1)), tgt.sample(50, generator=_gen(1))
        assert torch.equal(a, b), name


# --------------------------------------------------------------------------- bad input

def _w(*v):
    return torch.tensor(v, dtype=D64)


MU2 = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=D64)
EYE2 = torch.eye(2, dtype=D64).expand(2, 2, 2)

BAD = [
    ("weights", lambda: sp.GaussianMixture(_w(-0.1, 1.1), MU2, EYE2)),
    ("weights", lambda: sp.GaussianMixture(_w(0.3, 0.3), MU2, EYE2)),
    ("weights", lambda: sp.GaussianMixture(_w(0.2, 0.3, 0.5), MU2, EYE2)),
    ("weights", lambda: sp.GaussianMixture(_w(0.5, 0.5)[None], MU2, EYE2)),
    ("weights", lambda: sp.GaussianMixture(_w(float("nan"), 0.5), MU2, EYE2)),
    ("means", lambda: sp.GaussianMixture(_w(0.5, 0.5), MU2[0], EYE2)),
    ("means", lambda: sp.GaussianMixture(_w(0.5, 0.5), MU2 * float("inf"), EYE2)),
    ("covariances", lambda: sp.GaussianMixture(_w(0.5, 0.5), MU2, EYE2[0])),
    ("covariances", lambda: sp.GaussianMixture(_w(0.5, 0.5), MU2, torch.tensor(
        [[[1.0, 0.5], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]], dtype=D64))),
    ("covariances", lambda: sp.GaussianMixture(_w(0.5, 0.5), MU2, torch.tensor(
        [[[1.0, 2.0], [2.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]], dtype=D64))),
    ("covariances", lambda: sp.GaussianMixture(_w(0.5, 0.5), MU2, -EYE2)),
    ("covariances", lambda: sp.GaussianMixture(_w(0.5, 0.5), MU2, EYE2 * float("nan"))),
    ("variances", lambda: sp.GaussianMixture.isotropic(_w(0.5, 0.5), MU2, 0.0)),
    ("variances", lambda: sp.GaussianMixture.isotropic(_w(0.5, 0.5), MU2, _w(1.0, -1.0))),
    ("variances", lambda: sp.GaussianMixture.isotropic(_w(0.5, 0.5), MU2, _w(1.0, 1.0, 1.0))),
    ("mean", lambda: sp.Gaussian(MU2, EYE2[0])),
    ("covariance", lambda: sp.Gaussian(MU2[0], -1.0)),
    ("x", lambda: sp.GaussianMixture(_w(0.5, 0.5), MU2, EYE2).log_prob(torch.zeros(4, 3, dtype=D64))),
    ("x", lambda: sp.GaussianMixture(_w(0.5, 0.5), MU2, EYE2).score(_w(float("nan"), 0.0))),
    ("x", lambda: sp.GaussianMixture(_w(0.5, 0.5), MU2, EYE2).score(_w(float("inf"), 0.0))),
    ("x", lambda: sp.GaussianMixture(_w(0.5, 0.5), MU2, EYE2).log_prob(torch.zeros(3, 2, dtype=torch.long))),
    ("x", lambda: sp.GaussianMixture(_w(0.5, 0.5), MU2, EYE2).log_prob([0.0, 0.0])),
    ("x", lambda: sp.GaussianMixture(_w(0.5, 0.5), MU2, EYE2).responsibilities(torch.zeros(3, dtype=D64))),
    ("n", lambda: sp.GaussianMixture(_w(0.5, 0.5), MU2, EYE2).sample(0)),
    ("n", lambda: sp.GaussianMixture(_w(0.5, 0.5), MU2, EYE2).sample(2.5)),
    ("generator", lambda: sp.GaussianMixture(_w(0.5, 0.5), MU2, EYE2).sample(3, generator=0)),
    ("noise_var", lambda: sp.GaussianMixture(_w(0.5, 0.5), MU2, EYE2).scaled_plus_noise(1.0, -0.1)),
    ("a", lambda: sp.GaussianMixture(_w(0.5, 0.5), MU2, EYE2).scaled_plus_noise(float("nan"), 0.1)),
    ("noise_var", lambda: sp.GaussianMixture(_w(0.5, 0.5), MU2, EYE2).scaled_plus_noise(0.0, 0.0)),
    ("dim", lambda: sp.Funnel(dim=1)),
    ("scale", lambda: sp.Funnel(scale=0.0)),
    ("variance", lambda: sp.MixtureWell(variance=-1.0)),
    ("spacing", lambda: sp.MixtureWell(spacing=0.0)),
    ("dim", lambda: sp.Banana(dim=1)),
    ("scale", lambda: sp.Banana(scale=-1.0)),
    ("b", lambda: sp.Banana(b=float("nan"))),
    ("quartic", lambda: sp.DoubleWell(quartic=0.0)),
    ("dim", lambda: sp.DoubleWell(dim=0)),
    ("x", lambda: sp.Funnel().log_unnormalised(torch.zeros(5, 3, dtype=D64))),
    ("x", lambda: sp.Banana().grad_log_unnormalised(_w(float("nan"), 1.0))),
    ("x", lambda: sp.MixtureWell().log_prob(torch.zeros(2, 3, dtype=D64))),
    ("n", lambda: sp.DoubleWell().sample(0)),
    ("generator", lambda: sp.Funnel().sample(5, generator="seed")),
    ("sigma", lambda: sp.log_density_ratio(sp.MixtureWell(), sigma=0.0)),
    ("target", lambda: sp.log_density_ratio(object(), sigma=1.0)),
]


@pytest.mark.parametrize("arg,make", BAD, ids=[f"{i}-{a}" for i, (a, _) in enumerate(BAD)])
def test_bad_input_raises_value_error_naming_the_argument(arg, make):
    with pytest.raises(ValueError, match=arg):
        make()
