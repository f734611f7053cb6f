"""Samplers: Euler-Maruyama, the exact-OU ("exponential integrator") step, the probability-flow ODE
and importance-sampling estimates of ln Z (chapter "Sampling with a learned score").

Föllmer (pinned Brownian motion) on the grid 0 = t_0 < ... < t_N = 1 (``follmer_times``),
h_k = t_{k+1} - t_k, Euler-Maruyama:
    X_{k+1} = X_k + b(X_k, t_k) h_k + sigma sqrt(h_k) Z_k,   X_0 = 0.
OU reverse on forward times t_min = t_0 < ... < t_N = T (``ou_times``), run from t_N down,
h = t_k - t_{k-1}, v(y, t) = s(y, t) + y/sigma^2 (s the score; v = grad log U_t f is the control
part, zero for the stationary reference):
    "em":    Y' = Y + [beta Y + 2 beta sigma^2 s(Y, t_k)] h + sigma sqrt(2 beta h) Z,   beta = beta(t_k)
    "exact": Y' = a Y + 2 sigma^2 (1 - a) v(Y, t_k) + sigma sqrt(1 - a^2) Z,  a = exp(-int_{t_{k-1}}^{t_k} beta)
The "exact" step integrates the linear part exactly, so with v = 0 it is the exact OU transition.
Both are of the form Y' = m_ref(Y) + kappa u + varsigma Z, and the log density ratio of one step of the
controlled chain against the reference chain (same step, u = 0) is
    log q/p = |kappa u|^2 / (2 varsigma^2) + (kappa u . Z) / varsigma,
the discrete Girsanov weight. Importance sampling (PIS / DDS):
    log w = log gamma(X_N) - log phi_ref(X_N) - sum_k log q/p,   phi_ref = N(0, sigma^2 I).
Whatever the control u, E[w] = E_ref[gamma / phi_ref (X_N)] under the reference chain. For Föllmer + EM
and OU + exact step the reference chain ends exactly in phi_ref, so E[w] = Z at any step count. The
OU + EM reference chain does not: its variance follows v' = (1 - beta h)^2 v + 2 beta sigma^2 h from
v_0 = sigma^2, so it ends in N(0, v_N I) with v_N > sigma^2 (v_1 = sigma^2 (1 + beta^2 h^2)), and
    E[w] / Z = E_pi[ N(Y; 0, v_N I) / N(Y; 0, sigma^2 I) ] ~ 1 + (v_N / sigma^2 - 1) (E_pi|Y|^2 / sigma^2 - d) / 2:
a positive bias of ln Z for every target with E_pi|Y|^2 > d sigma^2 (spread wider than phi_ref), of
order beta h, gone as h -> 0. The grids accept ``grid_power`` > 1 to put steps where the drift of a
target with narrow modes varies fastest (near the data end), which lowers the variance of log w.
ESS = (sum w)^2 / sum w^2; stderr(ln Z) = sqrt((n / ESS - 1) / n) (delta method).

Probability-flow ODE (OU): dx/dt = -beta(t) x - beta(t) sigma^2 s(x, t), and
log p_0(x_0) = log p_T(x_T) + int_0^T div_x f(x_t, t) dt, the divergence computed exactly by autograd
(d backward passes; for low dimension).

Randomness only through ``generator``; Gaussian noise is drawn in chunks of steps (at most ~4M
numbers at a time) and the state is updated in place under ``torch.no_grad()`` (the training code
calls the same loops with ``grad=True``, out of place).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ._checks import (check_callable, check_choice, check_finite, check_generator, check_int,
                      check_positive, check_tensor)

__all__ = ["euler_maruyama", "sample_follmer", "sample_ou_reverse", "probability_flow_ode",
           "pf_ode_log_prob", "log_normalising_constant", "LogZEstimate", "follmer_times", "ou_times",
           "process_kind"]

_CHUNK_NUMBERS = 1 << 22


def _noise(shape, steps, generator, dtype, device):
    """Yield ``steps`` standard normal tensors of ``shape``, drawn in chunks."""
    per = max(1, math.prod(shape))
    chunk = max(1, min(steps, _CHUNK_NUMBERS // per))
    for k0 in range(0, steps, chunk):
        z = torch.randn((min(chunk, steps - k0), *shape), generator=generator, dtype=dtype,
                        device=device)
        yield from z


def _check_x(name, x):
    check_tensor(name, x, 1)
    return check_finite(name, x)


def _log_phi(x, sigma):
    d = x.shape[-1]
    return -0.5 * (x * x).sum(-1) / sigma ** 2 - 0.5 * d * math.log(2 * math.pi * sigma ** 2)


def _log_gamma(target):
    for name in ("log_unnormalised", "log_prob"):
        if callable(getattr(target, name, None)):
            return getattr(target, name)
    if callable(target):
        return target
    raise ValueError("target: expected an object with log_unnormalised(x) or log_prob(x), or a "
                     "callable x -> log gamma(x)")


def euler_maruyama(drift, x0, times, diffusion=1.0, generator=None, return_path=False):
    """Euler-Maruyama for dX = drift(X, t) dt + g(t) dW on the increasing grid ``times``.

    X_{k+1} = X_k + drift(X_k, t_k) h_k + g(t_k) sqrt(h_k) Z_k. ``drift(x, t)`` gets t as a float
    and runs under ``torch.no_grad()`` (wrap it in ``torch.enable_grad()`` if it needs autograd);
    ``diffusion`` is a positive float or a callable t -> float. x0: (..., d); times: (K + 1,).
    Returns X_K (..., d), or the path (K + 1, ..., d) if ``return_path``.
    Raises ValueError for non-finite x0, times not 1-D strictly increasing, or g <= 0.
    """
    check_callable("drift", drift)
    _check_x("x0", x0)
    check_generator("generator", generator)
    check_tensor("times", times, 1)
    if times.dim() != 1 or times.numel() < 2 or not bool((times[1:] > times[:-1]).all()):
        raise ValueError("times: expected a 1-D strictly increasing tensor with at least 2 entries")
    if not callable(diffusion):
        check_positive("diffusion", diffusion)
    ts = times.tolist()
    x = x0.clone()
    path = [x0.clone()] if return_path else None
    with torch.no_grad():
        for k, z in enumerate(_noise(x.shape, len(ts) - 1, generator, x.dtype, x.device)):
            t, h = ts[k], ts[k + 1] - ts[k]
            g = diffusion(t) if callable(diffusion) else diffusion
            x.add_(drift(x, t), alpha=h).add_(z, alpha=g * math.sqrt(h))
            if return_path:
                path.append(x.clone())
    return torch.stack(path) if return_path else x


def process_kind(process):
    """Returns "ou" for an OU process (it has ``integrated_beta``), "follmer" for a Föllmer
    process (it has ``sample_bridge``); raises ValueError for anything else."""
    if hasattr(process, "integrated_beta") and hasattr(process, "interval"):
        return "ou"
    if hasattr(process, "sample_bridge") and hasattr(process, "sigma"):
        return "follmer"
    raise ValueError(f"process: expected a smoothpin OU or Follmer object, got {type(process).__name__}")


def _check_grid_power(p):
    check_positive("grid_power", p)
    return float(p)


def follmer_times(steps, grid_power=1.0):
    """The Föllmer grid t_k = 1 - (1 - k/steps)^grid_power, k = 0..steps (t_0 = 0, t_steps = 1).

    grid_power = 1 is uniform; > 1 puts the steps near t = 1, where the drift of a target with
    narrow modes varies fastest. Returns a list of floats."""
    steps, p = check_int("steps", steps), _check_grid_power(grid_power)
    return [0.0] + [1.0 - (1.0 - k / steps) ** p for k in range(1, steps)] + [1.0]


def ou_times(process, steps, t_min=0.0, grid_power=1.0):
    """The OU grid t_k = t_min + (T - t_min) (k/steps)^grid_power, k = 0..steps (forward times;
    the reverse sampler runs from t_steps = T down to t_0 = t_min). grid_power > 1 puts the steps
    near t_min, where the score of a target with narrow modes varies fastest. Returns floats."""
    _check_ou(process)
    steps, p = check_int("steps", steps), _check_grid_power(grid_power)
    T = float(process.interval[1])
    if not 0.0 <= t_min < T:
        raise ValueError(f"t_min: must lie in [0, T) = [0, {T:g}), got {t_min}")
    return [t_min + (T - t_min) * (k / steps) ** p for k in range(steps)] + [T]


def _run_follmer(drift_fn, x, sigma, times, generator, track=False, grad=False):
    """Föllmer EM on the grid ``times`` (floats from 0 to 1, or an int: that many uniform steps)
    from x. Returns (x_1, cost, martingale) with cost = sum |b|^2 h / (2 sigma^2), martingale =
    sum (b . Z) sqrt(h) / sigma (None unless ``track``). grad: keep the autograd graph (no in-place
    updates)."""
    if isinstance(times, int):
        times = follmer_times(times)
    cost = mart = None
    if track:
        cost = x.new_zeros(x.shape[:-1])
        mart = x.new_zeros(x.shape[:-1])
    if not grad:
        x = x.clone()
    for k, z in enumerate(_noise(x.shape, len(times) - 1, generator, x.dtype, x.device)):
        t, h = times[k], times[k + 1] - times[k]
        b = drift_fn(x, t)
        sq = math.sqrt(h)
        if track:
            cost = cost + (b * b).sum(-1) * (0.5 * h / sigma ** 2)
            mart = mart + (b * z).sum(-1) * (sq / sigma)
        if grad:
            x = x + b * h + (sigma * sq) * z
        else:
            x.add_(b, alpha=h).add_(z, alpha=sigma * sq)
    return x, cost, mart


def _ou_coefficients(process, times, method):
    """Per step, in integration order (forward time t_k from T down): (t_k, m, kappa, varsigma) as
    floats, with Y' = m Y + kappa u + varsigma Z (module docstring)."""
    sigma = float(process.sigma)
    B = [float(process.integrated_beta(t)) for t in times]
    coef = []
    for k in range(len(times) - 1, 0, -1):
        if method == "em":
            h, beta = times[k] - times[k - 1], float(process.beta_at(times[k]))
            coef.append((times[k], 1.0 - beta * h, 2 * beta * sigma ** 2 * h,
                         sigma * math.sqrt(2 * beta * h)))
        else:
            dB = B[k] - B[k - 1]  # 1 - a and 1 - a^2 by expm1: no cancellation for small steps
            coef.append((times[k], math.exp(-dB), -2 * sigma ** 2 * math.expm1(-dB),
                         sigma * math.sqrt(-math.expm1(-2 * dB))))
    return coef


