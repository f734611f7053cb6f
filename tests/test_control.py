"""Tests of smoothpin.control: the Föllmer value function against independent closed forms and
quadrature, the HJB residual on known solutions and non-solutions, the Hopf-Cole control against
Follmer.drift, and the discrete Girsanov path functionals against exact recursions (float64)."""
import math

import pytest
import torch
from torch.distributions import MultivariateNormal

import smoothpin as sp

D64 = torch.float64
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="no CUDA device"))]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _mixture(device="cpu"):
    # full (rotated) covariances exercise the eigenbasis code; components wide enough that a
    # 120-node-per-axis Gauss-Hermite rule is accurate to ~1e-10 for Q_s f
    rot = torch.tensor([[math.cos(0.6), -math.sin(0.6)], [math.sin(0.6), math.cos(0.6)]], dtype=D64)
    c1 = rot @ torch.diag(torch.tensor([0.5, 0.2], dtype=D64)) @ rot.T
    c2 = torch.diag(torch.tensor([0.3, 0.4], dtype=D64))
    return sp.GaussianMixture(torch.tensor([0.6, 0.4], dtype=D64),
                              torch.tensor([[-1.0, 0.5], [1.0, -0.5]], dtype=D64),
                              torch.stack([c1, c2])).to(device=device)


def _gaussian_value(m, s2, sigma, x, t):
    # independent closed form for pi = N(m, s2 I): t > 0: V = -(log p_t - log phi_{sigma^2 t}) with
    # p_t = N(t m, (t^2 s2 + sigma^2 t (1-t)) I); t = 0: V = -log E exp(x.Y/sigma^2 - |x|^2/(2 sigma^2))
    d = m.shape[0]
    eye = torch.eye(d, dtype=D64)
    if t == 0:
        return -(x @ m / sigma ** 2 + s2 * (x * x).sum(-1) / (2 * sigma ** 4) - (x * x).sum(-1) / (2 * sigma ** 2))
    pt = MultivariateNormal(t * m, (t * t * s2 + sigma ** 2 * t * (1 - t)) * eye)
    ref = MultivariateNormal(torch.zeros(d, dtype=D64), sigma ** 2 * t * eye)
    return -(pt.log_prob(x) - ref.log_prob(x))


