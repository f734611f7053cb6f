"""Tests of smoothpin.sample: integrators against closed forms (moments of the discrete chains,
exact drifts), importance-sampling ln Z, the OU + EM bias, energy = KL, the probability-flow ODE,
and bit-identical sampling for a seed (float64)."""
import math

import pytest
import torch

from smoothpin.sample import euler_maruyama, sample_follmer


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


def _gaussian_follmer_drift(m, s2, sigma):
    # exact Föllmer drift for pi = N(m, s2 I): E[Y | X_t = x] = m + t s2 / c (x - t m),
    # c = t^2 s2 + sigma^2 t (1 - t), b = (E[Y | x] - x) / (1 - t)  (written out independently)
    def b(x, t):
        c = t * t * s2 + sigma ** 2 * t * (1 - t)
        ey = m + (t * s2 / c) * (x - t * m) if t > 0 else m.expand_as(x)
        return (ey - x) / (1 - t)
    return b


def test_sample_follmer_with_exact_gaussian_drift_reproduces_the_moments():
    m, s2, sigma = torch.tensor([1.0, -0.5], dtype=D64), 0.5, 1.2
    n = 20000
    x = sample_follmer(_gaussian_follmer_drift(m, s2, sigma), n, 200, sigma, _gen(2), dim=2,
                       dtype=D64)
    se = math.sqrt(s2 / n)
    assert torch.all((x.mean(0) - m).abs() < 4 * se)
    # covariance entries: var of a sample variance ~ 2 s2^2 / n; discretisation O(h) is far below
    cov = torch.cov(x.T)
    assert torch.allclose(cov, s2 * torch.eye(2, dtype=D64), atol=4 * s2 * math.sqrt(2 / n))


def test_sampling_is_bit_identical_for_a_seed_and_keeps_dtype():
    b = _gaussian_follmer_drift(torch.tensor([1.0, 0.0], dtype=D64), 0.5, 1.0)
    a1 = sample_follmer(b, 500, 30, 1.0, _gen(7), dim=2, dtype=D64)
    a2 = sample_follmer(b, 500, 30, 1.0, _gen(7), dim=2, dtype=D64)
    a3 = sample_follmer(b, 500, 30, 1.0, _gen(8), dim=2, dtype=D64)
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)
    x = euler_maruyama(lambda x, t: -x, torch.zeros(10, 2), torch.linspace(0, 1, 5), 1.0, _gen(0))
    assert x.dtype == torch.float32


def test_bad_input_raises():
    f = lambda x, t: x  # noqa: E731
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
