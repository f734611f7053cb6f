"""Tests of smoothpin.sample: integrators against closed forms (moments of the discrete chains,
exact drifts and scores of the core), importance-sampling ln Z and the OU + EM bias, energy = KL,
the Gaussian-initialisation bound, the probability-flow ODE, bit-identical sampling for a seed and
ValueError on bad input (float64).

Standard errors: a sample mean of n draws has se = sd / sqrt(n); a covariance entry
C_ij has se = sd((x_i - m_i)(x_j - m_j)) / sqrt(n), estimated from the same sample. Unless a test
says otherwise, "4 se" is the tolerance (two-sided Gaussian tail 6e-5 per comparison) and the
discretisation bias at the step counts used was checked to be well below one se.
"""
import math

import pytest
import torch

import smoothpin as sp
from smoothpin.sample import _run_follmer, euler_maruyama, follmer_times, ou_times, sample_follmer
from mixtures import D64, build  # tests/mixtures.py


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _mixture():
    return build("two2d")  # tests/mixtures.py


def _assert_moments(x, mean, cov, k=4.0):
    """Sample mean and covariance of x (n, d) within k standard errors of (mean, cov)."""
    n = x.shape[0]
    m = x.mean(0)
    assert torch.all((m - mean).abs() < k * x.std(0) / math.sqrt(n)), (m, mean)
    c = x - m
    prods = c[:, :, None] * c[:, None, :]
    se = prods.std(0) / math.sqrt(n)
    assert torch.all((prods.mean(0) - cov).abs() < k * se), (prods.mean(0), cov)


# ---------------------------------------------------------------- generic Euler-Maruyama


def test_euler_maruyama_reproduces_the_discrete_ou_chain_moments():
    # dX = -X dt + sqrt(2) dW, K steps of h: the EM chain is X' = (1 - h) X + sqrt(2h) Z, so
    # E X_K = (1 - h)^K x0 and Var X_K = v_K, v' = (1 - h)^2 v + 2h (exact, no discretisation error)
    n, K, h = 20000, 50, 0.02
    x0 = torch.full((n, 2), 2.0, dtype=D64)
    x = euler_maruyama(lambda x, t: -x, x0, torch.linspace(0, K * h, K + 1, dtype=D64),
                       math.sqrt(2), _gen(0))
    mean, v = 2.0 * (1 - h) ** K, 0.0
    for _ in range(K):
        v = (1 - h) ** 2 * v + 2 * h
    se_mean, se_var = math.sqrt(v / n), v * math.sqrt(2 / n)
    assert torch.all((x.mean(0) - mean).abs() < 4 * se_mean)  # 4 standard errors
    assert torch.all((x.var(0) - v).abs() < 4 * se_var)


def test_euler_maruyama_time_dependent_diffusion_and_path():
    # dX = g(t) dW with g(t) = t: Var X_K = sum g(t_k)^2 h (left-point rule), exactly
    n, K = 20000, 20
    times = torch.linspace(0, 1, K + 1, dtype=D64)
    path = euler_maruyama(lambda x, t: torch.zeros_like(x), torch.zeros(n, 1, dtype=D64), times,
                          lambda t: t, _gen(1), return_path=True)
    assert path.shape == (K + 1, n, 1) and torch.equal(path[0], torch.zeros(n, 1, dtype=D64))
    v = sum((k / K) ** 2 / K for k in range(K))
    assert abs(float(path[-1].var()) - v) < 4 * v * math.sqrt(2 / n)


def test_time_grids():
    assert follmer_times(4) == [0.0, 0.25, 0.5, 0.75, 1.0]
    g = follmer_times(4, grid_power=2.0)  # 1 - (1 - k/4)^2: steps shrink towards t = 1
    assert g[0] == 0.0 and g[-1] == 1.0 and abs(g[1] - 7 / 16) < 1e-15
    ou = sp.OU(T=2.0)
    assert ou_times(ou, 4, t_min=0.5) == [0.5, 0.875, 1.25, 1.625, 2.0]
    g = ou_times(ou, 4, grid_power=3.0)  # 2 (k/4)^3: steps shrink towards t = 0
    assert g[-1] == 2.0 and abs(g[1] - 2 / 64) < 1e-15