def _run_ou(score_fn, y, process, coef, generator, track=False, grad=False):
    """Reverse OU with the step coefficients ``coef``; u = s + y / sigma^2. Returns (y, cost,
    martingale), cost = sum |kappa u|^2 / (2 varsigma^2), martingale = sum kappa (u . Z) / varsigma."""
    inv_s2 = 1.0 / float(process.sigma) ** 2
    cost = mart = None
    if track:
        cost = y.new_zeros(y.shape[:-1])
        mart = y.new_zeros(y.shape[:-1])
    if not grad:
        y = y.clone()
    for (t, m, kappa, vs), z in zip(coef, _noise(y.shape, len(coef), generator, y.dtype, y.device)):
        u = score_fn(y, t) + y * inv_s2
        if track:
            cost = cost + (u * u).sum(-1) * (0.5 * kappa ** 2 / vs ** 2)
            mart = mart + (u * z).sum(-1) * (kappa / vs)
        if grad:
            y = m * y + kappa * u + vs * z
        else:
            y.mul_(m).add_(u, alpha=kappa).add_(z, alpha=vs)
    return y, cost, mart


def sample_follmer(drift_fn, n, steps, sigma=1.0, generator=None, *, dim, dtype=None, device=None,
                   grid_power=1.0):
    """Samples X_1 of dX = b(X, t) dt + sigma dW, X_0 = 0, by ``steps`` Euler-Maruyama steps on the
    grid ``follmer_times(steps, grid_power)``.

    drift_fn(x: (n, d), t: float) -> (n, d), e.g. ``lambda x, t: Follmer(sigma).drift(target, x, t)``
    or a trained network. Returns (n, dim) with the given dtype (default: torch's default) and
    device. Raises ValueError for n, steps, dim < 1, sigma <= 0 or grid_power <= 0.
    """
    check_callable("drift_fn", drift_fn)
    n, dim = check_int("n", n), check_int("dim", dim)
    check_positive("sigma", sigma)
    check_generator("generator", generator)
    times = follmer_times(steps, grid_power)
    x = torch.zeros(n, dim, dtype=dtype or torch.get_default_dtype(), device=device)
    with torch.no_grad():
        return _run_follmer(drift_fn, x, float(sigma), times, generator)[0]


