"""Targets pi = gamma / Z with exact answers (chapter: targets; DESIGN.md section 3).

GaussianMixture  pi(x) = sum_k w_k N(x; mu_k, Sigma_k). Exact log pi, score grad log pi =
    -sum_k r_k(x) Sigma_k^{-1}(x - mu_k) with responsibilities r_k = softmax_k(log w_k + log N_k)
    (logsumexp), sampling, moments. Each Sigma_k is held in its eigenbasis Sigma_k = Q_k diag(l_k) Q_k^T
    (Q_k = I when Sigma_k is diagonal), computed once in the constructor. Then the law of
    aY + sqrt(v) Z, Y ~ pi, which is every OU and Follmer marginal, has components
    N(a mu_k, Q_k diag(a^2 l_k + v) Q_k^T): scores at per-point times cost two matrix products, no
    per-time Cholesky and no matrix inverse. Evaluation runs in chunks so that the (n, K, d)
    intermediates stay below about 32 MB whatever n is.
Gaussian(mean, covariance)  the one-component mixture.
Funnel(dim=10)  x_1 ~ N(0, 9), x_i | x_1 ~ N(0, e^{x_1}) (Neal's funnel), normalised: ln Z = 0.
MixtureWell()  gamma(x) = sum_k exp(-|x - mu_k|^2 / (2 * 0.05)), mu_k in {-1, 1} x {-2, ..., 2}: the
    DDS/PIS convention (unnormalised bumps, no weights), so Z = 10 * 2 pi * 0.05 = pi, ln Z = ln pi.
Banana(dim=2)  Haario's twisted Gaussian: log gamma = -x_1^2/(2 s^2) - (x_2 + b(x_1^2 - s^2))^2 / 2
    - sum_{i>=3} x_i^2 / 2, ln Z = ln s + (d/2) ln(2 pi).
DoubleWell(dim=2)  log gamma = -x_1^4 + 6 x_1^2 + x_1/2 - sum_{i>=2} x_i^2 / 2 (the FAB "many well"
    factor); ln Z by a 1-D trapezoid rule (spectrally accurate here), sampling by tabulated inverse CDF.
log_density_ratio(target, sigma)  x -> log f(x) = log pi(x) - log phi_{sigma^2}(x), f = d pi / dN(0, sigma^2 I).

Every target exposes dim, log_unnormalised(x), grad_log_unnormalised(x), log_Z, log_prob, score and
sample(n, generator) (x: (..., d) -> (...) or (..., d)); outputs follow x's dtype and device.
"""
from __future__ import annotations

import math

import torch

from ._checks import (as_tensor_like, check_callable, check_finite, check_generator, check_int,
                      check_last_dim, check_nonneg, check_positive, check_spd, check_tensor,
                      check_weights)

__all__ = ["GaussianMixture", "Gaussian", "Funnel", "MixtureWell", "Banana", "DoubleWell",
           "log_density_ratio", "as_mixture"]

LOG2PI = math.log(2 * math.pi)
_CHUNK_ELEMS = 1 << 22  # elements of one (chunk, K, d) intermediate


def _check_x(x, d, name="x"):
    check_tensor(name, x, 1)
    check_last_dim(name, x, d)
    return check_finite(name, x)


