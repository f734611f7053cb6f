"""Regularity constants of f = d(pi)/dN(0, sigma^2 I) and of U_t f, estimated on a grid.

Chapter "The Ornstein-Uhlenbeck semigroup" (chapters/03-ou-semigroup.md) derives how the OU
semigroup U_t f(x) = E f(e^{-beta t} x + sigma sqrt(1 - e^{-2 beta t}) Z) inherits regularity from f.
This module measures the constants that appear there, for any differentiable log-density-like
callable ``log_f`` (or vector field ``field``) evaluated on a set of points ``x: (N, d)``:

- G       = sup_x ||grad log f(x)||                       (``sup_grad_log``)
- L       = sup_x ||hess log f(x)||_op = Lip(grad log f)   (``lipschitz_grad_log``; Jacobian form)
- Lip(F)  = sup_{x != y} ||F(x) - F(y)|| / ||x - y||       (``secant_lipschitz``; secant form)
- k_minus <= eig(hess log f) <= k_plus                    (``curvature_bounds``)
- c <= f <= C on the points                                (``density_bounds``)
- Lip(f) = sup ||grad f||, Lip(grad f) = sup ||hess f||_op (``regularity_constants``)

On a grid these are estimates of suprema over the grid's convex hull: for a C^1 field on a convex
set, Lip(F) = sup ||DF||_op (mean value theorem); the grid maximum is a lower estimate that converges
as the grid is refined. ``ou_inherited_bounds`` gives the chapter's bounds for U_t f in terms of the
constants of f (a = e^{-beta t}, s2 = sigma^2 (1 - a^2)):

- sup ||grad log U_t f|| <= a G
- with k_minus I <= hess log f <= k_plus I (``curvature_bounds``):
  hess log U_t f >= max(a^2 k_minus, -a^2 / s2) I and hess log U_t f <= a^2 (k_plus + G^2) I, and,
  when s2 k_plus < 1, hess log U_t f <= a^2 k_plus / (1 - s2 k_plus) I (equality for Gaussians).
- Lip(U_t f) <= a Lip(f), Lip(grad U_t f) <= a^2 Lip(grad f), and c <= U_t f <= C.

``CosineTilt`` is a smooth non-Gaussian target with everything in closed form, and one that meets
Tzen & Raginsky's assumptions on all of R^d (f bounded below, f and grad f Lipschitz):
pi = phi_{sigma^2} f with f(x) = (1 + eps cos(omega . x)) / (1 + eps exp(-sigma^2 |omega|^2 / 2)),
and U_t f(x) = (1 + eps exp(-s2 |omega|^2 / 2) cos(a omega . x)) / (1 + eps exp(-sigma^2 |omega|^2 / 2))
because E cos(omega . (a x + sqrt(s2) Z)) = exp(-s2 |omega|^2 / 2) cos(a omega . x).

Derivatives come from torch.autograd (double backward); every function accepts any float dtype and
device and returns tensors of the same dtype and device.
"""
from __future__ import annotations

import math

import torch

from ._checks import check_callable, check_finite, check_positive, check_tensor, check_time

__all__ = ["box_grid", "grad_log", "jacobian_field", "sup_grad_log", "lipschitz_field",
           "lipschitz_grad_log", "curvature_bounds", "secant_lipschitz", "density_bounds",
           "regularity_constants", "ou_inherited_bounds", "CosineTilt"]


def _check_points(x):
    check_tensor("x", x, 2)
    if x.dim() != 2 or x.shape[0] < 1:
        raise ValueError(f"x: expected grid points of shape (N, d) with N >= 1, got {tuple(x.shape)}")
    check_finite("x", x)
    return x


def box_grid(lim, n, dim=1, *, dtype=torch.float64, device=None):
    """Points of the box [-lim, lim]^dim, n per side, as a tensor (n**dim, dim) (endpoints included).

    Raises ValueError for lim <= 0, n < 2 or dim < 1.
    """
    check_positive("lim", float(lim))
    if int(n) != n or n < 2:
        raise ValueError(f"n: need an integer >= 2 points per side, got {n}")
    if int(dim) != dim or dim < 1:
        raise ValueError(f"dim: need an integer >= 1, got {dim}")
    xs = torch.linspace(-float(lim), float(lim), int(n), dtype=dtype, device=device)
    mesh = torch.meshgrid(*([xs] * int(dim)), indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)


