"""Tests of smoothpin.processes (OU / VP-SDE and Föllmer) against closed forms built in this file.

The marginal log-densities are written here with torch.distributions from the SDE definitions
(DESIGN.md section 3): OU p_t = sum_k w_k N(a mu_k, a^2 Sigma_k + sigma^2 (1 - a^2) I), a = e^{-B(t)};
Föllmer p_t = sum_k w_k N(t mu_k, t^2 Sigma_k + sigma^2 t (1 - t) I). Scores are autograd of these
(1e-10); the Föllmer posterior mean is computed by explicit linear algebra; the endpoint b(x, 0) by
the exponentially tilted mixture. Sampling checks allow 4 standard errors. float64 unless stated.
"""
import math

import pytest
import torch

import smoothpin as sp

from mixtures import CUDA, D64, TD, build, gen as _gen, mixture_params as params  # tests/mixtures.py


def transported_log_prob(name, x, a, v):
    """log of sum_k w_k N(x; a mu_k, a^2 Sigma_k + v I) with per-point a, v (tensors (n,))."""
    w, mu, S = params(name)
    d = mu.shape[1]
    a, v = a[:, None, None], v[:, None, None]
    loc = a * mu[None]                                                  # (n, K, d)
    cov = a[..., None] ** 2 * S[None] + v[..., None] * torch.eye(d, dtype=D64)
    comp = TD.MultivariateNormal(loc, covariance_matrix=cov).log_prob(x[:, None, :])
    return torch.logsumexp(comp + torch.log(w), -1)


def transported_score(name, x, a, v):
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(transported_log_prob(name, xr, a, v).sum(), xr)
    return g


def points(d, n=48, seed=1):
    return 2.0 * torch.randn(n, d, generator=_gen(seed), dtype=D64)


def close(a, b, rel=1e-10):
    """|a - b| <= rel (1 + |b|) elementwise: relative where values are large, absolute near 0."""
    return bool(torch.all((a - b).abs() <= rel * (1 + b.abs())))


def integrated_beta(process, t):
    """B(t) = int_0^t beta, written from the schedule: constant, or linear from beta_min to beta_max."""
    b0, b1, T = process.beta, process.beta_max, process.T
    return b0 * t + (b1 - b0) * t * t / (2 * T)


OUS = {"ou": lambda: sp.OU(sigma=1.3, beta=0.7, T=2.0),
       "linear": lambda: sp.OU.linear(beta_min=0.1, beta_max=20.0, sigma=0.9, T=1.0)}


# --------------------------------------------------------------------------- OU

@pytest.mark.parametrize("kind", list(OUS))
def test_ou_transition_parameters(kind):
    ou = OUS[kind]()
    for t in (0.0, 0.01, 0.37, ou.T):
        # B(t) by Simpson's rule on beta_at (exact for a linear beta)
        B_simpson = t / 6 * (ou.beta_at(0.0) + 4 * ou.beta_at(t / 2) + ou.beta_at(t))
        assert abs(ou.integrated_beta(t) - B_simpson) < 1e-12
        a, s = ou.mean_std(t)
        assert abs(a - math.exp(-B_simpson)) < 1e-14
        assert abs(s - ou.sigma * math.sqrt(1 - math.exp(-2 * B_simpson))) < 1e-14
        assert abs(ou.g2(t) - 2 * ou.beta_at(t) * ou.sigma ** 2) < 1e-14
    assert ou.interval == (0.0, ou.T)


@pytest.mark.parametrize("name", ["full2d", "iso5d"])
@pytest.mark.parametrize("kind", list(OUS))
def test_ou_score_is_autograd_of_marginal_log_density(name, kind):
    ou, gm = OUS[kind](), build(name)
    x = points(gm.dim)
    n = x.shape[0]
    for t in (0.0, 1e-3, 0.2, ou.T / 2, ou.T):
        a = torch.full((n,), math.exp(-integrated_beta(ou, t)), dtype=D64)
        v = ou.sigma ** 2 * (1 - a * a)
        assert close(ou.score(gm, x, t), transported_score(name, x, a, v)), t
        m = ou.marginal(gm, t)
        assert close(m.log_prob(x), transported_log_prob(name, x, a, v)), t
    # per-point times (a tensor broadcasting against x.shape[:-1])
    tt = torch.linspace(0.0, ou.T, n, dtype=D64)
    a = torch.exp(-integrated_beta(ou, tt))
    assert close(ou.score(gm, x, tt), transported_score(name, x, a, ou.sigma ** 2 * (1 - a * a)))
    xb, tb = x.reshape(6, 8, -1), tt.reshape(6, 8)
    assert torch.equal(ou.score(gm, xb, tb).reshape(n, -1), ou.score(gm, x, tt))