def _check_ou(process):
    if process_kind(process) != "ou":
        raise ValueError(f"process: expected an OU process, got {type(process).__name__}; "
                         "pass smoothpin.OU")
    return process


def sample_ou_reverse(score_fn, process, x_T, steps, method="exact", generator=None, t_min=0.0, *,
                      grid_power=1.0):
    """Integrates the reverse OU SDE dY = [beta Y + 2 beta sigma^2 s(Y, t)] ds + sigma sqrt(2 beta) dB
    from forward time T (Y = x_T) down to ``t_min`` with ``steps`` steps of ``method`` ("em" or
    "exact", see the module docstring) on the grid ``ou_times(process, steps, t_min, grid_power)``.
    score_fn(x, t: float forward time) -> (..., d), evaluated at t_steps, ..., t_1 (never at t_min).
    x_T: (..., d) (samples of p_T, or of N(0, sigma^2 I) in practice). Returns (..., d).
    Raises ValueError for a non-OU process, bad method, non-finite x_T or t_min outside [0, T).
    """
    check_callable("score_fn", score_fn)
    _check_ou(process)
    _check_x("x_T", x_T)
    check_choice("method", method, ("em", "exact"))
    check_generator("generator", generator)
    coef = _ou_coefficients(process, ou_times(process, steps, t_min, grid_power), method)
    with torch.no_grad():
        return _run_ou(score_fn, x_T, process, coef, generator)[0]


