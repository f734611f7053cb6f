"""Tests of smoothpin.approximation: the regularity bounds inherited by U_t f and grad log U_t f, the
grid estimator of the constants of f, and the exact OU-score-from-Föllmer-drift change of variables.

Closed forms used here are written in this file (torch.distributions for Gaussians, the cosine tilt's
formulas by hand), independently of the code under test.
"""
import math

import pytest
import torch
from torch.distributions import MixtureSameFamily, Categorical, MultivariateNormal

import smoothpin as sp

D = torch.float64
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here"))]


def cosine_tilt_closed_form(eps, w, sigma, beta, t):
    """For f = (1 + eps cos(w.x)) / n on R^d: (c, Lip f, Lip grad f) of f, and the damping factor
    rho = exp(-s2 |w|^2 / 2) with which U_t f = (1 + eps rho cos(a w.x)) / n, a = e^{-beta t}."""
    w2 = float(w @ w)
    n = 1 + eps * math.exp(-0.5 * sigma**2 * w2)
    a = math.exp(-beta * t)
    rho = math.exp(-0.5 * sigma**2 * (1 - a * a) * w2)
    return (1 - eps) / n, eps * math.sqrt(w2) / n, eps * w2 / n, a, rho, n


@pytest.mark.parametrize("sigma,beta", [(1.0, 1.0), (0.8, 1.7)])
def test_inherited_bounds_against_cosine_tilt(sigma, beta):
    # The tilt meets every assumption on all of R^d. grad U_t f = -a eps rho w sin / n, so
    # sup |grad U_t f| = a eps |w| rho / n = rho * (bound a Lip f); likewise sup ||hess U_t f|| =
    # a^2 eps |w|^2 rho / n = rho * (bound a^2 Lip grad f): the ratio must be rho to rounding, which
    # pins down the factor a (a wrong power of a or a wrong B(t) fails). sup |grad log U_t f| =
    # a |w| e / sqrt(1 - e^2) with e = eps rho (maximise e sin / (1 + e cos)) must lie below the bound.
    eps, w = 0.6, torch.tensor([1.2, -0.5], dtype=D)
    ou = sp.OU(sigma=sigma, beta=beta, T=3.0)
    for t in (0.0, 0.1, 0.7, 3.0):
        c, lip_f, lip_grad_f, a, rho, n = cosine_tilt_closed_form(eps, w, sigma, beta, t)
        b = sp.inherited_score_bounds(t, c=c, lip_f=lip_f, lip_grad_f=lip_grad_f, process=ou)
        assert b["u_min"] == c and (1 - eps * rho) / n >= c          # min U_t f >= c
        assert abs(a * eps * math.sqrt(float(w @ w)) * rho / n - rho * b["lip_u"]) <= 1e-12
        assert abs(a * a * eps * float(w @ w) * rho / n - rho * b["lip_grad_u"]) <= 1e-12
        e = eps * rho
        sup_grad_log = a * math.sqrt(float(w @ w)) * e / math.sqrt(1 - e * e)
        assert sup_grad_log <= b["sup_grad_log_u"] * (1 + 1e-12)


def test_lipschitz_of_grad_log_u_bound_holds_on_a_grid():
    # Lip(grad log U_t f) = max ||hess log U_t f||_op, computed here by autograd of the closed-form
    # log U_t f of the cosine tilt over one period of cos(a w.x) (d = 1: the Hessian is the second
    # derivative); the bound must contain it (rounding tolerance 1e-9).
    eps, w = 0.5, torch.tensor([2.0], dtype=D)
    for t in (0.0, 0.05, 0.5, 2.0):
        c, lip_f, lip_grad_f, a, rho, n = cosine_tilt_closed_form(eps, w, 1.0, 1.0, t)
        x = torch.linspace(-math.pi / (a * 2.0), math.pi / (a * 2.0), 4001, dtype=D).requires_grad_(True)
        log_u = torch.log1p(eps * rho * torch.cos(a * 2.0 * x)) - math.log(n)
        g = torch.autograd.grad(log_u.sum(), x, create_graph=True)[0]
        h = torch.autograd.grad(g.sum(), x)[0]
        b = sp.inherited_score_bounds(t, c=c, lip_f=lip_f, lip_grad_f=lip_grad_f)
        assert h.abs().max().item() <= b["lip_grad_log_u"] + 1e-9
        assert g.abs().max().item() <= b["sup_grad_log_u"] + 1e-9


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_times_follow_dtype_device_and_match_floats(device):
    ou = sp.OU.linear(beta_min=0.1, beta_max=8.0, T=1.0)
    t = torch.tensor([[0.0, 0.25], [0.5, 1.0]], dtype=torch.float32, device=device)
    b = sp.inherited_score_bounds(t, c=0.2, lip_f=3.0, lip_grad_f=5.0, process=ou)
    for k, v in b.items():
        assert v.shape == t.shape and v.dtype == t.dtype and v.device.type == device, k
        ref = torch.tensor([sp.inherited_score_bounds(s, c=0.2, lip_f=3.0, lip_grad_f=5.0, process=ou)[k]
                            for s in t.reshape(-1).tolist()], dtype=t.dtype)
        assert torch.allclose(v.cpu().reshape(-1), ref, rtol=1e-6), k
    # schedule: a = exp(-B(t)), B(t) = beta_min t + (beta_max - beta_min) t^2 / 2 for T = 1
    B = 0.1 * 0.5 + 7.9 * 0.25 / 2
    assert abs(sp.inherited_score_bounds(0.5, c=1.0, lip_f=1.0, lip_grad_f=1.0, process=ou)["lip_u"]
               - math.exp(-B)) <= 1e-12
    assert abs(sp.follmer_time(0.5, ou) - math.exp(-2 * B)) <= 1e-12
    tau = sp.follmer_time(t, ou)
    assert tau.dtype == t.dtype and tau.device.type == device


