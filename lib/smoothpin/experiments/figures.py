"""Figures of the headline experiment (chapter "Smooth or pin"), drawn from a results dict.

Colours: smoothpin.SMOOTH_COLOR for the OU process, PIN_COLOR for Föllmer, grey-green for the
bridge-clock OU. Bands are the min-max over seeds, lines the median.
"""
from __future__ import annotations

import numpy as np

from ..plotting import PIN_COLOR, SMOOTH_COLOR
from .analysis import LABELS, kl_density, table

__all__ = ["COLORS", "plot_kl_vs_params", "plot_kl_density", "plot_sample_quality"]

COLORS = {"ou": SMOOTH_COLOR, "follmer": PIN_COLOR, "ou_bridge_clock": "#2ca02c"}


def plot_kl_vs_params(ax, results, target, processes=None, linestyle="-", suffix="", band=True):
    """Girsanov KL bound against parameter count (log-log), one line per process."""
    for name in processes or results["config"]["processes"]:
        T = table(results, target, name)
        ax.plot(T["params"], np.median(T["kl"], 1), linestyle, marker="o", ms=3,
                color=COLORS[name], label=LABELS[name] + suffix)
        if band:
            ax.fill_between(T["params"], T["kl"].min(1), T["kl"].max(1), color=COLORS[name],
                            alpha=0.2, lw=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("KL bound (nats)")


def plot_kl_density(ax, results, target, processes=None, width_index=-1):
    """dKL / dlog(lambda) against the signal-to-noise ratio lambda at one width (median over
    seeds); high lambda is OU's t -> 0 and Föllmer's t -> 1."""
    specs = results["config"]["process_specs"]
    for name in processes or results["config"]["processes"]:
        P = results["targets"][target]["processes"][name]
        T = table(results, target, name)
        snr = np.asarray(P["snr"])
        keep = snr > 0
        dens = kl_density(specs[name], snr[keep], np.median(T["per_time"][width_index], 0)[keep])
        ax.plot(snr[keep], dens, color=COLORS[name], label=LABELS[name])
    ax.set_xscale("log")
    ax.set_xlabel(r"signal-to-noise ratio $\lambda$")
    ax.set_ylabel(r"$\mathrm{d}\,\mathrm{KL} / \mathrm{d}\log\lambda$")


def plot_sample_quality(ax, results, target, processes=None):
    """MMD^2 of the learned samplers against parameters, the floor (two target samples, mean +- 2
    sd) as a grey band and each process's exact-drift sampler (its discretisation error) dotted."""
    entry = results["targets"][target]
    for name in processes or results["config"]["processes"]:
        T = table(results, target, name)
        ax.plot(T["params"], np.median(T["mmd"], 1), marker="o", ms=3, color=COLORS[name],
                label=LABELS[name])
        ax.axhline(entry["processes"][name]["exact_sampler"]["mmd"], color=COLORS[name], ls=":")
    m, s = entry["sample_floor"]["mmd"]
    ax.axhspan(m - 2 * s, m + 2 * s, color="0.5", alpha=0.25, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(r"MMD$^2$ to the target")