def _pf_field(score_fn, process, divergence):
    sigma2 = float(process.sigma) ** 2

    def field(t, state):
        x = state[0] if divergence else state
        beta = float(process.beta_at(float(t)))
        if not divergence:
            return -beta * x - beta * sigma2 * score_fn(x, t)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            f = -beta * xg - beta * sigma2 * score_fn(xg, t)
            div = torch.zeros_like(x[..., 0])
            for i in range(x.shape[-1]):
                gi = torch.autograd.grad(f[..., i].sum(), xg, retain_graph=i + 1 < x.shape[-1])[0]
                div = div + gi[..., i]
        return f.detach(), div.detach()

    return field


def probability_flow_ode(score_fn, process, x, t0, t1, rtol=1e-7, atol=1e-9, method="dopri5",
                         divergence=False):
    """Solves the OU probability-flow ODE dx/dt = -beta(t) x - beta(t) sigma^2 s(x, t) from t0 to
    t1 (either direction) with torchdiffeq. x: (..., d). Returns x(t1), and with ``divergence``
    also int_{t0}^{t1} div f(x_t, t) dt of shape x.shape[:-1] (exact, by autograd: d backward
    passes per evaluation, for low dimension). score_fn(x, t) gets t as a 0-dim tensor inside
    [0, T] (adaptive solvers are told to stop exactly at t1 rather than step past it).
    Raises ValueError for a non-OU process, non-finite x or times outside [0, T].
    """
    from torchdiffeq import odeint

    check_callable("score_fn", score_fn)
    _check_ou(process)
    _check_x("x", x)
    T = process.interval[1]
    for name, t in (("t0", t0), ("t1", t1)):
        if not 0.0 <= float(t) <= T:
            raise ValueError(f"{name}: must lie in [0, T] = [0, {T:g}], got {float(t)}")
    if float(t0) == float(t1):
        raise ValueError("t1: must differ from t0")
    ts = torch.tensor([float(t0), float(t1)], dtype=x.dtype, device=x.device)
    field = _pf_field(score_fn, process, divergence)
    # adaptive solvers may evaluate the field past t1 and interpolate back; step_t makes them stop
    # on t1 so that the score is never asked for a time outside the process's interval
    options = {"step_t": ts[1:]} if method in _ADAPTIVE else None
    if not divergence:
        return odeint(field, x, ts, rtol=rtol, atol=atol, method=method, options=options)[-1]
    xs, divs = odeint(field, (x, torch.zeros_like(x[..., 0])), ts, rtol=rtol, atol=atol,
                      method=method, options=options)
    return xs[-1], divs[-1]


_ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", "tsit5")


def pf_ode_log_prob(score_fn, process, x, prior_log_prob=None, t_min=0.0, rtol=1e-8, atol=1e-10,
                    method="dopri5"):
    """log p_{t_min}(x) = log p_T(x_T) + int_{t_min}^T div f(x_t, t) dt along the probability-flow
    ODE started at x (instantaneous change of variables).

    prior_log_prob: callable for log p_T (default: log N(0, sigma^2 I), whose error is
    KL-small as e^{-2 B(T)}); pass ``process.marginal(target, T).log_prob`` for the exact value.
    x: (..., d) -> (...). Raises ValueError as ``probability_flow_ode``.
    """
    _check_ou(process)
    if prior_log_prob is not None:
        check_callable("prior_log_prob", prior_log_prob)
    T = process.interval[1]
    xT, div = probability_flow_ode(score_fn, process, x, t_min, T, rtol=rtol, atol=atol,
                                   method=method, divergence=True)
    if prior_log_prob is None:
        return _log_phi(xT, float(process.sigma)) + div
    return prior_log_prob(xT) + div


class LogZEstimate(NamedTuple):
    """ln Z estimate (0-dim tensor), its delta-method standard error and the effective sample size."""
    log_Z: torch.Tensor
    stderr: torch.Tensor
    ess: torch.Tensor


def _logz_from_logw(log_w):
    n = log_w.shape[0]
    log_Z = torch.logsumexp(log_w, 0) - math.log(n)
    ess = torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))
    stderr = torch.sqrt((n / ess - 1).clamp_min(0) / n)
    return LogZEstimate(log_Z, stderr, ess)


def log_normalising_constant(fn, process, target, n, steps, method=None, generator=None, dim=None,
                             dtype=None, device=None, t_min=0.0, grid_power=1.0,
                             return_log_weights=False):
    """Importance-sampling estimate of ln Z = ln int gamma with the controlled sampler as proposal.

    Föllmer process: fn is the drift b, Euler-Maruyama from 0 (``method`` must be None or "em").
    OU process: fn is the score s, the reverse chain starts at N(0, sigma^2 I) and uses ``method``
    ("exact" by default, or "em"). log w = log gamma(X) - log phi_ref(X) - sum_k log q/p (module
    docstring). target: object with log_unnormalised(x) (or log_prob), or a callable log gamma
    (then pass ``dim``). Returns LogZEstimate(log_Z, stderr, ess) (and the (n,) log weights if
    ``return_log_weights``). Raises ValueError for bad sizes, an unknown process or method.
    """
    check_callable("fn", fn)
    kind = process_kind(process)
    n = check_int("n", n)
    check_generator("generator", generator)
    log_gamma = _log_gamma(target)
    dim = check_int("dim", dim if dim is not None else getattr(target, "dim", None))
    dtype = dtype or torch.get_default_dtype()
    s = float(process.sigma)
    with torch.no_grad():
        if kind == "ou":
            method = check_choice("method", method or "exact", ("em", "exact"))
            coef = _ou_coefficients(process, ou_times(process, steps, t_min, grid_power), method)
            y = s * torch.randn(n, dim, generator=generator, dtype=dtype, device=device)
            x, cost, mart = _run_ou(fn, y, process, coef, generator, track=True)
        else:
            check_choice("method", method or "em", ("em",))
            x = torch.zeros(n, dim, dtype=dtype, device=device)
            x, cost, mart = _run_follmer(fn, x, s, follmer_times(steps, grid_power), generator,
                                         track=True)
        log_w = log_gamma(x) - _log_phi(x, s) - cost - mart
    est = _logz_from_logw(log_w)
    return (est, log_w) if return_log_weights else est
