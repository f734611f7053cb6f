"""The two noising processes of the paper (DESIGN.md section 3): smooth (OU) and pin (Föllmer).

OU (VP-SDE)   dX_t = -beta(t) X_t dt + sigma sqrt(2 beta(t)) dW_t on [0, T], X_0 ~ pi.
    With B(t) = int_0^t beta:  X_t | X_0 = x ~ N(a x, s^2 I),  a = e^{-B(t)},  s^2 = sigma^2 (1 - a^2).
    Invariant law N(0, sigma^2 I). For a Gaussian-mixture pi the marginal is
    p_t = sum_k w_k N(a mu_k, a^2 Sigma_k + s^2 I) and the score grad log p_t is exact.
    Reverse SDE (s = T - t): dY = [beta Y + 2 beta sigma^2 grad log p_{T-s}(Y)] ds + sigma sqrt(2 beta) dB.

Föllmer       reference dX = sigma dW on [0, 1], X_0 = 0; pinned (bridge) marginal
    X_t = t Y + sigma sqrt(t (1 - t)) Z, Y ~ pi. Drift b(x, t) = sigma^2 grad log Q_{1-t} f(x)
    = (E[Y | X_t = x] - x) / (1 - t) = sigma^2 grad log p_t(x) + x / t; dX = b dt + sigma dW gives X_1 ~ pi.
    Endpoints: b(x, 0) = E[Y e^{x.Y/sigma^2}] / E[e^{x.Y/sigma^2}] - x (= E_pi[Y] at x = 0, where X_0 is),
    b(x, 1) = sigma^2 grad log pi(x) + x. Numerics: for t < 1/2 the posterior-mean form, written in
    precision form (stable down to t = 0, no 0/0); for t >= 1/2 the score form (no cancellation at t = 1).

Times are floats or tensors broadcasting against x.shape[:-1]; outputs follow x's dtype and device.
"""
from __future__ import annotations

import math

import torch

from ._checks import (as_tensor_like, check_batch_time, check_callable, check_finite, check_generator,
                      check_last_dim, check_positive, check_tensor, check_time)
from .targets import LOG2PI, Gaussian, _pass, as_mixture

__all__ = ["OU", "Follmer"]


def _check_x(x, d):
    check_tensor("x", x, 1)
    check_last_dim("x", x, d)
    return check_finite("x", x)


def _flat_time(t, x):
    """t (float or tensor broadcasting to x.shape[:-1]) -> float or (N,) tensor matching x.reshape(-1, d)."""
    if isinstance(t, torch.Tensor) and t.dim() > 0:
        check_batch_time("t", t, x.shape[:-1])
        return t.to(x).expand(x.shape[:-1]).reshape(-1)
    return float(t)


def _exp(v):
    return torch.exp(v) if isinstance(v, torch.Tensor) else math.exp(v)


def _expm1(v):
    return torch.expm1(v) if isinstance(v, torch.Tensor) else math.expm1(v)


