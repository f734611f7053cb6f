"""Reading the headline experiment's results (``smooth_vs_pin.run`` / results/*.json).

- ``table(results, target, process)``: arrays over (width, seed): params, KL bound, its Monte Carlo
  standard error, relative L2 error, MMD^2, W2.
- ``params_to_reach(params, kl, eps)``: the parameter count at which a KL-versus-parameters curve
  first reaches ``eps``, by linear interpolation of log KL against log params between the two
  widths around the crossing (nan if it never does; the smallest count if the first width does).
- ``kl_density(spec, snr, e)``: the Girsanov integrand per unit log signal-to-noise ratio,
  dKL / dlog(lambda), so that KL = int density dlog(lambda) for either process:
  OU (any beta(t)):  (g^2 / 2) e |dt / dlog lambda| = sigma^2 e / (2 (1 + sigma^2 lambda));
  Föllmer:           e / (2 sigma^2) |dt / dlog lambda| = lambda e / (2 (1 + sigma^2 lambda)^2).
- ``compare(results, target, a, b)``: the paired comparison of process b against process a
  (same widths, same init seeds): the log10 KL ratio b / a per width (mean over seeds, standard
  error = seed standard deviation / sqrt(seeds)), its average over widths, the KL level ``eps`` in
  the middle (geometrically) of the range both median curves cover, the parameter count each
  process needs to reach it (per seed) and their ratio (if the curves share no KL level, only a
  bound: ``ratio_bound`` = (">", P_max / P_min) when b is worse at its largest width than a at its
  smallest, ("<", P_min / P_max) for the reverse), and the signal-to-noise ratio where the
  gap in KL density is largest (at the largest width, medians over seeds).
- ``verdict(results, a, b)``: per target "a better" / "b better" / "no significant difference"
  (the mean log10 ratio beyond two standard errors), and a one-line summary.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["table", "params_to_reach", "kl_density", "training_density", "trivial_level", "kl_split", "compare",
           "verdict",
           "LABELS"]

LABELS = {"ou": "OU (β = 1, T = 3)", "follmer": "Föllmer", "ou_bridge_clock": "OU, bridge clock"}


def table(results, target, process):
    """Dict of arrays: widths (W,), seeds (S,), params (W,), and (W, S) arrays kl, kl_se, rel,
    mmd, w2 (nan where not computed), per_time (W, S, n_times)."""
    members = results["targets"][target]["processes"][process]["members"]
    widths = sorted({m["width"] for m in members})
    seeds = sorted({m["seed"] for m in members})
    idx = {(m["width"], m["seed"]): m for m in members}
    get = lambda key: np.array([[np.nan if idx[w, s].get(key) is None else idx[w, s][key]
                                 for s in seeds] for w in widths], dtype=float)
    return dict(widths=np.array(widths), seeds=np.array(seeds),
                params=np.array([idx[w, seeds[0]]["params"] for w in widths], dtype=float),
                kl=get("kl_bound"), kl_se=get("kl_bound_stderr"), rel=get("relative_error"),
                mmd=get("mmd"), w2=get("w2"),
                per_time=np.array([[idx[w, s]["per_time"] for s in seeds] for w in widths]))


def params_to_reach(params, kl, eps):
    """Parameter count where the curve kl(params) (increasing params) first falls to eps."""
    params, kl = np.asarray(params, float), np.asarray(kl, float)
    below = np.nonzero(kl <= eps)[0]
    if below.size == 0:
        return math.nan
    i = below[0]
    if i == 0:
        return float(params[0])
    x0, x1 = np.log(params[i - 1]), np.log(params[i])
    y0, y1 = np.log(kl[i - 1]), np.log(kl[i])
    return float(np.exp(x0 + (np.log(eps) - y0) * (x1 - x0) / (y1 - y0)))


def kl_density(spec, snr, e):
    """dKL / dlog(lambda) at signal-to-noise ratios ``snr`` from per-time errors ``e``."""
    snr, e = np.asarray(snr, float), np.asarray(e, float)
    s2 = spec["sigma"] ** 2
    if spec["kind"] == "follmer":
        return snr * e / (2 * (1 + s2 * snr) ** 2)
    return s2 * e / (2 * (1 + s2 * snr))


def _density(results, target, process, per_time):
    P = results["targets"][target]["processes"][process]
    spec = results["config"]["process_specs"][process]
    snr = np.asarray(P["snr"])
    keep = snr > 0
    order = np.argsort(snr[keep])
    return snr[keep][order], kl_density(spec, snr[keep], per_time[..., keep])[..., order]


def trivial_level(results, target):
    """KL(pi || N(0, sigma^2 I)): the bound of the network that does nothing (OU score -x / sigma^2,
    Föllmer drift 0), up to the start-up and cut-off terms; a bound above it means the network
    has not learned the target."""
    return results["targets"][target]["kl_pi_to_reference"][0]


def compare(results, target, a="ou", b="follmer", trained_only=False):
    """Paired comparison of process b against a on ``target`` (see the module docstring).
    trained_only: keep only the widths where both median bounds are below ``trivial_level``."""
    A, B = table(results, target, a), table(results, target, b)
    if not (np.array_equal(A["widths"], B["widths"]) and np.array_equal(A["seeds"], B["seeds"])):
        raise ValueError("results: the two processes were run on different widths or seeds")
    if trained_only:
        level = trivial_level(results, target)
        keep = (np.median(A["kl"], 1) < level) & (np.median(B["kl"], 1) < level)
        if not keep.any():
            return None
        A = {k: (v[keep] if k not in ("seeds",) else v) for k, v in A.items()}
        B = {k: (v[keep] if k not in ("seeds",) else v) for k, v in B.items()}
    S = len(A["seeds"])
    logr = np.log10(B["kl"] / A["kl"])                       # (W, S), > 0: b worse
    per_width = logr.mean(1)
    per_width_se = logr.std(1, ddof=1) / math.sqrt(S) if S > 1 else np.zeros(len(per_width))
    mean = float(per_width.mean())
    se = float(np.sqrt((per_width_se ** 2).sum()) / len(per_width))
    ma, mb = np.median(A["kl"], 1), np.median(B["kl"], 1)
    lo, hi = max(ma.min(), mb.min()), min(ma.max(), mb.max())
    out = dict(a=a, b=b, widths=A["widths"], params=A["params"], log10_ratio=per_width, log10_ratio_se=per_width_se,
               mean_log10_ratio=mean, mean_log10_ratio_se=se, eps=math.nan,
               need_a=np.full(S, math.nan), need_b=np.full(S, math.nan), ratio=math.nan,
               ratio_range=(math.nan, math.nan), ratio_bound=None)
    if lo >= hi:  # no common KL level: one process is better at every size of the sweep
        span = float(A["params"][-1] / A["params"][0])
        out["ratio_bound"] = (">", span) if mb.min() > ma.max() else ("<", 1 / span)
    else:
        eps = math.sqrt(lo * hi)
        need_a = np.array([params_to_reach(A["params"], A["kl"][:, s], eps) for s in range(S)])
        need_b = np.array([params_to_reach(B["params"], B["kl"][:, s], eps) for s in range(S)])
        r = need_b / need_a
        out.update(eps=eps, need_a=need_a, need_b=need_b,
                   need_a_median=params_to_reach(A["params"], ma, eps),
                   need_b_median=params_to_reach(B["params"], mb, eps),
                   ratio=params_to_reach(B["params"], mb, eps) / params_to_reach(A["params"], ma, eps),
                   ratio_range=(float(np.nanmin(r)), float(np.nanmax(r))) if np.isfinite(r).any()
                   else (math.nan, math.nan))
    w = int(np.argmin(np.log(ma) + np.log(mb)))  # the width where both train best
    snr, da = _density(results, target, a, np.median(A["per_time"][w], 0))
    snr_b, db = _density(results, target, b, np.median(B["per_time"][w], 0))
    db = np.interp(np.log(snr), np.log(snr_b), db)
    i = int(np.argmax(np.abs(db - da)))
    out.update(gap_width=int(A["widths"][w]), snr=snr, density_a=da, density_b=db,
               gap_snr=float(snr[i]),
               gap_sign=float(np.sign(db[i] - da[i])))
    return out


def _time_at(spec, snr):
    """The time of process ``spec`` at signal-to-noise ratio snr (inverse of process_times)."""
    s2 = spec["sigma"] ** 2
    if spec["kind"] == "follmer":
        return s2 * snr / (1 + s2 * snr)
    B = 0.5 * math.log1p(1 / (s2 * snr))
    return -math.expm1(-2 * B) if spec["kind"] == "ou_bridge_clock" else B / spec["beta"]


def verdict(results, a="ou", b="follmer", trained_only=False):
    """(per-target dict of {"cls", "mean", "se", "ratio", "ratio_range", "ratio_bound", "eps",
    "widths", "gap_width", "gap_snr", "gap_t_a", "gap_t_b"}, one-line summary). cls: "a better"
    when b's KL bound is larger at equal width by more than two standard errors of the mean log10
    ratio, "b better" for the reverse. trained_only: as ``compare``; targets where no width
    qualifies get cls "not trained"."""
    specs = results["config"]["process_specs"]
    rows = {}
    for t in results["targets"]:
        c = compare(results, t, a, b, trained_only)
        if c is None:
            rows[t] = dict(cls="not trained")
            continue
        m, se = c["mean_log10_ratio"], c["mean_log10_ratio_se"]
        cls = "a better" if m > 2 * se else "b better" if m < -2 * se else "no significant difference"
        rows[t] = dict(cls=cls, mean=m, se=se, ratio=c["ratio"], ratio_range=c["ratio_range"],
                       ratio_bound=c["ratio_bound"], eps=c["eps"], widths=c["widths"].tolist(),
                       gap_width=c["gap_width"], gap_snr=c["gap_snr"],
                       gap_t_a=_time_at(specs[a], c["gap_snr"]),
                       gap_t_b=_time_at(specs[b], c["gap_snr"]))
    wins = sum(r["cls"] == "a better" for r in rows.values())
    losses = sum(r["cls"] == "b better" for r in rows.values())
    untrained = sum(r["cls"] == "not trained" for r in rows.values())
    n = len(rows) - untrained
    tail = f" ({untrained} target(s) without a trained width)" if untrained else ""
    if n == 0:
        return rows, "no comparison: no target has a width at which both processes trained"
    on = "on its one target" if n == 1 else f"on all {n} targets"
    if wins == n:
        line = f"reproduced: {LABELS[a]} needs fewer parameters than {LABELS[b]} {on}"
    elif losses == n:
        line = f"not reproduced: {LABELS[b]} needs fewer parameters than {LABELS[a]} {on}"
    else:
        line = (f"mixed: {LABELS[a]} better on {wins}, {LABELS[b]} better on {losses}, "
                f"no significant difference on {n - wins - losses} of {n} targets")
    return rows, line + tail


def training_density(spec, snr):
    """Density per unit log(lambda) of the signal-to-noise ratio of a uniform training time
    (t ~ U on the process's interval): |dt / dlog lambda| / (interval length).
    OU, constant beta: 1 / (2 beta (1 + sigma^2 lambda) T); Föllmer and the bridge-clock OU:
    sigma^2 lambda / ((1 + sigma^2 lambda)^2 T) (T = 1 for Föllmer)."""
    snr = np.asarray(snr, float)
    s2 = spec["sigma"] ** 2
    if spec["kind"] == "ou":
        return 1 / (2 * spec["beta"] * (1 + s2 * snr) * spec["T"])
    return s2 * snr / ((1 + s2 * snr) ** 2 * spec.get("T", 1.0))


def kl_split(results, target, process, width, at=1.0):
    """(KL from lambda < at, KL from lambda >= at): the median-over-seeds KL density of the
    network of ``width`` integrated (trapezoid in log lambda, grid point at ``at`` not required:
    the density is interpolated linearly in log lambda at the split)."""
    T = table(results, target, process)
    w = int(np.nonzero(T["widths"] == width)[0][0])
    snr, dens = _density(results, target, process, np.median(T["per_time"][w], 0))
    x = np.log(snr)
    cut = np.interp(np.log(at), x, dens)
    lo, hi = x < np.log(at), x > np.log(at)
    xl, yl = np.r_[x[lo], np.log(at)], np.r_[dens[lo], cut]
    xh, yh = np.r_[np.log(at), x[hi]], np.r_[cut, dens[hi]]
    return float(np.trapezoid(yl, xl)), float(np.trapezoid(yh, xh))