@pytest.mark.parametrize("t", [0.0, 0.1, 0.49, 0.5, 0.7, 0.999, 1.0])
def test_value_function_gaussian_closed_form(t):
    m, s2, sigma = torch.tensor([0.7, -1.2, 0.3], dtype=D64), 0.3, 1.4
    x = torch.randn(20, 3, generator=_gen(0), dtype=D64)
    # variance passed as a float64 tensor: a Python float goes through float32 in as_tensor_like
    V = sp.follmer_value_function(sp.Gaussian(m, torch.tensor(s2, dtype=D64)), x, t, sigma=sigma)
    ref = _gaussian_value(m, s2, sigma, x, t)
    assert torch.allclose(V, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("t", [0.0, 0.3, 0.5, 0.8])
def test_value_function_mixture_against_gauss_hermite(t):
    # V = -log Q_{1-t} f; Q by the tensor Gauss-Hermite rule of semigroups.py (a different code
    # path: quadrature of f = pi / phi). 120 nodes per axis: quadrature error < 1e-9 here.
    mix, sigma = _mixture(), 1.2
    x = 1.5 * torch.randn(8, 2, generator=_gen(1), dtype=D64)
    log_f = sp.log_density_ratio(mix, sigma)
    log_q = sp.log_heat_semigroup(log_f, x, 1 - t, sigma=sigma, method="gauss-hermite", n_nodes=120)
    V = sp.follmer_value_function(mix, x, t, sigma=sigma)
    assert (V + log_q).abs().max() < 1e-8


def test_value_function_endpoints_and_continuity():
    mix, sigma = _mixture(), 0.9
    x = torch.randn(10, 2, generator=_gen(2), dtype=D64)
    V1 = sp.follmer_value_function(mix, x, 1.0, sigma=sigma)
    assert torch.allclose(V1, -sp.log_density_ratio(mix, sigma)(x), rtol=1e-12, atol=1e-12)
    V00 = sp.follmer_value_function(mix, torch.zeros(2, dtype=D64), 0.0, sigma=sigma)
    assert abs(float(V00)) < 1e-12          # Q_1 f(0) = E_phi[f] = 1 for a normalised target
    # the two regimes meet at t = 1/2: V is smooth there (|d_t V| is O(1) on this set)
    a = sp.follmer_value_function(mix, x, 0.5 - 1e-9, sigma=sigma)
    b = sp.follmer_value_function(mix, x, 0.5, sigma=sigma)
    assert (a - b).abs().max() < 1e-7


def test_hjb_residual_on_known_functions():
    sigma, d = 1.3, 3
    x = torch.randn(7, d, generator=_gen(3), dtype=D64)
    t = torch.rand(7, generator=_gen(4), dtype=D64)
    a = torch.tensor([0.4, -1.0, 2.0], dtype=D64)
    # f = exp(a.x): Q_s f = exp(a.x + sigma^2 s |a|^2 / 2), so V = -a.x - sigma^2 (1-t) |a|^2 / 2 solves HJB
    sol = sp.hjb_residual(lambda x, t: -(x @ a) - 0.5 * sigma ** 2 * (1 - t) * (a @ a), x, t, sigma)
    assert sol.residual.abs().max() < 1e-13
    assert torch.allclose(sol.gradient, -a.expand(7, d))
    # V = |x|^2 + t: d_t V = 1, Lap V = 2d, |grad V|^2 = 4|x|^2 -> residual 1 + sigma^2 d - 2 sigma^2 |x|^2
    r = sp.hjb_residual(lambda x, t: (x * x).sum(-1) + t, x, t, sigma)
    expect = 1 + sigma ** 2 * d - 2 * sigma ** 2 * (x * x).sum(-1)
    assert torch.allclose(r.residual, expect, rtol=1e-12, atol=1e-12)
    assert torch.allclose(r.laplacian, torch.full((7,), 2.0 * d, dtype=D64))


@pytest.mark.parametrize("device", DEVICES)
def test_mixture_value_solves_hjb_and_gives_the_follmer_drift(device):
    mix, sigma = _mixture(device), 1.1
    x = 1.5 * torch.randn(12, 2, generator=_gen(5), dtype=D64).to(device)
    t = torch.linspace(0.0, 0.999, 12, dtype=D64, device=device)
    r = sp.hjb_residual(lambda x, t: sp.follmer_value_function(mix, x, t, sigma=sigma), x, t, sigma)
    assert (r.residual.abs() / r.scale).max() < 1e-9
    u = -sigma ** 2 * r.gradient                      # Hopf-Cole: u* = -sigma^2 grad V
    assert torch.allclose(u, sp.Follmer(sigma).drift(mix, x, t), rtol=1e-9, atol=1e-9)
    # a wrong value function (sigma mismatched) is detected: relative residual of order one
    bad = sp.hjb_residual(lambda x, t: sp.follmer_value_function(mix, x, t, sigma=0.6), x, t, sigma)
    assert (bad.residual.abs() / bad.scale).max() > 1e-2


def test_value_function_float32_and_time_tensor():
    mix = _mixture()
    x = torch.randn(4, 5, 2, generator=_gen(6), dtype=D64)
    t = torch.rand(4, 5, generator=_gen(7), dtype=D64)
    V = sp.follmer_value_function(mix, x, t)
    assert V.shape == (4, 5) and V.dtype == D64
    V32 = sp.follmer_value_function(mix, x.float(), t.float())
    assert V32.dtype == torch.float32
    assert torch.allclose(V32.double(), V, rtol=1e-4, atol=1e-4)  # float32 rounding of O(1) terms


def test_path_functionals_constant_control_exact_identities():
    # u = c: every step adds c h, so energy = |c|^2 / (2 sigma^2) exactly and the martingale is
    # sum c.Z_k sqrt(h) / sigma = c.(X_1 - c) / sigma^2 exactly (X_1 = c + sigma sum sqrt(h) Z_k)
    c, sigma, n = torch.tensor([0.5, -1.5], dtype=D64), 0.8, 20000
    p = sp.follmer_path_functionals(lambda x, t: c.expand_as(x), n, 25, sigma, _gen(8), dim=2,
                                    dtype=D64, reference=lambda x, t: torch.zeros_like(x))
    assert torch.allclose(p.energy, torch.full((n,), float(c @ c) / (2 * sigma ** 2), dtype=D64))
    assert torch.allclose(p.divergence, p.energy)     # KL(Q^c || P) = E[energy]
    assert torch.allclose(p.martingale, (p.x - c) @ c / sigma ** 2, rtol=1e-10, atol=1e-10)
    se = sigma / math.sqrt(n)
    assert ((p.x.mean(0) - c).abs() < 5 * se).all()   # X_1 ~ N(c, sigma^2 I): 5 standard errors
    zero = sp.follmer_path_functionals(lambda x, t: torch.zeros_like(x), 10, 5, dim=2, dtype=D64)
    assert torch.equal(zero.energy, torch.zeros(10, dtype=D64)) and torch.equal(zero.divergence, zero.energy)


def _discrete_gaussian_energy(m, s2, sigma, steps):
    """E[energy] of the Euler chain driven by the exact drift of N(m, s2 I): the chain is linear
    Gaussian, so the mean mu_k and the per-coordinate variance v_k follow exact recursions."""
    h, d = 1.0 / steps, m.shape[0]
    mu, v, total = torch.zeros_like(m), 0.0, 0.0
    for k in range(steps):
        t = k * h
        kt = (s2 - sigma ** 2) / (t * s2 + sigma ** 2 * (1 - t))   # b = m + kt (x - t m)
        mb = m + kt * (mu - t * m)
        total += (float(mb @ mb) + d * kt * kt * v) * h / (2 * sigma ** 2)
        mu, v = mu + h * mb, (1 + h * kt) ** 2 * v + sigma ** 2 * h
    return total


def test_energy_of_exact_drift_matches_exact_chain_and_tends_to_kl():
    m, s2, sigma = torch.tensor([1.0, -0.5], dtype=D64), 0.25, 1.0
    gauss = sp.Gaussian(m, torch.tensor(s2, dtype=D64))
    fol = sp.Follmer(sigma)
    steps, n = 100, 20000
    p = sp.follmer_path_functionals(lambda x, t: fol.drift(gauss, x, t), n, steps, sigma, _gen(9),
                                    dim=2, dtype=D64)
    exact_chain = _discrete_gaussian_energy(m, s2, sigma, steps)
    se = float(p.energy.std()) / math.sqrt(n)
    assert abs(float(p.energy.mean()) - exact_chain) < 5 * se      # 5 standard errors, no slack
    kl = float(sp.gaussian_kl(m, s2, torch.zeros(2, dtype=D64), sigma ** 2))
    errs = [abs(_discrete_gaussian_energy(m, s2, sigma, N) - kl) for N in (100, 200, 400)]
    assert errs[2] < errs[1] < errs[0] < 0.05                       # Riemann sum -> KL(pi || phi)
    assert errs[2] < 0.6 * errs[1]                                  # first order in h


def test_scaled_target_and_log_z_with_exact_drift():
    mix = _mixture()
    target = sp.ScaledTarget(mix, 2.5)
    x = torch.randn(5, 2, generator=_gen(10), dtype=D64)
    assert torch.allclose(target.log_unnormalised(x) - mix.log_prob(x), torch.full((5,), 2.5, dtype=D64))
    assert sp.as_mixture(target) is mix and target.dim == 2
    fol = sp.Follmer(1.0)
    p = sp.follmer_path_functionals(lambda x, t: fol.drift(target, x, t), 4000, 100, 1.0, _gen(11),
                                    dim=2, dtype=D64)
    log_phi = -0.5 * (p.x * p.x).sum(-1) - math.log(2 * math.pi)
    log_w = target.log_unnormalised(p.x) - log_phi - p.energy - p.martingale
    est = torch.logsumexp(log_w, 0) - math.log(4000)
    ess = float(torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)))
    se = math.sqrt((4000 / ess - 1) / 4000)           # delta-method stderr of ln Z-hat
    assert abs(float(est) - 2.5) < 5 * se + 1e-3
    assert float(-log_w.mean()) > -2.5 - 5 * float(log_w.std()) / math.sqrt(4000)  # J >= -ln Z


