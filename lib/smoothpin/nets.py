"""Networks that approximate the OU score s(x, t) = grad log p_t(x) or the Föllmer drift b(x, t).

Objects (chapter "Learning the score and the drift"):

- Sinusoidal time embedding e(t) = [sin(w_1 t), ..., sin(w_k t), cos(w_1 t), ..., cos(w_k t)],
  frequencies w_j geometric between ``min_frequency`` and ``max_frequency`` (per unit time).
- ``ScoreMLP``: out = MLP([x, e(t)]), ``depth`` hidden layers of ``width`` units with SiLU (smooth,
  so the divergence used by the probability-flow ODE is smooth). Its parameter count is what the
  paper's experiments vary. An optional ``masked`` mode multiplies every hidden layer by a 0/1
  buffer ``unit_mask``; ``train.train_sweep`` uses it to stack networks of different widths.
- ``ControlNet`` (PIS / DDS style): out = c x + NN1(x, t) + NN2(t) * grad log gamma(x), with the
  output layers zero-initialised so that the initial control is the reference one (u = 0 for
  Föllmer, score = -x / sigma^2 for OU with c = -1 / sigma^2).
- ``LinearDrift``: out = A(t) x + c(t) with A, c piecewise linear in t on a grid of knots; for a
  Gaussian target the exact Föllmer drift and OU score have exactly this form.
- ``count_parameters(net)``: number of trainable scalars.

Shapes: ``x: (..., d)``; ``t`` a float or a tensor broadcastable to ``x.shape[:-1]``; the output has
the shape, dtype and device of ``x``. Networks are ordinary ``nn.Module``s: move them with
``net.to(device, dtype)``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._checks import check_callable, check_int, check_last_dim, check_positive

__all__ = ["SinusoidalTimeEmbedding", "ScoreMLP", "ControlNet", "LinearDrift", "count_parameters"]


def _time_batch(t, x):
    """t (float or tensor broadcastable to x.shape[:-1]) -> tensor of shape x.shape[:-1]."""
    if not isinstance(t, torch.Tensor):
        return torch.full(x.shape[:-1], float(t), dtype=x.dtype, device=x.device)
    return t.to(dtype=x.dtype).expand(x.shape[:-1])


class SinusoidalTimeEmbedding(nn.Module):
    """e(t) = [sin(w t), cos(w t)] with w geometric in [min_frequency, max_frequency]; (...,) -> (..., dim)."""

    def __init__(self, dim=32, min_frequency=1.0, max_frequency=100.0):
        super().__init__()
        dim = check_int("time_embedding_dim", dim, lo=2)
        if dim % 2:
            raise ValueError(f"time_embedding_dim: must be even, got {dim}; pass an even number")
        check_positive("min_frequency", min_frequency)
        check_positive("max_frequency", max_frequency)
        if max_frequency < min_frequency:
            raise ValueError("max_frequency: must be >= min_frequency; swap them")
        self.dim = dim
        self.min_frequency, self.max_frequency = float(min_frequency), float(max_frequency)
        self.log_range = (math.log(min_frequency), math.log(max_frequency))

    def forward(self, t):
        # frequencies made in t's dtype on every call (16 numbers): a stored float32 buffer would
        # limit sin(w t) to ~1e-4 accuracy at w t ~ 100 after .double()
        w = torch.exp(torch.linspace(*self.log_range, self.dim // 2, dtype=t.dtype, device=t.device))
        arg = t.unsqueeze(-1) * w
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


class ScoreMLP(nn.Module):
    """MLP score / drift network out(x, t) = MLP([x, e(t)]) with ``depth`` hidden SiLU layers.

    Args: dim d; width (hidden units per layer); depth (number of hidden layers, >= 1);
    time_embedding_dim (even); max_frequency of the time embedding; zero_output (start from the
    zero function); masked (adds a (depth, width) 0/1 buffer ``unit_mask`` multiplying the hidden
    activations, used by vectorised width sweeps).
    forward(x: (..., d), t: float or tensor broadcastable to x.shape[:-1]) -> (..., d).
    Raises ValueError for non-positive sizes or x of the wrong last dimension.
    """

    def __init__(self, dim, width=128, depth=3, time_embedding_dim=32, max_frequency=100.0,
                 zero_output=False, masked=False):
        super().__init__()
        self.dim = check_int("dim", dim)
        self.width = check_int("width", width)
        self.depth = check_int("depth", depth)
        self.embed = SinusoidalTimeEmbedding(time_embedding_dim, max_frequency=max_frequency)
        self.time_embedding_dim, self.max_frequency = self.embed.dim, self.embed.max_frequency
        sizes = [dim + time_embedding_dim] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(width, dim)
        if zero_output:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)
        self.masked = bool(masked)
        if self.masked:
            self.register_buffer("unit_mask", torch.ones(depth, width))

    def config(self):
        """The constructor arguments (a dict of numbers), for cache keys and for rebuilding the net."""
        return {"dim": self.dim, "width": self.width, "depth": self.depth,
                "time_embedding_dim": self.time_embedding_dim, "max_frequency": self.max_frequency,
                "masked": self.masked}

    def forward(self, x, t):
        check_last_dim("x", x, self.dim)
        h = torch.cat([x, self.embed(_time_batch(t, x))], dim=-1)
        for i, layer in enumerate(self.hidden):
            h = nn.functional.silu(layer(h))
            if self.masked:
                h = h * self.unit_mask[i]
        return self.out(h)


def _mlp(n_in, width, depth, n_out):
    layers, a = [], n_in
    for _ in range(depth):
        layers += [nn.Linear(a, width), nn.SiLU()]
        a = width
    last = nn.Linear(a, n_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


class ControlNet(nn.Module):
    """PIS / DDS network out(x, t) = c x + NN1([x, e(t)]) + NN2(e(t)) * clip(grad log gamma(x)).

    ``grad_log_target``: callable x (..., d) -> (..., d) (e.g. ``target.grad_log_unnormalised``);
    ``x_coefficient`` c (0 for a Föllmer drift; -1/sigma^2 so that an OU score starts at the
    reference score); ``clip``: if given, the gradient feature is clamped to [-clip, clip]
    elementwise (PIS does this for stability). Output layers start at zero, so out = c x at init.
    Raises ValueError for a non-callable grad_log_target or bad sizes.
    """

    def __init__(self, dim, width=64, depth=2, grad_log_target=None, time_embedding_dim=32,
                 max_frequency=100.0, x_coefficient=0.0, clip=None):
        super().__init__()
        self.dim = check_int("dim", dim)
        check_int("width", width)
        check_int("depth", depth)
        self.grad_log_target = check_callable("grad_log_target", grad_log_target)
        if clip is not None:
            check_positive("clip", clip)
        self.clip = clip
        self.x_coefficient = float(x_coefficient)
        self.embed = SinusoidalTimeEmbedding(time_embedding_dim, max_frequency=max_frequency)
        self.nn1 = _mlp(dim + time_embedding_dim, width, depth, dim)
        self.nn2 = _mlp(time_embedding_dim, width, depth, dim)

    def forward(self, x, t):
        check_last_dim("x", x, self.dim)
        e = self.embed(_time_batch(t, x))
        g = self.grad_log_target(x)
        if self.clip is not None:
            g = g.clamp(-self.clip, self.clip)
        out = self.nn1(torch.cat([x, e], dim=-1)) + self.nn2(e) * g
        if self.x_coefficient != 0.0:
            out = out + self.x_coefficient * x
        return out


class LinearDrift(nn.Module):
    """Affine network out(x, t) = A(t) x + c(t), A and c piecewise linear in t between ``knots``
    equally spaced knots on ``interval`` (t outside is clamped to the ends). Starts at zero.

    With knots = (number of integrator steps) + 1 every Euler step gets its own free (A_k, c_k).
    forward(x: (..., d), t: float or tensor broadcastable to x.shape[:-1]) -> (..., d).
    """

    def __init__(self, dim, knots=2, interval=(0.0, 1.0)):
        super().__init__()
        self.dim = check_int("dim", dim)
        self.knots = check_int("knots", knots, lo=2)
        lo, hi = float(interval[0]), float(interval[1])
        if not hi > lo:
            raise ValueError(f"interval: expected (lo, hi) with hi > lo, got {interval}")
        self.interval = (lo, hi)
        self.A = nn.Parameter(torch.zeros(knots, dim, dim))
        self.c = nn.Parameter(torch.zeros(knots, dim))

    def coefficients(self, t):
        """(A(t), c(t)) for a float t: shapes (d, d) and (d,)."""
        lo, hi = self.interval
        u = min(max((float(t) - lo) / (hi - lo), 0.0), 1.0) * (self.knots - 1)
        i = min(int(math.floor(u)), self.knots - 2)
        w = u - i
        return (1 - w) * self.A[i] + w * self.A[i + 1], (1 - w) * self.c[i] + w * self.c[i + 1]

    def forward(self, x, t):
        check_last_dim("x", x, self.dim)
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            A, c = self.coefficients(t)
            return x @ A.to(x.dtype).mT + c.to(x.dtype)
        lo, hi = self.interval
        u = ((_time_batch(t, x) - lo) / (hi - lo)).clamp(0, 1) * (self.knots - 1)
        i = u.floor().long().clamp(max=self.knots - 2)
        w = (u - i).unsqueeze(-1)
        c = (1 - w) * self.c[i].to(x.dtype) + w * self.c[i + 1].to(x.dtype)
        Ax = torch.einsum("...ij,...j->...i", self.A[i].to(x.dtype), x)
        Ax1 = torch.einsum("...ij,...j->...i", self.A[i + 1].to(x.dtype), x)
        return (1 - w) * Ax + w * Ax1 + c


def count_parameters(net):
    """Number of trainable scalars sum(p.numel() for p in net.parameters() if p.requires_grad)."""
    if not isinstance(net, nn.Module):
        raise ValueError(f"net: expected a torch.nn.Module, got {type(net).__name__}")
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