# ---------------------------------------------------------------- samplers with the exact drift


def test_sample_follmer_with_exact_drift_reproduces_mixture_moments():
    # Föllmer from X_0 = 0 with Follmer.drift is exact up to the EM discretisation (O(h) = 1e-2
    # in the moments here, measured below 0.5 se at n = 20000; 400 steps gives the same numbers)
    mix, fol = _mixture(), sp.Follmer(1.0)
    x = sample_follmer(lambda y, t: fol.drift(mix, y, t), 20000, 100, 1.0, _gen(2), dim=2,
                       dtype=D64)
    _assert_moments(x, mix.mean, mix.covariance)


@pytest.mark.parametrize("sigma", [0.7, 1.5])
def test_sample_follmer_gaussian_sigma(sigma):
    # N(m, s2 I) with the exact drift for another sigma: still lands on the target
    m, s2 = torch.tensor([1.0, -0.5], dtype=D64), 0.5
    target, fol = sp.Gaussian(m, s2), sp.Follmer(sigma)
    x = sample_follmer(lambda y, t: fol.drift(target, y, t), 10000, 100, sigma, _gen(3), dim=2,
                       dtype=D64)
    _assert_moments(x, m, s2 * torch.eye(2, dtype=D64))


@pytest.mark.parametrize("method", ["em", "exact"])
def test_ou_reverse_from_p_T_reproduces_mixture_moments(method):
    # Y_0 ~ p_T (exact marginal), exact score: the reverse chain lands on pi up to discretisation
    # (100 steps: the moments move by < 0.5 se of n = 10000 between 100 and 400 steps)
    mix, ou = _mixture(), sp.OU(sigma=1.0, beta=1.0, T=3.0)
    x_T = ou.marginal(mix, 3.0).sample(10000, _gen(4))
    x = sp.sample_ou_reverse(lambda y, t: ou.score(mix, y, t), ou, x_T, 100, method, _gen(5))
    _assert_moments(x, mix.mean, mix.covariance)


def _ou_gaussian_output_law(m, s2, T, sigma=1.0, beta=1.0):
    """Law of the continuous-time reverse OU with the exact score of N(m, s2 I), started at
    N(0, sigma^2 I) instead of p_T. The reverse SDE is linear; with v_t = a_t^2 s2 + sigma^2 (1 - a_t^2)
    the errors of the mean and the variance against the exact path (a_{T-u} m, v_{T-u}) obey
    de/du = beta (1 - 2 sigma^2 / v) e and d delta/du = 2 beta (1 - 2 sigma^2 / v) delta, so with
    I = int_0^T beta (1 - 2 sigma^2 / v_t) dt (trapezoid on 20001 points, error ~1e-9):
    mean = m - a_T m e^I, variance = s2 + (sigma^2 - v_T) e^{2I}."""
    t = torch.linspace(0, T, 20001, dtype=D64)
    a2 = torch.exp(-2 * beta * t)
    v = a2 * s2 + sigma ** 2 * (1 - a2)
    I = float(torch.trapezoid(beta * (1 - 2 * sigma ** 2 / v), t))
    aT = math.exp(-beta * T)
    return m - aT * m * math.exp(I), s2 + (sigma ** 2 - float(v[-1])) * math.exp(2 * I)


