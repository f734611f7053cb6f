"""The library's validation cases (DESIGN.md section 5) on every available device.

The same code runs on "cpu" and, when a GPU is present, on "cuda" (skipped with a message
otherwise): outputs must stay on the input's device and dtype and agree with the closed forms.
Tolerances as in the per-module tests; Monte Carlo checks allow 5 standard errors.
"""
from __future__ import annotations

import math

import pytest
import torch

import smoothpin as sp

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here: the cuda cases run on a GPU machine"))]
DT = torch.float64


def _mixture(device):
    return sp.GaussianMixture(
        torch.tensor([0.3, 0.7], dtype=DT, device=device),
        torch.tensor([[1.0, -1.0], [-2.0, 0.5]], dtype=DT, device=device),
        torch.stack([torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=DT, device=device),
                     0.4 * torch.eye(2, dtype=DT, device=device)]))


def _gen(device, seed=0):
    return torch.Generator(device=device).manual_seed(seed)


@pytest.mark.parametrize("device", DEVICES)
def test_ou_score_matches_autograd_of_marginal(device):
    mix, ou = _mixture(device), sp.OU(sigma=1.3, beta=0.7, T=2.0)
    x = torch.randn(64, 2, dtype=DT, device=device, generator=_gen(device))
    for t in (0.0, 0.3, 2.0):
        s = ou.score(mix, x, t)
        assert s.device.type == device and s.dtype == DT
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(ou.marginal(mix, t).log_prob(xr).sum(), xr)
        assert torch.allclose(s, g, atol=1e-10, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_follmer_drift_forms_and_endpoints(device):
    mix, fol = _mixture(device), sp.Follmer(sigma=0.8)
    x = torch.randn(64, 2, dtype=DT, device=device, generator=_gen(device, 1))
    t = torch.linspace(0.05, 0.95, 64, dtype=DT, device=device)
    b = fol.drift(mix, x, t)
    assert b.device.type == device
    assert torch.allclose(b, 0.64 * fol.score(mix, x, t) + x / t[:, None], atol=1e-9)
    assert torch.allclose(b, (fol.posterior_mean(mix, x, t) - x) / (1 - t[:, None]), atol=1e-9)
    zero = torch.zeros(3, 2, dtype=DT, device=device)
    assert torch.allclose(fol.drift(mix, zero, 0.0), mix.mean.expand(3, 2), atol=1e-12)
    assert torch.allclose(fol.drift(mix, x, 1.0), 0.64 * mix.score(x) + x, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_semigroup_score_within_monte_carlo_error(device):
    mix, ou = _mixture(device), sp.OU()
    x = torch.randn(8, 2, dtype=DT, device=device, generator=_gen(device, 2))
    est = sp.ou_score_from_semigroup(sp.log_density_ratio(mix, 1.0), x, 0.5, n_samples=20_000,
                                     generator=_gen(device, 3), return_stderr=True)
    assert est.value.device.type == device
    z = (est.value - ou.score(mix, x, 0.5)) / est.stderr
    assert float(z.abs().max()) < 5.0


@pytest.mark.parametrize("device", DEVICES)
def test_follmer_sampler_reproduces_moments(device):
    mix, fol = _mixture(device), sp.Follmer(sigma=1.0)
    n = 4000
    x = sp.sample_follmer(lambda y, t: fol.drift(mix, y, t), n, 200, generator=_gen(device, 4),
                          dim=2, dtype=DT, device=device)
    assert x.device.type == device
    se = x.std(0) / math.sqrt(n)
    assert bool(((x.mean(0) - mix.mean).abs() < 5 * se + 0.02).all())


@pytest.mark.parametrize("device", DEVICES)
def test_float32_agrees_with_float64(device):
    mix = _mixture(device)
    x = torch.randn(32, 2, dtype=DT, device=device, generator=_gen(device, 5))
    for proc, t in ((sp.OU(), 0.1), (sp.Follmer(), 0.9)):
        hi = proc.score(mix, x, t)
        lo = proc.score(mix.to(dtype=torch.float32), x.float(), t)
        assert lo.dtype == torch.float32 and lo.device.type == device
        assert torch.allclose(lo.double(), hi, rtol=1e-4, atol=1e-4)
