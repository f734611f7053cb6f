"""Shared test data: the test mixtures, built here from explicit numbers (not by the library)."""
import math

import pytest
import torch

import smoothpin as sp

D64 = torch.float64
TD = torch.distributions
CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                     reason="no CUDA device"))


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rot(theta):
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s], [s, c]], dtype=D64)


def mixture_params(name):
    """(weights, means, covariances) of the test mixtures."""
    if name == "full2d":   # full, correlated covariances of different shapes
        w = torch.tensor([0.2, 0.5, 0.3], dtype=D64)
        mu = torch.tensor([[0.0, 1.0], [1.5, -1.0], [-2.0, 0.5]], dtype=D64)
        S = torch.stack([R @ torch.diag(torch.tensor(l, dtype=D64)) @ R.T for R, l in
                         ((rot(0.3), [1.0, 0.2]), (rot(-1.1), [0.4, 0.05]), (rot(2.0), [0.6, 0.3]))])
        return w, mu, S
    if name == "iso5d":    # isotropic components in d = 5
        w = torch.tensor([0.1, 0.4, 0.3, 0.2], dtype=D64)
        mu = 1.5 * torch.randn(4, 5, generator=gen(5), dtype=D64)
        v = torch.tensor([0.3, 1.0, 0.05, 2.0], dtype=D64)
        return w, mu, v[:, None, None] * torch.eye(5, dtype=D64)
    if name == "narrow":   # variance-1e-3 components (one correlated) next to a broad one
        w = torch.tensor([0.3, 0.4, 0.3], dtype=D64)
        mu = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 0.5]], dtype=D64)
        S = torch.stack([1e-3 * torch.eye(2, dtype=D64),
                         torch.tensor([[1e-3, 0.5e-3], [0.5e-3, 1e-3]], dtype=D64),
                         0.5 * torch.eye(2, dtype=D64)])
        return w, mu, S
    if name == "two2d":    # unequal weights and variances (E|Y|^2 = 2.69 > d sigma^2 = 2 for sigma = 1)
        w = torch.tensor([0.3, 0.7], dtype=D64)
        mu = torch.tensor([[-1.5, 0.5], [1.0, -1.0]], dtype=D64)
        return w, mu, torch.tensor([0.3, 0.5], dtype=D64)[:, None, None] * torch.eye(2, dtype=D64)
    if name == "gaussian":
        return (torch.ones(1, dtype=D64), torch.tensor([[0.5, -1.0]], dtype=D64),
                torch.tensor([[[2.0, 0.6], [0.6, 0.5]]], dtype=D64))
    raise KeyError(name)


def build(name):
    """The library object for a test mixture: isotropic constructor for iso5d / two2d, Gaussian for one."""
    w, mu, S = mixture_params(name)
    if name in ("iso5d", "two2d"):
        return sp.GaussianMixture.isotropic(w, mu, S[:, 0, 0])
    if name == "gaussian":
        return sp.Gaussian(mu[0], S[0])
    return sp.GaussianMixture(w, mu, S)