def test_log_z_from_log_weights_closed_form():
    # weights (1, 3): ln Z-hat = ln 2, ESS = 16 / 10, stderr = sqrt((n / ESS - 1) / n)
    est = sp.log_z_from_log_weights(torch.log(torch.tensor([1.0, 3.0], dtype=D64)))
    assert abs(float(est.log_Z) - math.log(2.0)) < 1e-14
    assert abs(float(est.ess) - 1.6) < 1e-12
    assert abs(float(est.stderr) - math.sqrt((2 / 1.6 - 1) / 2)) < 1e-12
    with pytest.raises(ValueError, match="log_w"):
        sp.log_z_from_log_weights(torch.zeros(1, dtype=D64))
    with pytest.raises(ValueError, match="log_w"):
        sp.log_z_from_log_weights(torch.tensor([0.0, float("nan")], dtype=D64))


def test_bad_input_raises():
    mix = _mixture()
    x = torch.zeros(3, 2, dtype=D64)
    with pytest.raises(ValueError, match="t"):
        sp.follmer_value_function(mix, x, 1.5)
    with pytest.raises(ValueError, match="sigma"):
        sp.follmer_value_function(mix, x, 0.5, sigma=0.0)
    with pytest.raises(ValueError, match="x"):
        sp.follmer_value_function(mix, torch.zeros(3, 4, dtype=D64), 0.5)
    with pytest.raises(ValueError, match="target"):
        sp.follmer_value_function(sp.Funnel(2), x, 0.5)
    with pytest.raises(ValueError, match="value_fn"):
        sp.hjb_residual(None, x, 0.5)
    with pytest.raises(ValueError, match="value_fn"):
        sp.hjb_residual(lambda x, t: x, x, 0.5)
    with pytest.raises(ValueError, match="control"):
        sp.follmer_path_functionals(3, 10, 10, dim=2)
    with pytest.raises(ValueError, match="steps"):
        sp.follmer_path_functionals(lambda x, t: x, 10, 0, dim=2)
    with pytest.raises(ValueError, match="log_Z"):
        sp.ScaledTarget(mix, float("nan"))
