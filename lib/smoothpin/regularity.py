"""Regularity constants of f = d(pi)/dN(0, sigma^2 I) and of U_t f, estimated on a grid.

Chapter "The Ornstein-Uhlenbeck semigroup" (chapters/03-ou-semigroup.md) proves that the OU
semigroup U_t f(x) = E f(a x + sqrt(s2) Z), a = e^{-beta t}, s2 = sigma^2 (1 - a^2), passes the
regularity of f on to U_t f. This module measures the constants involved, for a pointwise,
autograd-differentiable ``log_f`` ((N, d) -> (N,)) on grid points x (N, d):

    G        = max ||grad log f||              k_minus, k_plus = min, max eig(hess log f)
    L        = max ||hess log f||_op            c, C            = min f, max f
    Lip(f)   = max ||grad f||                  Lip(grad f)     = max ||hess f||_op
(``regularity_constants``), and the secant constant max ||F(x) - F(y)|| / ||x - y|| of a field
(``secant_lipschitz``, autograd-free). A grid maximum is a lower estimate of the supremum over the
grid's convex hull (for a C^1 field there, Lip = sup ||DF||_op by the mean value theorem) and
converges as the grid is refined; constants on all of R^d need an argument, not a grid.

``ou_inherited_bounds`` gives the chapter's bounds for U_t f from the constants of f on R^d:
    sup ||grad log U_t f|| <= a G,   Lip(U_t f) <= a Lip(f),   Lip(grad U_t f) <= a^2 Lip(grad f),
    max(a^2 k_minus, -a^2 / s2) I <= hess log U_t f <= a^2 min(k_plus + G^2, k_plus / (1 - s2 k_plus)) I,
the last branch only when s2 k_plus < 1 (Brascamp-Lieb; equality for Gaussian pi).

``CosineTilt`` is a smooth non-Gaussian target with closed forms that meets Tzen & Raginsky's
assumptions on all of R^d: f(x) = (1 + eps cos(omega . x)) / n_eps, n_eps = 1 + eps e^{-sigma^2 |omega|^2/2},
and U_t f(x) = (1 + eps e^{-s2 |omega|^2/2} cos(a omega . x)) / n_eps, because
E cos(omega . (a x + sqrt(s2) Z)) = e^{-s2 |omega|^2/2} cos(a omega . x).

Derivatives come from torch.autograd (double backward); outputs keep the dtype and device of x.
"""
from __future__ import annotations

import math

import torch

from ._checks import check_callable, check_finite, check_int, check_positive, check_tensor, check_time

__all__ = ["box_grid", "grad_log", "regularity_constants", "secant_lipschitz",
           "ou_inherited_bounds", "CosineTilt"]


def _points(x):
    """Validate x (..., d) with at least one point; return it flattened to (N, d)."""
    check_tensor("x", x, 1)
    if x.numel() == 0:
        raise ValueError(f"x: expected at least one point of shape (..., d), got {tuple(x.shape)}")
    return check_finite("x", x).reshape(-1, x.shape[-1])


def box_grid(lim, n, dim=1, *, dtype=torch.float64, device=None):
    """Points of the box [-lim, lim]^dim, n per side (endpoints included): a tensor (n**dim, dim).

    Raises ValueError for lim <= 0, n < 2 or dim < 1.
    """
    check_positive("lim", float(lim))
    n, dim = check_int("n", n, 2), check_int("dim", dim, 1)
    xs = torch.linspace(-float(lim), float(lim), n, dtype=dtype, device=device)
    mesh = torch.meshgrid(*([xs] * dim), indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)


def _derivatives(log_f, x, hessian=True):
    """log f (N,), grad log f (N, d) and the symmetrised hess log f (N, d, d) in one forward pass.

    log_f must act point by point (row n of the output depends on x[n] only); then one backward
    pass per coordinate of the gradient gives all N Hessians.
    """
    check_callable("log_f", log_f)
    with torch.enable_grad():
        y = x.detach().requires_grad_(True)
        val = log_f(y)
        if not isinstance(val, torch.Tensor) or val.shape != x.shape[:1]:
            raise ValueError(f"log_f: must map (N, d) to (N,), got {getattr(val, 'shape', type(val))}")
        if not bool(torch.isfinite(val).all()):
            raise ValueError("log_f: not finite at some points (f = 0 or overflow); shrink the grid")
        (g,) = torch.autograd.grad(val.sum(), y, create_graph=hessian)
        if not hessian:
            return val.detach(), g, None
        d = x.shape[1]
        rows = [torch.autograd.grad(g[:, i].sum(), y, retain_graph=i + 1 < d)[0] for i in range(d)]
    H = torch.stack(rows, dim=-2)
    return val.detach(), g.detach(), 0.5 * (H + H.transpose(-1, -2))


