"""Regularity that the neural-approximation results need, and how the OU score inherits it
(chapter "Neural approximation of the score", chapters/06-neural-approximation.md).

Tzen & Raginsky (COLT 2019) state their Föllmer-drift approximation result for a density ratio
f = d pi / dN(0, sigma^2 I) with f >= c > 0 and f, grad f both Lipschitz. With a = e^{-B(t)}
(B(t) = int_0^t beta, so a = e^{-beta t} for constant beta) and U_t the OU semigroup, the chapter
proves from the commutation lemma grad U_t f = a U_t grad f that

    U_t f >= c,   sup |grad U_t f| <= a Lip(f),   Lip(grad U_t f) <= a^2 Lip(grad f),

and hence, by the quotient rule, for the non-linear part of the OU score
grad log p_t(x) = -x / sigma^2 + grad log U_t f(x):

    sup |grad log U_t f| <= a Lip(f) / c,
    Lip(grad log U_t f)  <= a^2 Lip(grad f) / c + (a Lip(f) / c)^2.

The bounds on U_t f come from ``regularity.ou_inherited_bounds`` (one place for them); this module
adds the quotient-rule step, a grid estimator of the constants of f for a normalised target, and
the exact change of variables that links the OU score to the Föllmer drift b(y, tau) =
sigma^2 grad log Q_{1-tau} f(y): since U_t f(x) = Q_{1-a^2} f(a x),

    grad log p_t(x) = -x / sigma^2 + (a / sigma^2) b(a x, a^2),     tau(t) = a^2 = e^{-2 B(t)},

and a X_t has the Föllmer marginal at time tau(t) when X_t ~ p_t.
"""
from __future__ import annotations

import math

import torch

from ._checks import check_batch_time, check_callable, check_finite, check_positive, check_tensor, check_time
from .regularity import box_grid, ou_inherited_bounds, regularity_constants
from .targets import log_density_ratio

__all__ = ["density_ratio_constants", "semigroup_constants", "inherited_score_bounds",
           "follmer_time", "ou_score_from_follmer_drift"]


def density_ratio_constants(target, lim=3.0, n=81, sigma=1.0, *, dtype=torch.float64, device=None):
    """Grid estimates of the constants of f = d pi / dN(0, sigma^2 I) on the box [-lim, lim]^d.

    Uses ``regularity_constants`` on ``box_grid(lim, n, target.dim)`` (n**d points). Returns a dict
    of 0-dim tensors: ``c`` = min f, ``C`` = max f, ``lip_f`` = max |grad f| (= Lip(f) on the box),
    ``lip_grad_f`` = max ||hess f||_op (= Lip(grad f)), ``L`` = max(lip_f, lip_grad_f) (the single
    constant of Tzen & Raginsky), ``G`` = max |grad log f|, ``lip_grad_log`` = max ||hess log f||_op.
    Grid maxima are lower estimates of the suprema over the box (exact as the grid is refined).
    ``target`` needs a normalised ``log_prob`` and ``dim``. Raises ValueError for lim <= 0, n < 2,
    sigma <= 0 or a target without a normalised log-density.
    """
    log_f = log_density_ratio(target, sigma)
    x = box_grid(lim, n, int(target.dim), dtype=dtype, device=device)
    k = regularity_constants(log_f, x)
    return {"c": k["f_min"], "C": k["f_max"], "lip_f": k["lip_f"], "lip_grad_f": k["lip_grad_f"],
            "L": torch.maximum(k["lip_f"], k["lip_grad_f"]), "G": k["sup_grad_log"],
            "lip_grad_log": k["lip_grad_log"]}


def semigroup_constants(process, target, x, times):
    """Grid constants of U_t f for a Gaussian-mixture target, from the exact OU marginal p_t.

    U_t f = p_t / phi_{sigma^2}, so log U_t f = ``log_density_ratio(process.marginal(target, t))``
    and grad log U_t f(x) = grad log p_t(x) + x / sigma^2 (``process.score``). For each t in
    ``times`` (1-D tensor or sequence of floats in [0, T]) and the points x (N, d), returns a dict of
    tensors of shape (len(times),) in x's dtype and device: ``sup_grad_log_u`` = max |grad log U_t f|
    (from the score), ``lip_grad_log_u`` = max ||hess log U_t f||_op, ``u_min`` = min U_t f,
    ``lip_u`` = max |grad U_t f|, ``lip_grad_u`` = max ||hess U_t f||_op (``regularity_constants``).
    """
    check_finite("x", check_tensor("x", x, 2))
    times = times.reshape(-1).tolist() if isinstance(times, torch.Tensor) else [float(t) for t in times]
    s2 = float(process.sigma) ** 2
    rows = []
    for t in times:
        k = regularity_constants(log_density_ratio(process.marginal(target, t), process.sigma), x)
        g = process.score(target, x, t) + x / s2
        rows.append([g.norm(dim=-1).max(), k["lip_grad_log"], k["f_min"], k["lip_f"], k["lip_grad_f"]])
    keys = ("sup_grad_log_u", "lip_grad_log_u", "u_min", "lip_u", "lip_grad_u")
    return {key: torch.stack([r[i] for r in rows]) if rows else x.new_zeros(0)
            for i, key in enumerate(keys)}


