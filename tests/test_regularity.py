"""Tests of smoothpin.regularity: grid estimates of the regularity constants of f = d(pi)/dN(0, s^2 I)
and the inherited bounds for U_t f, against closed forms for Gaussians and Gaussian mixtures (written
here with torch.distributions, independently of smoothpin's targets), numpy finite differences,
Gauss-Hermite quadrature and the secant estimator."""
import math

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

import smoothpin as sp

D = torch.float64
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                reason="no CUDA device"))]


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
    ref = Normal(torch.zeros((), dtype=D), torch.tensor(sigma, dtype=D))

    def log_u(x):
        comp = Normal(a * means, var.sqrt()).log_prob(x)  # (N, K) by broadcasting x (N, 1)
        return torch.logsumexp(comp + weights.log(), dim=-1) - ref.log_prob(x[:, 0])
    return log_u


def test_box_grid_shape_corners_and_errors():
    x = sp.box_grid(2.0, 5, dim=2)
    assert x.shape == (25, 2) and x.dtype == D
    assert torch.equal(x.abs().amax(0), torch.tensor([2.0, 2.0], dtype=D))
    assert sp.box_grid(1.0, 3, dtype=torch.float32).dtype == torch.float32
    for kwargs, name in (({"lim": 0.0, "n": 5}, "lim"), ({"lim": 1.0, "n": 1}, "n"),
                         ({"lim": 1.0, "n": 3, "dim": 0}, "dim")):
        with pytest.raises(ValueError, match=name):
            sp.box_grid(**kwargs)


def test_gaussian_constants_closed_form_2d():
    # hess log f = A = -S^{-1} + I/sigma^2 (constant): L, k_minus, k_plus are A's eigenvalues.
    # grad log f = A x + S^{-1} m is affine, so its norm is convex and peaks at a corner of the box.
    m = torch.tensor([0.5, -0.3], dtype=D)
    S = torch.tensor([[0.3, 0.1], [0.1, 2.5]], dtype=D)
    sigma = 1.3
    log_f = gaussian_log_f(m, S, sigma)
    x = sp.box_grid(3.0, 21, dim=2)
    A = -torch.linalg.inv(S) + torch.eye(2, dtype=D) / sigma**2
    ev = torch.linalg.eigvalsh(A)
    corners = torch.tensor([[i, j] for i in (-3.0, 3.0) for j in (-3.0, 3.0)], dtype=D)
    b = torch.linalg.solve(S, m)
    c = sp.regularity_constants(log_f, x)
    # float64 autograd of a quadratic: exact up to rounding (1e-10 is ~1e5 ulps).
    assert abs(c["lip_grad_log"] - ev.abs().max()) <= 1e-10
    assert abs(c["k_minus"] - ev[0]) <= 1e-10 and abs(c["k_plus"] - ev[1]) <= 1e-10
    assert abs(c["sup_grad_log"] - (corners @ A.T + b).norm(dim=-1).max()) <= 1e-10
    assert torch.allclose(sp.grad_log(log_f, x), x @ A.T + b, atol=1e-10)
    # (..., d) batch shapes are flattened: a (21, 21, 2) grid gives the same numbers
    c2 = sp.regularity_constants(log_f, x.reshape(21, 21, 2))
    assert all(torch.equal(c[k], c2[k]) for k in c)
    assert sp.grad_log(log_f, x.reshape(21, 21, 2)).shape == (21, 21, 2)


def test_density_bounds_narrow_gaussian_1d():
    # pi = N(m, s^2) with s < sigma: log f is concave with maximiser x* = m sigma^2 / (sigma^2 - s^2)
    # inside the box, and the minimum at an endpoint. The grid max is within |k| h^2 / 8 of the true
    # max (k = (log f)'' constant, h the spacing): a parabola's drop half a step from its top.
    m, s, sigma, lim, n = 0.4, 0.6, 1.0, 3.0, 301
    log_f = gaussian_log_f(torch.tensor([m], dtype=D), torch.tensor([[s * s]], dtype=D), sigma)
    c = sp.regularity_constants(log_f, sp.box_grid(lim, n))
    xstar = torch.tensor([[m * sigma**2 / (sigma**2 - s * s)]], dtype=D)
    ends = torch.tensor([[-lim], [lim]], dtype=D)
    k, h = abs(1 / sigma**2 - 1 / s**2), 2 * lim / (n - 1)
    assert 0 <= log_f(xstar).item() - c["f_max"].log().item() <= k * h * h / 8 + 1e-12
    assert abs(c["f_min"].log().item() - log_f(ends).min().item()) <= 1e-12