def test_ou_score_at_time_zero_is_the_target_score():
    gm, x = build("full2d"), points(2)
    for ou in (OUS["ou"](), OUS["linear"]()):
        assert torch.allclose(ou.score(gm, x, 0.0), gm.score(x), rtol=1e-13, atol=1e-13)


def test_ou_gaussian_target_closed_form():
    # pi = N(m, S): p_t = N(a m, a^2 S + s^2 I), score = -(a^2 S + s^2 I)^{-1} (x - a m)
    m = torch.tensor([1.0, -2.0], dtype=D64)
    S = torch.tensor([[0.8, 0.3], [0.3, 0.4]], dtype=D64)
    g, ou, x = sp.Gaussian(m, S), sp.OU(sigma=1.3, beta=0.7, T=2.0), points(2)
    for t in (0.0, 0.4, 2.0):
        a = math.exp(-0.7 * t)
        C = a * a * S + 1.69 * (1 - a * a) * torch.eye(2, dtype=D64)
        expect = -torch.linalg.solve(C, (x - a * m).T).T
        assert close(ou.score(g, x, t), expect)
    assert close(ou.invariant(2, like=x).log_prob(x), TD.Normal(torch.zeros((), dtype=D64), 1.3).log_prob(x).sum(-1))


def test_ou_drifts():
    ou, gm = OUS["linear"](), build("full2d")
    x = points(2)
    tt = torch.linspace(0.0, 1.0, x.shape[0], dtype=D64)
    beta = 0.1 + 19.9 * tt
    assert close(ou.forward_drift(x, tt), -beta[:, None] * x)
    s = ou.score(gm, x, tt)
    expect = beta[:, None] * x + 2 * beta[:, None] * 0.81 * s
    assert close(ou.reverse_drift(s, x, tt), expect)
    assert close(ou.reverse_drift(lambda y, t: ou.score(gm, y, t), x, tt), expect)


@pytest.mark.parametrize("kind", list(OUS))
def test_ou_sample_transition_moments(kind):
    ou, n = OUS[kind](), 40000
    x0 = torch.tensor([2.0, -1.0], dtype=D64).expand(n, 2)
    even = torch.arange(n) % 2 == 0
    tt = torch.where(even, torch.tensor(0.05, dtype=D64), torch.tensor(0.6, dtype=D64))  # per point
    xt = ou.sample_transition(x0, tt, generator=_gen(3))
    assert xt.shape == x0.shape and xt.dtype == D64
    for t, mask in ((0.05, even), (0.6, ~even)):
        sel = xt[mask]
        a = math.exp(-integrated_beta(ou, t))
        s2 = ou.sigma ** 2 * (1 - a * a)
        m = len(sel)
        assert torch.all((sel.mean(0) - a * x0[0]).abs() < 4 * math.sqrt(s2 / m))      # 4 stderr
        assert torch.all((sel.var(0) - s2).abs() < 4 * s2 * math.sqrt(2 / m))
    assert torch.equal(ou.sample_transition(x0[:3], 0.0, generator=_gen(1)), x0[:3])   # a = 1, s = 0


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_sampling_is_deterministic_for_a_seed(device):
    ou, fol = OUS["ou"](), sp.Follmer(0.8)
    x = torch.ones(100, 3, dtype=D64, device=device)
    g = lambda s: torch.Generator(device=device).manual_seed(s)
    a, b, c = (ou.sample_transition(x, 0.5, generator=g(s)) for s in (1, 1, 2))
    assert a.device.type == device and torch.equal(a, b) and not torch.equal(a, c)
    a, b, c = (fol.sample_bridge(x, 0.5, generator=g(s)) for s in (1, 1, 2))
    assert a.device.type == device and torch.equal(a, b) and not torch.equal(a, c)


# --------------------------------------------------------------------------- Föllmer