def test_ou_from_gaussian_start_respects_the_initialisation_bound():
    # pi = N(m, s2 I), T = 0.75: started at phi = N(0, I) instead of p_T the output q is Gaussian.
    # (1) its moments match the continuous-time closed form (exact step, 200 steps: O(h) ~ 2e-3,
    #     below the se ~ 5e-3 of n = 20000);
    # (2) KL(pi || q) <= KL(p_T || phi) (data processing through the exact reverse kernel)
    #     <= e^{-2 T} KL(pi || phi) (log-Sobolev): both sides closed form (bounds module).
    m, s2, T = torch.tensor([1.5, -1.0], dtype=D64), 0.5, 0.75
    target, ou = sp.Gaussian(m, s2), sp.OU(sigma=1.0, beta=1.0, T=T)
    y0 = torch.randn(20000, 2, generator=_gen(6), dtype=D64)
    x = sp.sample_ou_reverse(lambda y, t: ou.score(target, y, t), ou, y0, 200, "exact", _gen(7))
    mq, vq = _ou_gaussian_output_law(m, s2, T)
    _assert_moments(x, mq, vq * torch.eye(2, dtype=D64))
    kl_q = float(sp.gaussian_kl(m, s2, mq, vq))
    kl_T = float(sp.ou_kl_to_invariant_gaussian(m, s2, T, ou))
    kl_0 = float(sp.gaussian_kl(m, s2, torch.zeros(2, dtype=D64), 1.0))
    bound = float(sp.log_sobolev_decay_bound(kl_0, T, ou))
    assert 0.01 < kl_q <= kl_T <= bound  # the Gaussian start costs a visible, bounded error
    # the plug-in KL of the sampled output agrees (its bias ~ (d + d(d+1)/2) / (2n) ~ 6e-5)
    kl_hat = float(sp.gaussian_kl(m, s2, x.mean(0), torch.cov(x.T)))
    assert abs(kl_hat - kl_q) < 0.1 * kl_q and kl_hat < kl_T


# ---------------------------------------------------------------- importance-sampling ln Z


def _targets():
    return {"mixture": (_mixture(), 0.0), "mixture_well": (sp.MixtureWell(dtype=D64), math.log(math.pi))}


# (target, sampler) -> paths; grid_power = 2 puts the steps near the data end (t -> 1 for Föllmer,
# t -> 0 for OU), where the drift of the mixture well's narrow modes (variance 0.05) varies fastest
_N_PATHS = {("mixture", "follmer_em"): 4000, ("mixture", "ou_exact"): 4000,
            ("mixture_well", "follmer_em"): 10000, ("mixture_well", "ou_exact"): 16000}


@pytest.mark.parametrize("name", ["mixture", "mixture_well"])
@pytest.mark.parametrize("sampler", ["follmer_em", "ou_exact"])
def test_log_Z_with_exact_drift_within_0_01(name, sampler):
    # Föllmer + EM and OU + exact step: the reference chain ends exactly in phi, so E[w] = Z at
    # any step count; the error is Monte Carlo only. We require |ln Z_hat - ln Z| < 0.01 and check
    # that this is at least 4 delta-method standard errors (se < 0.0025), so the test has power.
    target, log_Z = _targets()[name]
    assert abs(target.log_Z - log_Z) < 1e-12  # the mixture well's ln Z = ln pi (DDS convention)
    n = _N_PATHS[name, sampler]
    if sampler == "follmer_em":
        fol = sp.Follmer(1.0)
        est = sp.log_normalising_constant(lambda x, t: fol.drift(target, x, t), fol, target, n,
                                          200, generator=_gen(8), dtype=D64, grid_power=2.0)
    else:
        ou = sp.OU(1.0, 1.0, T=3.0)
        est = sp.log_normalising_constant(lambda x, t: ou.score(target, x, t), ou, target, n,
                                          200, method="exact", generator=_gen(8), dtype=D64,
                                          grid_power=2.0)
    assert float(est.stderr) < 0.0025
    assert abs(float(est.log_Z) - log_Z) < 0.01
    assert 0 < float(est.ess) <= n


def _em_reference_bias(weights, means, variances, T, steps, sigma=1.0, beta=1.0):
    """ln E[w] - ln Z for OU + EM (module docstring of smoothpin.sample): the EM reference chain
    ends in N(0, v_N I), v' = (1 - beta h)^2 v + 2 beta sigma^2 h from v_0 = sigma^2, and
    E[w] / Z = E_pi[N(Y; 0, v_N) / N(Y; 0, sigma^2)] = (sigma^2 / v_N)^{d/2} E_pi exp(c |Y|^2 / 2),
    c = 1/sigma^2 - 1/v_N; for Y ~ N(mu, s2 I): E exp(c |Y|^2 / 2) = (1 - c s2)^{-d/2}
    exp(c |mu|^2 / (2 (1 - c s2)))."""
    h, v = T / steps, sigma ** 2
    for _ in range(steps):
        v = (1 - beta * h) ** 2 * v + 2 * beta * sigma ** 2 * h
    c, d = 1 / sigma ** 2 - 1 / v, means.shape[1]
    mix = sum(w * (1 - c * s) ** (-d / 2) * math.exp(c * float(mu @ mu) / (2 * (1 - c * s)))
              for w, mu, s in zip(weights, means, variances))
    return 0.5 * d * math.log(sigma ** 2 / v) + math.log(mix)


