"""Tests of smoothpin.bounds against closed forms and quadrature.

gaussian_kl against torch.distributions.kl_divergence; ou_kl_to_invariant_gaussian against the
closed form of DESIGN.md section 3, (d/2)(v - 1 - ln v) + a^2 |m|^2 / 2 (and its sigma != 1
version, written here); the Gaussian log-Sobolev contraction KL(p_t || phi) <= e^{-2 B(t)} KL(pi || phi)
and de Bruijn's identity on a 2-D mixture, with KL(p_t || phi) by midpoint quadrature of the exact
densities (metrics.kl_quadrature_2d, itself checked here against the Gaussian closed form);
kl_from_score_error against integrals done by hand; Pinsker against a quadrature TV. float64.
"""
import math

import pytest
import torch

import smoothpin as sp

D64 = torch.float64
TD = torch.distributions


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def spd(d, seed):
    A = torch.randn(d, d, generator=_gen(seed), dtype=D64)
    return A @ A.T / d + 0.3 * torch.eye(d, dtype=D64)


def mvn(m, S):
    return TD.MultivariateNormal(m, covariance_matrix=S)


def B_of(process, t):
    """int_0^t beta from the schedule's definition (constant, or linear beta_min -> beta_max on [0, T])."""
    return process.beta * t + (process.beta_max - process.beta) * t * t / (2 * process.T)


# --------------------------------------------------------------------------- Gaussian KL

@pytest.mark.parametrize("d", [1, 2, 5])
def test_gaussian_kl_matches_torch_distributions(d):
    m0, m1 = torch.randn(d, generator=_gen(1), dtype=D64), torch.randn(d, generator=_gen(2), dtype=D64)
    S0, S1 = spd(d, 3), spd(d, 4)
    kl = sp.gaussian_kl(m0, S0, m1, S1)
    ref = TD.kl_divergence(mvn(m0, S0), mvn(m1, S1))
    assert kl.dtype == D64 and kl.shape == ()
    assert abs(float(kl - ref)) < 1e-12 * (1 + float(ref))
    assert abs(float(sp.gaussian_kl(m0, S0, m0, S0))) < 1e-13                      # KL(p || p) = 0
    # isotropic (float) and diagonal ((d,)) covariances mean the same as the full matrices
    v = torch.rand(d, generator=_gen(5), dtype=D64) + 0.5
    full = sp.gaussian_kl(m0, torch.diag(v), m1, 1.7 * torch.eye(d, dtype=D64))
    assert abs(float(sp.gaussian_kl(m0, v, m1, 1.7) - full)) < 1e-13
    ref = TD.kl_divergence(mvn(m0, torch.diag(v)), mvn(m1, 1.7 * torch.eye(d, dtype=D64)))
    assert abs(float(full - ref)) < 1e-12 * (1 + float(ref))
    k32 = sp.gaussian_kl(m0.float(), S0.float(), m1.float(), S1.float())
    assert k32.dtype == torch.float32 and abs(float(k32) - float(kl)) < 1e-5 * (1 + float(kl))


@pytest.mark.parametrize("d", [1, 3])
@pytest.mark.parametrize("s2", [0.25, 4.0])
def test_ou_kl_to_invariant_gaussian_closed_form(d, s2):
    # DESIGN.md: sigma = beta = 1, a = e^{-t}, v = a^2 s^2 + 1 - a^2:
    # KL(p_t || N(0, I)) = (d/2)(v - 1 - ln v) + a^2 |m|^2 / 2
    m = torch.linspace(-1.0, 2.0, d, dtype=D64)
    ou = sp.OU(T=5.0)
    for t in (0.0, 0.1, 1.0, 3.0):
        a = math.exp(-t)
        v = a * a * s2 + 1 - a * a
        expect = 0.5 * d * (v - 1 - math.log(v)) + 0.5 * a * a * float(m @ m)
        for cov in (s2, s2 * torch.eye(d, dtype=D64)):
            kl = sp.ou_kl_to_invariant_gaussian(m, cov, t, ou)
            assert abs(float(kl) - expect) < 1e-13 * (1 + expect), (t, cov)