def posterior_mean_ref(name, x, t, sigma):
    """E[Y | X_t = x] = sum_k r_k (mu_k + t Sigma_k C_k^{-1} (x - t mu_k)), C_k = t^2 Sigma_k + sigma^2 t(1-t) I."""
    w, mu, S = params(name)
    d = mu.shape[1]
    C = t * t * S + sigma ** 2 * t * (1 - t) * torch.eye(d, dtype=D64)
    comp = TD.MultivariateNormal(t * mu, covariance_matrix=C).log_prob(x[:, None, :]) + torch.log(w)
    r = torch.softmax(comp, -1)                                          # (n, K)
    u = x[:, None, :] - t * mu                                           # (n, K, d)
    sol = torch.linalg.solve(C, u.transpose(0, 1).transpose(1, 2))       # (K, d, n)
    cond = mu[:, :, None] + t * S @ sol                                  # (K, d, n)
    return torch.einsum("nk,kdn->nd", r, cond)


def tilted_mean_ref(name, x, sigma):
    """b(x, 0) + x = E[Y e^{c.Y}] / E[e^{c.Y}], c = x / sigma^2: the tilted mixture has weights
    w_k exp(c.mu_k + c.Sigma_k c / 2) and means mu_k + Sigma_k c."""
    w, mu, S = params(name)
    c = x / sigma ** 2
    Sc = torch.einsum("kij,nj->nki", S, c)
    logw = torch.log(w) + c @ mu.T + 0.5 * (c[:, None, :] * Sc).sum(-1)
    return torch.einsum("nk,nkd->nd", torch.softmax(logw, -1), mu + Sc)


@pytest.mark.parametrize("name", ["full2d", "iso5d"])
def test_follmer_score_and_drift_are_autograd_of_marginal(name):
    fol, gm = sp.Follmer(sigma=0.8), build(name)
    x = points(gm.dim)
    n = x.shape[0]
    for t in (0.05, 0.3, 0.5, 0.8, 0.99, 1.0):
        tt = torch.full((n,), t, dtype=D64)
        g = transported_score(name, x, tt, 0.64 * tt * (1 - tt))
        assert close(fol.score(gm, x, t), g), t
        assert close(fol.marginal(gm, t).log_prob(x), transported_log_prob(name, x, tt, 0.64 * tt * (1 - tt)))
        # b = sigma^2 grad log p_t + x / t (the reference cancels terms of size |x|/t ~ 1e2: still 1e-10)
        assert close(fol.drift(gm, x, t), 0.64 * g + x / t, rel=1e-10), t
    tt = torch.linspace(0.02, 1.0, n, dtype=D64)
    g = transported_score(name, x, tt, 0.64 * tt * (1 - tt))
    assert close(fol.score(gm, x, tt), g)
    assert close(fol.drift(gm, x, tt), 0.64 * g + x / tt[:, None], rel=1e-10)


@pytest.mark.parametrize("name", ["full2d", "iso5d"])
def test_follmer_drift_three_forms(name):
    # posterior mean form (E[Y|x] - x)/(1 - t), by explicit linear algebra, vs the library's
    # posterior_mean, score + x/t and drift (the semigroup form is in test_semigroups.py)
    fol, gm = sp.Follmer(sigma=0.8), build(name)
    x = points(gm.dim)
    for t in (1e-4, 0.1, 0.45, 0.55, 0.9):
        pm = posterior_mean_ref(name, x, t, 0.8)
        assert close(fol.posterior_mean(gm, x, t), pm, rel=1e-10), t
        b = (pm - x) / (1 - t)
        assert close(fol.drift(gm, x, t), b, rel=1e-10), t
        assert close(0.64 * fol.score(gm, x, t) + x / t, b, rel=1e-10), t


