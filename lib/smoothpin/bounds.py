"""The paper's quantities in closed form (DESIGN.md section 3: control and KL, Gaussian initialisation).

gaussian_kl                  KL(N(m0, S0) || N(m1, S1)) = (tr(S1^-1 S0) + (m1-m0)^T S1^-1 (m1-m0) - d + ln det S1 / det S0) / 2
ou_kl_to_invariant_gaussian  KL(p_t || N(0, sigma^2 I)) for a Gaussian target N(m, S) under OU:
                             p_t = N(a m, a^2 S + sigma^2 (1 - a^2) I), a = e^{-B(t)}
log_sobolev_decay_bound      KL(p_t || phi_{sigma^2}) <= e^{-2 B(t)} KL(pi || phi_{sigma^2})  (Gaussian LSI)
kl_from_score_error          Girsanov + data processing: KL(pi || q) <= KL_init + (1/2) int g^2 E|s - s_hat|^2 dt
                             (OU, g^2 = 2 beta sigma^2, score errors), or (1/2) int E|b - b_hat|^2 / sigma^2 dt
                             (Föllmer, drift errors); trapezoid rule on the given grid
kl_bound_stderr              its Monte Carlo standard error (1/2) sqrt(sum_i (tau_i w_i se_i)^2)
pinsker_tv                   TV <= sqrt(KL / 2)
"""
from __future__ import annotations

import math

import torch

from ._checks import as_tensor_like, check_finite, check_nonneg, check_positive, check_tensor, check_time

__all__ = ["gaussian_kl", "ou_kl_to_invariant_gaussian", "log_sobolev_decay_bound",
           "kl_from_score_error", "kl_bound_stderr", "pinsker_tv"]


def _as_cov(S, d, like, name):
    S = as_tensor_like(S, like, name)
    if S.dim() == 0:
        check_positive(name, S)
        return S * torch.eye(d, dtype=like.dtype, device=like.device)
    if S.dim() == 1:
        check_positive(name, S)
        return torch.diag(S)
    if S.shape != (d, d):
        raise ValueError(f"{name}: expected a float, shape ({d},) or ({d}, {d}), got {tuple(S.shape)}")
    check_finite(name, S)
    if not torch.allclose(S, S.mT, rtol=1e-10, atol=1e-12):
        raise ValueError(f"{name}: not symmetric")
    return S


def _chol(S, name):
    L, info = torch.linalg.cholesky_ex(S)
    if int(info) != 0:
        raise ValueError(f"{name}: not positive definite")
    return L


def gaussian_kl(m0, S0, m1, S1):
    """KL(N(m0, S0) || N(m1, S1)); means (d,), covariances a float (isotropic), (d,) diagonal or (d, d)."""
    m0 = check_finite("m0", as_tensor_like(m0, name="m0"))
    if m0.dim() != 1:
        raise ValueError(f"m0: expected shape (d,), got {tuple(m0.shape)}")
    m1 = check_finite("m1", as_tensor_like(m1, m0, "m1"))
    if m1.shape != m0.shape:
        raise ValueError(f"m1: expected shape {tuple(m0.shape)} to match m0, got {tuple(m1.shape)}")
    d = m0.shape[0]
    S0, S1 = _as_cov(S0, d, m0, "S0"), _as_cov(S1, d, m0, "S1")
    L0, L1 = _chol(S0, "S0"), _chol(S1, "S1")
    A = torch.linalg.solve_triangular(L1, L0, upper=False)          # L1^-1 L0: tr(S1^-1 S0) = |A|_F^2
    u = torch.linalg.solve_triangular(L1, (m1 - m0)[:, None], upper=False)[:, 0]
    logdet = 2 * (torch.log(torch.diagonal(L1)).sum() - torch.log(torch.diagonal(L0)).sum())
    return 0.5 * ((A * A).sum() + (u * u).sum() - d + logdet)


def ou_kl_to_invariant_gaussian(mean, cov, t, process):
    """KL(p_t || N(0, sigma^2 I)) for pi = N(mean, cov) under the OU ``process`` at time t (float).

    p_t = N(a mean, a^2 cov + sigma^2 (1 - a^2) I), a = e^{-B(t)}. For cov = s^2 I and sigma = 1 this is
    (d/2)(v - 1 - ln v) + a^2 |m|^2 / 2 with v = a^2 s^2 + 1 - a^2."""
    mean = check_finite("mean", as_tensor_like(mean, name="mean"))
    if mean.dim() != 1:
        raise ValueError(f"mean: expected shape (d,), got {tuple(mean.shape)}")
    d = mean.shape[0]
    cov = _as_cov(cov, d, mean, "cov")
    _chol(cov, "cov")
    a, s = process.mean_std(float(t))
    eye = torch.eye(d, dtype=mean.dtype, device=mean.device)
    return gaussian_kl(a * mean, a * a * cov + s * s * eye, torch.zeros_like(mean), process.sigma ** 2)