@pytest.mark.parametrize("process", [sp.OU(sigma=1.3, beta=0.7, T=3.0), sp.OU.linear(0.1, 10.0, sigma=0.8, T=1.0)],
                         ids=["ou", "linear"])
def test_ou_kl_to_invariant_gaussian_general(process):
    m, s2, d = torch.tensor([0.5, -1.0, 2.0], dtype=D64), 0.6, 3
    S, sig2 = spd(d, 6), process.sigma ** 2
    for t in (0.0, 0.2, 0.7, process.T):
        a = math.exp(-B_of(process, t))
        # isotropic: KL(N(a m, v I) || N(0, sig2 I)) = (d/2)(r - 1 - ln r) + a^2 |m|^2 / (2 sig2), r = v / sig2
        r = (a * a * s2 + sig2 * (1 - a * a)) / sig2
        expect = 0.5 * d * (r - 1 - math.log(r)) + 0.5 * a * a * float(m @ m) / sig2
        assert abs(float(sp.ou_kl_to_invariant_gaussian(m, s2, t, process)) - expect) < 1e-13 * (1 + expect)
        # full covariance: the transported Gaussian N(a m, a^2 S + sig2 (1 - a^2) I), by torch.distributions
        pt = mvn(a * m, a * a * S + sig2 * (1 - a * a) * torch.eye(d, dtype=D64))
        ref = TD.kl_divergence(pt, mvn(torch.zeros(d, dtype=D64), sig2 * torch.eye(d, dtype=D64)))
        assert abs(float(sp.ou_kl_to_invariant_gaussian(m, S, t, process) - ref)) < 1e-12 * (1 + float(ref))


# --------------------------------------------------------------------------- contraction on a mixture

BOX = ((-9.0, 9.0), (-9.0, 9.0))


def kl_to_phi(process, target, t):
    """KL(p_t || N(0, sigma^2 I)) by midpoint quadrature of the exact densities on BOX (401^2 cells)."""
    pt = process.marginal(target, t)
    sig2 = process.sigma ** 2
    log_phi = lambda x: -0.5 * (x * x).sum(-1) / sig2 - math.log(2 * math.pi * sig2)
    return float(sp.kl_quadrature_2d(pt.log_prob, log_phi, box=BOX, n=401))


def mixture():
    w = torch.tensor([0.25, 0.45, 0.3], dtype=D64)
    mu = torch.tensor([[2.0, 1.0], [-1.5, -1.0], [0.5, -2.5]], dtype=D64)
    S = torch.stack([torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=D64), 0.15 * torch.eye(2, dtype=D64),
                     torch.tensor([[0.5, -0.2], [-0.2, 0.25]], dtype=D64)])
    return sp.GaussianMixture(w, mu, S)


def test_quadrature_kl_matches_gaussian_closed_form():
    # validates the quadrature used below: a Gaussian target, where KL(p_t || phi) is closed-form
    m, S = torch.tensor([1.5, -1.0], dtype=D64), torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=D64)
    ou = sp.OU(sigma=1.3, beta=0.7, T=3.0)
    for t in (0.0, 0.5, 2.0):
        q = kl_to_phi(ou, sp.Gaussian(m, S), t)
        assert abs(q - float(sp.ou_kl_to_invariant_gaussian(m, S, t, ou))) < 1e-9, t


@pytest.mark.parametrize("process", [sp.OU(), sp.OU(sigma=1.3, beta=0.7, T=3.0), sp.OU.linear(0.1, 5.0, T=1.0)],
                         ids=["ou", "ou-sigma-beta", "linear"])
def test_log_sobolev_contraction_on_a_2d_mixture(process):
    gm = mixture()
    kl0 = kl_to_phi(process, gm, 0.0)
    assert kl0 > 0.5                                                 # a target far from phi
    prev = kl0
    for frac in (0.05, 0.2, 0.5, 1.0):
        t = frac * process.T
        kl = kl_to_phi(process, gm, t)
        bound = sp.log_sobolev_decay_bound(kl0, t, process)
        assert abs(bound - math.exp(-2 * B_of(process, t)) * kl0) < 1e-12 * kl0
        assert kl <= bound + 1e-9, (t, kl, bound)                    # quadrature error ~1e-10
        assert kl < prev                                             # KL(p_t || phi) decreases
        prev = kl