def test_follmer_endpoints():
    fol, gm, name = sp.Follmer(sigma=0.8), build("full2d"), "full2d"
    w, mu, _ = params(name)
    x = points(2)
    # b(0, 0) = E_pi[Y]
    b00 = fol.drift(gm, torch.zeros(1, 2, dtype=D64), 0.0)[0]
    assert torch.allclose(b00, w @ mu, rtol=0, atol=1e-13)
    # b(x, 0) = tilted mean - x, and continuity at t -> 0
    b0 = tilted_mean_ref(name, x, 0.8) - x
    assert close(fol.drift(gm, x, 0.0), b0, rel=1e-11)
    assert close(fol.drift(gm, x, 1e-9), b0, rel=1e-6)                # |db/dt| = O(1) near 0
    # b(x, 1) = sigma^2 grad log pi(x) + x, and continuity at t -> 1
    ones = torch.ones(x.shape[0], dtype=D64)
    b1 = 0.64 * transported_score(name, x, ones, 0 * ones) + x
    assert close(fol.drift(gm, x, 1.0), b1)
    assert close(fol.drift(gm, x, 1 - 1e-9), b1, rel=1e-6)
    assert torch.allclose(fol.score(gm, x, 1.0), gm.score(x), rtol=1e-13, atol=1e-13)
    assert torch.equal(fol.posterior_mean(gm, x, 1.0), x)


def test_follmer_reference_and_bridge():
    fol, n = sp.Follmer(sigma=0.8), 40000
    x = points(2)
    ref = fol.reference_marginal(0.3, 2, like=x)
    assert close(ref.log_prob(x), TD.Normal(torch.zeros((), dtype=D64), 0.8 * math.sqrt(0.3)).log_prob(x).sum(-1))
    y = torch.tensor([1.0, -2.0], dtype=D64).expand(n, 2)
    for t in (0.3, 0.9):
        xt = fol.sample_bridge(y, t, generator=_gen(4))
        v = 0.64 * t * (1 - t)
        assert torch.all((xt.mean(0) - t * y[0]).abs() < 4 * math.sqrt(v / n))      # 4 stderr
        assert torch.all((xt.var(0) - v).abs() < 4 * v * math.sqrt(2 / n))
    assert torch.equal(fol.sample_bridge(y[:3], 0.0, generator=_gen(1)), torch.zeros(3, 2, dtype=D64))
    assert torch.equal(fol.sample_bridge(y[:3], 1.0, generator=_gen(1)), y[:3])
    tt = torch.tensor([0.0, 0.5, 1.0], dtype=D64)
    xt = fol.sample_bridge(y[:3], tt, generator=_gen(1))
    assert torch.equal(xt[0], torch.zeros(2, dtype=D64)) and torch.equal(xt[2], y[2])


# --------------------------------------------------------------------------- ends of the interval

EPS = 1e-6


def _grid_points():
    g = torch.linspace(-4.0, 4.0, 9, dtype=D64)
    x = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    far = torch.tensor([[40.0, -40.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0 + 1e-7]], dtype=D64)
    return torch.cat([x, far])


def _check_f32(v32, v64):
    # float32 rounds x itself by ~6e-8 relative; the narrow components' precision (up to 2e3) and
    # scores of size 1e6 (t = 1e-6) turn that into errors ~1e-4 of the vector's norm at worst (the
    # small coordinates of a large score vector come from cancellation, so compare per point in norm)
    assert v32.dtype == torch.float32 and torch.isfinite(v32).all()
    err = (v32.double() - v64).norm(dim=-1)
    assert torch.all(err <= 1e-3 * (1 + v64.norm(dim=-1)))


def test_no_nan_near_the_ends_and_float32_close_to_float64():
    gm, x = build("narrow"), _grid_points()
    gm32 = gm.to(dtype=torch.float32)
    for ou in (sp.OU(), sp.OU.linear(0.1, 20.0)):
        for t in (0.0, EPS, 1e-3, 0.5, ou.T - EPS, ou.T):
            v = ou.score(gm, x, t)
            assert torch.isfinite(v).all(), (ou, t)
            _check_f32(ou.score(gm, x.float(), t), v)
            _check_f32(ou.score(gm32, x.float(), t), v)
    fol = sp.Follmer()
    for t in (0.0, EPS, 1e-3, 0.49, 0.5, 0.51, 1 - 1e-3, 1 - EPS, 1.0):
        b = fol.drift(gm, x, t)
        assert torch.isfinite(b).all(), t
        _check_f32(fol.drift(gm, x.float(), t), b)
        _check_f32(fol.drift(gm32, x.float(), t), b)
        if t > 0:
            s = fol.score(gm, x, t)
            assert torch.isfinite(s).all(), t
            _check_f32(fol.score(gm, x.float(), t), s)
    # a time grid as a tensor, one time per point
    tt = torch.cat([torch.tensor([0.0, EPS, 1 - EPS, 1.0], dtype=D64), torch.linspace(0, 1, x.shape[0] - 4, dtype=D64)])
    assert torch.isfinite(fol.drift(gm, x, tt)).all() and torch.isfinite(sp.OU().score(gm, x, tt)).all()


