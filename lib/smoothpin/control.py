"""The stochastic-control view of the Föllmer process (chapter "The stochastic-control view").

Controlled SDE on [0, 1]:  dX = u(X, t) dt + sigma dW,  X_0 = 0; reference P: u = 0, so X_1 ~ phi_{sigma^2}.
Target path measure Q* = f(X_1) P with f = d pi / d phi_{sigma^2} = gamma / (Z phi_{sigma^2}).

Value function (cost int |u|^2 / (2 sigma^2) dt + g(X_1), terminal cost g = -log f):
    V(x, t) = -log Q_{1-t} f(x),   Q_s f(x) = E f(x + sigma sqrt(s) Z)  (heat semigroup),
solves the Hamilton-Jacobi-Bellman equation
    d_t V + (sigma^2 / 2) Lap V - (sigma^2 / 2) |grad V|^2 = 0,   V(x, 1) = -log f(x),
whose Hopf-Cole transform h = e^{-V} solves the backward heat equation d_t h + (sigma^2/2) Lap h = 0.
The optimal control is u* = -sigma^2 grad V = sigma^2 grad log Q_{1-t} f, the Föllmer drift.
With the unnormalised terminal cost log phi_{sigma^2} - log gamma = g - ln Z the optimal cost is -ln Z.

For a Gaussian mixture pi = sum_k w_k N(mu_k, Sigma_k) (in each component's eigenbasis), V is exact:
    t < 1/2 (precision form, finite at t = 0):
        log Q_{1-t} f(x) = log int pi(y) exp(eta.y - prec |y|^2 / 2) dy - (d/2) ln(1-t) - |x|^2 / (2 sigma^2 (1-t)),
        eta = x / (sigma^2 (1-t)), prec = t / (sigma^2 (1-t))  (the integral per component in closed form);
    t >= 1/2 (marginal form, finite at t = 1):
        log Q_{1-t} f(x) = log p_t(x) - log phi_{sigma^2 t}(x),  p_t = sum_k w_k N(t mu_k, t^2 Sigma_k + sigma^2 t (1-t) I).

Discrete Girsanov along Euler-Maruyama paths (h = 1/steps, the chain X' = X + u h + sigma sqrt(h) Z):
    energy      E_N = sum_k |u(X_k, t_k)|^2 h / (2 sigma^2)     (Riemann sum of the control energy)
    martingale  M_N = sum_k u(X_k, t_k) . Z_k sqrt(h) / sigma   (mean zero)
    log dQ^u_N / dP_N (path) = E_N + M_N  exactly, so KL(Q^u_N || P_N) = E[E_N] and
    J_N(u) = E[E_N + log phi_{sigma^2}(X_N) - log gamma(X_N)] = E[-log w],  w = gamma / phi * dP_N / dQ^u_N.
    divergence  D_N = sum_k |u_k - v_k|^2 h / (2 sigma^2) for a second drift v: KL(Q^u_N || Q^v_N) = E[D_N].
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ._checks import (check_callable, check_finite, check_generator, check_int, check_positive,
                      check_tensor, check_time)
from .processes import _flat_time, _posterior_kernel
from .sample import LogZEstimate, _logz_from_logw, _run_follmer
from .targets import LOG2PI, _check_x, _pass, as_mixture

__all__ = ["follmer_value_function", "hjb_residual", "HJBResidual", "follmer_path_functionals",
           "FollmerPaths", "log_z_from_log_weights", "ScaledTarget"]


def follmer_value_function(target, x, t, sigma=1.0):
    """V(x, t) = -log Q_{1-t} f(x), f = d pi / d phi_{sigma^2}, exact for a Gaussian-mixture target.

    x: (..., d); t: float or tensor broadcasting to x.shape[:-1], in [0, 1]. Returns (...).
    Differentiable in x and t (autograd). V(x, 1) = -log f(x); V(0, 0) = -log E_phi[f] = 0.
    Raises ValueError for a non-mixture target, bad x, sigma <= 0 or t outside [0, 1].
    """
    mix = as_mixture(target)
    _check_x(x, mix.dim)
    check_positive("sigma", sigma)
    check_time("t", t, 0.0, 1.0)
    s2, d = float(sigma) ** 2, mix.dim
    xf = x.reshape(-1, d)
    tf = _flat_time(t, x)
    if not isinstance(tf, torch.Tensor):
        tf = torch.full((xf.shape[0],), tf, dtype=x.dtype, device=x.device)
    sq = (xf * xf).sum(-1)
    lo = tf < 0.5
    # two regimes, each evaluated only where it is stable; torch.where keeps autograd through t
    tl = torch.where(lo, tf, torch.zeros_like(tf))            # t clamped into the precision regime
    lp = _pass(xf, mix._params(xf), _posterior_kernel,
               {"c": 1 / (s2 * (1 - tl)), "prec": tl / (s2 * (1 - tl))}, want_lp=True, want_e=False)
    log_q_lo = lp - 0.5 * d * torch.log1p(-tl) - 0.5 * sq / (s2 * (1 - tl))
    th = torch.where(lo, torch.ones_like(tf), tf)             # t clamped into the marginal regime
    log_pt = mix._eval(xf, a=th, v=s2 * th * (1 - th), logp=True, score=False)
    log_q_hi = log_pt + 0.5 * sq / (s2 * th) + 0.5 * d * (LOG2PI + torch.log(s2 * th))
    return -torch.where(lo, log_q_lo, log_q_hi).reshape(x.shape[:-1])


class HJBResidual(NamedTuple):
    """residual = d_t V + (sigma^2/2) Lap V - (sigma^2/2) |grad V|^2 and its parts, shapes (...)
    except gradient (..., d); scale = |d_t V| + (sigma^2/2)(|Lap V| + |grad V|^2) for relative checks."""
    residual: torch.Tensor
    time_derivative: torch.Tensor
    laplacian: torch.Tensor
    gradient: torch.Tensor
    scale: torch.Tensor


def hjb_residual(value_fn, x, t, sigma=1.0):
    """Residual of the Föllmer HJB equation d_t V + (sigma^2/2) Lap V - (sigma^2/2) |grad V|^2 = 0.

    value_fn(x: (..., d), t: (...)) -> (...) must be twice differentiable by autograd in x and once
    in t. x: (..., d); t: tensor broadcasting to x.shape[:-1] (or a float). Derivatives by autograd
    (d + 2 backward passes). Returns HJBResidual (detached). The optimal control is -sigma^2 grad V.
    """
    check_callable("value_fn", value_fn)
    check_finite("x", check_tensor("x", x, 1))
    check_positive("sigma", sigma)
    s2 = float(sigma) ** 2
    tt = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[:-1]).clone()
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        tg = tt.detach().requires_grad_(True)
        v = value_fn(xg, tg)
        if not isinstance(v, torch.Tensor) or v.shape != x.shape[:-1]:
            raise ValueError(f"value_fn: expected a tensor of shape {tuple(x.shape[:-1])}")
        gx, gt = torch.autograd.grad(v.sum(), (xg, tg), create_graph=True, materialize_grads=True)
        lap = torch.zeros_like(v)
        for i in range(x.shape[-1] if gx.requires_grad else 0):   # V affine in x: Lap V = 0
            lap = lap + torch.autograd.grad(gx[..., i].sum(), xg, retain_graph=True,
                                            materialize_grads=True)[0][..., i]
    gx, gt, lap = gx.detach(), gt.detach(), lap.detach()
    sq = (gx * gx).sum(-1)
    res = gt + 0.5 * s2 * lap - 0.5 * s2 * sq
    return HJBResidual(res, gt, lap, gx, gt.abs() + 0.5 * s2 * (lap.abs() + sq))


class FollmerPaths(NamedTuple):
    """End points x (n, d) and per-path functionals (n,): energy E_N, martingale M_N, divergence D_N
    (see the module docstring); log dQ^u_N/dP_N = energy + martingale."""
    x: torch.Tensor
    energy: torch.Tensor
    martingale: torch.Tensor
    divergence: torch.Tensor


def follmer_path_functionals(control, n, steps, sigma=1.0, generator=None, *, dim, reference=None,
                             dtype=None, device=None):
    """Simulates dX = u(X, t) dt + sigma dW from X_0 = 0 by ``steps`` Euler-Maruyama steps and
    returns the end points with the Girsanov functionals of each path.

    control(x: (n, d), t: float) -> (n, d) is u; reference (optional, same signature) is a second
    drift v for divergence = sum |u - v|^2 h / (2 sigma^2) (zeros when None). Returns FollmerPaths.
    Raises ValueError for n, steps, dim < 1, sigma <= 0 or non-callables.
    """
    check_callable("control", control)
    if reference is not None:
        check_callable("reference", reference)
    n, steps, dim = check_int("n", n), check_int("steps", steps), check_int("dim", dim)
    check_positive("sigma", sigma)
    check_generator("generator", generator)
    sigma, h = float(sigma), 1.0 / steps
    x0 = torch.zeros(n, dim, dtype=dtype or torch.get_default_dtype(), device=device)
    div = [x0.new_zeros(n)]

    def u(x, t):
        val = control(x, t)
        if reference is not None:
            div[0] = div[0] + ((val - reference(x, t)) ** 2).sum(-1) * (0.5 * h / sigma ** 2)
        return val

    with torch.no_grad():
        x, energy, mart = _run_follmer(u, x0, sigma, steps, generator, track=True)
    return FollmerPaths(x, energy, mart, div[0])


def log_z_from_log_weights(log_w):
    """Importance-sampling ln Z from log weights log_w (n,), e.g. log gamma(X_N) - log phi(X_N) -
    energy - martingale of ``follmer_path_functionals``: ln Z-hat = logsumexp(log w) - ln n, ESS =
    (sum w)^2 / sum w^2, stderr = sqrt((n / ESS - 1) / n) (delta method), the estimator of
    ``sample.log_normalising_constant``. Returns LogZEstimate. Raises ValueError for bad log_w."""
    check_tensor("log_w", log_w, 1)
    if log_w.dim() != 1 or log_w.numel() < 2:
        raise ValueError(f"log_w: expected shape (n,) with n >= 2, got {tuple(log_w.shape)}")
    if bool(torch.isnan(log_w).any()):
        raise ValueError("log_w: contains NaN")
    return LogZEstimate(*_logz_from_logw(log_w))


class ScaledTarget:
    """gamma = Z pi for a normalised target pi and a chosen ln Z: an unnormalised target with a
    known normalising constant. log_unnormalised(x) = pi.log_prob(x) + log_Z; grad_log_unnormalised
    = pi.score; log_prob, score, sample, dim from pi; ``mixture`` when pi is a Gaussian mixture (so
    the exact closed forms apply). Raises ValueError for a non-finite log_Z or a target without
    log_prob."""

    def __init__(self, target, log_Z):
        check_callable("target.log_prob", getattr(target, "log_prob", None))
        self.target, self.log_Z, self.dim = target, float(check_finite("log_Z", log_Z)), target.dim
        try:
            self.mixture = as_mixture(target)
        except ValueError:
            pass

    def log_unnormalised(self, x):
        return self.target.log_prob(x) + self.log_Z

    def grad_log_unnormalised(self, x):
        return self.target.score(x)

    def log_prob(self, x):
        return self.target.log_prob(x)

    def score(self, x):
        return self.target.score(x)

    def sample(self, n, generator=None):
        return self.target.sample(n, generator=generator)

    def __repr__(self):
        return f"ScaledTarget({self.target!r}, log_Z={self.log_Z:g})"