def _mixture(device):
    w = torch.tensor([0.3, 0.7], dtype=D, device=device)
    mu = torch.tensor([[1.0, -1.0], [-2.0, 0.5]], dtype=D, device=device)
    S = torch.stack([torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=D, device=device),
                     0.2 * torch.eye(2, dtype=D, device=device)])
    return w, mu, S


def _autograd_ou_score(w, mu, S, x, t, sigma, beta):
    """grad log p_t by autograd of torch.distributions' mixture density p_t = sum w N(a mu, a^2 S + s2 I)."""
    a = math.exp(-beta * t)
    cov = a * a * S + sigma**2 * (1 - a * a) * torch.eye(2, dtype=D, device=x.device)
    p = MixtureSameFamily(Categorical(probs=w), MultivariateNormal(a * mu, covariance_matrix=cov))
    y = x.clone().requires_grad_(True)
    return torch.autograd.grad(p.log_prob(y).sum(), y)[0]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sigma,beta", [(1.0, 1.0), (1.3, 0.6)])
def test_ou_score_from_exact_follmer_drift_is_exact(device, sigma, beta):
    # grad log p_t(x) = -x / sigma^2 + (a / sigma^2) b(a x, a^2): with the library's exact Föllmer
    # drift (posterior-mean form for tau < 1/2, score form above) the result must equal autograd of
    # the closed-form OU marginal to 1e-10 (float64 rounding), for float and per-point times.
    w, mu, S = _mixture(device)
    mix = sp.GaussianMixture(w, mu, S)
    ou, fol = sp.OU(sigma=sigma, beta=beta, T=4.0), sp.Follmer(sigma=sigma)
    x = 2 * torch.randn(300, 2, dtype=D, device=device, generator=torch.Generator(device).manual_seed(0))
    drift = lambda y, tau: fol.drift(mix, y, tau)  # noqa: E731
    for t in (0.0, 0.02, 0.3, 1.1, 4.0):
        s = sp.ou_score_from_follmer_drift(drift, x, t, ou)
        assert s.device.type == device and s.dtype == D
        assert torch.allclose(s, _autograd_ou_score(w, mu, S, x, t, sigma, beta), atol=1e-10, rtol=0)
    tt = torch.linspace(0.0, 4.0, 300, dtype=D, device=device)
    s = sp.ou_score_from_follmer_drift(drift, x, tt, ou)
    ref = torch.stack([_autograd_ou_score(w, mu, S, x[i:i + 1], tt[i].item(), sigma, beta)[0]
                       for i in range(0, 300, 37)])
    assert torch.allclose(s[::37], ref, atol=1e-10, rtol=0)


def test_a_times_ou_marginal_is_follmer_marginal():
    # If X_t ~ p_t then a X_t ~ Föllmer marginal at tau = a^2: compare the two mixtures' covariances
    # and means (library marginals built by different code: OU.marginal then scaling vs Follmer.marginal).
    w, mu, S = _mixture("cpu")
    mix = sp.GaussianMixture(w, mu, S)
    ou, fol = sp.OU(sigma=0.9, beta=1.4, T=2.0), sp.Follmer(sigma=0.9)
    for t in (0.1, 0.8, 2.0):
        a, tau = math.exp(-1.4 * t), sp.follmer_time(t, ou)
        lhs = ou.marginal(mix, t).scaled_plus_noise(a, 0.0)
        rhs = fol.marginal(mix, tau)
        assert torch.allclose(lhs.covariance, rhs.covariance, atol=1e-12)
        assert torch.allclose(lhs.mean, rhs.mean, atol=1e-12)


