"""The OU and heat semigroups applied to any function (DESIGN.md section 3), by Monte Carlo or Gauss-Hermite.

Both are Gaussian expectations  E f(a x + s Z),  Z ~ N(0, I_d):
    OU      U_t f(x) = E f(e^{-beta t} x + sigma sqrt(1 - e^{-2 beta t}) Z)      (a = e^{-beta t})
    heat    Q_s f(x) = E f(x + sigma sqrt(s) Z)                                   (a = 1)
Log-space versions take log f and return log U_t f = logsumexp_i(log w_i + log f(a x + s z_i)),
so that f = d pi / d phi_{sigma^2}, which over- and underflows, never leaves log space. Gradients
in x are the reparameterised (pathwise) form: autograd through the estimator with the nodes z_i
held fixed, i.e. grad log U_t f(x) = sum_i softmax_i(log w_i + log f(y_i)) a grad log f(y_i).
The same nodes serve every x, so estimates at nearby x are smooth in x (common random numbers).

With them:  OU score  grad log p_t(x) = -x / sigma^2 + grad log U_t f(x),
            Föllmer drift  b(x, t) = sigma^2 grad log Q_{1-t} f(x),
for a target with no closed form. Gauss-Hermite uses the tensor grid of ``n_nodes`` per axis
(n_nodes^d points: d <= 4 in practice); Monte Carlo uses ``n_samples`` draws.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from ._checks import (check_callable, check_choice, check_finite, check_generator, check_int,
                      check_nonneg, check_positive, check_tensor, check_time)

__all__ = ["ou_semigroup", "heat_semigroup", "log_ou_semigroup", "log_heat_semigroup",
           "grad_log_ou_semigroup", "grad_log_heat_semigroup", "ou_score_from_semigroup",
           "follmer_drift_from_semigroup", "gauss_hermite_nodes", "Estimate"]


class Estimate(NamedTuple):
    """value and its Monte Carlo standard error (zeros for Gauss-Hermite, whose error is bias)."""
    value: torch.Tensor
    stderr: torch.Tensor


def gauss_hermite_nodes(n_nodes, dim, dtype=torch.float64, device=None):
    """Nodes z (n_nodes^dim, dim) and log-weights (n_nodes^dim,) with sum_i w_i g(z_i) ~ E g(Z),
    Z ~ N(0, I_dim) (probabilists' Hermite rule, exact for polynomials of degree < 2 n_nodes per axis)."""
    n_nodes, dim = check_int("n_nodes", n_nodes), check_int("dim", dim)
    if n_nodes ** dim > 2_000_000:
        raise ValueError(f"n_nodes: a {n_nodes}^{dim} grid is too large; use method='mc' in dimension {dim}")
    z1, w1 = np.polynomial.hermite_e.hermegauss(n_nodes)
    if not (np.isfinite(z1).all() and np.isfinite(w1).all() and (w1 > 0).all()):
        raise ValueError(f"n_nodes: numpy's Hermite rule is not finite for n_nodes = {n_nodes} "
                         "(it overflows beyond ~350); use fewer nodes")
    z1 = torch.as_tensor(z1, dtype=dtype, device=device)
    lw1 = torch.as_tensor(np.log(w1 / math.sqrt(2 * math.pi)), dtype=dtype, device=device)
    z = torch.cartesian_prod(*([z1] * dim)).reshape(-1, dim)
    lw = torch.cartesian_prod(*([lw1] * dim)).reshape(-1, dim).sum(-1)
    return z, lw


def _nodes(dim, x, method, n_samples, n_nodes, generator):
    method = check_choice("method", method, ("mc", "gauss-hermite"))
    if method == "gauss-hermite":
        return gauss_hermite_nodes(n_nodes, dim, x.dtype, x.device)
    n = check_int("n_samples", n_samples, 2)
    check_generator("generator", generator)
    z = torch.randn(n, dim, generator=generator, dtype=x.dtype, device=x.device)
    return z, torch.full((n,), -math.log(n), dtype=x.dtype, device=x.device)


def _check_x(x):
    check_tensor("x", x, 1)
    if not x.is_floating_point():
        raise ValueError(f"x: expected a floating tensor, got {x.dtype}")
    return check_finite("x", x)


def _eval_log(log_f, y, batch_shape):
    out = log_f(y)
    if not isinstance(out, torch.Tensor) or out.shape != y.shape[:-1]:
        raise ValueError(f"log_f: expected log_f(y) of shape {tuple(y.shape[:-1])} for y of shape "
                         f"{tuple(y.shape)}, got {getattr(out, 'shape', type(out).__name__)}")
    if bool(torch.isnan(out).any()):
        raise ValueError("log_f: returned NaN; pass a log f that is finite or -inf")
    return out


def _log_expect(log_f, x, a, s, method, n_samples, n_nodes, generator, chunk=None):
    """log E f(a x + s Z) and its stderr (delta method) for x (..., d); a, s floats."""
    d = x.shape[-1]
    z, lw = _nodes(d, x, method, n_samples, n_nodes, generator)
    xf = x.reshape(-1, d)
    chunk = chunk or max(1, (1 << 22) // max(1, z.shape[0] * d))
    vals, ses = [], []
    for i in range(0, xf.shape[0], chunk):
        y = a * xf[i:i + chunk, None, :] + s * z[None]
        lf = _eval_log(log_f, y, None) + lw
        m = torch.logsumexp(lf, -1)
        vals.append(m)
        if method == "mc":
            n = z.shape[0]
            r = torch.exp(lf - m[:, None]) * n          # f_i / mean f
            ses.append(r.std(-1) / math.sqrt(n))        # se of log mean = se(mean) / mean
        else:
            ses.append(torch.zeros_like(m))
    shape = x.shape[:-1]
    return torch.cat(vals).reshape(shape), torch.cat(ses).reshape(shape)


def _grad_log_expect(log_f, x, a, s, method, n_samples, n_nodes, generator):
    """grad_x log E f(a x + s Z) (pathwise) and its stderr (delta method for the ratio)."""
    d = x.shape[-1]
    z, lw = _nodes(d, x, method, n_samples, n_nodes, generator)
    xf = x.reshape(-1, d)
    chunk = max(1, (1 << 21) // max(1, z.shape[0] * d))
    vals, ses = [], []
    for i in range(0, xf.shape[0], chunk):
        with torch.enable_grad():
            y = (a * xf[i:i + chunk, None, :] + s * z[None]).detach().requires_grad_(True)
            lf = _eval_log(log_f, y, None)
            (g,) = torch.autograd.grad(lf.sum(), y)
        lf = lf.detach() + lw
        wts = torch.softmax(lf, -1)                     # (c, n)
        if bool(torch.isnan(wts).any()):
            raise ValueError("log_f: is -inf at every node for some x; U f(x) = 0 there has no log-gradient")
        g = torch.nan_to_num(g, nan=0.0) * a            # nodes of zero weight may carry nan/inf gradients
        val = (wts[..., None] * g).sum(1)
        vals.append(val)
        if method == "mc":
            n = z.shape[0]
            r = wts * n                                 # f_i / mean f
            resid = r[..., None] * (g - val[:, None, :])
            ses.append(resid.std(1) / math.sqrt(n))
        else:
            ses.append(torch.zeros_like(val))
    return torch.cat(vals).reshape(x.shape), torch.cat(ses).reshape(x.shape)


def _ou_coeffs(t, sigma, beta):
    check_positive("sigma", sigma)
    check_positive("beta", beta)
    t = float(check_time("t", t, 0.0, math.inf))
    a = math.exp(-beta * t)
    return a, sigma * math.sqrt(-math.expm1(-2 * beta * t))


def _heat_coeffs(s, sigma):
    check_positive("sigma", sigma)
    s = float(check_time("s", s, 0.0, math.inf))
    return 1.0, sigma * math.sqrt(s)


def _ret(est, return_stderr):
    return Estimate(*est) if return_stderr else est[0]


def log_ou_semigroup(log_f, x, t, *, sigma=1.0, beta=1.0, method="mc", n_samples=4096, n_nodes=24,
                     generator=None, return_stderr=False):
    """log U_t f(x) = log E f(e^{-beta t} x + sigma sqrt(1 - e^{-2 beta t}) Z); log_f: (..., d) -> (...).

    x: (..., d) -> (...). t >= 0 (a float). With return_stderr, an Estimate(value, stderr)."""
    check_callable("log_f", log_f)
    a, s = _ou_coeffs(t, sigma, beta)
    return _ret(_log_expect(log_f, _check_x(x), a, s, method, n_samples, n_nodes, generator), return_stderr)


def log_heat_semigroup(log_f, x, s, *, sigma=1.0, method="mc", n_samples=4096, n_nodes=24,
                       generator=None, return_stderr=False):
    """log Q_s f(x) = log E f(x + sigma sqrt(s) Z); x: (..., d) -> (...), s >= 0."""
    check_callable("log_f", log_f)
    a, sd = _heat_coeffs(s, sigma)
    return _ret(_log_expect(log_f, _check_x(x), a, sd, method, n_samples, n_nodes, generator), return_stderr)


def _exp_of(f):
    check_callable("f", f)

    def log_f(y):
        v = f(y)
        if isinstance(v, torch.Tensor) and bool((v < 0).any()):
            raise ValueError("f: the semigroup estimators here need f >= 0 (densities, ratios); "
                             "got negative values")
        return torch.log(v) if isinstance(v, torch.Tensor) else v
    return log_f


def ou_semigroup(f, x, t, *, sigma=1.0, beta=1.0, method="mc", n_samples=4096, n_nodes=24,
                 generator=None, return_stderr=False):
    """U_t f(x) = E f(e^{-beta t} x + sigma sqrt(1 - e^{-2 beta t}) Z) for f >= 0; x (..., d) -> (...).

    Computed as exp(log U_t f); the stderr is that of the plain Monte Carlo mean."""
    est = log_ou_semigroup(_exp_of(f), x, t, sigma=sigma, beta=beta, method=method,
                           n_samples=n_samples, n_nodes=n_nodes, generator=generator, return_stderr=True)
    v = torch.exp(est.value)
    return _ret((v, v * est.stderr), return_stderr)


def heat_semigroup(f, x, s, *, sigma=1.0, method="mc", n_samples=4096, n_nodes=24, generator=None,
                   return_stderr=False):
    """Q_s f(x) = E f(x + sigma sqrt(s) Z) for f >= 0; x (..., d) -> (...)."""
    est = log_heat_semigroup(_exp_of(f), x, s, sigma=sigma, method=method, n_samples=n_samples,
                             n_nodes=n_nodes, generator=generator, return_stderr=True)
    v = torch.exp(est.value)
    return _ret((v, v * est.stderr), return_stderr)


def grad_log_ou_semigroup(log_f, x, t, *, sigma=1.0, beta=1.0, method="mc", n_samples=4096, n_nodes=24,
                          generator=None, return_stderr=False):
    """grad_x log U_t f(x) = e^{-beta t} E[f(Y) grad log f(Y)] / E f(Y), Y = e^{-beta t} x + s Z.

    log_f must be differentiable by autograd. x: (..., d) -> (..., d)."""
    check_callable("log_f", log_f)
    a, s = _ou_coeffs(t, sigma, beta)
    return _ret(_grad_log_expect(log_f, _check_x(x), a, s, method, n_samples, n_nodes, generator),
                return_stderr)


def grad_log_heat_semigroup(log_f, x, s, *, sigma=1.0, method="mc", n_samples=4096, n_nodes=24,
                            generator=None, return_stderr=False):
    """grad_x log Q_s f(x) = E[f(Y) grad log f(Y)] / E f(Y), Y = x + sigma sqrt(s) Z; (..., d) -> (..., d)."""
    check_callable("log_f", log_f)
    a, sd = _heat_coeffs(s, sigma)
    return _ret(_grad_log_expect(log_f, _check_x(x), a, sd, method, n_samples, n_nodes, generator),
                return_stderr)


def ou_score_from_semigroup(log_f, x, t, *, sigma=1.0, beta=1.0, **kwargs):
    """grad log p_t(x) = -x / sigma^2 + grad log U_t f(x), f = d pi / d phi_{sigma^2} (given as log f).

    kwargs go to grad_log_ou_semigroup (method, n_samples, n_nodes, generator, return_stderr)."""
    est = grad_log_ou_semigroup(log_f, x, t, sigma=sigma, beta=beta, **kwargs)
    if isinstance(est, Estimate):
        return Estimate(est.value - x / sigma ** 2, est.stderr)
    return est - x / sigma ** 2


def follmer_drift_from_semigroup(log_f, x, t, *, sigma=1.0, **kwargs):
    """b(x, t) = sigma^2 grad log Q_{1-t} f(x), f = d pi / d phi_{sigma^2}; t in [0, 1]."""
    t = float(check_time("t", t, 0.0, 1.0))
    est = grad_log_heat_semigroup(log_f, x, 1.0 - t, sigma=sigma, **kwargs)
    s2 = float(sigma) ** 2
    if isinstance(est, Estimate):
        return Estimate(s2 * est.value, s2 * est.stderr)
    return s2 * est