def grad_log(log_f, x):
    """grad log f(x) by autograd: x (N, d) -> (N, d). ``log_f`` maps (N, d) -> (N,) pointwise."""
    check_callable("log_f", log_f)
    _check_points(x)
    with torch.enable_grad():
        y = x.detach().requires_grad_(True)
        val = log_f(y)
        if val.shape != x.shape[:1]:
            raise ValueError(f"log_f: must map (N, d) to (N,), got output shape {tuple(val.shape)}")
        (g,) = torch.autograd.grad(val.sum(), y)
    return g


def jacobian_field(field, x):
    """Jacobians DF(x)_{ij} = dF_i/dx_j of a pointwise field F: (N, d) -> (N, d); returns (N, d, d).

    The field must act point by point (output row n depends on x[n] only), as scores do; then one
    backward pass per output coordinate gives all N Jacobians.
    """
    check_callable("field", field)
    _check_points(x)
    with torch.enable_grad():
        y = x.detach().requires_grad_(True)
        F = field(y)
        if F.shape != x.shape:
            raise ValueError(f"field: must map (N, d) to (N, d), got output shape {tuple(F.shape)}")
        rows = [torch.autograd.grad(F[:, i].sum(), y, retain_graph=i + 1 < x.shape[1])[0]
                for i in range(x.shape[1])]
    return torch.stack(rows, dim=-2)


def _grad_log_field(log_f):
    def field(y):
        with torch.enable_grad():
            val = log_f(y)
            return torch.autograd.grad(val.sum(), y, create_graph=True)[0]
    return field


def sup_grad_log(log_f, x):
    """G = max_n ||grad log f(x_n)|| over the points x (N, d); a 0-dim tensor."""
    return grad_log(log_f, x).norm(dim=-1).max()


def lipschitz_field(field, x):
    """max_n ||DF(x_n)||_op (spectral norm of the Jacobian) over the points x (N, d); 0-dim tensor."""
    return torch.linalg.matrix_norm(jacobian_field(field, x), ord=2).max()


def _hessian(log_f, x):
    """Symmetrised hess log f at the points (N, d, d) (symmetric up to rounding)."""
    check_callable("log_f", log_f)
    H = jacobian_field(_grad_log_field(log_f), x)
    return 0.5 * (H + H.transpose(-1, -2))


def lipschitz_grad_log(log_f, x):
    """L = max_n ||hess log f(x_n)||_op over the points x (N, d): Lipschitz constant of grad log f.

    The Hessian is symmetric, so its operator norm is the largest |eigenvalue| (eigvalsh).
    """
    return torch.linalg.eigvalsh(_hessian(log_f, x)).abs().amax()


def curvature_bounds(log_f, x):
    """(k_minus, k_plus) = (min, max) over the points of the eigenvalues of hess log f; 0-dim tensors.

    k_minus I <= hess log f <= k_plus I on the points; lipschitz_grad_log = max(|k_minus|, |k_plus|).
    """
    ev = torch.linalg.eigvalsh(_hessian(log_f, x))
    return ev.min(), ev.max()


def secant_lipschitz(field, x, *, chunk=1024):
    """max_{m != n} ||F(x_m) - F(x_n)|| / ||x_m - x_n|| over all pairs of points; 0-dim tensor.

    Independent of autograd (a check on ``lipschitz_field``): for a C^1 field it is <= the Jacobian
    supremum over the convex hull, and approaches it on a fine grid. Costs O(N^2 d), in row chunks.
    """
    check_callable("field", field)
    _check_points(x)
    if x.shape[0] < 2:
        raise ValueError("x: need at least two distinct points for a secant estimate")
    with torch.no_grad():
        F = field(x)
        if F.shape[0] != x.shape[0] or F.dim() != 2:
            raise ValueError(f"field: must map (N, d) to (N, k), got output shape {tuple(F.shape)}")
        best = torch.zeros((), dtype=x.dtype, device=x.device)
        for start in range(0, x.shape[0], int(chunk)):
            dx = torch.cdist(x[start:start + chunk], x)
            dF = torch.cdist(F[start:start + chunk], F)
            ratio = torch.where(dx > 0, dF / dx.clamp_min(torch.finfo(x.dtype).tiny),
                                torch.zeros_like(dx))
            best = torch.maximum(best, ratio.max())
    return best


def density_bounds(log_f, x):
    """(c, C) = (min_n f(x_n), max_n f(x_n)) over the points x (N, d), computed from log f."""
    check_callable("log_f", log_f)
    _check_points(x)
    with torch.no_grad():
        val = log_f(x)
    if val.shape != x.shape[:1]:
        raise ValueError(f"log_f: must map (N, d) to (N,), got output shape {tuple(val.shape)}")
    return val.min().exp(), val.max().exp()