def test_de_bruijn_identity_constant():
    # d/dt KL(p_t || phi) = -beta sigma^2 E_{p_t} |grad log U_t f|^2, grad log U_t f = score + x / sigma^2.
    # Central difference with h = 1e-3 (error O(h^2) ~ 1e-6 relative) against quadrature of the
    # exact score on the same grid as kl_quadrature_2d.
    gm, ou, t, h = mixture(), sp.OU(sigma=1.3, beta=0.7, T=3.0), 0.4, 1e-3
    dkl = (kl_to_phi(ou, gm, t + h) - kl_to_phi(ou, gm, t - h)) / (2 * h)
    n, (lo, hi) = 401, BOX[0]
    c = lo + (hi - lo) / n * (torch.arange(n, dtype=D64) + 0.5)
    x = torch.stack(torch.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2)
    p = torch.exp(ou.marginal(gm, t).log_prob(x)) * ((hi - lo) / n) ** 2
    g = ou.score(gm, x, t) + x / 1.69
    fisher = float(p @ (g * g).sum(-1))
    assert abs(dkl + 0.7 * 1.69 * fisher) < 1e-5 * fisher


# --------------------------------------------------------------------------- Girsanov and Pinsker

def test_kl_from_score_error_integrals():
    e, T = 0.03, 2.0
    ou = sp.OU(sigma=1.3, beta=0.7, T=T)
    t = torch.linspace(0, T, 11, dtype=D64)
    # constant error: (1/2) int 2 beta sigma^2 e dt = beta sigma^2 e T (trapezoid exact)
    kl = sp.kl_from_score_error(ou, torch.full_like(t, e), t, initial_kl=0.1)
    assert abs(float(kl) - (0.1 + 0.7 * 1.69 * e * T)) < 1e-14
    # linear schedule: (1/2) int 2 beta(t) sigma^2 e dt = sigma^2 e B(T)
    lin = sp.OU.linear(0.1, 10.0, sigma=0.8, T=1.0)
    t1 = torch.linspace(0, 1, 11, dtype=D64)
    kl = sp.kl_from_score_error(lin, torch.full_like(t1, e), t1)
    assert abs(float(kl) - 0.64 * e * B_of(lin, 1.0)) < 1e-14
    # e(t) = t^2 with constant beta: beta sigma^2 T^3 / 3; trapezoid error T h^2 / 12 * max|e''| * beta sigma^2
    tf = torch.linspace(0, T, 2001, dtype=D64)
    kl = sp.kl_from_score_error(ou, tf ** 2, tf)
    h = T / 2000
    assert abs(float(kl) - 0.7 * 1.69 * T ** 3 / 3) <= 0.7 * 1.69 * T * h * h / 12 * 2 * 1.0001
    # Föllmer: (1/2) int e dt / sigma^2 over [0, 1]
    fol = sp.Follmer(sigma=0.8)
    kl = sp.kl_from_score_error(fol, torch.full_like(t1, e), t1, initial_kl=0.0)
    assert abs(float(kl) - 0.5 * e / 0.64) < 1e-14


