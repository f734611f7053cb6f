"""Tests of smoothpin.semigroups: the OU and heat semigroups by Monte Carlo and Gauss-Hermite.

References: closed forms written here (Gaussian expectations of exponentials, polynomials, Gaussian
densities and trigonometric functions), the exact OU score / Föllmer drift of a Gaussian mixture
(processes.py, itself checked against autograd of the marginal in test_processes.py), and the
identities of DESIGN.md section 3: grad log p_t = -x/sigma^2 + grad log U_t f, b = sigma^2 grad log
Q_{1-t} f, and the commutation lemma grad U_t f = e^{-beta t} U_t grad f.
Monte Carlo checks allow 5 of the estimator's own standard errors at points drawn from p_t (where
the self-normalised estimator's delta-method standard error is reliable); Gauss-Hermite checks
use a tolerance set by its convergence (stated per test). float64 unless stated.
"""
import math

import pytest
import torch

import smoothpin as sp

from mixtures import CUDA, D64, build, gen as _gen  # tests/mixtures.py


def mixture():
    return build("full2d")


def close(a, b, rel):
    return bool(torch.all((a - b).abs() <= rel * (1 + b.abs())))


def within_stderr(est, exact, k=5.0):
    """|value - exact| <= k stderr (+ rounding): k = 5 over ~100 comparisons fails with prob ~1e-4."""
    return bool(torch.all((est.value - exact).abs() <= k * est.stderr + 1e-12 * (1 + exact.abs())))


SIGMA, BETA = 0.8, 0.7
GH = dict(method="gauss-hermite", n_nodes=64)


# --------------------------------------------------------------------------- Gauss-Hermite nodes

def test_gauss_hermite_nodes_integrate_normal_moments():
    z, lw = sp.gauss_hermite_nodes(5, 2)
    w = torch.exp(lw)
    assert z.shape == (25, 2) and lw.shape == (25,) and z.dtype == D64
    assert abs(float(w.sum()) - 1) < 1e-14
    # E Z^k = (k-1)!! for even k, 0 for odd: exact for degree < 2 * 5 per axis
    for k, mom in ((1, 0.0), (2, 1.0), (4, 3.0), (6, 15.0), (8, 105.0), (9, 0.0)):
        assert abs(float(w @ z[:, 0] ** k) - mom) < 1e-12 * (1 + mom), k
    assert abs(float(w @ (z[:, 0] ** 2 * z[:, 1] ** 2)) - 1.0) < 1e-13
    z32, lw32 = sp.gauss_hermite_nodes(4, 3, dtype=torch.float32)
    assert z32.dtype == torch.float32 and z32.shape == (64, 3)


# --------------------------------------------------------------------------- closed forms

def test_semigroups_of_exponentials():
    # f(y) = e^{c.y}: U_t f(x) = e^{a c.x + s^2 |c|^2 / 2}, Q_s f(x) = e^{c.x + sigma^2 s |c|^2 / 2}
    c = torch.tensor([0.7, -0.4], dtype=D64)
    log_f = lambda y: y @ c
    x = torch.randn(20, 2, generator=_gen(0), dtype=D64)
    t, s = 0.6, 0.45
    a, sd2 = math.exp(-BETA * t), SIGMA ** 2 * (1 - math.exp(-2 * BETA * t))
    exact_ou = a * x @ c + 0.5 * sd2 * float(c @ c)
    exact_heat = x @ c + 0.5 * SIGMA ** 2 * s * float(c @ c)
    kw = dict(sigma=SIGMA, beta=BETA)
    # GH with 20 nodes: e^{c z} is entire, the rule's error is ~c^40 / 40! (below rounding)
    assert close(sp.log_ou_semigroup(log_f, x, t, **kw, method="gauss-hermite", n_nodes=20), exact_ou, 1e-12)
    assert close(sp.log_heat_semigroup(log_f, x, s, sigma=SIGMA, method="gauss-hermite", n_nodes=20),
                 exact_heat, 1e-12)
    est = sp.log_ou_semigroup(log_f, x, t, **kw, n_samples=4096, generator=_gen(1), return_stderr=True)
    assert within_stderr(est, exact_ou)
    est = sp.ou_semigroup(lambda y: torch.exp(y @ c), x, t, **kw, n_samples=4096, generator=_gen(2),
                          return_stderr=True)
    assert within_stderr(est, torch.exp(exact_ou))
    # gradients: grad log U_t f = a c, grad log Q_s f = c (every node carries the same gradient)
    g = sp.grad_log_ou_semigroup(log_f, x, t, **kw, n_samples=64, generator=_gen(3))
    assert torch.allclose(g, (a * c).expand_as(x), rtol=0, atol=1e-14)
    g = sp.grad_log_heat_semigroup(log_f, x, s, sigma=SIGMA, **GH)
    assert torch.allclose(g, c.expand_as(x), rtol=0, atol=1e-13)