def regularity_constants(log_f, x):
    """All grid constants of f at once, as a dict of 0-dim tensors.

    Keys: ``sup_grad_log`` (G), ``lip_grad_log`` (L), ``k_minus``, ``k_plus`` (extreme eigenvalues
    of hess log f), ``f_min``, ``f_max`` (c, C), ``lip_f``
    (max ||grad f|| = max f ||grad log f||), ``lip_grad_f`` (max ||hess f||_op with
    hess f = f (hess log f + grad log f grad log f^T)).
    """
    g, H = grad_log(log_f, x), _hessian(log_f, x)
    with torch.no_grad():
        lf = log_f(x)
    f = lf.exp()
    hess_f = f[:, None, None] * (H + g[:, :, None] * g[:, None, :])
    ev = torch.linalg.eigvalsh(H)
    return {
        "sup_grad_log": g.norm(dim=-1).max(),
        "lip_grad_log": ev.abs().amax(), "k_minus": ev.min(), "k_plus": ev.max(),
        "f_min": lf.min().exp(), "f_max": lf.max().exp(),
        "lip_f": (f * g.norm(dim=-1)).max(),
        "lip_grad_f": torch.linalg.eigvalsh(hess_f).abs().amax(),
    }


def ou_inherited_bounds(t, *, G=math.inf, k_minus=-math.inf, k_plus=math.inf, lip_f=math.inf,
                        lip_grad_f=math.inf, sigma=1.0, beta=1.0):
    """The chapter's bounds on the constants of U_t f from those of f (pass what is known).

    With a = exp(-beta t) and s2 = sigma^2 (1 - a^2), for G = sup ||grad log f|| and
    k_minus I <= hess log f <= k_plus I, returns a dict of floats:

    - ``sup_grad_log`` = a G                               (bound on sup ||grad log U_t f||)
    - ``hess_lower`` = max(a^2 k_minus, -a^2 / s2)         (hess log U_t f >= hess_lower I)
    - ``hess_upper`` = a^2 min(k_plus + G^2, k_plus / (1 - s2 k_plus) if s2 k_plus < 1 else inf)
    - ``lip_grad_log`` = max(|hess_lower|, |hess_upper|)   (Lipschitz constant of grad log U_t f)
    - ``lip_f`` = a lip_f, ``lip_grad_f`` = a^2 lip_grad_f (Lipschitz constants of U_t f, grad U_t f)

    Unknown constants default to +-inf (no information). Inputs are floats or 0-dim tensors.
    Raises ValueError for t < 0, sigma <= 0, beta <= 0, negative G / lip constants, NaNs or
    k_minus > k_plus.
    """
    t, G, km, kp = float(t), float(G), float(k_minus), float(k_plus)
    lip_f, lip_grad_f = float(lip_f), float(lip_grad_f)
    check_time("t", t, 0.0, math.inf)
    check_positive("sigma", float(sigma))
    check_positive("beta", float(beta))
    for name, v in (("G", G), ("lip_f", lip_f), ("lip_grad_f", lip_grad_f)):
        if math.isnan(v) or v < 0:
            raise ValueError(f"{name}: must be >= 0 (or inf when unknown), got {v}")
    if math.isnan(km) or math.isnan(kp) or km > kp or km == math.inf or kp == -math.inf:
        raise ValueError(f"k_minus, k_plus: need -inf <= k_minus <= k_plus <= inf, got {km}, {kp}")
    a2 = math.exp(-2.0 * float(beta) * t)
    s2 = float(sigma) ** 2 * (1.0 - a2)
    if a2 == 0.0:  # t -> inf: U_t f is constant, every constant vanishes
        return {k: 0.0 for k in ("sup_grad_log", "hess_lower", "hess_upper", "lip_grad_log",
                                 "lip_f", "lip_grad_f")}
    # hess log U_t f = a^2 (E_nu hess log f + Cov_nu grad log f), nu the f-tilted Gaussian.
    lower = a2 * km  # Cov >= 0
    if s2 > 0:  # p_t = law of a X_0 + sqrt(s2) Z, so hess log p_t >= -I/s2; add I/sigma^2
        lower = max(lower, -a2 / s2)
    upper = kp + G * G  # Cov_nu <= G^2
    if s2 * kp < 1.0:  # Brascamp-Lieb branch: nu is (1/s2 - k_plus)-strongly log-concave
        upper = min(upper, kp / (1.0 - s2 * kp))
    upper *= a2
    return {
        "sup_grad_log": math.sqrt(a2) * G,
        "hess_lower": lower,
        "hess_upper": upper,
        "lip_grad_log": max(abs(lower), abs(upper)),
        "lip_f": math.sqrt(a2) * lip_f,
        "lip_grad_f": a2 * lip_grad_f,
    }


