"""Validation helpers shared by every smoothpin module (validate once, at the public boundary).

Every helper raises ``ValueError`` with a message that names the argument and says the fix. They
never move data between devices and never change dtypes except where stated (``as_tensor_like``).
Checks that read tensor values (finiteness, ranges, positive definiteness) synchronise a GPU once
per call; they belong at the public boundary, never inside hot loops. Internal helpers trust inputs.

Helpers (all return the validated value so they can be used inline):

- ``as_tensor_like(x, like=None, name="x")``   tensor with ``like``'s dtype/device (or default float)
- ``check_tensor(name, x, min_dim=0)``         a floating torch tensor with at least ``min_dim`` dims
- ``check_finite(name, x)``                    no NaN / inf (tensor, number or nested sequence)
- ``check_positive(name, v)``                  finite number(s) > 0 (float or tensor)
- ``check_nonneg(name, v)``                    finite number(s) >= 0
- ``check_int(name, n, lo=1)``                 Python int (not bool) >= lo
- ``check_time(name, t, lo, hi)``              finite t (float or tensor) with lo <= t <= hi
- ``check_last_dim(name, x, d)``               x.shape[-1] == d (x has at least one dimension)
- ``check_batch_time(name, t, batch_shape)``   tensor t broadcastable to batch_shape
- ``check_weights(name, w)``                   1-D, nonnegative, sums to one (tolerance by dtype)
- ``check_spd(name, S)``                       (..., d, d) symmetric positive definite; returns L
- ``check_generator(name, g)``                 None or a torch.Generator
- ``check_callable(name, f)``                  callable
- ``check_choice(name, v, choices)``           v in choices
"""
from __future__ import annotations

import math
import numbers

import torch

__all__: list[str] = []  # private helpers; import them as ``from ._checks import check_time``


def _fail(name, msg):
    raise ValueError(f"{name}: {msg}")


def as_tensor_like(x, like=None, name="x"):
    """Return ``x`` as a floating tensor with the dtype and device of ``like``.

    ``like`` may be a tensor (its dtype/device are used) or None (tensors keep their dtype/device,
    other inputs get torch's default float dtype on the CPU). Integer tensors become the default
    float dtype. Python numbers and sequences are built directly in ``like``'s dtype (building them
    in float32 first would turn 0.05 into 0.05000000074505806 in float64).
    Raises ValueError for complex or non-numeric input.
    """
    try:
        if isinstance(x, torch.Tensor):
            t = x
        elif like is not None and not isinstance(x, complex):
            t = torch.as_tensor(x, dtype=like.dtype, device=like.device)
        else:
            t = torch.as_tensor(x)
    except (TypeError, RuntimeError, ValueError) as e:
        _fail(name, f"expected a tensor or a number, got {type(x).__name__} ({e})")
    if t.is_complex():
        _fail(name, "complex values are not supported; pass a real floating tensor")
    if like is not None:
        return t.to(device=like.device, dtype=like.dtype)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t


def check_tensor(name, x, min_dim=0):
    """Require a floating-point torch tensor with at least ``min_dim`` dimensions; return it."""
    if not isinstance(x, torch.Tensor):
        _fail(name, f"expected a torch.Tensor, got {type(x).__name__}; wrap it with torch.as_tensor")
    if not x.is_floating_point():
        _fail(name, f"expected a floating-point tensor, got dtype {x.dtype}; cast with .double()")
    if x.dim() < min_dim:
        _fail(name, f"expected at least {min_dim} dimension(s), got shape {tuple(x.shape)}")
    return x


def check_finite(name, x):
    """Require every value of ``x`` (tensor, number or sequence) to be finite; return ``x``."""
    if isinstance(x, torch.Tensor):
        ok = bool(torch.isfinite(x).all()) if x.is_floating_point() or x.is_complex() else True
    elif isinstance(x, numbers.Number):
        ok = math.isfinite(x) if not isinstance(x, complex) else math.isfinite(abs(x))
    else:
        ok = bool(torch.isfinite(torch.as_tensor(x, dtype=torch.float64)).all())
    if not ok:
        _fail(name, "contains NaN or inf; pass finite values")
    return x


def _is_real_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def check_positive(name, v):
    """Require ``v`` (float or tensor) to be finite and > 0 everywhere; return ``v``."""
    if isinstance(v, torch.Tensor):
        if not v.is_floating_point() and v.dtype not in (torch.int32, torch.int64):
            _fail(name, f"expected a real tensor, got dtype {v.dtype}")
        if not (bool(torch.isfinite(v).all()) and bool((v > 0).all())):
            _fail(name, "must be finite and > 0")
        return v
    if not _is_real_number(v):
        _fail(name, f"expected a positive number, got {type(v).__name__}")
    if not (math.isfinite(v) and v > 0):
        _fail(name, f"must be finite and > 0, got {v}")
    return v