def test_kl_bound_stderr_is_the_linear_propagation_and_matches_repetitions():
    # (1) The bound is linear in e(t_i): its standard error is sqrt(sum (d bound / d e_i)^2 se_i^2)
    # with the derivative taken by autograd of kl_from_score_error itself (exact, 1e-14).
    for process, t in ((sp.OU.linear(0.1, 5.0, sigma=1.2, T=1.0), torch.linspace(0, 1, 9, dtype=D64) ** 2),
                       (sp.Follmer(sigma=0.7), torch.linspace(0, 0.9, 7, dtype=D64))):
        se = torch.linspace(0.1, 0.5, t.numel(), dtype=D64)
        e = torch.ones_like(t, requires_grad=True)
        (grad,) = torch.autograd.grad(sp.kl_from_score_error(process, e, t), e)
        assert abs(float(sp.kl_bound_stderr(process, se, t)) - float((grad * se).norm())) < 1e-14
    # (2) Independent repetitions of girsanov_kl_bound (a wrong score on a 1-D Gaussian, n = 64 per
    # time): the spread of the 300 bounds matches the mean predicted standard error. The sample
    # standard deviation of 300 draws has relative error about 1/sqrt(600) = 4%; 20% allowed.
    ou, target = sp.OU(T=1.0), sp.Gaussian(torch.tensor([1.0], dtype=D64), torch.tensor([[0.25]], dtype=D64))
    times = torch.linspace(0.05, 1.0, 9, dtype=D64)
    wrong = lambda x, t: ou.score(target, x, t) + 0.5 * x  # noqa: E731
    g = _gen(11)
    vals, ses = [], []
    for _ in range(300):
        b, res = sp.girsanov_kl_bound(wrong, ou, target, times=times, n=64, generator=g, dtype=D64)
        vals.append(float(b))
        ses.append(float(sp.kl_bound_stderr(ou, res.stderr, res.times)))
    spread, predicted = torch.tensor(vals).std().item(), sum(ses) / len(ses)
    assert abs(spread / predicted - 1) < 0.2, (spread, predicted)


def test_reverse_gaussian_law_ode_matches_the_integrated_flow():
    # The probability-flow ODE with the exact score (+ a constant shift) is an affine map y -> A y + b;
    # dopri5 at rtol 1e-10 gives A and b from three start points, independently of the closed form.
    # Start at phi_{sigma^2}: output law N(b, A^2 sigma^2); at p_T: N(A a_T m + b, A^2 v_T). 1e-6.
    ou = sp.OU.linear(0.2, 3.0, sigma=1.3, T=1.0)
    m, var = torch.tensor([0.8, -0.4], dtype=D64), 0.3
    target = sp.Gaussian(m, var * torch.eye(2, dtype=D64))
    shift = torch.tensor([0.25, -0.1], dtype=D64)
    score = lambda x, t: ou.score(target, x, float(t)) + shift  # noqa: E731
    y = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=D64)
    out = sp.probability_flow_ode(score, ou, y, 1.0, 0.0, rtol=1e-10, atol=1e-12)
    b, A = out[0], (out[1, 0] - out[0, 0])
    assert abs(float(out[2, 1] - out[0, 1] - A)) < 1e-8  # isotropic
    a_T, s_T = ou.mean_std(1.0)
    v_T = a_T ** 2 * var + s_T ** 2
    for start, mean_ref, var_ref in (("invariant", b, A ** 2 * 1.69), ("p_T", A * a_T * m + b, A ** 2 * v_T)):
        mean_out, var_out = sp.ou_reverse_gaussian_law(m, var, ou, start=start, sampler="ode", score_shift=shift)
        assert torch.allclose(mean_out, mean_ref, atol=1e-6, rtol=0) and abs(float(var_out - var_ref)) < 1e-6
    assert abs(float(A) - float(sp.ou_reverse_sensitivity(1.0, var, ou, "ode"))) < 1e-6


