"""Tests of smoothpin.regularity: grid estimators of the regularity constants of f = d(pi)/dN(0, s^2 I)
and the chapter's inherited bounds for U_t f, against closed forms for Gaussians (written here with
torch.distributions, independently of smoothpin's targets) and against independent estimators."""
import math

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

import smoothpin as sp

D = torch.float64


def gaussian_log_f(mean, cov, sigma=1.0):
    """log f = log N(x; m, S) - log N(x; 0, sigma^2 I) for x (N, d)."""
    d = mean.shape[0]
    pi = MultivariateNormal(mean, covariance_matrix=cov)
    ref = MultivariateNormal(torch.zeros(d, dtype=D), covariance_matrix=sigma**2 * torch.eye(d, dtype=D))
    return lambda x: pi.log_prob(x) - ref.log_prob(x)


def mixture_1d_log_u(weights, means, variances, t, sigma=1.0, beta=1.0):
    """log U_t f = log p_t - log phi_{sigma^2} for a 1-D mixture; p_t = sum w N(a mu, a^2 v + s2)."""
    a = math.exp(-beta * t)
    var = a * a * variances + sigma**2 * (1 - a * a)

    def log_u(x):
        comp = Normal(a * means, var.sqrt()).log_prob(x)  # (N, K) by broadcasting x (N, 1)
        ref = Normal(torch.zeros((), dtype=D), torch.tensor(sigma, dtype=D))
        return torch.logsumexp(comp + weights.log(), dim=-1) - ref.log_prob(x[:, 0])
    return log_u


def test_box_grid_shape_and_corners():
    x = sp.box_grid(2.0, 5, dim=2)
    assert x.shape == (25, 2) and x.dtype == D
    assert torch.equal(x.abs().amax(0), torch.tensor([2.0, 2.0], dtype=D))
    assert sp.box_grid(1.0, 3, dtype=torch.float32).dtype == torch.float32


def test_gaussian_constants_closed_form_2d():
    # hess log f = -S^{-1} + I/sigma^2 (constant), so L is its largest |eigenvalue|; grad log f is
    # affine, so its norm is convex and its maximum over the box sits at a corner (on the grid).
    m = torch.tensor([0.5, -0.3], dtype=D)
    S = torch.tensor([[0.3, 0.1], [0.1, 2.5]], dtype=D)
    sigma = 1.3
    log_f = gaussian_log_f(m, S, sigma)
    x = sp.box_grid(3.0, 21, dim=2)
    A = -torch.linalg.inv(S) + torch.eye(2, dtype=D) / sigma**2
    L_true = torch.linalg.eigvalsh(A).abs().max()
    corners = torch.tensor([[i, j] for i in (-3.0, 3.0) for j in (-3.0, 3.0)], dtype=D)
    G_true = (corners @ A.T + torch.linalg.solve(S, m)).norm(dim=-1).max()
    # float64 autograd of a quadratic: exact up to rounding (1e-10 is ~1e5 ulps).
    assert torch.allclose(sp.lipschitz_grad_log(log_f, x), L_true, rtol=0, atol=1e-10)
    assert torch.allclose(sp.sup_grad_log(log_f, x), G_true, rtol=0, atol=1e-10)
    assert torch.allclose(sp.grad_log(log_f, x), x @ A.T + torch.linalg.solve(S, m), atol=1e-10)


def test_density_bounds_narrow_gaussian_1d():
    # pi = N(m, s^2) with s < sigma: log f is concave with maximiser x* = m sigma^2 / (sigma^2 - s^2)
    # (inside the box); the minimum is at an endpoint. Grid max is within |k| h^2 / 8 of the true max
    # (k = (log f)'' constant, h the spacing): a quadratic's error half a step from its top.
    m, s, sigma, lim, n = 0.4, 0.6, 1.0, 3.0, 301
    log_f = gaussian_log_f(torch.tensor([m], dtype=D), torch.tensor([[s * s]], dtype=D), sigma)
    x = sp.box_grid(lim, n)
    lo, hi = sp.density_bounds(log_f, x)
    xstar = torch.tensor([[m * sigma**2 / (sigma**2 - s * s)]], dtype=D)
    ends = torch.tensor([[-lim], [lim]], dtype=D)
    k, h = abs(1 / sigma**2 - 1 / s**2), 2 * lim / (n - 1)
    assert 0 <= log_f(xstar).item() - hi.log().item() <= k * h * h / 8 + 1e-12
    assert abs(lo.log().item() - log_f(ends).min().item()) <= 1e-12


