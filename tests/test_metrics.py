"""Tests of smoothpin.metrics on plain samples (MMD, W2, floors, 2-D KL by quadrature, W2 between
Gaussians), sampler output against the floor of two independent samples (never against 0), and,
with the core's exact scores, the time-integrated score error and the Girsanov bound (float64)."""
import itertools
import math

import pytest
import torch

import smoothpin as sp
from smoothpin.metrics import gaussian_w2, kl_quadrature_2d, mmd, sample_floor, w2
from mixtures import D64, build  # tests/mixtures.py


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _normal(n, d=2, shift=0.0, scale=1.0, generator=None):
    return shift + scale * torch.randn(n, d, generator=generator, dtype=D64)


def test_mmd_equals_direct_double_sum():
    g = _gen(0)
    x, y = _normal(9, generator=g), _normal(7, shift=0.5, generator=g)
    hs = [0.5, 2.0]

    def k(a, b):
        return sum(math.exp(-float(((a - b) ** 2).sum()) / (2 * h * h)) for h in hs)

    kxx = sum(k(x[i], x[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    kyy = sum(k(y[i], y[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    kxy = sum(k(x[i], y[j]) for i in range(9) for j in range(7)) / 63
    assert abs(float(mmd(x, y, hs)) - (kxx + kyy - 2 * kxy)) < 1e-12


def test_mmd_matches_gaussian_closed_form():
    # N(0, s^2 I) vs N(m, s^2 I), kernel exp(-|x-y|^2/(2h^2)) in d dims:
    # MMD^2 = 2 c (1 - exp(-|m|^2 / (2 (h^2 + 2 s^2)))), c = (h^2 / (h^2 + 2 s^2))^(d/2).
    d, s, h = 2, 1.0, 1.0
    m = torch.tensor([0.8, 0.0], dtype=D64)
    c = (h * h / (h * h + 2 * s * s)) ** (d / 2)
    exact = 2 * c * (1 - math.exp(-float(m @ m) / (2 * (h * h + 2 * s * s))))
    g = _gen(1)
    vals = torch.stack([mmd(_normal(400, generator=g), _normal(400, shift=m, generator=g), [h])
                        for _ in range(20)])
    se = float(vals.std()) / math.sqrt(20)
    assert abs(float(vals.mean()) - exact) < 4 * se  # unbiased U-statistic: 4 standard errors


def test_mmd_same_law_is_unbiased_zero_and_bandwidth_default():
    g = _gen(2)
    vals = torch.stack([mmd(_normal(300, generator=g), _normal(300, generator=g))
                        for _ in range(20)])
    assert abs(float(vals.mean())) < 4 * float(vals.std()) / math.sqrt(20)
    with pytest.raises(ValueError, match="bandwidths"):
        mmd(_normal(5), _normal(5), [1.0, -1.0])
    with pytest.raises(ValueError, match="y"):
        mmd(_normal(5), _normal(5, d=3))


def test_w2_is_the_optimal_assignment():
    g = _gen(3)
    x, y = _normal(6, generator=g), _normal(6, shift=1.0, generator=g)
    brute = min(float(((x - y[list(p)]) ** 2).sum(-1).mean()) for p in itertools.permutations(range(6)))
    assert abs(float(w2(x, y)) ** 2 - brute) < 1e-12
    # 1-D: the optimal coupling is the monotone (sorted) one
    a, b = _normal(300, d=1, generator=g), _normal(300, d=1, scale=2.0, generator=g)
    sorted_w2 = torch.sqrt(((a.sort(0).values - b.sort(0).values) ** 2).mean())
    assert abs(float(w2(a, b)) - float(sorted_w2)) < 1e-12
    assert w2(x.float(), y.float()).dtype == torch.float32
    with pytest.raises(ValueError, match="x, y"):
        w2(x, y[:5])


def test_sample_floor_separates_equal_and_different_laws():
    g = _gen(4)

    def sampler(n, generator=None):
        return _normal(n, generator=generator)

    floor = sample_floor(w2, sampler, 200, repeats=6, generator=g)
    assert floor.values.shape == (6,) and float(floor.mean) > 0
    # a shift of 0.5 gives W2 ~ 0.5, far above the floor of two samples of N(0, I)
    shifted = w2(sampler(200, generator=g), sampler(200, generator=g) + 0.5)
    assert float(shifted) > float(floor.mean) + 5 * float(floor.std)
    # the W2 floor of two n-samples in 2-D shrinks with n (roughly like n^(-1/2) up to logs)
    big = sample_floor(w2, sampler, 800, repeats=3, generator=g)
    assert float(big.mean) < float(floor.mean)


def _log_gauss(mean, cov):
    L = torch.linalg.cholesky(cov)

    def f(x):
        z = torch.linalg.solve_triangular(L, (x - mean).T, upper=False)
        return -0.5 * (z * z).sum(0) - torch.log(torch.diagonal(L)).sum() - math.log(2 * math.pi)
    return f


def test_kl_quadrature_2d_matches_gaussian_closed_form():
    m1, m2 = torch.tensor([0.3, -0.2], dtype=D64), torch.tensor([-0.5, 0.4], dtype=D64)
    S1 = torch.tensor([[1.0, 0.3], [0.3, 0.6]], dtype=D64)
    S2 = torch.tensor([[1.5, -0.2], [-0.2, 1.0]], dtype=D64)
    diff = m2 - m1
    exact = 0.5 * (torch.trace(torch.linalg.solve(S2, S1)) + diff @ torch.linalg.solve(S2, diff)
                   - 2 + torch.logdet(S2) - torch.logdet(S1))
    kl = kl_quadrature_2d(_log_gauss(m1, S1), _log_gauss(m2, S2), box=((-7, 7), (-7, 7)), n=301)
    # midpoint rule on a smooth integrand (error spectrally small); p's mass outside the box
    # (beyond 5.7 standard deviations) is ~1e-8: allow 1e-6
    assert abs(float(kl) - float(exact)) < 1e-6
    shifted = kl_quadrature_2d(lambda x: _log_gauss(m1, S1)(x) + 3.0,
                               lambda x: _log_gauss(m2, S2)(x) - 1.0, box=((-7, 7), (-7, 7)),
                               n=301, normalise=True)
    assert abs(float(shifted) - float(exact)) < 1e-6


# ---------------------------------------------------------------- W2 between Gaussians


def _rot(theta):
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s], [s, c]], dtype=D64)


def test_gaussian_w2_closed_forms():
    # 1-D: W2^2 = (m0 - m1)^2 + (s0 - s1)^2; commuting covariances: |m0 - m1|^2 + |S0^1/2 - S1^1/2|_F^2
    one = gaussian_w2(torch.tensor([0.5], dtype=D64), torch.tensor([[4.0]], dtype=D64),
                      torch.tensor([-1.0], dtype=D64), torch.tensor([[0.25]], dtype=D64))
    assert abs(float(one) - math.sqrt(1.5 ** 2 + 1.5 ** 2)) < 1e-12
    R = _rot(0.4)
    S0, S1 = R @ torch.diag(torch.tensor([2.0, 0.3], dtype=D64)) @ R.T, R @ torch.diag(
        torch.tensor([0.5, 1.2], dtype=D64)) @ R.T
    m0, m1 = torch.tensor([0.1, 0.2], dtype=D64), torch.tensor([1.0, -0.3], dtype=D64)
    expected = float(((m0 - m1) ** 2).sum()) + (math.sqrt(2) - math.sqrt(0.5)) ** 2 + (
        math.sqrt(0.3) - math.sqrt(1.2)) ** 2
    assert abs(float(gaussian_w2(m0, S0, m1, S1)) ** 2 - expected) < 1e-12
    # symmetric, zero on equal laws, float32 kept
    S2 = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=D64)
    assert abs(float(gaussian_w2(m0, S0, m1, S2)) - float(gaussian_w2(m1, S2, m0, S0))) < 1e-12
    assert float(gaussian_w2(m0, S2, m0, S2)) < 1e-7
    assert gaussian_w2(m0.float(), S0.float(), m1.float(), S2.float()).dtype == torch.float32
    with pytest.raises(ValueError, match="S1"):
        gaussian_w2(m0, S0, m1, -S2)
    with pytest.raises(ValueError, match="m1"):
        gaussian_w2(m0, S0, m1[:1], S2)


def test_empirical_w2_between_gaussian_samples_brackets_the_closed_form():
    # Non-commuting covariances. Since W2^2 is jointly convex and E[empirical law] = the law,
    # Jensen gives W2^2 <= E W2^2(X_n, Y_n); the triangle inequality gives
    # W2(X_n, Y_n) <= W2 + W2(X_n, mu) + W2(Y_n, nu), and E W2^2(X_n, mu) <= E W2^2(X_n, X'_n) (Jensen
    # again), the mean squared floor. So W2^2 <= E w2^2 <= (W2 + sqrt(F0) + sqrt(F1))^2 with F the
    # mean squared floors. E w2^2 is estimated from 6 repeats (tolerance 4 se on either side).
    m0, m1 = torch.tensor([0.0, 0.0], dtype=D64), torch.tensor([1.5, -0.5], dtype=D64)
    S0 = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=D64)
    S1 = _rot(1.0) @ torch.diag(torch.tensor([2.0, 0.2], dtype=D64)) @ _rot(1.0).T
    L0, L1 = torch.linalg.cholesky(S0), torch.linalg.cholesky(S1)
    exact = float(gaussian_w2(m0, S0, m1, S1))
    g = _gen(5)

    def s0(n, generator=None):
        return m0 + torch.randn(n, 2, generator=generator, dtype=D64) @ L0.T

    def s1(n, generator=None):
        return m1 + torch.randn(n, 2, generator=generator, dtype=D64) @ L1.T

    n = 400
    sq = torch.stack([w2(s0(n, g), s1(n, g)) ** 2 for _ in range(6)])
    mean, se = float(sq.mean()), float(sq.std()) / math.sqrt(6)
    f0 = float((sample_floor(w2, s0, n, repeats=4, generator=g).values ** 2).mean())
    f1 = float((sample_floor(w2, s1, n, repeats=4, generator=g).values ** 2).mean())
    assert exact ** 2 - 4 * se <= mean <= (exact + math.sqrt(f0) + math.sqrt(f1)) ** 2 + 4 * se
    # a wrong closed form (e.g. the commuting formula |m|^2 + |S0^1/2 - S1^1/2|_F^2, or dropping the
    # cross term) falls outside this bracket: check the bracket is tight enough to tell
    wrong = float(((m0 - m1) ** 2).sum() + torch.trace(S0 + S1))
    assert not wrong <= (exact + math.sqrt(f0) + math.sqrt(f1)) ** 2 + 4 * se


# ---------------------------------------------------------------- score error and Girsanov bound


def _mixture():
    return build("two2d")  # tests/mixtures.py


@pytest.mark.parametrize("process", [sp.OU(sigma=1.3, beta=0.7, T=2.0), sp.Follmer(sigma=0.8)],
                         ids=["ou", "follmer"])
def test_score_error_and_girsanov_bound_for_a_constant_offset(process):
    # f = exact + c: e(t) = |c|^2 at every t (no Monte Carlo error), int e = |c|^2 (hi - lo);
    # Girsanov: OU 1/2 int 2 beta sigma^2 |c|^2 dt = beta sigma^2 |c|^2 T; Föllmer |c|^2 / (2 sigma^2)
    mix = _mixture()
    c = torch.tensor([0.3, -0.4], dtype=D64)
    ou = sp.process_kind(process) == "ou"
    exact = (lambda x, t: process.score(mix, x, t)) if ou else (lambda x, t: process.drift(mix, x, t))
    f = lambda x, t: exact(x, t) + c  # noqa: E731
    res = sp.score_error(f, process, mix, n=256, n_times=9, generator=_gen(0), dtype=D64)
    lo, hi = process.interval
    assert res.per_time.shape == (9,) and torch.allclose(res.per_time, torch.full((9,), 0.25, dtype=D64))
    assert abs(float(res.integrated) - 0.25 * (hi - lo)) < 1e-12
    assert float(res.stderr.max()) < 1e-12
    bound, _ = sp.girsanov_kl_bound(f, process, mix, initial_kl=0.1, n=256, n_times=9,
                                    generator=_gen(0), dtype=D64)
    expected = 0.7 * 1.3 ** 2 * 0.25 * 2.0 if ou else 0.25 / (2 * 0.8 ** 2)
    assert abs(float(bound) - 0.1 - expected) < 1e-12
    # relative error: sqrt(int e / int E|s|^2), the norm estimated from the same draws
    assert abs(float(res.relative) - math.sqrt(float(res.integrated)
                                               / float(torch.trapezoid(res.norm, res.times)))) < 1e-12


def test_score_error_of_a_scaled_score_matches_monte_carlo():
    # f = 0.5 s at t = 0.3 only: e = 0.25 E|s|^2, so per_time / norm = 0.25 exactly (same draws)
    mix, ou = _mixture(), sp.OU(T=1.0)
    res = sp.score_error(lambda x, t: 0.5 * ou.score(mix, x, t), ou, mix,
                         times=torch.tensor([0.3, 0.6], dtype=D64), n=500, generator=_gen(1))
    assert torch.allclose(res.per_time / res.norm, torch.full((2,), 0.25, dtype=D64), atol=1e-14)


def test_sampler_output_against_the_floor():
    # MMD and W2 of a sampler's output against fresh target samples, compared with the floor of two
    # independent target samples: the Föllmer sampler with the exact drift (100 steps) lies within
    # the floor's spread (mean + 4 sd); a 1-step sampler (whose output is N(E pi, sigma^2 I)) does not.
    mix, fol = _mixture(), sp.Follmer(1.0)
    g = _gen(2)
    drift = lambda x, t: fol.drift(mix, x, t)  # noqa: E731
    n = 500
    for metric in (mmd, w2):
        floor = sample_floor(metric, mix.sample, n, repeats=6, generator=g)
        good = metric(sp.sample_follmer(drift, n, 100, generator=g, dim=2, dtype=D64), mix.sample(n, g))
        bad = metric(sp.sample_follmer(drift, n, 1, generator=g, dim=2, dtype=D64), mix.sample(n, g))
        assert float(good) < float(floor.mean) + 4 * float(floor.std)
        assert float(bad) > float(floor.mean) + 4 * float(floor.std)


def test_bad_input_raises():
    mix = _mixture()
    with pytest.raises(ValueError, match="process"):
        sp.score_error(lambda x, t: x, object(), mix)
    with pytest.raises(ValueError, match="times"):
        sp.score_error(lambda x, t: x, sp.OU(T=1.0), mix, times=torch.tensor([0.5, 2.0]))
    with pytest.raises(ValueError, match="times"):
        sp.score_error(lambda x, t: x, sp.OU(T=1.0), mix, times=torch.tensor([0.5, 0.2]))
    with pytest.raises(ValueError, match="n"):
        sp.score_error(lambda x, t: x, sp.OU(T=1.0), mix, n=1)
    with pytest.raises(ValueError, match="target.sample"):
        sp.score_error(lambda x, t: x, sp.OU(T=1.0), object())
    with pytest.raises(ValueError, match="x, y"):
        mmd(_normal(1), _normal(5))
    with pytest.raises(ValueError, match="x"):
        w2(_normal(2001), _normal(2001))
    with pytest.raises(ValueError, match="metric"):
        sample_floor(3, lambda n, generator=None: _normal(n), 10)
    with pytest.raises(ValueError, match="box"):
        kl_quadrature_2d(lambda x: x[:, 0], lambda x: x[:, 0], box=((1, 0), (0, 1)))