def test_reverse_gaussian_law_sde_matches_the_sampler():
    # (1) Two runs of the exact-step sampler with the same noise, with and without the shift on the
    # window W = [0.2, 0.7]: their difference is the same vector for every particle, the shift
    # delta of the closed form up to the first-order time discretisation (1% at 2000 steps).
    ou = sp.OU.linear(0.2, 3.0, sigma=1.3, T=1.0)
    m, var = torch.tensor([0.8, -0.4], dtype=D64), 0.3
    target = sp.Gaussian(m, var * torch.eye(2, dtype=D64))
    shift = torch.tensor([0.25, -0.1], dtype=D64)
    inside = lambda t: 0.2 <= t <= 0.7  # noqa: E731
    x_T = 1.3 * torch.randn(500, 2, generator=_gen(3), dtype=D64)
    base = sp.sample_ou_reverse(lambda x, t: ou.score(target, x, t), ou, x_T, 2000, generator=_gen(4))
    moved = sp.sample_ou_reverse(lambda x, t: ou.score(target, x, t) + shift * inside(t), ou, x_T, 2000,
                                 generator=_gen(4))
    diff = moved - base
    assert float((diff - diff[0]).abs().max()) < 1e-10
    delta = sp.ou_reverse_gaussian_law(m, var, ou, score_shift=shift, window=(0.2, 0.7))[0] - m
    assert float((diff[0] - delta).norm()) < 0.01 * float(delta.norm())
    # (2) Started at phi_{sigma^2}: mean and variance of 40 000 samples (1-D) within 5 standard
    # errors plus the discretisation bias (0.005 at 500 steps).
    # A short horizon (T = 0.4) so that the start error is larger than the tolerance.
    short = sp.OU(sigma=1.3, beta=1.0, T=0.4)
    m1 = torch.tensor([1.0], dtype=D64)
    t1 = sp.Gaussian(m1, torch.tensor([[var]], dtype=D64))
    y = sp.sample_ou_reverse(lambda x, t: short.score(t1, x, t), short,
                             1.3 * torch.randn(40_000, 1, generator=_gen(5), dtype=D64), 500, generator=_gen(6))
    mean_out, var_out = sp.ou_reverse_gaussian_law(m1, var, short, start="invariant")
    n = y.shape[0]
    assert abs(float(y.mean() - mean_out[0])) <= 5 * float(y.std()) / n ** 0.5 + 0.005
    assert abs(float(y.var() - var_out)) <= 5 * float(y.var()) * (2 / n) ** 0.5 + 0.005
    assert abs(float(mean_out[0]) - 1.0) > 0.1 and abs(float(var_out) - var) > 0.02  # visible errors


def test_pinsker():
    assert sp.pinsker_tv(0.0) == 0.0 and abs(sp.pinsker_tv(0.18) - 0.3) < 1e-15 and sp.pinsker_tv(5.0) == 1.0
    kl = torch.tensor([0.0, 0.5, 10.0], dtype=D64)
    assert torch.allclose(sp.pinsker_tv(kl), torch.tensor([0.0, 0.5, 1.0], dtype=D64), rtol=0, atol=1e-15)
    # the bound holds: TV = (1/2) int |p - q| by quadrature for two 2-D Gaussians
    m0, m1 = torch.tensor([0.0, 0.0], dtype=D64), torch.tensor([0.8, -0.3], dtype=D64)
    S0, S1 = spd(2, 7), spd(2, 8)
    n, lo, hi = 401, -8.0, 8.0
    c = lo + (hi - lo) / n * (torch.arange(n, dtype=D64) + 0.5)
    x = torch.stack(torch.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2)
    tv = 0.5 * float((mvn(m0, S0).log_prob(x).exp() - mvn(m1, S1).log_prob(x).exp()).abs().sum()) * ((hi - lo) / n) ** 2
    kl = sp.gaussian_kl(m0, S0, m1, S1)
    assert 0 < tv <= float(sp.pinsker_tv(kl))


# --------------------------------------------------------------------------- bad input

M = torch.zeros(2, dtype=D64)
I2 = torch.eye(2, dtype=D64)
NAN = float("nan")
TT = torch.linspace(0, 1, 5, dtype=D64)