def grad_log(log_f, x):
    """grad log f(x) by autograd; x (..., d) -> (..., d). ``log_f`` maps (N, d) -> (N,) pointwise."""
    xf = _points(x)
    return _derivatives(log_f, xf, hessian=False)[1].reshape(x.shape)


def regularity_constants(log_f, x):
    """Grid estimates of the constants of f from log f, over the points x (..., d); a dict of 0-dim tensors.

    Keys: ``sup_grad_log`` G = max ||grad log f||; ``lip_grad_log`` L = max ||hess log f||_op
    (= max(|k_minus|, |k_plus|)); ``k_minus``, ``k_plus`` = min, max eigenvalue of hess log f;
    ``f_min``, ``f_max``; ``lip_f`` = max ||grad f|| = max f ||grad log f||; ``lip_grad_f`` =
    max ||hess f||_op with hess f = f (hess log f + grad log f grad log f^T).
    Raises ValueError for bad x, or a log_f that does not map (N, d) to finite values (N,).
    """
    lf, g, H = _derivatives(log_f, _points(x))
    f = lf.exp()
    ev = torch.linalg.eigvalsh(H)
    hess_f = f[:, None, None] * (H + g[:, :, None] * g[:, None, :])
    return {
        "sup_grad_log": g.norm(dim=-1).max(), "lip_grad_log": ev.abs().amax(),
        "k_minus": ev.min(), "k_plus": ev.max(), "f_min": f.min(), "f_max": f.max(),
        "lip_f": (f * g.norm(dim=-1)).max(), "lip_grad_f": torch.linalg.eigvalsh(hess_f).abs().amax(),
    }


def secant_lipschitz(field, x, *, chunk=1024):
    """max_{m != n} ||F(x_m) - F(x_n)|| / ||x_m - x_n|| over all pairs of points x (..., d); 0-dim tensor.

    ``field`` maps (N, d) -> (N, k). Needs no derivatives (an independent check on the Jacobian
    constants): for a C^1 field it is <= sup ||DF||_op over the convex hull and approaches it on a
    fine grid. Costs O(N^2 (d + k)), in row chunks.
    """
    check_callable("field", field)
    x = _points(x)
    if x.shape[0] < 2:
        raise ValueError("x: need at least two points for a secant estimate")
    with torch.no_grad():
        F = field(x)
        if not isinstance(F, torch.Tensor) or F.dim() != 2 or F.shape[0] != x.shape[0]:
            raise ValueError(f"field: must map (N, d) to (N, k), got {getattr(F, 'shape', type(F))}")
        best = torch.zeros((), dtype=x.dtype, device=x.device)
        for start in range(0, x.shape[0], int(chunk)):
            dx = torch.cdist(x[start:start + chunk], x)
            dF = torch.cdist(F[start:start + chunk], F)
            ratio = torch.where(dx > 0, dF / dx.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(dx))
            best = torch.maximum(best, ratio.max())
    return best