def test_semigroups_of_polynomials_and_gaussian_densities():
    x = torch.randn(20, 3, generator=_gen(4), dtype=D64)
    t, s = 0.3, 0.8
    a, sd2 = math.exp(-BETA * t), SIGMA ** 2 * (1 - math.exp(-2 * BETA * t))
    kw = dict(sigma=SIGMA, beta=BETA)
    # f = |y|^2: U_t f = a^2 |x|^2 + 3 s^2 (GH with 3 nodes is exact for degree 2)
    sq = lambda y: (y * y).sum(-1)
    exact = a * a * sq(x) + 3 * sd2
    assert close(sp.ou_semigroup(sq, x, t, **kw, method="gauss-hermite", n_nodes=3), exact, 1e-13)
    assert within_stderr(sp.ou_semigroup(sq, x, t, **kw, n_samples=4096, generator=_gen(5),
                                         return_stderr=True), exact)
    # f = N(y; m, v I) as a function: Q_s f(x) = N(x; m, (v + sigma^2 s) I), U_t f(x) = N(a x; m, (v + s^2) I)
    # (in d = 2; GH with 30 nodes per axis is converged to rounding for these widths)
    x = x[:, :2]
    m, v = torch.tensor([0.5, -0.5], dtype=D64), 0.6
    npdf = lambda y, var: torch.exp(-0.5 * ((y - m) ** 2).sum(-1) / var) / (2 * math.pi * var)
    f = lambda y: npdf(y, v)
    assert close(sp.heat_semigroup(f, x, s, sigma=SIGMA, method="gauss-hermite", n_nodes=30),
                 npdf(x, v + SIGMA ** 2 * s), 1e-10)
    assert close(sp.ou_semigroup(f, x, t, **kw, method="gauss-hermite", n_nodes=30), npdf(a * x, v + sd2), 1e-10)
    est = sp.heat_semigroup(f, x, s, sigma=SIGMA, n_samples=8192, generator=_gen(6), return_stderr=True)
    assert within_stderr(est, npdf(x, v + SIGMA ** 2 * s))
    # at time 0 both semigroups are the identity
    assert close(sp.ou_semigroup(f, x, 0.0, **kw, n_samples=8, generator=_gen(0)), f(x), 1e-14)
    assert close(sp.heat_semigroup(f, x, 0.0, sigma=SIGMA, **GH), f(x), 1e-13)


def test_monte_carlo_stderr_is_the_spread_of_repeated_estimates():
    # 200 independent estimates at one typical point: their standard deviation should match the
    # reported standard error (sd of a 200-sample sd is ~5%; allow 25%)
    gm = mixture()
    log_f = sp.log_density_ratio(gm, SIGMA)
    x = torch.tensor([[0.3, -0.2]], dtype=D64)
    vals, ses = [], []
    for seed in range(200):
        est = sp.grad_log_ou_semigroup(log_f, x, 0.5, sigma=SIGMA, beta=BETA, n_samples=512,
                                       generator=_gen(seed), return_stderr=True)
        vals.append(est.value[0])
        ses.append(est.stderr[0])
    spread, se = torch.stack(vals).std(0), torch.stack(ses).mean(0)
    assert torch.all((spread / se - 1).abs() < 0.25), (spread, se)


# --------------------------------------------------------------------------- scores and drifts

def typical_points(process, t, n=32, seed=0):
    """Points drawn from p_t (via the transition from draws of pi)."""
    gm, g = mixture(), _gen(seed)
    y = gm.sample(n, generator=g)
    if isinstance(process, sp.OU):
        return process.sample_transition(y, t, generator=g)
    return process.sample_bridge(y, t, generator=g)