def check_nonneg(name, v):
    """Require ``v`` (float or tensor) to be finite and >= 0 everywhere; return ``v``."""
    if isinstance(v, torch.Tensor):
        if not (bool(torch.isfinite(v).all()) and bool((v >= 0).all())):
            _fail(name, "must be finite and >= 0")
        return v
    if not _is_real_number(v):
        _fail(name, f"expected a nonnegative number, got {type(v).__name__}")
    if not (math.isfinite(v) and v >= 0):
        _fail(name, f"must be finite and >= 0, got {v}")
    return v


def check_int(name, n, lo=1):
    """Require a Python/NumPy integer (not bool) with ``n >= lo``; return ``int(n)``."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        _fail(name, f"expected an integer, got {type(n).__name__}")
    if n < lo:
        _fail(name, f"must be >= {lo}, got {n}")
    return int(n)


def check_time(name, t, lo, hi):
    """Require finite time(s) ``t`` (Python number or tensor) with ``lo <= t <= hi``; return ``t``.

    The message names the interval of the process, e.g. "t: must lie in [0, 1] (Follmer)".
    """
    if isinstance(t, torch.Tensor):
        if not t.is_floating_point():
            if t.dtype in (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8):
                t = t.to(torch.get_default_dtype())
            else:
                _fail(name, f"expected a real time, got dtype {t.dtype}")
        if not bool(torch.isfinite(t).all()):
            _fail(name, "contains NaN or inf; pass finite times")
        if t.numel() and not (bool((t >= lo).all()) and bool((t <= hi).all())):
            tmin, tmax = float(t.min()), float(t.max())
            _fail(name, f"must lie in [{lo:g}, {hi:g}], got values in [{tmin:g}, {tmax:g}]")
        return t
    if not _is_real_number(t):
        _fail(name, f"expected a number or a tensor of times, got {type(t).__name__}")
    if not math.isfinite(t):
        _fail(name, f"must be finite, got {t}")
    if not (lo <= t <= hi):
        _fail(name, f"must lie in [{lo:g}, {hi:g}], got {t:g}")
    return t


def check_last_dim(name, x, d):
    """Require ``x.shape[-1] == d`` (so x is (..., d)); return ``x``."""
    if x.dim() < 1 or x.shape[-1] != d:
        _fail(name, f"expected shape (..., {d}), got {tuple(x.shape)}")
    return x


def check_batch_time(name, t, batch_shape):
    """Require tensor ``t`` to broadcast against ``batch_shape`` (= x.shape[:-1]); return ``t``."""
    if isinstance(t, torch.Tensor) and t.dim() > 0:
        try:
            torch.broadcast_shapes(t.shape, tuple(batch_shape))
        except RuntimeError:
            _fail(name, f"shape {tuple(t.shape)} does not broadcast against x.shape[:-1] = "
                        f"{tuple(batch_shape)}; pass a float or a tensor of shape x.shape[:-1]")
    return t


def check_weights(name, w):
    """Require a 1-D tensor of nonnegative weights summing to one; return ``w``.

    Tolerance on the sum: 1e-6 in float64 (1e-4 in lower precision); renormalise before passing.
    """
    check_tensor(name, w, 1)
    if w.dim() != 1 or w.numel() == 0:
        _fail(name, f"expected shape (K,) with K >= 1, got {tuple(w.shape)}")
    check_finite(name, w)
    if bool((w < 0).any()):
        _fail(name, "weights must be nonnegative")
    tol = 1e-6 if w.dtype == torch.float64 else 1e-4
    s = float(w.sum())
    if abs(s - 1.0) > tol:
        _fail(name, f"weights must sum to one, got {s:.8g}; divide by their sum")
    return w


def check_spd(name, S):
    """Require (..., d, d) symmetric positive definite matrices; return their Cholesky factors.

    Symmetry tolerance: 1e-8 relative in float64, 1e-4 in lower precision.
    """
    check_tensor(name, S, 2)
    if S.shape[-1] != S.shape[-2]:
        _fail(name, f"expected square matrices (..., d, d), got {tuple(S.shape)}")
    check_finite(name, S)
    tol = 1e-8 if S.dtype == torch.float64 else 1e-4
    scale = S.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(S.dtype).tiny)
    if bool(((S - S.transpose(-1, -2)).abs() > tol * scale).any()):
        _fail(name, "matrices must be symmetric; pass (S + S.mT) / 2")
    L, info = torch.linalg.cholesky_ex(S)
    if bool((info != 0).any()):
        _fail(name, "matrices must be positive definite (Cholesky failed)")
    return L


def check_generator(name, g):
    """Require None or a ``torch.Generator``; return it."""
    if g is not None and not isinstance(g, torch.Generator):
        _fail(name, f"expected None or a torch.Generator, got {type(g).__name__}")
    return g


def check_callable(name, f):
    """Require a callable; return it."""
    if not callable(f):
        _fail(name, f"expected a callable, got {type(f).__name__}")
    return f


def check_choice(name, v, choices):
    """Require ``v`` to be one of ``choices``; return it."""
    if v not in choices:
        _fail(name, f"must be one of {', '.join(repr(c) for c in choices)}; got {v!r}")
    return v
