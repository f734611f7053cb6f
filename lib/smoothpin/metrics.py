"""Metrics: score / drift error against the closed form, the Girsanov KL bound it implies, and
sample metrics with their floor (chapter "Measuring approximation error").

- Score error (OU): e(t) = E_{p_t} |s(X, t) - s_hat(X, t)|^2, X = a_t Y + s_t Z with Y ~ pi;
  drift error (Föllmer): e(t) = E_{p_t} |b - b_hat|^2, X = t Y + sigma sqrt(t (1 - t)) Z.
  Integrated error E = int e(t) dt (trapezoid on a fine grid, the quantity in the paper's bounds),
  relative L2 error sqrt(int e dt / int E|s|^2 dt).
- Girsanov: KL(pi || q_hat) <= KL(initial) + 1/2 int g(t)^2 e(t) dt (OU: g^2 = 2 beta(t) sigma^2,
  so the weight is beta sigma^2; Föllmer: g = sigma and the drift error is divided by sigma^2).
- MMD^2 (unbiased U-statistic) with the kernel k(x, y) = sum_h exp(-|x - y|^2 / (2 h^2)).
- W2 between two equal-size samples: the exact optimal assignment (scipy's
  linear_sum_assignment, O(n^3): n <= 2000), W2^2 = min_perm mean |x_i - y_perm(i)|^2. For uniform
  weights and equal sizes this is the same exact optimal transport as POT's ot.emd2 (Birkhoff: an
  optimal plan is a permutation), without adding POT as a dependency.
- W2 between Gaussians in closed form: W2^2 = |m0 - m1|^2 + tr(S0 + S1 - 2 (S1^1/2 S0 S1^1/2)^1/2).
- Floor: the same metric between two independent samples of the same law; sample metrics are
  reported against it, never against 0.
- KL(p || q) in 2-D by quadrature on a box: sum p (log p - log q) dA on a midpoint grid.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ._checks import (as_tensor_like, check_callable, check_finite, check_generator, check_int,
                      check_last_dim, check_spd, check_tensor)
from .sample import process_kind

__all__ = ["ScoreError", "score_error", "girsanov_kl_bound", "mmd", "w2", "gaussian_w2",
           "SampleFloor", "sample_floor", "kl_quadrature_2d"]


class ScoreError(NamedTuple):
    """integrated = int e dt; relative = sqrt(int e / int E|s|^2); times, per_time e(t), its Monte
    Carlo stderr, and norm E|s|^2 (t); all tensors."""
    integrated: torch.Tensor
    relative: torch.Tensor
    times: torch.Tensor
    per_time: torch.Tensor
    stderr: torch.Tensor
    norm: torch.Tensor


def _trapezoid(y, t):
    return ((y[1:] + y[:-1]) * (t[1:] - t[:-1])).sum(-1) / 2


def _is_ou(process):
    return process_kind(process) == "ou"


def score_error(net_or_fn, process, target, times=None, n=2048, generator=None, n_times=65,
                dtype=None, device=None):
    """Time-integrated squared error of net_or_fn(x, t) against the exact OU score
    ``process.score(target, x, t)`` or Föllmer drift ``process.drift(target, x, t)``.

    times: 1-D increasing grid inside the process's interval (default: n_times equally spaced
    points covering the whole interval); n: samples of p_t per time (fresh draws per time).
    Returns ScoreError. Raises ValueError for a grid outside the interval or bad sizes.
    """
    check_callable("net_or_fn", net_or_fn)
    ou = _is_ou(process)
    check_callable("target.sample", getattr(target, "sample", None))
    n = check_int("n", n, lo=2)
    check_generator("generator", generator)
    dtype = dtype or torch.get_default_dtype()
    lo, hi = (float(v) for v in process.interval)
    if times is None:
        times = torch.linspace(lo, hi, check_int("n_times", n_times, lo=2), dtype=dtype,
                               device=device)
    check_tensor("times", times, 1)
    check_finite("times", times)
    if times.dim() != 1 or times.numel() < 2 or not bool((times[1:] > times[:-1]).all()):
        raise ValueError("times: expected a 1-D strictly increasing grid with >= 2 points")
    if float(times[0]) < lo or float(times[-1]) > hi:
        raise ValueError(f"times: must lie in the process's interval [{lo:g}, {hi:g}]")
    err, se, nrm = [], [], []
    for t in times.tolist():
        y = target.sample(n, generator=generator).to(dtype=times.dtype, device=times.device)
        with torch.no_grad():
            if ou:
                x = process.sample_transition(y, t, generator=generator)
                exact = process.score(target, x, t)
            else:
                x = process.sample_bridge(y, t, generator=generator)
                exact = process.drift(target, x, t)
            sq = ((net_or_fn(x, t) - exact) ** 2).sum(-1)
        err.append(sq.mean())
        se.append(sq.std() / math.sqrt(n))
        nrm.append((exact ** 2).sum(-1).mean())
    err, se, nrm = torch.stack(err), torch.stack(se), torch.stack(nrm)
    integrated = _trapezoid(err, times)
    relative = torch.sqrt(integrated / _trapezoid(nrm, times))
    return ScoreError(integrated, relative, times, err, se, nrm)


def girsanov_kl_bound(net_or_fn, process, target, initial_kl=0.0, **kwargs):
    """KL(pi || q_hat) <= initial_kl + 1/2 int g(t)^2 e(t) dt for the sampler driven by net_or_fn
    (the data-processing + Girsanov bound), with e(t) from ``score_error(**kwargs)``.
    For the Föllmer drift the bound is 1/2 sigma^-2 int e dt. Returns (bound, ScoreError).
    """
    from .bounds import kl_from_score_error

    res = score_error(net_or_fn, process, target, **kwargs)
    return kl_from_score_error(process, res.per_time, res.times, initial_kl=initial_kl), res


def _sq_dists(x, y):
    return ((x * x).sum(-1)[:, None] + (y * y).sum(-1)[None, :] - 2 * x @ y.mT).clamp_min(0)


def _kernel_sum(x, y, bandwidths, exclude_diagonal, chunk=1024):
    total = x.new_zeros(())
    for i in range(0, x.shape[0], chunk):
        d2 = _sq_dists(x[i:i + chunk], y)
        k = sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)
        if exclude_diagonal:
            r = torch.arange(k.shape[0], device=k.device)
            k[r, r + i] = 0
        total = total + k.sum()
    return total


def mmd(x, y, bandwidths=None):
    """Unbiased MMD^2 between samples x: (n, d) and y: (m, d) (n, m >= 2) with an RBF mixture
    kernel. bandwidths: sequence of h > 0 (default: the median pairwise distance of the pooled
    sample, at most 1000 points of each, times (1/4, 1/2, 1, 2, 4)). Can be slightly negative.
    """
    check_tensor("x", x, 2)
    check_tensor("y", y, 2)
    check_last_dim("y", y, x.shape[-1])
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("x, y: need at least 2 samples each")
    if bandwidths is None:
        z = torch.cat([x[:1000], y[:1000]])
        med = torch.sqrt(_sq_dists(z, z).median()).clamp_min(torch.finfo(x.dtype).eps)
        bandwidths = [med * f for f in (0.25, 0.5, 1.0, 2.0, 4.0)]
    elif any(float(h) <= 0 for h in bandwidths):
        raise ValueError("bandwidths: every bandwidth must be > 0")
    n, m = x.shape[0], y.shape[0]
    kxx = _kernel_sum(x, x, bandwidths, True) / (n * (n - 1))
    kyy = _kernel_sum(y, y, bandwidths, True) / (m * (m - 1))
    kxy = _kernel_sum(x, y, bandwidths, False) / (n * m)
    return kxx + kyy - 2 * kxy


def w2(x, y):
    """2-Wasserstein distance between the empirical laws of x: (n, d) and y: (n, d), by the exact
    optimal assignment (scipy.optimize.linear_sum_assignment; n <= 2000). Returns a 0-dim tensor
    with x's dtype/device. Raises ValueError for unequal sizes or n > 2000.
    """
    from scipy.optimize import linear_sum_assignment

    check_tensor("x", x, 2)
    check_tensor("y", y, 2)
    if x.shape != y.shape:
        raise ValueError(f"x, y: need equal shapes (n, d), got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] > 2000:
        raise ValueError("x: n <= 2000 for the exact assignment (O(n^3)); subsample")
    c = _sq_dists(x, y)
    r, col = linear_sum_assignment(c.detach().cpu().double().numpy())
    r, col = torch.as_tensor(r, device=x.device), torch.as_tensor(col, device=x.device)
    return torch.sqrt(c[r, col].mean())


def _sqrtm_psd(S):
    lam, Q = torch.linalg.eigh(S)
    return (Q * lam.clamp_min(0).sqrt().unsqueeze(-2)) @ Q.mT


def gaussian_w2(m0, S0, m1, S1):
    """W2(N(m0, S0), N(m1, S1)) = sqrt(|m0 - m1|^2 + tr(S0 + S1 - 2 (S1^1/2 S0 S1^1/2)^1/2)).

    Means (d,), covariances (d, d) symmetric positive definite. Returns a 0-dim tensor with m0's
    dtype/device. Raises ValueError for shapes that do not match or covariances that are not SPD.
    """
    m0 = check_finite("m0", check_tensor("m0", as_tensor_like(m0, name="m0"), 1))
    if m0.dim() != 1:
        raise ValueError(f"m0: expected shape (d,), got {tuple(m0.shape)}")
    d = m0.shape[0]
    m1 = check_finite("m1", as_tensor_like(m1, m0, "m1"))
    S0, S1 = as_tensor_like(S0, m0, "S0"), as_tensor_like(S1, m0, "S1")
    for name, v, shape in (("m1", m1, (d,)), ("S0", S0, (d, d)), ("S1", S1, (d, d))):
        if v.shape != shape:
            raise ValueError(f"{name}: expected shape {shape} to match m0, got {tuple(v.shape)}")
    check_spd("S0", S0)
    check_spd("S1", S1)
    r1 = _sqrtm_psd(S1)
    cross = _sqrtm_psd(r1 @ S0 @ r1)
    sq = ((m0 - m1) ** 2).sum() + torch.trace(S0 + S1 - 2 * cross)
    return torch.sqrt(sq.clamp_min(0))


class SampleFloor(NamedTuple):
    """Mean and standard deviation of metric(sample, independent sample) over repeats; values."""
    mean: torch.Tensor
    std: torch.Tensor
    values: torch.Tensor


def sample_floor(metric, sampler, n, repeats=5, generator=None):
    """The floor of a sample metric: metric(X, X') for two independent n-samples of the same law
    (sampler(n, generator=...) -> (n, d)), repeated ``repeats`` times."""
    check_callable("metric", metric)
    check_callable("sampler", sampler)
    n, repeats = check_int("n", n), check_int("repeats", repeats)
    check_generator("generator", generator)
    vals = torch.stack([torch.as_tensor(metric(sampler(n, generator=generator),
                                               sampler(n, generator=generator)))
                        for _ in range(repeats)])
    std = vals.std() if repeats > 1 else torch.zeros_like(vals[0])
    return SampleFloor(vals.mean(), std, vals)


def kl_quadrature_2d(log_p, log_q, box=((-6.0, 6.0), (-6.0, 6.0)), n=401, normalise=False,
                     dtype=torch.float64, device=None):
    """KL(p || q) = int p (log p - log q) over ``box`` by the midpoint rule on an n x n grid.

    log_p, log_q: callables (m, 2) -> (m,). normalise: divide both densities by their quadrature
    mass first (for unnormalised log-densities). The box must hold essentially all of p's mass.
    """
    check_callable("log_p", log_p)
    check_callable("log_q", log_q)
    n = check_int("n", n, lo=2)
    (a0, b0), (a1, b1) = box
    if not (b0 > a0 and b1 > a1):
        raise ValueError("box: expected ((x_lo, x_hi), (y_lo, y_hi)) with lo < hi")
    h0, h1 = (b0 - a0) / n, (b1 - a1) / n
    u = a0 + h0 * (torch.arange(n, dtype=dtype, device=device) + 0.5)
    v = a1 + h1 * (torch.arange(n, dtype=dtype, device=device) + 0.5)
    g = torch.stack(torch.meshgrid(u, v, indexing="ij"), -1).reshape(-1, 2)
    lp, lq = log_p(g), log_q(g)
    log_dA = math.log(h0 * h1)
    if normalise:
        lp = lp - (torch.logsumexp(lp, 0) + log_dA)
        lq = lq - (torch.logsumexp(lq, 0) + log_dA)
    p = torch.exp(lp + log_dA)
    return (p * (lp - lq)).sum()