class CosineTilt:
    """pi = N(0, sigma^2 I) tilted by f(x) = (1 + eps cos(omega . x)) / n_eps, 0 <= eps < 1.

    n_eps = 1 + eps exp(-sigma^2 |omega|^2 / 2) makes E_phi f = 1. omega: (d,). Closed forms:
    ``log_f(x)``, ``log_u(x, t)`` = log U_t f (OU semigroup with this sigma and ``beta``),
    ``log_prob(x)`` = log phi + log f, ``score(x)``, ``sample(n, generator)`` (rejection from phi,
    acceptance (1 + eps cos) / (1 + eps)). x: (..., d) -> (...) or (..., d).
    Raises ValueError for eps outside [0, 1), sigma <= 0, beta <= 0 or omega not 1-D finite.
    """

    def __init__(self, omega, eps=0.5, sigma=1.0, beta=1.0):
        omega = check_tensor("omega", torch.as_tensor(omega), 1)
        if omega.dim() != 1:
            raise ValueError(f"omega: expected a frequency vector of shape (d,), got {tuple(omega.shape)}")
        check_finite("omega", omega)
        if not 0.0 <= float(eps) < 1.0:
            raise ValueError(f"eps: need 0 <= eps < 1 so that f > 0, got {eps}")
        self.omega, self.eps = omega, float(eps)
        self.sigma, self.beta = float(check_positive("sigma", float(sigma))), float(check_positive("beta", float(beta)))
        self.dim = omega.shape[0]
        w2 = float((omega * omega).sum())
        self.log_norm = math.log1p(self.eps * math.exp(-0.5 * self.sigma ** 2 * w2))

    def _x(self, x):
        check_tensor("x", x, 1)
        if x.shape[-1] != self.dim:
            raise ValueError(f"x: expected shape (..., {self.dim}), got {tuple(x.shape)}")
        return x

    def log_u(self, x, t):
        """log U_t f(x) = log(1 + eps e^{-s2 |omega|^2/2} cos(a omega . x)) - log n_eps."""
        x = self._x(x)
        check_time("t", float(t), 0.0, math.inf)
        a2 = math.exp(-2.0 * self.beta * float(t))
        w = self.omega.to(dtype=x.dtype, device=x.device)
        damp = self.eps * math.exp(-0.5 * self.sigma ** 2 * (1.0 - a2) * float((w * w).sum()))
        return torch.log1p(damp * torch.cos(math.sqrt(a2) * (x @ w))) - self.log_norm

    def log_f(self, x):
        """log f(x) = log U_0 f(x)."""
        return self.log_u(x, 0.0)

    def log_prob(self, x):
        """log pi(x) = log phi_{sigma^2}(x) + log f(x)."""
        d = self.dim
        return (-0.5 * (x * x).sum(-1) / self.sigma ** 2
                - 0.5 * d * math.log(2 * math.pi * self.sigma ** 2) + self.log_f(x))

    def score(self, x):
        """grad log pi(x) = -x / sigma^2 - eps omega sin(omega . x) / (1 + eps cos(omega . x))."""
        x = self._x(x)
        w = self.omega.to(dtype=x.dtype, device=x.device)
        u = x @ w
        return -x / self.sigma ** 2 - (self.eps * torch.sin(u) / (1 + self.eps * torch.cos(u)))[..., None] * w

    def sample(self, n, generator=None, dtype=torch.float64, device=None):
        """n exact draws (n, d) by rejection from N(0, sigma^2 I); acceptance rate n_eps / (1 + eps)."""
        n = int(n)
        out, have = [], 0
        while have < n:
            z = self.sigma * torch.randn(2 * n, self.dim, generator=generator, dtype=dtype, device=device)
            u = torch.rand(2 * n, generator=generator, dtype=dtype, device=device)
            w = self.omega.to(dtype=dtype, device=device)
            keep = z[u * (1 + self.eps) <= 1 + self.eps * torch.cos(z @ w)]
            out.append(keep)
            have += keep.shape[0]
        return torch.cat(out)[:n]