def ou_inherited_bounds(t, *, G=math.inf, k_minus=-math.inf, k_plus=math.inf, lip_f=math.inf,
                        lip_grad_f=math.inf, sigma=1.0, beta=1.0):
    """Bounds on the constants of U_t f from those of f on R^d (pass what is known); a dict of floats.

    With a = exp(-beta t), s2 = sigma^2 (1 - a^2), G = sup ||grad log f||,
    k_minus I <= hess log f <= k_plus I:

    - ``sup_grad_log`` = a G                               (bound on sup ||grad log U_t f||)
    - ``hess_lower`` = max(a^2 k_minus, -a^2 / s2)         (hess log U_t f >= hess_lower I)
    - ``hess_upper`` = a^2 min(k_plus + G^2, k_plus / (1 - s2 k_plus) if s2 k_plus < 1 else inf)
    - ``lip_grad_log`` = max(|hess_lower|, |hess_upper|)   (Lipschitz constant of grad log U_t f)
    - ``lip_f`` = a lip_f, ``lip_grad_f`` = a^2 lip_grad_f (Lipschitz constants of U_t f, grad U_t f)

    Unknown constants default to +-inf (no information). Inputs are floats or 0-dim tensors.
    Raises ValueError for t < 0, sigma <= 0, beta <= 0, negative or NaN G / lip constants, or
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
    s2 = float(sigma) ** 2 * -math.expm1(-2.0 * float(beta) * t)
    if a2 == 0.0:  # t -> inf: U_t f is the constant 1 and every constant vanishes
        return dict.fromkeys(("sup_grad_log", "hess_lower", "hess_upper", "lip_grad_log", "lip_f",
                              "lip_grad_f"), 0.0)
    # hess log U_t f = a^2 (E_nu hess log f + Cov_nu grad log f), nu = law of X_0 given X_t = x.
    lower = a2 * km                       # Cov_nu >= 0
    if s2 > 0:                            # hess log p_t >= -I / s2, and hess log U_t f = that + I / sigma^2
        lower = max(lower, -a2 / s2)
    upper = kp + G * G                    # Cov_nu <= G^2 I
    if s2 * kp < 1.0:                     # nu is (1/s2 - k_plus)-strongly log-concave: Brascamp-Lieb
        upper = min(upper, kp / (1.0 - s2 * kp))
    upper *= a2
    return {"sup_grad_log": math.sqrt(a2) * G, "hess_lower": lower, "hess_upper": upper,
            "lip_grad_log": max(abs(lower), abs(upper)), "lip_f": math.sqrt(a2) * lip_f,
            "lip_grad_f": a2 * lip_grad_f}


class CosineTilt:
    """pi = N(0, sigma^2 I) tilted by f(x) = (1 + eps cos(omega . x)) / n_eps, 0 <= eps < 1.

    n_eps = 1 + eps exp(-sigma^2 |omega|^2 / 2) makes E_phi f = 1; omega: (d,). Closed forms, for
    x (..., d): ``log_f(x)``, ``log_u(x, t)`` = log U_t f (OU semigroup with this sigma and
    ``beta``), ``log_prob(x)`` = log phi_{sigma^2} + log f, ``score(x)``, and ``sample(n, generator)``
    (rejection from phi_{sigma^2}, acceptance (1 + eps cos) / (1 + eps)).
    Raises ValueError for eps outside [0, 1), sigma <= 0, beta <= 0 or omega not 1-D and finite.
    """

    log_Z = 0.0

    def __init__(self, omega, eps=0.5, sigma=1.0, beta=1.0):
        omega = check_tensor("omega", torch.as_tensor(omega), 1)
        if omega.dim() != 1:
            raise ValueError(f"omega: expected a frequency vector of shape (d,), got {tuple(omega.shape)}")
        check_finite("omega", omega)
        if not 0.0 <= float(eps) < 1.0:
            raise ValueError(f"eps: need 0 <= eps < 1 so that f > 0, got {eps}")
        self.omega, self.eps, self.dim = omega, float(eps), omega.shape[0]
        self.sigma, self.beta = float(check_positive("sigma", sigma)), float(check_positive("beta", beta))
        self.log_norm = math.log1p(self.eps * math.exp(-0.5 * self.sigma ** 2 * float(omega @ omega)))

    def _x(self, x):
        check_tensor("x", x, 1)
        if x.shape[-1] != self.dim:
            raise ValueError(f"x: expected shape (..., {self.dim}), got {tuple(x.shape)}")
        return x

    def log_u(self, x, t):
        """log U_t f(x) = log(1 + eps e^{-s2 |omega|^2/2} cos(a omega . x)) - log n_eps."""
        x, t = self._x(x), float(check_time("t", t, 0.0, math.inf))
        w = self.omega.to(dtype=x.dtype, device=x.device)
        s2 = self.sigma ** 2 * -math.expm1(-2.0 * self.beta * t)
        damp = self.eps * math.exp(-0.5 * s2 * float(w @ w))
        return torch.log1p(damp * torch.cos(math.exp(-self.beta * t) * (x @ w))) - self.log_norm

    def log_f(self, x):
        """log f(x) = log U_0 f(x)."""
        return self.log_u(x, 0.0)

    def log_prob(self, x):
        """log pi(x) = log phi_{sigma^2}(x) + log f(x)."""
        return (-0.5 * (x * x).sum(-1) / self.sigma ** 2
                - 0.5 * self.dim * math.log(2 * math.pi * self.sigma ** 2) + self.log_f(x))

    def score(self, x):
        """grad log pi(x) = -x / sigma^2 - eps omega sin(omega . x) / (1 + eps cos(omega . x))."""
        x = self._x(x)
        w = self.omega.to(dtype=x.dtype, device=x.device)
        u = x @ w
        return -x / self.sigma ** 2 - (self.eps * torch.sin(u) / (1 + self.eps * torch.cos(u)))[..., None] * w

    def sample(self, n, generator=None, dtype=torch.float64, device=None):
        """n exact draws (n, d) by rejection from N(0, sigma^2 I); acceptance rate n_eps / (1 + eps)."""
        n = check_int("n", n)
        w = self.omega.to(dtype=dtype, device=device)
        out, have = [], 0
        while have < n:
            z = self.sigma * torch.randn(2 * n, self.dim, generator=generator, dtype=dtype, device=device)
            u = torch.rand(2 * n, generator=generator, dtype=dtype, device=device)
            keep = z[u * (1 + self.eps) <= 1 + self.eps * torch.cos(z @ w)]
            out.append(keep)
            have += keep.shape[0]
        return torch.cat(out)[:n]