@pytest.mark.parametrize("t", [0.05, 0.3, 1.0, 3.0])
def test_ou_score_from_semigroup_is_the_exact_score(t):
    gm, ou = mixture(), sp.OU(sigma=SIGMA, beta=BETA, T=5.0)
    log_f = sp.log_density_ratio(gm, SIGMA)
    x = torch.cat([typical_points(ou, t), torch.tensor([[3.0, -3.0], [-4.0, 2.0]], dtype=D64)])
    exact = ou.score(gm, x, t)
    # Gauss-Hermite, 64^2 nodes: converged to ~1e-13 here (it is 1e-6 at 20 nodes)
    gh = sp.ou_score_from_semigroup(log_f, x, t, sigma=SIGMA, beta=BETA, **GH)
    assert close(gh, exact, 1e-8)
    # also -x/sigma^2 + grad log U_t f by hand
    g = sp.grad_log_ou_semigroup(log_f, x, t, sigma=SIGMA, beta=BETA, **GH)
    assert close(-x / SIGMA ** 2 + g, exact, 1e-8)
    # Monte Carlo at typical points
    xt = x[:32]
    est = sp.ou_score_from_semigroup(log_f, xt, t, sigma=SIGMA, beta=BETA, n_samples=4096,
                                     generator=_gen(7), return_stderr=True)
    assert est.stderr.shape == xt.shape and bool((est.stderr > 0).all())
    assert within_stderr(est, exact[:32])


@pytest.mark.parametrize("t", [0.0, 0.3, 0.7, 0.95, 1.0])
def test_follmer_drift_from_semigroup_three_forms(t):
    gm, fol = mixture(), sp.Follmer(sigma=SIGMA)
    log_f = sp.log_density_ratio(gm, SIGMA)
    x = torch.cat([typical_points(fol, t), torch.tensor([[1.0, -1.0], [-0.5, 2.0]], dtype=D64)])
    b = fol.drift(gm, x, t)
    gh = sp.follmer_drift_from_semigroup(log_f, x, t, sigma=SIGMA, **GH)
    assert close(gh, b, 1e-8)                                            # semigroup form
    if t < 1:                                                            # posterior-mean form
        assert close(gh, (fol.posterior_mean(gm, x, t) - x) / (1 - t), 1e-8)
    if t > 0:                                                            # score form
        assert close(gh, SIGMA ** 2 * fol.score(gm, x, t) + x / t, 1e-8 / t)
    xt = x[:32]
    est = sp.follmer_drift_from_semigroup(log_f, xt, t, sigma=SIGMA, n_samples=4096,
                                          generator=_gen(8), return_stderr=True)
    assert within_stderr(est, b[:32])


def test_semigroup_endpoints():
    gm = mixture()
    log_f = sp.log_density_ratio(gm, SIGMA)
    x = torch.randn(16, 2, generator=_gen(9), dtype=D64)
    # b(x, 1) = sigma^2 grad log f(x) = sigma^2 grad log pi(x) + x: Q_0 is the identity
    b1 = sp.follmer_drift_from_semigroup(log_f, x, 1.0, sigma=SIGMA, n_samples=16, generator=_gen(0))
    assert close(b1, SIGMA ** 2 * gm.score(x) + x, 1e-12)
    # b(0, 0) = E_pi[Y] = sum_k w_k mu_k
    b00 = sp.follmer_drift_from_semigroup(log_f, torch.zeros(1, 2, dtype=D64), 0.0, sigma=SIGMA, **GH)
    assert close(b00[0], gm.weights @ gm.means, 1e-8)                   # GH, 64^2 nodes: ~1e-10
    # the OU score at t = 0 is the target's score
    s0 = sp.ou_score_from_semigroup(log_f, x, 0.0, sigma=SIGMA, beta=BETA, n_samples=16, generator=_gen(0))
    assert close(s0, gm.score(x), 1e-12)