def test_tzen_raginsky_constants_against_finite_differences():
    # Lip(f) = max |f'| and Lip(f') = max |f''| in 1-D, checked with numpy central differences on the
    # same grid; truncation error O(h^2 sup|f'''|), here below 1e-3 relative (h = 0.004).
    w, mu, v = torch.tensor([0.4, 0.6], dtype=D), torch.tensor([-1.0, 1.2], dtype=D), torch.tensor([0.3, 0.5], dtype=D)
    log_f = mixture_1d_log_u(w, mu, v, t=0.0)
    x = sp.box_grid(3.0, 1501)
    c = sp.regularity_constants(log_f, x)
    f = log_f(x).exp().numpy()
    h = 6.0 / 1500
    d1, d2 = np.gradient(f, h), np.diff(f, 2) / h**2
    assert abs(c["lip_f"].item() - np.abs(d1).max()) <= 1e-3 * c["lip_f"].item()
    assert abs(c["lip_grad_f"].item() - np.abs(d2).max()) <= 1e-3 * c["lip_grad_f"].item()
    assert abs(c["f_max"].item() - f.max()) <= 1e-12 * f.max()
    assert abs(c["lip_grad_log"].item() - sp.lipschitz_grad_log(log_f, x).item()) <= 1e-12
    assert c["lip_grad_log"] == max(-c["k_minus"], c["k_plus"])


def test_secant_and_jacobian_lipschitz_agree_on_fine_grid():
    # For a C^2 field in 1-D the best secant between neighbours differs from max |F'| by at most
    # h * sup|F''|; with h = 0.01 and F = grad log f of a mixture, sup|F''| < 30 on [-3, 3]: 0.3.
    w, mu, v = torch.tensor([0.5, 0.5], dtype=D), torch.tensor([-1.0, 1.0], dtype=D), torch.tensor([0.2, 0.2], dtype=D)
    log_f = mixture_1d_log_u(w, mu, v, t=0.0)
    x = sp.box_grid(3.0, 601)
    jac = sp.lipschitz_grad_log(log_f, x)
    sec = sp.secant_lipschitz(lambda y: sp.grad_log(log_f, y), x, chunk=128)
    assert sec <= jac + 1e-9
    assert jac - sec <= 0.3
    # the general-field Jacobian route gives the same number as the symmetric Hessian route
    field = lambda y: torch.autograd.grad(log_f(y).sum(), y, create_graph=True)[0]
    assert torch.allclose(sp.lipschitz_field(field, x), jac, atol=1e-10)


@pytest.mark.parametrize("sigma,beta", [(1.0, 1.0), (0.7, 2.0)])
@pytest.mark.parametrize("r", [0.4, 1.8])
def test_inherited_curvature_bound_is_exact_for_gaussians(sigma, beta, r):
    # pi = N(m, r^2): hess log f = k = 1/sigma^2 - 1/r^2 (constant, so k_minus = k_plus = k) and
    # (log U_t f)'' = 1/sigma^2 - 1/v_t with v_t = a^2 r^2 + sigma^2 (1 - a^2), the OU marginal
    # variance. The upper bound a^2 k / (1 - s2 k) is attained (narrow r < sigma and wide r > sigma),
    # so equality holds to rounding; the lower bound must lie below.
    m = 0.3
    k = 1 / sigma**2 - 1 / r**2
    for t in (0.0, 0.05, 0.4, 1.5):
        a = math.exp(-beta * t)
        exact = 1 / sigma**2 - 1 / (a * a * r * r + sigma**2 * (1 - a * a))
        b = sp.ou_inherited_bounds(t, k_minus=k, k_plus=k, sigma=sigma, beta=beta)
        assert abs(b["hess_upper"] - exact) <= 1e-12 and b["hess_lower"] <= exact + 1e-12
        assert b["lip_grad_log"] >= abs(exact) - 1e-12
        log_u = mixture_1d_log_u(torch.ones(1, dtype=D), torch.tensor([m], dtype=D),
                                 torch.tensor([r * r], dtype=D), t, sigma, beta)
        km, kp = sp.curvature_bounds(log_u, sp.box_grid(2.0, 11))
        assert abs(km.item() - exact) <= 1e-10 and abs(kp.item() - exact) <= 1e-10