def test_lipschitz_constants_of_f_against_finite_differences():
    # Lip(f) = max |f'| and Lip(f') = max |f''| in 1-D, against numpy central differences of f on
    # the same grid; their truncation error is O(h^2 sup|f'''|), below 1e-3 relative at h = 0.004.
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
    # hess log f by numpy second differences of log f
    d2l = np.diff(np.log(f), 2) / h**2
    assert abs(c["k_plus"].item() - d2l.max()) <= 1e-3 * abs(c["k_plus"].item())
    assert abs(c["k_minus"].item() - d2l.min()) <= 1e-3 * abs(c["k_minus"].item())


def test_secant_and_jacobian_lipschitz_agree_on_fine_grid():
    # F = (log f)'. Between neighbours the secant is F'(xi) for some xi in the cell, so the best
    # secant is within h sup|F''| of max |F'| on the grid, and never above sup |F'| on the hull.
    # sup|F''| = sup|(log pi)'''| is computed here by triple autograd on a 10x finer grid.
    w, mu, v = torch.tensor([0.5, 0.5], dtype=D), torch.tensor([-1.0, 1.0], dtype=D), torch.tensor([0.2, 0.2], dtype=D)
    log_f = mixture_1d_log_u(w, mu, v, t=0.0)
    x = sp.box_grid(3.0, 601)
    fine = sp.box_grid(3.0, 6001).requires_grad_(True)
    g1 = torch.autograd.grad(log_f(fine).sum(), fine, create_graph=True)[0]
    g2 = torch.autograd.grad(g1.sum(), fine, create_graph=True)[0]
    g3 = torch.autograd.grad(g2.sum(), fine)[0]
    jac_fine, third = g2.detach().abs().max(), g3.abs().max()
    jac = sp.regularity_constants(log_f, x)["lip_grad_log"]
    sec = sp.secant_lipschitz(lambda y: sp.grad_log(log_f, y), x, chunk=128)
    assert sec <= jac_fine + 1e-9
    assert jac - sec <= (6.0 / 600) * third


@pytest.mark.parametrize("sigma,beta", [(1.0, 1.0), (0.7, 2.0)])
@pytest.mark.parametrize("r", [0.4, 1.8])
def test_inherited_curvature_bound_is_exact_for_gaussians(sigma, beta, r):
    # pi = N(m, r^2): hess log f = k = 1/sigma^2 - 1/r^2 (constant) and (log U_t f)'' = 1/sigma^2 - 1/v_t
    # with v_t = a^2 r^2 + sigma^2 (1 - a^2). The upper bound a^2 k / (1 - s2 k) is attained for narrow
    # (r < sigma) and wide (r > sigma) Gaussians alike, so equality holds to rounding.
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
        c = sp.regularity_constants(log_u, sp.box_grid(2.0, 11))
        assert abs(c["k_minus"].item() - exact) <= 1e-10 and abs(c["k_plus"].item() - exact) <= 1e-10


@pytest.mark.parametrize("var", [[1.0, 1.0], [0.1, 0.05], [0.5, 0.5]])
def test_inherited_bounds_hold_for_mixtures(var):
    # Unit-variance modes (= sigma^2): grad log f = sum_k r_k mu_k, so G = max|mu_k| on all of R.
    # k_minus, k_plus are estimated on a wide box (hess log f is flat beyond it). The bounds must
    # contain the grid constants of U_t f on an inner box (tolerance 1e-9: rounding only).
    w, mu, var = torch.tensor([0.3, 0.7], dtype=D), torch.tensor([-2.0, 1.5], dtype=D), torch.tensor(var, dtype=D)
    c0 = sp.regularity_constants(mixture_1d_log_u(w, mu, var, 0.0), sp.box_grid(12.0, 4801))
    G = mu.abs().max().item() if bool((var == 1).all()) else math.inf
    x = sp.box_grid(4.0, 801)
    for t in (0.0005, 0.01, 0.1, 0.5, 2.0):
        c = sp.regularity_constants(mixture_1d_log_u(w, mu, var, t), x)
        b = sp.ou_inherited_bounds(t, G=G, k_minus=c0["k_minus"], k_plus=c0["k_plus"])
        assert b["hess_lower"] - 1e-9 <= c["k_minus"].item() and c["k_plus"].item() <= b["hess_upper"] + 1e-9
        assert c["sup_grad_log"].item() <= b["sup_grad_log"] + 1e-9
        assert math.isfinite(b["hess_lower"])
        if t <= 0.0005 or G < math.inf:  # the branch that bites: Brascamp-Lieb or k_plus + G^2
            assert math.isfinite(b["hess_upper"])


