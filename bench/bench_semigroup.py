"""Benchmark: Monte Carlo vs Gauss-Hermite semigroup estimates of the OU score, at a stated accuracy.

Run as ``python bench/bench_semigroup.py`` (options: --points, --threads, --repeats).
The score of a K = 4 Gaussian mixture (full covariances) at t = 0.5 (sigma = beta = 1) is estimated
by ``ou_score_from_semigroup`` -- grad log p_t = -x + grad log U_t f, f = d pi / d phi -- at points
drawn from p_t, and compared with the exact ``OU.score``. Accuracy is the relative RMS error
sqrt(mean |s_hat - s|^2 / mean |s|^2) over the points (for Monte Carlo, the RMS over 2 seeds).
For each target accuracy we take the cheapest setting that reaches it: Monte Carlo n_samples in
powers of 4 up to 4^8 = 65536, Gauss-Hermite n_nodes per axis up to a grid of 65536 nodes. Where
Monte Carlo does not reach the target, the row gives the n it would need from the 1/sqrt(n) law and
the rate extrapolated linearly in n (marked "extrap."). The extrapolation flatters Monte Carlo: its
self-normalised weights f(Y) are heavy-tailed here and its error decays more slowly than n^{-1/2}.
Throughput is points per second (median of --repeats calls of the chosen setting, after a warm-up).
Prints a markdown section.
"""
import argparse
import math
import statistics
import time

import torch

import smoothpin as sp

D64 = torch.float64
TARGETS = (1e-1, 1e-2, 1e-4, 1e-8)
MC_N = [4 ** k for k in range(4, 9)]            # 256 ... 65536
GH_NODES = [4, 6, 8, 12, 16, 24, 32, 48, 64, 96]
MAX_GRID = 1 << 16


def problem(d, n_points, seed=0):
    g = torch.Generator().manual_seed(seed)
    K = 4
    w = torch.full((K,), 1 / K, dtype=D64)
    mu = 1.5 * torch.randn(K, d, generator=g, dtype=D64)
    A = torch.randn(K, d, d, generator=g, dtype=D64) / d ** 0.5
    gm = sp.GaussianMixture(w, mu, 0.4 * A @ A.mT + 0.2 * torch.eye(d, dtype=D64))
    ou, t = sp.OU(sigma=1.0, beta=1.0, T=5.0), 0.5
    x = ou.sample_transition(gm.sample(n_points, generator=g), t, generator=g)
    return sp.log_density_ratio(gm, 1.0), x, t, ou.score(gm, x, t)


def rel_rms(est, exact):
    return float(((est - exact) ** 2).sum(-1).mean().sqrt() / (exact ** 2).sum(-1).mean().sqrt())


def timed(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def run(d, n_points, repeats):
    log_f, x, t, exact = problem(d, n_points)
    mc = lambda n, seed: sp.ou_score_from_semigroup(log_f, x, t, n_samples=n,
                                                    generator=torch.Generator().manual_seed(seed))
    gh = lambda k: sp.ou_score_from_semigroup(log_f, x, t, method="gauss-hermite", n_nodes=k)
    mc_err = {}
    for n in MC_N:
        mc_err[n] = math.sqrt(statistics.mean(rel_rms(mc(n, s), exact) ** 2 for s in (1, 2)))
    gh_err = {k: rel_rms(gh(k), exact) for k in GH_NODES if k ** d <= MAX_GRID}
    rows = []
    for eps in TARGETS:
        n_ok = next((n for n in MC_N if mc_err[n] <= eps), None)
        if n_ok is not None:
            sec = timed(lambda: mc(n_ok, 3), repeats)
            mc_cells = (f"{n_ok}", f"{mc_err[n_ok]:.1e}", f"{n_points / sec:.3g}")
        else:   # 1/sqrt(n) from the largest n; time linear in n
            n_max = MC_N[-1]
            need = n_max * (mc_err[n_max] / eps) ** 2
            sec = timed(lambda: mc(n_max, 3), 1) * need / n_max
            mc_cells = (f"~{need:.0e} (extrap.)", f"{mc_err[n_max]:.1e} at n = {n_max}",
                        f"{n_points / sec:.2g} (extrap.)")
        k_ok = next((k for k in gh_err if gh_err[k] <= eps), None)
        if k_ok is not None:
            gsec = timed(lambda: gh(k_ok), repeats)
            gh_cells = (f"{k_ok}^{d} = {k_ok ** d}", f"{gh_err[k_ok]:.1e}", f"{n_points / gsec:.3g}")
            ratio = f"{sec / gsec:.2g}x"
        else:
            k_max = max(gh_err)
            gh_cells = (f"not reached ({k_max}^{d})", f"{gh_err[k_max]:.1e}", "-")
            ratio = "-"
        rows.append(f"| {d} | {eps:.0e} | " + " | ".join(mc_cells + gh_cells) + f" | {ratio} |")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print("## Semigroup estimators: Monte Carlo vs Gauss-Hermite at a stated accuracy\n")
    print(f"OU score of a 4-component full-covariance Gaussian mixture at t = 0.5 (sigma = beta = 1) by "
          f"`ou_score_from_semigroup`, at {a.points} points drawn from p_t, against the exact `OU.score`; "
          f"error = relative RMS over the points. Cheapest Monte Carlo n (powers of 4, up to "
          f"{MC_N[-1]}) and Gauss-Hermite grid (up to {MAX_GRID} nodes) reaching each target; throughput in "
          f"points per second (median of {a.repeats} calls), float64, CPU, {torch.get_num_threads()} threads. "
          f"The last column is Gauss-Hermite's speed-up over Monte Carlo at equal accuracy. \"extrap.\": "
          f"Monte Carlo n and rate extrapolated from the largest n by the n^(-1/2) law (optimistic: the "
          f"error decays more slowly here) and time linear in n.\n")
    print("| d | target | MC n_samples | MC error | MC points/s | GH nodes | GH error | GH points/s | GH / MC |")
    print("|---|---|---|---|---|---|---|---|---|")
    for d in (2, 4):
        print("\n".join(run(d, a.points, a.repeats)))
    print()


if __name__ == "__main__":
    main()