def _pass(x, P, kernel, tp, want_lp=True, want_e=True, want_r=False):
    """Trusted core shared by every closed form. x (N, d), P = mixture._params(x).

    kernel(xr, mu, lam, tp, need_e) -> (quad, extra, e), elementwise in eigen coordinates (xr = Q_k^T x):
    the component logit is log w_k + sum_j extra - sum_j quad / 2, and e is the per-component vector
    combined as sum_k r_k Q_k e_k. tp: dict of floats or (N,) tensors (times).
    Layout: points on the last axis. For d <= 8 the coordinates are looped over on (K, chunk) planes
    (about 3x faster than (K, d, chunk) blocks, whose tiny middle-axis sums are slow); otherwise
    blocks. The rotations are one matrix product each way. Chunks keep intermediates in cache and
    memory bounded whatever N is; results go straight into preallocated outputs (per-chunk pieces
    kept alive between the intermediates fragment the CPU heap: peak memory was up to 4x the output).
    Returns [log p (N,)], [sum_k r_k Q_k e_k (N, d)], [r (N, K)].
    """
    N, d = x.shape
    K, Q = P["lam"].shape[0], P["Q"]
    planes = d <= 8
    step = max(256, (1 << 17) // (K if planes else K * d))
    sh = (1, -1) if planes else (1, 1, -1)
    xT, logw = x.T, P["logw"][:, None]
    new = lambda *shape: torch.empty(shape, dtype=x.dtype, device=x.device)
    lps, es, rs = (new(N) if want_lp else None), (new(N, d) if want_e else None), (new(N, K) if want_r else None)
    for i in range(0, N, step):
        tc = {k: v[i:i + step].reshape(sh) if isinstance(v, torch.Tensor) and v.dim() else v
              for k, v in tp.items()}
        xt = xT[:, i:i + step]
        xr = xt[None] if Q is None else (P["QrT"] @ xt).view(K, d, -1)
        if planes:
            parts = [kernel(xr[:, c], P["mu_rot"][:, c, None], P["lam"][:, c, None], tc, want_e)
                     for c in range(d)]
            logits = logw + sum(p[1] for p in parts) - 0.5 * sum(p[0] for p in parts)
        else:
            quad, extra, eb = kernel(xr, P["mu_rot"][:, :, None], P["lam"][:, :, None], tc, want_e)
            logits = logw + extra.sum(1) - 0.5 * quad.sum(1)
        # r = softmax, normalised by its own sum: exp(logits - logsumexp) is not normalised when
        # |log p| >> 1 / eps (float32 near t = 0: logits ~ -1e9 and lp rounds to the max logit).
        m = logits.amax(0)
        r = torch.exp(logits - m)
        tot = r.sum(0)
        r = r / tot
        lp = m + torch.log(tot)
        j = i + lp.shape[0]
        if want_lp:
            lps[i:j] = lp
        if want_r:
            rs[i:j] = r.T
        if want_e:
            if planes and Q is None:
                for c, p in enumerate(parts):
                    es[i:j, c] = (r * p[2]).sum(0)
                continue
            re = torch.stack([r * p[2] for p in parts], 1) if planes else r[:, None, :] * eb
            es[i:j] = (re.sum(0) if Q is None else P["QcT"] @ re.reshape(K * d, -1)).T
    out = [o for o in (lps, es, rs) if o is not None]
    return out[0] if len(out) == 1 else out


def _marginal_kernel(x, mu, lam, tp, need_e):
    """Components N(a mu_k, a^2 Sigma_k + v I): quad = u^2 / l, extra = -(ln l + ln 2 pi) / 2,
    e = u / l = Sigma^{-1}(x - a mu) in eigen coordinates (the score is -sum_k r_k Q_k e_k)."""
    a, v = tp.get("a"), tp.get("v")
    if a is not None:
        lam, mu = a * a * lam + v, a * mu
    u = x - mu
    q = u * (1 / lam)
    return u * q, -0.5 * (torch.log(lam) + LOG2PI), q


class GaussianMixture:
    """pi = sum_k w_k N(mu_k, Sigma_k); weights (K,), means (K, d), covariances (K, d, d).

    Raises ValueError for wrong shapes, non-finite values, weights negative or not summing to one,
    covariances not symmetric positive definite. Parameters keep the dtype/device of ``means``;
    evaluations follow the dtype/device of ``x``.
    """

    def __init__(self, weights, means, covariances):
        means = check_tensor("means", as_tensor_like(means, name="means"), 2)
        if means.dim() != 2:
            raise ValueError(f"means: expected shape (K, d), got {tuple(means.shape)}")
        check_finite("means", means)
        K, d = means.shape
        weights = check_weights("weights", as_tensor_like(weights, means, "weights"))
        if weights.shape[0] != K:
            raise ValueError(f"weights: expected shape ({K},) to match means, got {tuple(weights.shape)}")
        cov = as_tensor_like(covariances, means, "covariances")
        if cov.shape != (K, d, d):
            raise ValueError(f"covariances: expected shape ({K}, {d}, {d}), got {tuple(cov.shape)}")
        check_spd("covariances", cov)
        self._set(weights, means, cov)

    def _set(self, weights, means, cov, lam=None, Q=None):
        self.weights, self.means, self.covariances = weights, means, cov
        if lam is None:
            diag = torch.diagonal(cov, dim1=-2, dim2=-1)
            if bool((cov - torch.diag_embed(diag)).eq(0).all()):
                lam, Q = diag.clone(), None
            else:
                lam, Q = torch.linalg.eigh(cov)
        self._lam, self._Q, self._cache = lam, Q, {}
        return self

    @classmethod
    def isotropic(cls, weights, means, variances):
        """Components N(mu_k, v_k I); variances (K,) or a float."""
        means = as_tensor_like(means, name="means")
        if means.dim() != 2:
            raise ValueError(f"means: expected shape (K, d), got {tuple(means.shape)}")
        v = as_tensor_like(variances, means, "variances")
        check_positive("variances", v)
        v = v.expand(means.shape[0]) if v.dim() == 0 else v
        if v.shape != means.shape[:1]:
            raise ValueError(f"variances: expected a float or shape ({means.shape[0]},), got {tuple(v.shape)}")
        eye = torch.eye(means.shape[1], dtype=means.dtype, device=means.device)
        return cls(weights, means, v[:, None, None] * eye)

    dim = property(lambda self: self.means.shape[1])
    n_components = property(lambda self: self.means.shape[0])
    log_Z = 0.0

    @property
    def mean(self):
        """E_pi[Y] = sum_k w_k mu_k, shape (d,)."""
        return self.weights @ self.means

    @property
    def covariance(self):
        """Cov_pi(Y) = sum_k w_k (Sigma_k + mu_k mu_k^T) - m m^T, shape (d, d)."""
        m = self.mean
        second = torch.einsum("k,kij->ij", self.weights, self.covariances
                              + self.means[:, :, None] * self.means[:, None, :])
        return second - m[:, None] * m[None, :]

    def to(self, device=None, dtype=None):
        """A copy with parameters on ``device`` / in ``dtype`` (no re-validation)."""
        f = lambda t: None if t is None else t.to(device=device, dtype=dtype)
        return GaussianMixture.__new__(GaussianMixture)._set(
            f(self.weights), f(self.means), f(self.covariances), f(self._lam), f(self._Q))

    def _params(self, like):
        key = (like.dtype, like.device)
        P = self._cache.get(key)
        if P is None:
            f = lambda t: None if t is None else t.to(device=like.device, dtype=like.dtype)
            Q, mu, lam = f(self._Q), f(self.means), f(self._lam)
            K, d = mu.shape
            P = dict(Q=Q, lam=lam, logw=torch.log(f(self.weights)), mu=mu,
                     mu_rot=mu if Q is None else torch.einsum("ki,kij->kj", mu, Q))
            if Q is not None:
                P["QrT"] = Q.transpose(1, 2).reshape(K * d, d)   # [(k, j), i] = Q_k[i, j]: rows Q_k^T x
                P["QcT"] = Q.permute(1, 0, 2).reshape(d, K * d)   # [i, (k, j)] = Q_k[i, j]: sum_k Q_k e_k
            self._cache[key] = P
        return P

    def _eval(self, x, a=None, v=None, logp=True, score=True, resp=False):
        """Trusted core. x (N, d); law of a Y + sqrt(v) Z with a, v None, floats or (N,) tensors.

        Returns [log p (N,)], [score (N, d)], [responsibilities (N, K)] as requested.
        """
        tp = {} if a is None else {"a": a, "v": v}
        out = _pass(x, self._params(x), _marginal_kernel, tp, logp, score, resp)
        if not score:
            return out
        if not (logp or resp):
            return out.neg_()                       # fresh from _pass: negate in place
        out[int(logp)].neg_()
        return out

    def log_prob(self, x):
        """log pi(x), x: (..., d) -> (...). Raises ValueError for bad shape / non-finite x."""
        _check_x(x, self.dim)
        return self._eval(x.reshape(-1, self.dim), score=False).reshape(x.shape[:-1])

    def score(self, x):
        """grad log pi(x) = -sum_k r_k(x) Sigma_k^{-1}(x - mu_k), x: (..., d) -> (..., d)."""
        _check_x(x, self.dim)
        return self._eval(x.reshape(-1, self.dim), logp=False).reshape(x.shape)

    def log_prob_and_score(self, x):
        """(log pi(x), grad log pi(x)) in one pass; shapes (...) and (..., d)."""
        _check_x(x, self.dim)
        lp, s = self._eval(x.reshape(-1, self.dim))
        return lp.reshape(x.shape[:-1]), s.reshape(x.shape)

    def responsibilities(self, x):
        """r_k(x) = w_k N(x; mu_k, Sigma_k) / pi(x), x: (..., d) -> (..., K)."""
        _check_x(x, self.dim)
        r = self._eval(x.reshape(-1, self.dim), logp=False, score=False, resp=True)
        return r.reshape(*x.shape[:-1], self.n_components)

    log_unnormalised, grad_log_unnormalised = log_prob, score

    def sample(self, n, generator=None):
        """n draws, shape (n, d): k ~ Categorical(w), Y = mu_k + Q_k diag(sqrt(l_k)) Z."""
        n, g = check_int("n", n, 1), check_generator("generator", generator)
        k = torch.multinomial(self.weights, n, replacement=True, generator=g)
        z = torch.randn(n, self.dim, generator=g, dtype=self.means.dtype, device=self.means.device)
        e = z * self._lam[k].sqrt()
        e = e if self._Q is None else (self._Q[k] @ e[:, :, None])[:, :, 0]
        return self.means[k] + e

    def scaled_plus_noise(self, a, noise_var):
        """Law of a Y + sqrt(noise_var) Z (Y ~ pi): sum_k w_k N(a mu_k, a^2 Sigma_k + v I)."""
        check_finite("a", a)
        check_nonneg("noise_var", noise_var)
        a, v = float(a), float(noise_var)
        if v == 0 and a == 0:
            raise ValueError("noise_var: the law of 0*Y is a point mass; pass noise_var > 0 or a != 0")
        eye = torch.eye(self.dim, dtype=self.means.dtype, device=self.means.device)
        return GaussianMixture.__new__(GaussianMixture)._set(
            self.weights, a * self.means, a * a * self.covariances + v * eye,
            a * a * self._lam + v, self._Q)

    def __repr__(self):
        return f"GaussianMixture(K={self.n_components}, d={self.dim}, dtype={self.means.dtype})"


def Gaussian(mean, covariance):
    """N(mean, covariance) as a one-component GaussianMixture; covariance (d, d), (d,) or float."""
    mean = as_tensor_like(mean, name="mean")
    if mean.dim() != 1:
        raise ValueError(f"mean: expected shape (d,), got {tuple(mean.shape)}")
    cov = as_tensor_like(covariance, mean, "covariance")
    if cov.dim() < 2:
        check_positive("covariance", cov)
        cov = torch.diag_embed(cov.expand(mean.shape[0]))
    w = torch.ones(1, dtype=mean.dtype, device=mean.device)
    return GaussianMixture(w, mean[None], cov[None])


def as_mixture(target, name="target"):
    """The GaussianMixture behind ``target`` (itself, or its ``.mixture``); ValueError otherwise."""
    if isinstance(target, GaussianMixture):
        return target
    if isinstance(getattr(target, "mixture", None), GaussianMixture):
        return target.mixture
    raise ValueError(f"{name}: closed forms need a GaussianMixture (or a target with .mixture), "
                     f"got {type(target).__name__}; use the semigroup estimators for other targets")


class _Target:
    """Shared plumbing: log_prob = log_unnormalised - log_Z, score = grad_log_unnormalised."""

    def log_unnormalised(self, x):
        _check_x(x, self.dim)
        return self._log_gamma(x)

    def grad_log_unnormalised(self, x):
        _check_x(x, self.dim)
        return self._grad(x)

    def log_prob(self, x):
        return self.log_unnormalised(x) - self.log_Z

    score = grad_log_unnormalised

    def _normal(self, n, generator, dtype, device):
        n, g = check_int("n", n, 1), check_generator("generator", generator)
        return torch.randn(n, self.dim, generator=g, dtype=dtype or torch.get_default_dtype(), device=device)


class Funnel(_Target):
    """Neal's funnel: x_1 ~ N(0, scale^2), x_i | x_1 ~ N(0, e^{x_1}), i = 2..dim. ln Z = 0."""

    def __init__(self, dim=10, scale=3.0):
        self.dim, self.scale, self.log_Z = check_int("dim", dim, 2), check_positive("scale", scale), 0.0

    def _log_gamma(self, x):
        x1, r = x[..., 0], x[..., 1:]
        m = self.dim - 1
        return (-0.5 * x1 ** 2 / self.scale ** 2 - math.log(self.scale) - 0.5 * torch.exp(-x1) * (r * r).sum(-1)
                - 0.5 * m * x1 - 0.5 * self.dim * LOG2PI)

    def _grad(self, x):
        x1, r = x[..., :1], x[..., 1:]
        e = torch.exp(-x1)
        g1 = -x1 / self.scale ** 2 + 0.5 * e * (r * r).sum(-1, keepdim=True) - 0.5 * (self.dim - 1)
        return torch.cat([g1, -r * e], -1)

    mean = property(lambda self: torch.zeros(self.dim))
    covariance = property(lambda self: torch.diag(torch.tensor(
        [self.scale ** 2] + [math.exp(self.scale ** 2 / 2)] * (self.dim - 1))))

    def sample(self, n, generator=None, dtype=None, device=None):
        z = self._normal(n, generator, dtype, device)
        x1 = self.scale * z[:, :1]
        return torch.cat([x1, torch.exp(0.5 * x1) * z[:, 1:]], -1)


class MixtureWell(_Target):
    """gamma(x) = sum_k exp(-|x - mu_k|^2 / (2 variance)), mu_k in {-s, s} x {-2s, ..., 2s}.

    ln Z = ln(K (2 pi variance)^{d/2}) = ln pi for the defaults (K = 10, variance = 0.05), the
    convention of the DDS code. ``mixture`` is the normalised GaussianMixture (equal weights), held in
    float64 so that evaluations in float64 are exact (they follow x's dtype); ``dtype`` (default:
    torch's default) is the dtype of ``sample``.
    """

    def __init__(self, variance=0.05, spacing=1.0, dtype=None):
        check_positive("variance", variance)
        check_positive("spacing", spacing)
        s, self._dtype = float(spacing), dtype or torch.get_default_dtype()
        mu = torch.tensor([[a * s, b * s] for a in (-1, 1) for b in (-2, -1, 0, 1, 2)], dtype=torch.float64)
        self.mixture = GaussianMixture.isotropic(torch.full((10,), 0.1, dtype=torch.float64), mu, variance)
        self.dim, self.log_Z = 2, math.log(10 * 2 * math.pi * variance)

    _log_gamma = lambda self, x: self.mixture._eval(x.reshape(-1, 2), score=False).reshape(x.shape[:-1]) + self.log_Z
    _grad = lambda self, x: self.mixture._eval(x.reshape(-1, 2), logp=False).reshape(x.shape)
    mean = property(lambda self: self.mixture.mean)
    covariance = property(lambda self: self.mixture.covariance)

    def sample(self, n, generator=None, dtype=None, device=None):
        return self.mixture.sample(n, generator).to(dtype=dtype or self._dtype, device=device)


class Banana(_Target):
    """Twisted Gaussian: x_1 = s z_1, x_2 = z_2 - b (x_1^2 - s^2), x_i = z_i (i >= 3).

    log gamma = -x_1^2/(2 s^2) - (x_2 + b(x_1^2 - s^2))^2/2 - sum_{i>=3} x_i^2/2,
    ln Z = ln s + (d/2) ln 2 pi. Mean 0; Var x_1 = s^2, Var x_2 = 1 + 2 b^2 s^4.
    Haario et al.'s setting is Banana(b=0.03, scale=10); the default is a compact 2-D banana.
    """

    def __init__(self, dim=2, b=0.5, scale=1.5):
        self.dim, self.b, self.scale = check_int("dim", dim, 2), float(check_finite("b", b)), check_positive("scale", scale)
        self.log_Z = math.log(self.scale) + 0.5 * self.dim * LOG2PI

    def _log_gamma(self, x):
        x1 = x[..., 0]
        y2 = x[..., 1] + self.b * (x1 ** 2 - self.scale ** 2)
        return -0.5 * x1 ** 2 / self.scale ** 2 - 0.5 * y2 ** 2 - 0.5 * (x[..., 2:] ** 2).sum(-1)

    def _grad(self, x):
        x1 = x[..., :1]
        y2 = x[..., 1:2] + self.b * (x1 ** 2 - self.scale ** 2)
        return torch.cat([-x1 / self.scale ** 2 - 2 * self.b * x1 * y2, -y2, -x[..., 2:]], -1)

    mean = property(lambda self: torch.zeros(self.dim))
    covariance = property(lambda self: torch.diag(torch.tensor(
        [self.scale ** 2, 1 + 2 * self.b ** 2 * self.scale ** 4] + [1.0] * (self.dim - 2))))

    def sample(self, n, generator=None, dtype=None, device=None):
        z = self._normal(n, generator, dtype, device)
        x1 = self.scale * z[:, :1]
        return torch.cat([x1, z[:, 1:2] - self.b * (x1 ** 2 - self.scale ** 2), z[:, 2:]], -1)


class DoubleWell(_Target):
    """log gamma = -q x_1^4 + c x_1^2 + l x_1 - sum_{i>=2} x_i^2 / 2 (defaults q=1, c=6, l=0.5).

    ln Z = ln int exp(-q u^4 + c u^2 + l u) du + ((d-1)/2) ln 2 pi; the 1-D integral by the
    trapezoid rule on 2^16 cells (error far below 1e-12 for this smooth, fast-decaying integrand).
    sample() draws x_1 by the tabulated inverse CDF on the same grid (piecewise-linear CDF).
    """

    def __init__(self, dim=2, quartic=1.0, quadratic=6.0, linear=0.5):
        self.dim, self.quartic = check_int("dim", dim, 1), check_positive("quartic", quartic)
        self.quadratic, self.linear = float(check_finite("quadratic", quadratic)), float(check_finite("linear", linear))
        R = 2 * math.sqrt(max(self.quadratic, 0) / self.quartic) + (80 / self.quartic) ** 0.25 + abs(self.linear)
        u = torch.linspace(-R, R, (1 << 16) + 1, dtype=torch.float64)
        e = self._e1(u)
        w = torch.exp(e - e.max())
        cell = 0.5 * (w[1:] + w[:-1]) * (u[1] - u[0])
        self._grid, self._cdf = u, torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(cell, 0)])
        self.log_Z = float(e.max() + torch.log(cell.sum())) + 0.5 * (self.dim - 1) * LOG2PI

    def _e1(self, u):
        return -self.quartic * u ** 4 + self.quadratic * u ** 2 + self.linear * u

    def _log_gamma(self, x):
        return self._e1(x[..., 0]) - 0.5 * (x[..., 1:] ** 2).sum(-1)

    def _grad(self, x):
        x1 = x[..., :1]
        return torch.cat([-4 * self.quartic * x1 ** 3 + 2 * self.quadratic * x1 + self.linear, -x[..., 1:]], -1)

    def sample(self, n, generator=None, dtype=None, device=None):
        z = self._normal(n, generator, torch.float64, None)
        uu = torch.special.ndtr(z[:, 0]) * self._cdf[-1]      # uniform from the same generator
        i = torch.searchsorted(self._cdf, uu).clamp(1, self._grid.numel() - 1)
        c0, c1 = self._cdf[i - 1], self._cdf[i]
        x1 = self._grid[i - 1] + (uu - c0) / (c1 - c0).clamp_min(1e-300) * (self._grid[i] - self._grid[i - 1])
        x = torch.cat([x1[:, None], z[:, 1:]], -1)
        return x.to(dtype=dtype or torch.get_default_dtype(), device=device)


def log_density_ratio(target, sigma=1.0):
    """Callable x -> log f(x) = log pi(x) + |x|^2/(2 sigma^2) + (d/2) ln(2 pi sigma^2), f = d pi / d phi_{sigma^2}.

    ``target`` needs a normalised ``log_prob``; raises ValueError otherwise or for sigma <= 0.
    """
    check_positive("sigma", sigma)
    check_callable("target.log_prob", getattr(target, "log_prob", None))
    if getattr(target, "log_Z", 0.0) is None:
        raise ValueError("target: log_Z is unknown, so log pi is not available; pass a normalised target")
    s2, d = float(sigma) ** 2, target.dim
    return lambda x: target.log_prob(x) + 0.5 * (x * x).sum(-1) / s2 + 0.5 * d * (LOG2PI + math.log(s2))
