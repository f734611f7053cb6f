"""The paper's quantities in closed form (DESIGN.md section 3: control and KL, Gaussian initialisation).

gaussian_kl                  KL(N(m0, S0) || N(m1, S1)) = (tr(S1^-1 S0) + (m1-m0)^T S1^-1 (m1-m0) - d + ln det S1 / det S0) / 2
ou_kl_to_invariant_gaussian  KL(p_t || N(0, sigma^2 I)) for a Gaussian target N(m, S) under OU:
                             p_t = N(a m, a^2 S + sigma^2 (1 - a^2) I), a = e^{-B(t)}
ou_reverse_sensitivity       Psi(t) = a_t var / v_t (SDE) or sqrt(var / v_t) (ODE): a displacement at time t reaches the output times Psi
ou_reverse_gaussian_law      exact output law of the reverse OU sampler for pi = N(m, var I), shifted score, start p_T or phi
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

from ._checks import (as_tensor_like, check_choice, check_finite, check_int, check_nonneg, check_positive,
                      check_tensor, check_time)

__all__ = ["gaussian_kl", "ou_kl_to_invariant_gaussian", "ou_reverse_sensitivity",
           "ou_reverse_gaussian_law", "log_sobolev_decay_bound",
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



def ou_reverse_sensitivity(t, var, process, sampler="sde"):
    """Psi(t): the factor by which the exact-score reverse OU sampler for pi = N(m, var I) carries a
    displacement made at forward time t to its output (time 0).

    With a_t = e^{-B(t)} and v_t = sigma^2 + a_t^2 (var - sigma^2) (the variance of p_t), the linear
    part of the reverse drift integrates to Psi(t) = a_t var / v_t for the SDE
    (drift beta y + 2 beta sigma^2 grad log p_t) and Psi(t) = sqrt(var / v_t) for the
    probability-flow ODE (drift beta y + beta sigma^2 grad log p_t). t: float or tensor in [0, T].
    Raises ValueError for var <= 0, t outside [0, T] or an unknown sampler."""
    check_positive("var", var)
    check_choice("sampler", sampler, ("sde", "ode"))
    t = check_time("t", t, *process.interval)
    a, s = process.mean_std(t)
    v = a * a * var + s * s
    return a * var / v if sampler == "sde" else (var / v) ** 0.5


def ou_reverse_gaussian_law(mean, var, process, *, start="p_T", sampler="sde", score_shift=None,
                            window=None, n_quad=2001):
    """Exact output law N(mean_out, var_out I) of the continuous-time reverse OU sampler (SDE or
    probability-flow ODE) for pi = N(mean, var I), driven by the exact score plus a constant
    ``score_shift`` (a (d,) vector) on the forward-time window W = ``window`` (default [0, T]) and
    started at p_T (``start="p_T"``) or at phi_{sigma^2} = N(0, sigma^2 I) (``start="invariant"``).

    Every drift is affine, so the output is Gaussian: with Psi = ``ou_reverse_sensitivity``,
        mean_out = mean - [invariant] Psi(T) a_T mean + kappa sigma^2 (int_W beta(t) Psi(t) dt) score_shift,
        var_out  = var + [invariant] (SDE: Psi(T)^2 (sigma^2 - v_T);  ODE: var sigma^2 / v_T - var),
    kappa = 2 (SDE) or 1 (ODE), [invariant] = 1 for start="invariant" and 0 for start="p_T"; the
    integral by the trapezoid rule on n_quad nodes. Returns (mean_out (d,), var_out 0-dim tensor).
    Raises ValueError for bad shapes, var <= 0, an unknown start / sampler or a window outside [0, T].
    """
    mean = check_finite("mean", as_tensor_like(mean, name="mean"))
    if mean.dim() != 1:
        raise ValueError(f"mean: expected shape (d,), got {tuple(mean.shape)}")
    check_positive("var", var)
    check_choice("start", start, ("p_T", "invariant"))
    check_choice("sampler", sampler, ("sde", "ode"))
    T = process.interval[1]
    var_t = as_tensor_like(var, mean, "var")
    out_mean, out_var = mean.clone(), var_t.clone()
    if start == "invariant":
        a_T = process.mean_std(T)[0]
        psi_T = ou_reverse_sensitivity(T, var, process, sampler)
        v_T = a_T * a_T * var + process.sigma ** 2 * (1 - a_T * a_T)
        out_mean = out_mean - psi_T * a_T * mean
        out_var = (var_t + psi_T ** 2 * (process.sigma ** 2 - v_T) if sampler == "sde"
                   else var_t * process.sigma ** 2 / v_T)
    if score_shift is not None:
        shift = check_finite("score_shift", as_tensor_like(score_shift, mean, "score_shift"))
        if shift.shape != mean.shape:
            raise ValueError(f"score_shift: expected shape {tuple(mean.shape)}, got {tuple(shift.shape)}")
        t0, t1 = (0.0, T) if window is None else (float(window[0]), float(window[1]))
        check_time("window", t0, 0.0, T)
        check_time("window", t1, 0.0, T)
        if not t0 < t1:
            raise ValueError(f"window: expected t0 < t1, got ({t0:g}, {t1:g})")
        t = torch.linspace(t0, t1, check_int("n_quad", n_quad, lo=2), dtype=mean.dtype, device=mean.device)
        kappa = 2.0 if sampler == "sde" else 1.0
        integral = torch.trapezoid(process.beta_at(t) * ou_reverse_sensitivity(t, var, process, sampler), t)
        out_mean = out_mean + kappa * process.sigma ** 2 * integral * shift
    return out_mean, out_var


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