class OU:
    """Ornstein-Uhlenbeck / VP-SDE  dX = -beta(t) X dt + sigma sqrt(2 beta(t)) dW  on [0, T].

    OU(sigma, beta, T): constant beta. OU.linear(beta_min, beta_max, sigma, T): the DDPM schedule
    beta(t) = beta_min + (beta_max - beta_min) t / T. Raises ValueError for sigma, beta, T <= 0.
    """

    def __init__(self, sigma=1.0, beta=1.0, T=1.0, *, beta_max=None):
        self.sigma = float(check_positive("sigma", sigma))
        self.beta = float(check_positive("beta", beta))
        self.T = float(check_positive("T", T))
        self.beta_max = self.beta if beta_max is None else float(check_positive("beta_max", beta_max))

    @classmethod
    def linear(cls, beta_min=0.1, beta_max=20.0, sigma=1.0, T=1.0):
        """beta(t) = beta_min + (beta_max - beta_min) t / T (Ho et al. 2020; Song et al. 2021)."""
        return cls(sigma=sigma, beta=beta_min, T=T, beta_max=beta_max)

    interval = property(lambda self: (0.0, self.T))

    def _t(self, t):
        return check_time("t", t, 0.0, self.T)

    def beta_at(self, t):
        """beta(t)."""
        t = self._t(t)
        return self.beta + (self.beta_max - self.beta) * t / self.T

    def integrated_beta(self, t):
        """B(t) = int_0^t beta(u) du = beta_min t + (beta_max - beta_min) t^2 / (2 T)."""
        t = self._t(t)
        return self.beta * t + (self.beta_max - self.beta) * t * t / (2 * self.T)

    def mean_std(self, t):
        """(a, s): X_t | X_0 = x ~ N(a x, s^2 I), a = e^{-B(t)}, s = sigma sqrt(1 - e^{-2 B(t)})."""
        B = self.integrated_beta(t)
        s2 = -_expm1(-2 * B)
        return _exp(-B), self.sigma * (s2 ** 0.5)

    def g2(self, t):
        """Squared diffusion coefficient g(t)^2 = 2 beta(t) sigma^2."""
        return 2 * self.beta_at(t) * self.sigma ** 2

    def forward_drift(self, x, t):
        """-beta(t) x."""
        check_finite("x", check_tensor("x", x, 1))
        b = self.beta_at(t)
        if isinstance(b, torch.Tensor) and b.dim():
            check_batch_time("t", b, x.shape[:-1])
            b = b.to(x)[..., None]
        return -b * x

    def reverse_drift(self, score, x, t):
        """beta(t) x + 2 beta(t) sigma^2 s(x, t): the reverse-SDE drift at forward time t.

        ``score``: a tensor like x or a callable s(x, t)."""
        check_finite("x", check_tensor("x", x, 1))
        self._t(t)
        s = score(x, t) if callable(score) else score
        if not isinstance(s, torch.Tensor) or s.shape != x.shape:
            raise ValueError(f"score: expected a tensor of shape {tuple(x.shape)} (or a callable returning one)")
        b = self.beta_at(t)
        if isinstance(b, torch.Tensor) and b.dim():
            check_batch_time("t", b, x.shape[:-1])
            b = b.to(x)[..., None]
        return b * x + 2 * b * self.sigma ** 2 * s

    def sample_transition(self, x0, t, generator=None):
        """a x0 + s Z, Z ~ N(0, I): a draw of X_t given X_0 = x0 (x0: (..., d), t float or (...))."""
        check_finite("x0", check_tensor("x0", x0, 1))
        check_generator("generator", generator)
        self._t(t)
        a, s = self.mean_std(t)
        if isinstance(a, torch.Tensor) and a.dim():
            check_batch_time("t", a, x0.shape[:-1])
            a, s = a.to(x0)[..., None], s.to(x0)[..., None]
        z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        return a * x0 + s * z

    def invariant(self, dim, like=None):
        """The invariant law N(0, sigma^2 I_dim) as a Gaussian."""
        like = torch.zeros(()) if like is None else like
        return Gaussian(torch.zeros(dim, dtype=like.dtype, device=like.device), self.sigma ** 2)

    def marginal(self, target, t):
        """p_t for a Gaussian-mixture target: sum_k w_k N(a mu_k, a^2 Sigma_k + s^2 I) (t a float)."""
        mix = as_mixture(target)
        a, s = self.mean_std(float(self._t(t)))
        return mix.scaled_plus_noise(a, s * s)

    def score(self, target, x, t):
        """Exact grad log p_t(x) for a Gaussian-mixture target; x (..., d), t float or (...)."""
        mix = as_mixture(target)
        _check_x(x, mix.dim)
        self._t(t)
        xf = x.reshape(-1, mix.dim)
        a, s = self.mean_std(_flat_time(t, x))
        return mix._eval(xf, a=a, v=s * s, logp=False).reshape(x.shape)

    def __repr__(self):
        if self.beta_max != self.beta:
            return f"OU.linear(beta_min={self.beta:g}, beta_max={self.beta_max:g}, sigma={self.sigma:g}, T={self.T:g})"
        return f"OU(sigma={self.sigma:g}, beta={self.beta:g}, T={self.T:g})"


def _posterior_kernel(x, mu, lam, tp, need_e):
    """Posterior of Y given X_t = x under the bridge, component N(mu, diag(lam)) in eigen coordinates.

    The likelihood exp(-|x - t y|^2 / (2 sigma^2 t (1-t))) is, in y, exp(eta.y - prec |y|^2 / 2) with
    eta = x / (sigma^2 (1-t)), prec = t / (sigma^2 (1-t)) (both finite at t = 0). Then
    Y | x, k ~ N((mu + lam eta) / (1 + prec lam), lam / (1 + prec lam)) and the component weight is
    w_k (1 + prec lam)^{-1/2} exp(((mu/lam + eta)^2 lam / (1 + prec lam) - mu^2 / lam) / 2)."""
    eta, prec = tp["c"] * x, tp["prec"]
    den = 1 + prec * lam
    m = mu + lam * eta
    extra = 0.5 * (m * m / (lam * den) - mu * mu / lam - torch.log(den))
    return torch.zeros_like(extra), extra, (m / den if need_e else None)