def test_ou_em_log_Z_has_the_predicted_positive_bias_at_few_steps():
    # 10 steps on [0, 2]: the EM reference chain inflates the variance to v_N = 1.0487, so
    # ln Z_hat is biased by +0.0515 (E_pi|Y|^2 = 2.69 > d = 2: positive); the exact-OU step, on the
    # same noise, is unbiased. Tolerance 4 se (se ~ 0.006 at n = 40000); the bias is ~ 9 se.
    mix, ou = _mixture(), sp.OU(1.0, 1.0, T=2.0)
    bias = _em_reference_bias([0.3, 0.7], mix.means, [0.3, 0.5], 2.0, 10)
    assert 0.05 < bias < 0.053
    score = lambda x, t: ou.score(mix, x, t)  # noqa: E731
    em = sp.log_normalising_constant(score, ou, mix, 40000, 10, "em", _gen(9), dtype=D64)
    ex = sp.log_normalising_constant(score, ou, mix, 40000, 10, "exact", _gen(9), dtype=D64)
    assert float(em.log_Z) > 4 * float(em.stderr)  # positive, significantly
    assert abs(float(em.log_Z) - bias) < 4 * float(em.stderr)
    assert abs(float(ex.log_Z)) < 4 * float(ex.stderr)


def test_control_objective_identity_for_the_importance_weights():
    # log w = log gamma - log phi - cost - martingale: with the returned log weights,
    # -mean(log w) = J + mean(martingale) and E[martingale] = 0, so the two estimates of -ln Z from
    # the same paths differ by a mean-zero term (tolerance 4 se of the martingale mean).
    mix, fol = _mixture(), sp.Follmer(1.0)
    est, log_w = sp.log_normalising_constant(lambda x, t: fol.drift(mix, x, t), fol, mix, 4000, 50,
                                             generator=_gen(10), dtype=D64,
                                             return_log_weights=True)
    assert log_w.shape == (4000,)
    lse = torch.logsumexp(log_w, 0) - math.log(4000)
    assert torch.equal(lse, est.log_Z)
    assert abs(float(est.ess) - float(torch.exp(2 * torch.logsumexp(log_w, 0)
                                                 - torch.logsumexp(2 * log_w, 0)))) < 1e-8


# ---------------------------------------------------------------- energy = KL


def test_follmer_energy_equals_kl_to_the_reference():
    # E int_0^1 |b|^2 / (2 sigma^2) dt along the Föllmer EM path (800 steps) = KL(pi || phi), KL by
    # Monte Carlo of log pi - log phi with exact densities. Requirement: within 1%.
    # Errors: the energy's relative sd is ~0.4, so n = 20000 paths give se ~ 0.28%; 1e6 draws of pi
    # give the KL to 0.13%; combined se ~ 0.31%, and we check 3 se < 1% so that a 1% discrepancy
    # cannot hide in the noise. The discretisation bias at 800 steps, measured offline with 4e4
    # paths, is +0.4% +- 0.2%. Tolerance: 1% of KL plus one combined se.
    mix, fol = _mixture(), sp.Follmer(1.0)
    phi = sp.Gaussian(torch.zeros(2, dtype=D64), 1.0)
    y = mix.sample(1_000_000, _gen(11))
    lf = mix.log_prob(y) - phi.log_prob(y)
    kl, se_kl = float(lf.mean()), float(lf.std()) / math.sqrt(y.shape[0])
    with torch.no_grad():
        _, cost, _ = _run_follmer(lambda x, t: fol.drift(mix, x, t), torch.zeros(20000, 2, dtype=D64),
                                  1.0, follmer_times(800), _gen(12), track=True)
    energy, se_e = float(cost.mean()), float(cost.std()) / math.sqrt(cost.shape[0])
    se = math.hypot(se_kl, se_e)
    assert 3 * se < 0.01 * kl
    assert abs(energy - kl) < 0.01 * kl + se, (energy, kl, se)


