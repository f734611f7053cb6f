"""One figure style for the book, and small plotting helpers used by several chapters.

Plotting happens on the CPU: every helper moves tensors with ``.detach().cpu()`` once, at the end.
"""
from __future__ import annotations

import torch

__all__ = ["use_style", "SMOOTH_COLOR", "PIN_COLOR", "grid_2d", "plot_log_density_2d"]

SMOOTH_COLOR = "#1f77b4"  # OU / VP-SDE ("smooth the cloud")
PIN_COLOR = "#d62728"     # Föllmer / pinned Brownian motion ("pin it down")


def use_style() -> None:
    """Set the book's matplotlib style (small, readable, vector-friendly figures)."""
    import matplotlib as mpl

    mpl.rcParams.update({
        "figure.figsize": (6.4, 3.6), "figure.dpi": 100, "savefig.dpi": 120,
        "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
        "grid.alpha": 0.3, "font.size": 10, "axes.titlesize": 10, "legend.frameon": False,
        "image.cmap": "viridis",
    })


def grid_2d(lim: float, n: int, *, dtype=torch.float64, device=None):
    """A square grid [-lim, lim]^2 with n points a side: returns (xs (n,), pts (n, n, 2))."""
    if n < 2 or not lim > 0:
        raise ValueError(f"grid_2d: need n >= 2 and lim > 0, got n={n}, lim={lim}")
    xs = torch.linspace(-lim, lim, n, dtype=dtype, device=device)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    return xs, torch.stack([gx, gy], dim=-1)


def plot_log_density_2d(ax, log_prob, lim: float = 3.0, n: int = 120, levels: int = 12, **kw):
    """Filled contours of exp(log_prob) on [-lim, lim]^2; returns the contour set."""
    xs, pts = grid_2d(lim, n)
    with torch.no_grad():
        dens = log_prob(pts).exp()
    xs = xs.cpu().numpy()
    ax.set_aspect("equal")
    return ax.contourf(xs, xs, dens.detach().cpu().numpy(), levels=levels, **kw)