def _nonneg_or_inf(name, v):
    v = float(v)
    if math.isnan(v) or v < 0:
        raise ValueError(f"{name}: must be >= 0 (or inf when unknown), got {v}")
    return v


def _integrated(t, process):
    """B(t) (float or tensor), checking t against the process (or t >= 0 when process is None)."""
    if process is None:
        return check_time("t", t, 0.0, math.inf)
    if not hasattr(process, "integrated_beta"):
        raise ValueError("process: expected a smoothpin OU process (or None for sigma = beta = 1)")
    return process.integrated_beta(t)


def inherited_score_bounds(t, *, c, lip_f, lip_grad_f, process=None):
    """Bounds on U_t f and on grad log U_t f from the Tzen-Raginsky constants of f.

    With a = e^{-B(t)} (process: an OU; None means sigma = beta = 1, a = e^{-t}) and
    f >= c > 0, Lip(f) <= lip_f, Lip(grad f) <= lip_grad_f, returns a dict:

    - ``u_min``          = c                                   (U_t f >= c)
    - ``lip_u``          = a lip_f                             (sup |grad U_t f|)
    - ``lip_grad_u``     = a^2 lip_grad_f                      (Lip(grad U_t f))
    - ``sup_grad_log_u`` = lip_u / c                           (sup |grad log U_t f|)
    - ``lip_grad_log_u`` = lip_grad_u / c + (lip_u / c)^2      (Lip(grad log U_t f))

    t: float (values are floats) or tensor of any shape (values are tensors of t's shape, dtype
    and device). ``lip_u`` and ``lip_grad_u`` come from ``ou_inherited_bounds``. Raises ValueError
    for c <= 0, negative or NaN Lipschitz constants, or t outside [0, T] (or t < 0 without process).
    """
    c = float(check_positive("c", float(c)))
    lip_f, lip_grad_f = _nonneg_or_inf("lip_f", lip_f), _nonneg_or_inf("lip_grad_f", lip_grad_f)
    B = _integrated(t, process)
    sigma = 1.0 if process is None else float(process.sigma)

    def one(b):
        u = ou_inherited_bounds(b, lip_f=lip_f, lip_grad_f=lip_grad_f, sigma=sigma, beta=1.0)
        g = u["lip_f"] / c
        return {"u_min": c, "lip_u": u["lip_f"], "lip_grad_u": u["lip_grad_f"],
                "sup_grad_log_u": g, "lip_grad_log_u": u["lip_grad_f"] / c + g * g}

    if not isinstance(B, torch.Tensor):
        return one(float(B))
    rows = [one(b) for b in B.detach().reshape(-1).tolist()]
    return {k: torch.tensor([r[k] for r in rows], dtype=B.dtype, device=B.device).reshape(B.shape)
            for k in one(0.0)}


def follmer_time(t, process):
    """tau(t) = a^2 = e^{-2 B(t)}: the Föllmer time whose marginal is the law of a X_t (t float or tensor)."""
    B = _integrated(t, process)
    return torch.exp(-2 * B) if isinstance(B, torch.Tensor) else math.exp(-2 * B)


def ou_score_from_follmer_drift(drift, x, t, process):
    """OU score from a Föllmer drift: s(x, t) = -x / sigma^2 + (a / sigma^2) drift(a x, a^2).

    drift: callable (y: (..., d), tau: float or tensor of shape y.shape[:-1]) -> (..., d), the
    Föllmer drift for the same sigma as ``process`` (an OU); with the exact drift the result is the
    exact OU score grad log p_t(x). x: (..., d); t: float or tensor broadcasting to x.shape[:-1]
    (inside [0, T]). Returns a tensor like x. Raises ValueError for bad x, t or drift output.
    """
    check_callable("drift", drift)
    check_finite("x", check_tensor("x", x, 1))
    B = _integrated(t, process)
    a = torch.exp(-B) if isinstance(B, torch.Tensor) else math.exp(-B)
    if isinstance(a, torch.Tensor):
        a = a.to(x)
        if a.dim():
            check_batch_time("t", a, x.shape[:-1])
            a = a.expand(x.shape[:-1])
            tau, scale = a * a, a[..., None]
        else:
            tau, scale = a * a, a
    else:
        tau, scale = a * a, a
    b = drift(scale * x, tau)
    if not isinstance(b, torch.Tensor) or b.shape != x.shape:
        raise ValueError(f"drift: must return a tensor of shape {tuple(x.shape)}")
    s2 = float(process.sigma) ** 2
    return (scale * b - x) / s2