# ---------------------------------------------------------------- probability-flow ODE


def test_pf_ode_with_exact_score_reproduces_log_density():
    # instantaneous change of variables with the exact score and the exact p_T: log p_0(x) to 1e-5
    # (dopri5 at rtol 1e-8, atol 1e-10; the divergence is exact by autograd)
    mix, ou = _mixture(), sp.OU(1.0, 1.0, T=2.0)
    x = torch.cat([mix.sample(4, _gen(13)), torch.tensor([[3.0, 3.0], [-2.5, -2.0]], dtype=D64)])
    lp = sp.pf_ode_log_prob(lambda y, t: ou.score(mix, y, t), ou, x,
                            prior_log_prob=ou.marginal(mix, 2.0).log_prob)
    assert lp.shape == (6,) and lp.dtype == D64
    assert float((lp - mix.log_prob(x)).abs().max()) < 1e-5
    # the flow maps x to a point whose p_T density is what the ODE carried: forward then back
    xT = sp.probability_flow_ode(lambda y, t: ou.score(mix, y, t), ou, x, 0.0, 2.0)
    back = sp.probability_flow_ode(lambda y, t: ou.score(mix, y, t), ou, xT, 2.0, 0.0)
    assert float((back - x).abs().max()) < 1e-5


def test_pf_ode_pushes_p_t_to_p_T():
    # samples of p_0 = pi carried by the flow to T have the moments of p_T (4 se)
    mix, ou = _mixture(), sp.OU(1.0, 1.0, T=1.0)
    x0 = mix.sample(4000, _gen(14))
    xT = sp.probability_flow_ode(lambda y, t: ou.score(mix, y, t), ou, x0, 0.0, 1.0, rtol=1e-5,
                                 atol=1e-7)
    pT = ou.marginal(mix, 1.0)
    _assert_moments(xT, pT.mean, pT.covariance)


# ---------------------------------------------------------------- reproducibility, dtype, errors


def test_sampling_is_bit_identical_for_a_seed_and_keeps_dtype():
    mix, fol, ou = _mixture(), sp.Follmer(1.0), sp.OU(T=2.0)
    b = lambda x, t: fol.drift(mix, x, t)  # noqa: E731
    a1 = sample_follmer(b, 500, 30, 1.0, _gen(7), dim=2, dtype=D64)
    a2 = sample_follmer(b, 500, 30, 1.0, _gen(7), dim=2, dtype=D64)
    a3 = sample_follmer(b, 500, 30, 1.0, _gen(8), dim=2, dtype=D64)
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)
    y = torch.randn(300, 2, generator=_gen(0), dtype=D64)
    s = lambda x, t: ou.score(mix, x, t)  # noqa: E731
    for method in ("em", "exact"):
        r1 = sp.sample_ou_reverse(s, ou, y, 20, method, _gen(3))
        r2 = sp.sample_ou_reverse(s, ou, y, 20, method, _gen(3))
        assert torch.equal(r1, r2)
    l1 = sp.log_normalising_constant(s, ou, mix, 300, 20, generator=_gen(4), dtype=D64)
    l2 = sp.log_normalising_constant(s, ou, mix, 300, 20, generator=_gen(4), dtype=D64)
    assert torch.equal(l1.log_Z, l2.log_Z)
    x = euler_maruyama(lambda x, t: -x, torch.zeros(10, 2), torch.linspace(0, 1, 5), 1.0, _gen(0))
    assert x.dtype == torch.float32
    x32 = sample_follmer(lambda x, t: -x, 10, 5, dim=2, dtype=torch.float32)
    assert x32.dtype == torch.float32
    assert sp.sample_ou_reverse(lambda x, t: -x, ou, y.float(), 5).dtype == torch.float32