def test_pathwise_gradient_is_autograd_of_the_log_estimate():
    # grad_log_ou_semigroup (softmax-weighted node gradients) equals autograd through log_ou_semigroup
    # on the same nodes (Gauss-Hermite, or Monte Carlo with the same seed)
    gm = mixture()
    log_f = sp.log_density_ratio(gm, SIGMA)
    x = torch.randn(8, 2, generator=_gen(10), dtype=D64)
    for method in ("gauss-hermite", "mc"):
        kw = lambda: dict(sigma=SIGMA, beta=BETA, method=method, n_nodes=40, n_samples=512,
                          generator=_gen(11) if method == "mc" else None)
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(sp.log_ou_semigroup(log_f, xr, 0.4, **kw()).sum(), xr)
        assert close(sp.grad_log_ou_semigroup(log_f, x, 0.4, **kw()), g, 1e-12), method


# --------------------------------------------------------------------------- commutation lemma

def _f(y):
    return 1 + 0.5 * torch.sin(y[..., 0]) * torch.cos(y[..., 1])


def _grad_f(y):
    return torch.stack([0.5 * torch.cos(y[..., 0]) * torch.cos(y[..., 1]),
                        -0.5 * torch.sin(y[..., 0]) * torch.sin(y[..., 1])], -1)


@pytest.mark.parametrize("method", ["gauss-hermite", "mc"])
def test_commutation_lemma(method):
    # grad U_t f = e^{-beta t} U_t grad f for f = 1 + sin(y1) cos(y2) / 2 (smooth, not Gaussian).
    # Left: autograd through ou_semigroup. Right: ou_semigroup of each component of grad f, which
    # changes sign, shifted by 1 (U_t 1 = 1). Closed form: with a = e^{-beta t}, s^2 = sigma^2 (1-a^2),
    # U_t f(x) = 1 + e^{-s^2} sin(a x1) cos(a x2) / 2.
    sigma, beta = 1.2, 0.7
    x = (2 * torch.rand(16, 2, generator=_gen(12), dtype=D64) - 1) * 3
    for t in (0.1, 0.5, 2.0):
        kw = dict(sigma=sigma, beta=beta, method=method, n_nodes=40, n_samples=2048)
        gen = (lambda: _gen(13)) if method == "mc" else (lambda: None)   # MC: same nodes both sides
        xr = x.clone().requires_grad_(True)
        (lhs,) = torch.autograd.grad(sp.ou_semigroup(_f, xr, t, generator=gen(), **kw).sum(), xr)
        rhs = torch.stack([sp.ou_semigroup(lambda y, i=i: _grad_f(y)[..., i] + 1, x, t, generator=gen(), **kw) - 1
                           for i in range(2)], -1) * math.exp(-beta * t)
        # with common nodes the identity holds node by node: only rounding separates the sides
        assert close(lhs, rhs, 1e-12), t
        if method == "gauss-hermite":
            a = math.exp(-beta * t)
            k = 0.5 * a * math.exp(-sigma ** 2 * (1 - a * a))
            exact = k * torch.stack([torch.cos(a * x[:, 0]) * torch.cos(a * x[:, 1]),
                                     -torch.sin(a * x[:, 0]) * torch.sin(a * x[:, 1])], -1)
            assert close(lhs, exact, 1e-12), t                           # GH on entire functions


# --------------------------------------------------------------------------- dtype, device, seeds