@pytest.mark.parametrize("var", [[1.0, 1.0], [0.1, 0.05], [0.5, 0.5]])
def test_inherited_bounds_hold_for_mixtures(var):
    # Unit-variance modes (= sigma^2): grad log f = sum_k r_k mu_k, so G = max|mu_k| on all of R.
    # k_minus, k_plus are estimated on a wide box (the Hessian is flat beyond it). The bounds must
    # contain the grid estimates for U_t f on an inner box (tolerance 1e-9: rounding only).
    # For the narrow mixtures the lower bound -a^2/s2 and the short-time upper bound are the ones
    # that bite; the asserts below check that they are finite where they should be.
    w, mu, var = torch.tensor([0.3, 0.7], dtype=D), torch.tensor([-2.0, 1.5], dtype=D), torch.tensor(var, dtype=D)
    km, kp = sp.curvature_bounds(mixture_1d_log_u(w, mu, var, 0.0), sp.box_grid(12.0, 4801))
    G = mu.abs().max().item() if bool((var == 1).all()) else math.inf
    x = sp.box_grid(4.0, 801)
    for t in (0.0005, 0.01, 0.1, 0.5, 2.0):
        log_u = mixture_1d_log_u(w, mu, var, t)
        b = sp.ou_inherited_bounds(t, G=G, k_minus=km, k_plus=kp)
        lo, hi = sp.curvature_bounds(log_u, x)
        assert b["hess_lower"] - 1e-9 <= lo.item() and hi.item() <= b["hess_upper"] + 1e-9
        assert sp.sup_grad_log(log_u, x).item() <= b["sup_grad_log"] + 1e-9
        assert math.isfinite(b["hess_lower"])
        if t <= 0.0005 or G < math.inf:
            assert math.isfinite(b["hess_upper"])


def test_inherited_bounds_limits_and_errors():
    b = sp.ou_inherited_bounds(0.0, G=2.0, k_minus=-3.0, k_plus=1.0, lip_f=4.0, lip_grad_f=5.0)
    assert b == {"sup_grad_log": 2.0, "hess_lower": -3.0, "hess_upper": 1.0, "lip_grad_log": 3.0,
                 "lip_f": 4.0, "lip_grad_f": 5.0}
    b = sp.ou_inherited_bounds(1e4, G=2.0)  # a underflows to 0: the bounds go to 0, not NaN
    assert b["sup_grad_log"] == 0.0 and b["lip_grad_log"] == 0.0
    # s2 k_plus >= 1 and G unknown: no finite upper bound
    assert math.isinf(sp.ou_inherited_bounds(2.0, k_plus=5.0)["hess_upper"])
    for kwargs in ({"t": -1.0}, {"t": 1.0, "sigma": 0.0}, {"t": 1.0, "beta": -1.0}, {"t": 1.0, "G": -1.0},
                   {"t": 1.0, "k_minus": 2.0, "k_plus": 1.0}, {"t": 1.0, "k_plus": float("nan")}):
        with pytest.raises(ValueError):
            sp.ou_inherited_bounds(**kwargs)