def test_bad_input_raises():
    f = lambda x, t: x  # noqa: E731
    ou, fol, mix = sp.OU(T=1.0), sp.Follmer(), _mixture()
    with pytest.raises(ValueError, match="times"):
        euler_maruyama(f, torch.zeros(3, 2), torch.tensor([0.0, 0.5, 0.4]))
    with pytest.raises(ValueError, match="x0"):
        euler_maruyama(f, torch.full((3, 2), float("nan")), torch.linspace(0, 1, 3))
    with pytest.raises(ValueError, match="diffusion"):
        euler_maruyama(f, torch.zeros(3, 2), torch.linspace(0, 1, 3), diffusion=0.0)
    with pytest.raises(ValueError, match="sigma"):
        sample_follmer(f, 10, 5, -1.0, dim=2)
    with pytest.raises(ValueError, match="generator"):
        sample_follmer(f, 10, 5, 1.0, generator=0, dim=2)
    with pytest.raises(ValueError, match="steps"):
        sample_follmer(f, 10, 0, dim=2)
    with pytest.raises(ValueError, match="grid_power"):
        sample_follmer(f, 10, 5, dim=2, grid_power=0.0)
    with pytest.raises(ValueError, match="process"):
        sp.sample_ou_reverse(f, fol, torch.zeros(3, 2), 5)
    with pytest.raises(ValueError, match="method"):
        sp.sample_ou_reverse(f, ou, torch.zeros(3, 2), 5, method="heun")
    with pytest.raises(ValueError, match="t_min"):
        sp.sample_ou_reverse(f, ou, torch.zeros(3, 2), 5, t_min=1.0)
    with pytest.raises(ValueError, match="x_T"):
        sp.sample_ou_reverse(f, ou, torch.full((3, 2), float("inf")), 5)
    with pytest.raises(ValueError, match="process"):
        sp.log_normalising_constant(f, None, mix, 10, 5)
    with pytest.raises(ValueError, match="method"):
        sp.log_normalising_constant(f, fol, mix, 10, 5, method="exact")
    with pytest.raises(ValueError, match="target"):
        sp.log_normalising_constant(f, fol, object(), 10, 5)
    with pytest.raises(ValueError, match="dim"):
        sp.log_normalising_constant(f, fol, lambda x: x.sum(-1), 10, 5)
    with pytest.raises(ValueError, match="t1"):
        sp.probability_flow_ode(f, ou, torch.zeros(3, 2), 0.0, 2.0)
    with pytest.raises(ValueError, match="prior_log_prob"):
        sp.pf_ode_log_prob(f, ou, torch.zeros(3, 2), prior_log_prob=3.0)


_DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here"))]


@pytest.mark.parametrize("device", _DEVICES)
def test_samplers_follow_device_and_dtype(device):
    mix = _mixture().to(device=device)
    fol, ou = sp.Follmer(), sp.OU(T=1.0)
    g = torch.Generator(device=device).manual_seed(0)
    for dtype in (torch.float32, D64):
        m = mix.to(dtype=dtype)
        x = sample_follmer(lambda y, t: fol.drift(m, y, t), 64, 5, generator=g, dim=2, dtype=dtype,
                           device=device)
        assert x.device.type == device and x.dtype == dtype
        y = sp.sample_ou_reverse(lambda y, t: ou.score(m, y, t), ou,
                                 torch.zeros(64, 2, dtype=dtype, device=device), 5, generator=g)
        assert y.device.type == device and y.dtype == dtype
        est = sp.log_normalising_constant(lambda y, t: ou.score(m, y, t), ou, m, 64, 5,
                                          generator=g, dtype=dtype, device=device)
        assert est.log_Z.device.type == device and est.log_Z.dtype == dtype
        lp = sp.pf_ode_log_prob(lambda y, t: ou.score(m, y, t), ou, x[:3], rtol=1e-4, atol=1e-6)
        assert lp.device.type == device and lp.dtype == dtype