def test_density_ratio_constants_gaussian_and_cosine_tilt():
    # Gaussian pi = N(m, S), S < sigma^2 I: log f is concave, so min f on the box is at a corner;
    # hess log f = -S^-1 + I / sigma^2 is constant. Both are computed here with torch.distributions.
    m, S = torch.tensor([0.4, -0.2], dtype=D), torch.tensor([[0.4, 0.1], [0.1, 0.3]], dtype=D)
    k = sp.density_ratio_constants(sp.Gaussian(m, S), lim=2.0, n=21)
    corners = torch.tensor([[i, j] for i in (-2.0, 2.0) for j in (-2.0, 2.0)], dtype=D)
    ref = MultivariateNormal(torch.zeros(2, dtype=D), torch.eye(2, dtype=D))
    log_f = MultivariateNormal(m, S).log_prob(corners) - ref.log_prob(corners)
    assert abs(k["c"].log().item() - log_f.min().item()) <= 1e-10
    A = -torch.linalg.inv(S) + torch.eye(2, dtype=D)
    assert abs(k["lip_grad_log"].item() - torch.linalg.eigvalsh(A).abs().max().item()) <= 1e-10
    assert k["L"] == torch.maximum(k["lip_f"], k["lip_grad_f"]) and k["C"] >= k["c"]
    # Cosine tilt, w = (1, 0): a grid on [-pi, pi]^2 with 41 points per side contains cos(w.x) = +-1
    # and sin(w.x) = +-1, so the grid constants equal the closed forms of R^2 to rounding.
    ct = sp.CosineTilt(torch.tensor([1.0, 0.0], dtype=D), eps=0.4)
    c, lip_f, lip_grad_f, *_ = cosine_tilt_closed_form(0.4, ct.omega, 1.0, 1.0, 0.0)
    k = sp.density_ratio_constants(ct, lim=math.pi, n=41)
    for key, val in (("c", c), ("lip_f", lip_f), ("lip_grad_f", lip_grad_f)):
        assert abs(k[key].item() - val) <= 1e-12, key


def test_bad_input_raises():
    ou = sp.OU(T=1.0)
    for kwargs in ({"c": 0.0}, {"c": -1.0}, {"c": float("nan")}, {"lip_f": -1.0}, {"lip_grad_f": float("nan")}):
        args = {"c": 0.5, "lip_f": 1.0, "lip_grad_f": 1.0, **kwargs}
        with pytest.raises(ValueError):
            sp.inherited_score_bounds(0.5, **args)
    with pytest.raises(ValueError, match="t"):
        sp.inherited_score_bounds(-0.1, c=0.5, lip_f=1.0, lip_grad_f=1.0)
    with pytest.raises(ValueError, match="t"):
        sp.inherited_score_bounds(2.0, c=0.5, lip_f=1.0, lip_grad_f=1.0, process=ou)
    with pytest.raises(ValueError, match="process"):
        sp.inherited_score_bounds(0.5, c=0.5, lip_f=1.0, lip_grad_f=1.0, process=sp.Follmer())
    x = torch.zeros(3, 2, dtype=D)
    with pytest.raises(ValueError, match="drift"):
        sp.ou_score_from_follmer_drift(lambda y, tau: y[:, :1], x, 0.5, ou)
    with pytest.raises(ValueError, match="t"):
        sp.ou_score_from_follmer_drift(lambda y, tau: y, x, torch.zeros(4, dtype=D), ou)
    # unknown Lipschitz constants are allowed and propagate as inf
    assert math.isinf(sp.inherited_score_bounds(0.5, c=1.0, lip_f=math.inf, lip_grad_f=1.0)["lip_grad_log_u"])


def test_semigroup_constants_gaussian_closed_form():
    # pi = N(m, s^2 I): p_t = N(a m, v_t I), v_t = a^2 s^2 + sigma^2 (1 - a^2), so log U_t f is
    # quadratic with hess = (1/sigma^2 - 1/v_t) I, and grad log U_t f is affine: its norm (convex) and,
    # for s < sigma, U_t f (log-concave) take their extremes over a box at its corners.
    m, s2, sigma, beta = torch.tensor([0.5, -0.3], dtype=D), 0.2, 1.2, 0.8
    ou = sp.OU(sigma=sigma, beta=beta, T=2.0)
    x = sp.box_grid(2.0, 9, dim=2)
    corners = torch.tensor([[i, j] for i in (-2.0, 2.0) for j in (-2.0, 2.0)], dtype=D)
    ref = MultivariateNormal(torch.zeros(2, dtype=D), sigma**2 * torch.eye(2, dtype=D))
    times = [0.0, 0.3, 2.0]
    k = sp.semigroup_constants(ou, sp.Gaussian(m, s2 * torch.eye(2, dtype=D)), x, times)
    assert all(v.shape == (3,) and v.dtype == D for v in k.values())
    for i, t in enumerate(times):
        a = math.exp(-beta * t)
        v = a * a * s2 + sigma**2 * (1 - a * a)
        assert abs(k["lip_grad_log_u"][i].item() - abs(1 / sigma**2 - 1 / v)) <= 1e-10
        g = (1 / sigma**2 - 1 / v) * corners + a * m / v
        assert abs(k["sup_grad_log_u"][i].item() - g.norm(dim=-1).max().item()) <= 1e-10
        pt = MultivariateNormal(a * m, v * torch.eye(2, dtype=D))
        log_u = pt.log_prob(corners) - ref.log_prob(corners)
        assert abs(k["u_min"][i].log().item() - log_u.min().item()) <= 1e-10