# --------------------------------------------------------------------------- bad input

GM = sp.GaussianMixture(torch.tensor([0.5, 0.5], dtype=D64), torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=D64),
                        torch.eye(2, dtype=D64).expand(2, 2, 2))
X = torch.zeros(5, 2, dtype=D64)
NAN = float("nan")

BAD = [
    ("sigma", lambda: sp.OU(sigma=0.0)),
    ("sigma", lambda: sp.OU(sigma=-1.0)),
    ("sigma", lambda: sp.OU(sigma=NAN)),
    ("beta", lambda: sp.OU(beta=0.0)),
    ("beta", lambda: sp.OU(beta=-0.5)),
    ("T", lambda: sp.OU(T=0.0)),
    ("beta", lambda: sp.OU.linear(beta_min=-0.1)),
    ("beta_max", lambda: sp.OU.linear(beta_max=0.0)),
    ("sigma", lambda: sp.Follmer(sigma=0.0)),
    ("sigma", lambda: sp.Follmer(sigma=-2.0)),
    ("t", lambda: sp.OU().score(GM, X, -0.1)),
    ("t", lambda: sp.OU(T=1.0).score(GM, X, 1.1)),
    ("t", lambda: sp.OU().score(GM, X, NAN)),
    ("t", lambda: sp.OU().score(GM, X, torch.tensor([0.1, 0.2, 1.5, 0.3, 0.4], dtype=D64))),
    ("t", lambda: sp.OU().score(GM, X, torch.zeros(3, dtype=D64))),
    ("t", lambda: sp.OU().marginal(GM, 2.0)),
    ("t", lambda: sp.OU().mean_std(-1.0)),
    ("t", lambda: sp.OU().sample_transition(X, 1.5)),
    ("x", lambda: sp.OU().score(GM, torch.zeros(5, 3, dtype=D64), 0.5)),
    ("x", lambda: sp.OU().score(GM, torch.full((5, 2), NAN, dtype=D64), 0.5)),
    ("x", lambda: sp.OU().score(GM, torch.zeros(5, 2, dtype=torch.long), 0.5)),
    ("x", lambda: sp.OU().forward_drift(torch.full((2, 2), float("inf"), dtype=D64), 0.5)),
    ("x0", lambda: sp.OU().sample_transition(torch.full((2, 2), NAN, dtype=D64), 0.5)),
    ("generator", lambda: sp.OU().sample_transition(X, 0.5, generator=1)),
    ("score", lambda: sp.OU().reverse_drift(torch.zeros(5, 3, dtype=D64), X, 0.5)),
    ("target", lambda: sp.OU().score(sp.Funnel(dim=2), X, 0.5)),
    ("t", lambda: sp.Follmer().drift(GM, X, 1.5)),
    ("t", lambda: sp.Follmer().drift(GM, X, -0.1)),
    ("t", lambda: sp.Follmer().score(GM, X, 0.0)),
    ("t", lambda: sp.Follmer().score(GM, X, torch.tensor([0.1, 0.0, 0.5, 0.5, 0.5], dtype=D64))),
    ("t", lambda: sp.Follmer().marginal(GM, 0.0)),
    ("t", lambda: sp.Follmer().reference_marginal(0.0, 2)),
    ("t", lambda: sp.Follmer().posterior_mean(GM, X, 1.01)),
    ("t", lambda: sp.Follmer().sample_bridge(X, 2.0)),
    ("y", lambda: sp.Follmer().sample_bridge(torch.full((2, 2), NAN, dtype=D64), 0.5)),
    ("x", lambda: sp.Follmer().drift(GM, torch.zeros(5, 3, dtype=D64), 0.5)),
    ("x", lambda: sp.Follmer().drift(GM, torch.full((5, 2), NAN, dtype=D64), 0.5)),
    ("target", lambda: sp.Follmer().drift(sp.Banana(), X, 0.5)),
]


@pytest.mark.parametrize("arg,make", BAD, ids=[f"{i}-{a}" for i, (a, _) in enumerate(BAD)])
def test_bad_input_raises_value_error_naming_the_argument(arg, make):
    with pytest.raises(ValueError, match=arg):
        make()
