"""Tests of smoothpin.metrics on plain samples (MMD, W2, floors, 2-D KL by quadrature) and, with
the core's exact scores, the time-integrated score error and the Girsanov bound (float64)."""
import itertools
import math

import pytest
import torch

from smoothpin.metrics import kl_quadrature_2d, mmd, sample_floor, w2


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These tests use small tensors: on a loaded 2-core machine intra-op threading makes them up
    # to 30x slower (threads wait on each other); one thread is fast either way. Restored after.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

D64 = torch.float64


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