def log_sobolev_decay_bound(kl0, t, process):
    """e^{-2 B(t)} kl0: the Gaussian log-Sobolev bound on KL(p_t || phi_{sigma^2}) given kl0 = KL(pi || phi_{sigma^2})."""
    if isinstance(kl0, torch.Tensor):
        check_finite("kl0", kl0)
        if bool((kl0 < 0).any()):
            raise ValueError("kl0: a KL divergence is >= 0")
    else:
        check_nonneg("kl0", kl0)
    B = process.integrated_beta(t)
    return kl0 * (torch.exp(-2 * B) if isinstance(B, torch.Tensor) else math.exp(-2 * B))


def _girsanov_weights(process, values, times, name):
    """Checked (values, times) and the Girsanov weight w(t): g(t)^2 (OU) or 1 / sigma^2 (Föllmer)."""
    e = check_finite(name, check_tensor(name, torch.as_tensor(values), 1))
    t = torch.as_tensor(times).to(e)
    if e.dim() != 1 or t.shape != e.shape or e.shape[0] < 2:
        raise ValueError(f"{name}, times: expected two 1-D tensors of the same length >= 2, got "
                         f"{tuple(e.shape)} and {tuple(t.shape)}")
    if bool((e < 0).any()):
        raise ValueError(f"{name}: must be >= 0")
    if not bool((t[1:] > t[:-1]).all()):
        raise ValueError("times: must be strictly increasing")
    lo, hi = process.interval
    check_time("times", t, lo, hi)
    w = process.g2(t) if hasattr(process, "integrated_beta") else torch.full_like(t, 1 / process.sigma ** 2)
    return e, t, w


def kl_from_score_error(process, sq_error, times, initial_kl=0.0):
    """Upper bound on KL(pi || q_hat) from mean squared errors e(t_i) on a time grid (trapezoid rule).

    OU (``process`` has integrated_beta): sq_error = E|grad log p_t - s_hat|^2 and the bound is
    initial_kl + (1/2) int g(t)^2 e(t) dt, g^2 = 2 beta(t) sigma^2. Föllmer: sq_error = E|b - b_hat|^2 and
    the bound is initial_kl + (1/2) int e(t) dt / sigma^2. times: increasing (n,) inside the interval."""
    e, t, w = _girsanov_weights(process, sq_error, times, "sq_error")
    if isinstance(initial_kl, torch.Tensor):
        check_finite("initial_kl", initial_kl)
    else:
        check_nonneg("initial_kl", initial_kl)
    y = w * e
    return initial_kl + 0.5 * torch.trapezoid(y, t)


def kl_bound_stderr(process, stderr, times):
    """Monte Carlo standard error of ``kl_from_score_error`` when each e(t_i) is an independent
    Monte Carlo mean with standard error se_i (fresh samples per time, as ``score_error`` draws):
    the bound (1/2) sum_i tau_i w(t_i) e(t_i) is linear in the e(t_i), with trapezoid weights
    tau_i = (t_{i+1} - t_{i-1}) / 2 (half a step at the ends) and w = g^2 (OU) or 1 / sigma^2
    (Föllmer), so its standard error is (1/2) sqrt(sum_i (tau_i w(t_i) se_i)^2)."""
    se, t, w = _girsanov_weights(process, stderr, times, "stderr")
    dt = t[1:] - t[:-1]
    tau = torch.cat([dt[:1], dt[1:] + dt[:-1], dt[-1:]]) / 2
    return 0.5 * torch.linalg.vector_norm(tau * w * se)


def pinsker_tv(kl):
    """sqrt(KL / 2): Pinsker's upper bound on the total-variation distance (capped at 1)."""
    if isinstance(kl, torch.Tensor):
        check_finite("kl", kl)
        if bool((kl < 0).any()):
            raise ValueError("kl: a KL divergence is >= 0")
        return torch.sqrt(kl / 2).clamp(max=1.0)
    check_nonneg("kl", kl)
    return min(1.0, math.sqrt(kl / 2))