class Follmer:
    """Föllmer process: Brownian motion sigma W on [0, 1] from 0, pinned so that X_1 ~ pi.

    Raises ValueError for sigma <= 0; methods raise for t outside [0, 1] (or (0, 1] where the law
    at t = 0 is a point mass)."""

    interval = (0.0, 1.0)

    def __init__(self, sigma=1.0):
        self.sigma = float(check_positive("sigma", sigma))

    def g2(self, t=None):
        """Squared diffusion coefficient sigma^2 (constant)."""
        return self.sigma ** 2

    def _t(self, t, lo=0.0):
        return check_time("t", t, lo, 1.0)

    def reference_marginal(self, t, dim, like=None):
        """The reference law at time t: N(0, sigma^2 t I) (t in (0, 1])."""
        t = float(self._t(t))
        if t == 0:
            raise ValueError("t: the reference at t = 0 is a point mass at 0; pass t in (0, 1]")
        like = torch.zeros(()) if like is None else like
        return Gaussian(torch.zeros(dim, dtype=like.dtype, device=like.device), self.sigma ** 2 * t)

    def marginal(self, target, t):
        """p_t = sum_k w_k N(t mu_k, t^2 Sigma_k + sigma^2 t (1-t) I) for t in (0, 1]."""
        t = float(self._t(t))
        if t == 0:
            raise ValueError("t: X_0 = 0 is a point mass (no density); pass t in (0, 1]")
        return as_mixture(target).scaled_plus_noise(t, self.sigma ** 2 * t * (1 - t))

    def sample_bridge(self, y, t, generator=None):
        """t y + sigma sqrt(t (1 - t)) Z: the Brownian bridge from 0 to y at time t (y: (..., d))."""
        check_finite("y", check_tensor("y", y, 1))
        check_generator("generator", generator)
        t = self._t(t)
        if isinstance(t, torch.Tensor) and t.dim():
            check_batch_time("t", t, y.shape[:-1])
            t = t.to(y)[..., None]
        z = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
        return t * y + self.sigma * (t * (1 - t)) ** 0.5 * z

    def _split(self, x, t):
        """Flattened x (N, d) and (N,) times."""
        xf = x.reshape(-1, x.shape[-1])
        tf = _flat_time(t, x)
        tf = torch.full((xf.shape[0],), tf, dtype=x.dtype, device=x.device) if not isinstance(tf, torch.Tensor) else tf
        return xf, tf

    def _posterior(self, mix, x, t):
        s2 = self.sigma ** 2
        return _pass(x, mix._params(x), _posterior_kernel,
                     {"c": 1 / (s2 * (1 - t)), "prec": t / (s2 * (1 - t))}, want_lp=False)

    def posterior_mean(self, target, x, t):
        """E[Y | X_t = x] for a Gaussian-mixture target, t in [0, 1] (= x at t = 1)."""
        mix = as_mixture(target)
        _check_x(x, mix.dim)
        self._t(t)
        xf, tf = self._split(x, t)
        out = xf.clone()
        lo = tf < 1
        if bool(lo.any()):
            out[lo] = self._posterior(mix, xf[lo], tf[lo])
        return out.reshape(x.shape)

    def score(self, target, x, t):
        """Exact grad log p_t(x) for a Gaussian-mixture target, t in (0, 1]."""
        mix = as_mixture(target)
        _check_x(x, mix.dim)
        self._t(t)
        xf, tf = self._split(x, t)
        if bool((tf <= 0).any()):
            raise ValueError("t: p_0 is a point mass (no score); pass t in (0, 1]")
        return mix._eval(xf, a=tf, v=self.sigma ** 2 * tf * (1 - tf), logp=False).reshape(x.shape)

    def drift(self, target, x, t):
        """Exact Föllmer drift b(x, t) = sigma^2 grad log Q_{1-t} f(x) for a Gaussian-mixture target.

        t < 1/2: (E[Y | X_t = x] - x) / (1 - t); t >= 1/2: sigma^2 grad log p_t(x) + x / t."""
        mix = as_mixture(target)
        _check_x(x, mix.dim)
        self._t(t)
        xf, tf = self._split(x, t)
        out = torch.empty_like(xf)
        lo = tf < 0.5
        if bool(lo.any()):
            x0, t0 = xf[lo], tf[lo]
            out[lo] = (self._posterior(mix, x0, t0) - x0) / (1 - t0)[:, None]
        hi = ~lo
        if bool(hi.any()):
            x1, t1 = xf[hi], tf[hi]
            s = mix._eval(x1, a=t1, v=self.sigma ** 2 * t1 * (1 - t1), logp=False)
            out[hi] = self.sigma ** 2 * s + x1 / t1[:, None]
        return out.reshape(x.shape)

    def __repr__(self):
        return f"Follmer(sigma={self.sigma:g})"