def test_inherited_bounds_hold_for_cosine_tilt():
    # Everything in closed form on R (see test_cosine_tilt_samples_and_constants); the grid over one
    # period of U_t f (frequency a w) finds its constants. All five bounds must hold, and
    # sup |grad log U_t f| is strictly below a G by the factor the Gaussian smoothing adds.
    eps, w = 0.5, 2.0  # eps <= 1/2: the extreme curvatures sit at cos = -1 and cos = 1
    ct = sp.CosineTilt(torch.tensor([w], dtype=D), eps=eps)
    n = math.exp(ct.log_norm)
    consts = dict(G=eps * w / math.sqrt(1 - eps**2), k_minus=-eps * w**2 / (1 + eps),
                  k_plus=eps * w**2 / (1 - eps), lip_f=eps * w / n, lip_grad_f=eps * w**2 / n)
    for t in (0.05, 0.3, 1.0):
        a = math.exp(-t)
        c = sp.regularity_constants(lambda y: ct.log_u(y, t), sp.box_grid(math.pi / (a * w), 2001))
        b = sp.ou_inherited_bounds(t, **consts)
        assert b["hess_lower"] - 1e-9 <= c["k_minus"].item() and c["k_plus"].item() <= b["hess_upper"] + 1e-9
        for key in ("sup_grad_log", "lip_f", "lip_grad_f"):
            assert c[key].item() <= b[key] + 1e-9, key
        assert c["sup_grad_log"].item() < 0.99 * b["sup_grad_log"]


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


def test_bad_input_raises():
    log_f = gaussian_log_f(torch.zeros(1, dtype=D), torch.eye(1, dtype=D) * 0.5)
    with pytest.raises(ValueError, match="x"):
        sp.regularity_constants(log_f, torch.zeros(0, 1, dtype=D))
    with pytest.raises(ValueError, match="x"):
        sp.regularity_constants(log_f, torch.full((3, 1), float("nan"), dtype=D))
    with pytest.raises(ValueError, match="log_f"):
        sp.regularity_constants(3.0, torch.zeros(3, 1, dtype=D))
    with pytest.raises(ValueError, match="log_f"):
        sp.grad_log(lambda y: y, torch.zeros(3, 1, dtype=D))
    with pytest.raises(ValueError, match="log_f"):  # f = 0 somewhere: log f = -inf
        sp.regularity_constants(lambda y: torch.log(y[:, 0].clamp_min(0)), sp.box_grid(1.0, 5))
    with pytest.raises(ValueError, match="x"):
        sp.secant_lipschitz(lambda y: y, torch.zeros(1, 2, dtype=D))


@pytest.mark.parametrize("device", DEVICES)
def test_dtype_and_device_are_kept(device):
    x32 = sp.box_grid(1.0, 9, dim=2, dtype=torch.float32, device=device)
    c = sp.regularity_constants(lambda y: -(y**2).sum(-1) / 2, x32)  # hess log f = -I, f = e^{-|x|^2/2}
    assert all(v.dtype == torch.float32 and v.device.type == device for v in c.values())
    assert abs(c["lip_grad_log"].item() - 1.0) <= 1e-6 and abs(c["f_max"].item() - 1.0) <= 1e-6
    assert sp.secant_lipschitz(lambda y: -y, x32).dtype == torch.float32


def test_cosine_tilt_closed_forms_against_quadrature():
    # Gauss-Hermite with 80 nodes integrates these entire functions (cos times a Gaussian weight;
    # the error decays like |w s|^{2n} / (2n)!) far below 1e-10, the tolerance used here.
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
    with pytest.raises(ValueError, match="eps"):
        sp.CosineTilt(torch.tensor([1.0]), eps=1.0)
    with pytest.raises(ValueError, match="x"):
        ct.log_u(torch.zeros(3, 2, dtype=D), 0.1)


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