def test_float32_close_to_float64_and_seeds():
    gm = mixture()
    log_f = sp.log_density_ratio(gm, SIGMA)
    x = typical_points(sp.OU(sigma=SIGMA, beta=BETA), 0.5, n=16)
    g64 = sp.ou_score_from_semigroup(log_f, x, 0.5, sigma=SIGMA, beta=BETA, method="gauss-hermite", n_nodes=40)
    g32 = sp.ou_score_from_semigroup(log_f, x.float(), 0.5, sigma=SIGMA, beta=BETA, method="gauss-hermite",
                                     n_nodes=40)
    assert g32.dtype == torch.float32
    assert close(g32.double(), g64, 1e-4)                                # float32: ~7 digits, softmax of ~1e3 nodes
    kw = dict(sigma=SIGMA, beta=BETA, n_samples=256)
    a, b, c = (sp.ou_score_from_semigroup(log_f, x, 0.5, generator=_gen(s), **kw) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_device_follows_x(device):
    gm = mixture().to(device=device)
    log_f = sp.log_density_ratio(gm, SIGMA)
    x = torch.randn(8, 2, generator=_gen(14), dtype=D64)
    g = sp.follmer_drift_from_semigroup(log_f, x.to(device), 0.5, sigma=SIGMA, **GH)
    assert g.device.type == device
    assert close(g.cpu(), sp.Follmer(SIGMA).drift(mixture(), x, 0.5), 1e-8)
    e = sp.heat_semigroup(lambda y: torch.exp(-(y * y).sum(-1)), x.to(device), 0.3, n_samples=64,
                          generator=torch.Generator(device=device).manual_seed(0), return_stderr=True)
    assert e.value.device.type == device and e.stderr.device.type == device


# --------------------------------------------------------------------------- bad input

X = torch.zeros(4, 2, dtype=D64)
LOGF = lambda y: -(y * y).sum(-1)
NAN = float("nan")

BAD = [
    ("method", lambda: sp.log_ou_semigroup(LOGF, X, 0.5, method="quadrature")),
    ("n_samples", lambda: sp.log_ou_semigroup(LOGF, X, 0.5, n_samples=1)),
    ("n_samples", lambda: sp.log_ou_semigroup(LOGF, X, 0.5, n_samples=10.5)),
    ("n_nodes", lambda: sp.log_ou_semigroup(LOGF, X, 0.5, method="gauss-hermite", n_nodes=0)),
    ("n_nodes", lambda: sp.log_ou_semigroup(LOGF, torch.zeros(2, 6, dtype=D64), 0.5, method="gauss-hermite",
                                            n_nodes=40)),
    ("t", lambda: sp.log_ou_semigroup(LOGF, X, -0.1)),
    ("t", lambda: sp.ou_semigroup(lambda y: torch.ones(y.shape[:-1]), X, NAN)),
    ("s", lambda: sp.log_heat_semigroup(LOGF, X, -1.0)),
    ("t", lambda: sp.follmer_drift_from_semigroup(LOGF, X, 1.5)),
    ("t", lambda: sp.follmer_drift_from_semigroup(LOGF, X, -0.5)),
    ("sigma", lambda: sp.log_ou_semigroup(LOGF, X, 0.5, sigma=0.0)),
    ("sigma", lambda: sp.heat_semigroup(lambda y: torch.ones(y.shape[:-1]), X, 0.5, sigma=-1.0)),
    ("beta", lambda: sp.grad_log_ou_semigroup(LOGF, X, 0.5, beta=0.0)),
    ("beta", lambda: sp.ou_score_from_semigroup(LOGF, X, 0.5, beta=-1.0)),
    ("x", lambda: sp.log_ou_semigroup(LOGF, torch.full((4, 2), NAN, dtype=D64), 0.5)),
    ("x", lambda: sp.grad_log_heat_semigroup(LOGF, torch.zeros(4, 2, dtype=torch.long), 0.5)),
    ("x", lambda: sp.log_heat_semigroup(LOGF, [0.0, 0.0], 0.5)),
    ("log_f", lambda: sp.log_ou_semigroup("not callable", X, 0.5)),
    ("log_f", lambda: sp.log_ou_semigroup(lambda y: y, X, 0.5)),                       # wrong shape
    ("log_f", lambda: sp.log_heat_semigroup(lambda y: y[..., 0] * NAN, X, 0.5)),
    ("f", lambda: sp.ou_semigroup(lambda y: y[..., 0], X, 0.5)),                       # negative f
    ("f", lambda: sp.heat_semigroup(None, X, 0.5)),
    ("generator", lambda: sp.log_ou_semigroup(LOGF, X, 0.5, generator=123)),
]


@pytest.mark.parametrize("arg,make", BAD, ids=[f"{i}-{a}" for i, (a, _) in enumerate(BAD)])
def test_bad_input_raises_value_error_naming_the_argument(arg, make):
    with pytest.raises(ValueError, match=arg):
        make()


def test_gauss_hermite_rule_too_large_for_numpy_raises():
    # numpy's hermegauss overflows past ~350 nodes (weights become nan/0): a clear error, not NaN.
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="n_nodes"):
        sp.gauss_hermite_nodes(400, 1)