def test_bad_input_raises_and_dtype_is_kept():
    log_f = gaussian_log_f(torch.zeros(1, dtype=D), torch.eye(1, dtype=D) * 0.5)
    with pytest.raises(ValueError, match="x"):
        sp.sup_grad_log(log_f, torch.zeros(5, dtype=D))
    with pytest.raises(ValueError, match="x"):
        sp.lipschitz_grad_log(log_f, torch.full((3, 1), float("nan"), dtype=D))
    with pytest.raises(ValueError, match="log_f"):
        sp.density_bounds(3.0, torch.zeros(3, 1, dtype=D))
    with pytest.raises(ValueError, match="log_f"):
        sp.grad_log(lambda y: y, torch.zeros(3, 1, dtype=D))
    with pytest.raises(ValueError, match="lim"):
        sp.box_grid(0.0, 5)
    with pytest.raises(ValueError, match="n"):
        sp.box_grid(1.0, 1)
    x32 = sp.box_grid(1.0, 9, dtype=torch.float32)
    f32 = lambda y: -(y**2).sum(-1) / 2
    assert sp.lipschitz_grad_log(f32, x32).dtype == torch.float32
    assert abs(sp.lipschitz_grad_log(f32, x32).item() - 1.0) <= 1e-6
    assert sp.secant_lipschitz(lambda y: -y, x32).dtype == torch.float32


def test_cosine_tilt_closed_forms_against_quadrature():
    # Gauss-Hermite with 80 nodes integrates these entire functions (cos times a Gaussian weight;
    # the node error decays like |w s|^{2n} / (2n)!) far below 1e-10, the tolerance used here.
    ct = sp.CosineTilt(torch.tensor([2.0], dtype=D), eps=0.4, sigma=1.2, beta=0.8)
    xq, wq = np.polynomial.hermite_e.hermegauss(80)  # weight e^{-z^2/2}
    wq = wq / wq.sum()
    f = lambda y: np.exp(ct.log_f(torch.tensor(y, dtype=D)[..., None]).numpy())
    assert abs((wq * f(ct.sigma * xq)).sum() - 1.0) <= 1e-10  # E_phi f = 1
    x = torch.linspace(-3, 3, 13, dtype=D)[:, None]
    for t in (0.0, 0.3, 1.0):
        a = math.exp(-ct.beta * t)
        s = ct.sigma * math.sqrt(1 - a * a)
        quad = (f(a * x.numpy() + s * xq[None, :]) * wq).sum(-1)
        assert np.abs(np.log(quad) - ct.log_u(x, t).numpy()).max() <= 1e-10
    # score = autograd of log_prob
    y = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ct.log_prob(y).sum(), y)
    assert torch.allclose(g, ct.score(x), atol=1e-12)


def test_cosine_tilt_samples_and_constants():
    ct = sp.CosineTilt(torch.tensor([1.5], dtype=D), eps=0.4)
    y = ct.sample(40_000, generator=torch.Generator().manual_seed(0))
    # E_pi[Y^2] by quadrature (100 Hermite nodes); the sample mean is within 5 standard errors.
    xq, wq = np.polynomial.hermite_e.hermegauss(100)
    wq = wq / wq.sum()
    fq = np.exp(ct.log_f(torch.tensor(xq, dtype=D)[:, None]).numpy())
    m2 = (wq * fq * xq**2).sum()
    y2 = y[:, 0] ** 2
    assert abs(y2.mean().item() - m2) <= 5 * y2.std().item() / math.sqrt(y2.numel())
    # closed forms for f = (1 + eps cos(w x)) / n: G = eps w / sqrt(1 - eps^2), and for eps <= 1/2
    # k_plus = eps w^2 / (1 - eps), k_minus = -eps w^2 / (1 + eps), Lip f = eps w / n,
    # Lip f' = eps w^2 / n; a grid of spacing h finds each to O(h^2) relative (h = 6e-3 here).
    eps, w = 0.4, 1.5
    n = math.exp(ct.log_norm)
    c = sp.regularity_constants(ct.log_f, sp.box_grid(2 * math.pi / w, 1401))
    expect = {"sup_grad_log": eps * w / math.sqrt(1 - eps**2), "k_plus": eps * w**2 / (1 - eps),
              "k_minus": -eps * w**2 / (1 + eps), "lip_f": eps * w / n, "lip_grad_f": eps * w**2 / n,
              "f_min": (1 - eps) / n, "f_max": (1 + eps) / n}
    for key, val in expect.items():
        assert abs(c[key].item() - val) <= 1e-4 * abs(val), key
    with pytest.raises(ValueError, match="eps"):
        sp.CosineTilt(torch.tensor([1.0]), eps=1.0)