BAD = [
    ("m0", lambda: sp.gaussian_kl(torch.zeros(2, 2, dtype=D64), I2, M, I2)),
    ("m0", lambda: sp.gaussian_kl(torch.tensor([NAN, 0.0], dtype=D64), I2, M, I2)),
    ("m1", lambda: sp.gaussian_kl(M, I2, torch.zeros(3, dtype=D64), I2)),
    ("S0", lambda: sp.gaussian_kl(M, torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=D64), M, I2)),
    ("S0", lambda: sp.gaussian_kl(M, torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=D64), M, I2)),
    ("S0", lambda: sp.gaussian_kl(M, -1.0, M, I2)),
    ("S1", lambda: sp.gaussian_kl(M, I2, M, torch.eye(3, dtype=D64))),
    ("S1", lambda: sp.gaussian_kl(M, I2, M, torch.tensor([1.0, 0.0], dtype=D64))),
    ("S1", lambda: sp.gaussian_kl(M, I2, M, I2 * NAN)),
    ("mean", lambda: sp.ou_kl_to_invariant_gaussian(torch.zeros(2, 2, dtype=D64), 1.0, 0.5, sp.OU())),
    ("cov", lambda: sp.ou_kl_to_invariant_gaussian(M, 0.0, 0.5, sp.OU())),
    ("cov", lambda: sp.ou_kl_to_invariant_gaussian(M, -I2, 0.5, sp.OU())),
    ("t", lambda: sp.ou_kl_to_invariant_gaussian(M, 1.0, 1.5, sp.OU(T=1.0))),
    ("t", lambda: sp.ou_kl_to_invariant_gaussian(M, 1.0, -0.5, sp.OU())),
    ("kl0", lambda: sp.log_sobolev_decay_bound(-0.1, 0.5, sp.OU())),
    ("kl0", lambda: sp.log_sobolev_decay_bound(torch.tensor(-1.0), 0.5, sp.OU())),
    ("t", lambda: sp.log_sobolev_decay_bound(1.0, 2.0, sp.OU(T=1.0))),
    ("sq_error", lambda: sp.kl_from_score_error(sp.OU(), -torch.ones(5, dtype=D64), TT)),
    ("sq_error", lambda: sp.kl_from_score_error(sp.OU(), torch.ones(4, dtype=D64), TT)),
    ("sq_error", lambda: sp.kl_from_score_error(sp.OU(), torch.full((5,), NAN, dtype=D64), TT)),
    ("times", lambda: sp.kl_from_score_error(sp.OU(), torch.ones(5, dtype=D64), TT.flip(0))),
    ("times", lambda: sp.kl_from_score_error(sp.OU(T=0.5), torch.ones(5, dtype=D64), TT)),
    ("times", lambda: sp.kl_from_score_error(sp.Follmer(), torch.ones(5, dtype=D64), TT * 2)),
    ("initial_kl", lambda: sp.kl_from_score_error(sp.OU(), torch.ones(5, dtype=D64), TT, initial_kl=-1.0)),
    ("stderr", lambda: sp.kl_bound_stderr(sp.OU(), -torch.ones(5, dtype=D64), TT)),
    ("var", lambda: sp.ou_reverse_sensitivity(0.5, 0.0, sp.OU())),
    ("t", lambda: sp.ou_reverse_sensitivity(2.0, 1.0, sp.OU())),
    ("sampler", lambda: sp.ou_reverse_sensitivity(0.5, 1.0, sp.OU(), "heun")),
    ("mean", lambda: sp.ou_reverse_gaussian_law(torch.ones(2, 2, dtype=D64), 1.0, sp.OU())),
    ("start", lambda: sp.ou_reverse_gaussian_law(torch.ones(2, dtype=D64), 1.0, sp.OU(), start="data")),
    ("score_shift", lambda: sp.ou_reverse_gaussian_law(torch.ones(2, dtype=D64), 1.0, sp.OU(), score_shift=torch.ones(3, dtype=D64))),
    ("window", lambda: sp.ou_reverse_gaussian_law(torch.ones(2, dtype=D64), 1.0, sp.OU(), score_shift=torch.ones(2, dtype=D64), window=(0.5, 2.0))),
    ("window", lambda: sp.ou_reverse_gaussian_law(torch.ones(2, dtype=D64), 1.0, sp.OU(), score_shift=torch.ones(2, dtype=D64), window=(0.5, 0.2))),
    ("times", lambda: sp.kl_bound_stderr(sp.Follmer(), torch.ones(5, dtype=D64), TT * 2)),
    ("kl", lambda: sp.pinsker_tv(-0.5)),
    ("kl", lambda: sp.pinsker_tv(torch.tensor([0.1, NAN]))),
]


@pytest.mark.parametrize("arg,make", BAD, ids=[f"{i}-{a}" for i, (a, _) in enumerate(BAD)])
def test_bad_input_raises_value_error_naming_the_argument(arg, make):
    with pytest.raises(ValueError, match=arg):
        make()
