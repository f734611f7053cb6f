"""Benchmark: exact Gaussian-mixture score, smoothpin vs torch.distributions + autograd.

Run as ``python bench/bench_score.py`` (options: --repeats, --dtype, --device, --n2, --n64,
--chunk64). Cases (issue 3): (d=2, K=8) and (d=64, K=16), full covariances, 10^6 points each.
The baseline is what a user would write:
``MixtureSameFamily(Categorical(w), MultivariateNormal(mu, covariance_matrix=S))`` then
``autograd.grad(log_prob(x).sum(), x)``. For d=64 one baseline call on 10^6 points would hold several
(n, K, d) float64 tensors of 8 GB each, more than this machine has, so the baseline runs over chunks
of --chunk64 points (10^5 by default), as a user would; smoothpin chunks internally.

Every (method, case) runs in its own subprocess so that its peak memory is its own. Peak memory on
CPU is the growth of the process's peak resident set size (resource.getrusage ru_maxrss) from just
before the first call to the end (tracemalloc does not see torch's CPU allocator); on CUDA it is
torch.cuda.max_memory_allocated minus the memory allocated before the first call. Times are medians
over --repeats calls after one warm-up call, in one process. Prints a markdown section.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import measure, run_child  # noqa: E402


def _mixture(K, d, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(K, generator=g, dtype=torch.float64) + 0.5
    mu = 2 * torch.randn(K, d, generator=g, dtype=torch.float64)
    A = torch.randn(K, d, d, generator=g, dtype=torch.float64) / d ** 0.5
    S = 0.3 * A @ A.mT + 0.2 * torch.eye(d, dtype=torch.float64)
    f = lambda t: t.to(dtype=dtype, device=device)
    return f(w / w.sum()), f(mu), f(S)


def run_case(method, K, d, n, dtype, device, repeats, chunk):
    import smoothpin as sp
    w, mu, S = _mixture(K, d, dtype, device)
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype=dtype, device=device)
    if method == "smoothpin":
        gm = sp.GaussianMixture(w, mu, S)
        fn = lambda: gm.score(x)
    else:
        D = torch.distributions
        mix = D.MixtureSameFamily(D.Categorical(probs=w), D.MultivariateNormal(mu, covariance_matrix=S))

        def grad(xc):
            xx = xc.detach().requires_grad_(True)
            return torch.autograd.grad(mix.log_prob(xx).sum(), xx)[0]

        fn = lambda: torch.cat([grad(x[i:i + chunk]) for i in range(0, n, chunk)])
    m = measure(fn, device, repeats)
    out = m.out
    chk = out[:1000].double().cpu()
    return {"median_s": m.median_s, "min_s": m.min_s, "peak_mb": m.peak_mb,
            "check": chk.tolist()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n2", type=int, default=10 ** 6, help="points for d=2, K=8")
    ap.add_argument("--n64", type=int, default=10 ** 6, help="points for d=64, K=16")
    ap.add_argument("--chunk64", type=int, default=10 ** 5, help="baseline chunk for d=64")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.case:  # child: one measurement, JSON on stdout
        method, K, d, n, chunk = a.case.split(",")
        r = run_case(method, int(K), int(d), int(n), getattr(torch, a.dtype), a.device, a.repeats, int(chunk))
        print(json.dumps(r))
        return
    print("## Exact Gaussian-mixture score: smoothpin vs torch.distributions + autograd\n")
    print(f"`GaussianMixture.score` against `MixtureSameFamily(Categorical, MultivariateNormal(covariance_matrix=S))`"
          f" + `autograd.grad`, full covariances; device {a.device}, {a.dtype}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {a.repeats} calls after a warm-up, each (method, case) "
          f"in its own process. Peak memory: growth of the peak resident set size (`ru_maxrss`) over the calls "
          f"on CPU, `torch.cuda.max_memory_allocated` on CUDA. The d=64 baseline runs in chunks of "
          f"{a.chunk64:.0e} points (one call on all points would need several (n, K, d) tensors).\n")
    print("| d | K | n | smoothpin (s) | baseline (s) | speed-up | smoothpin peak (MB) | baseline peak (MB) | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for K, d, n, chunk in ((8, 2, a.n2, a.n2), (16, 64, a.n64, min(a.chunk64, a.n64))):
        res = {}
        for method in ("smoothpin", "baseline"):
            res[method] = run_child(__file__, f"{method},{K},{d},{n},{chunk}", [
                "--dtype", a.dtype, "--device", a.device, "--repeats", a.repeats,
                "--threads", a.threads], f"{method} d={d}")
        s, b = res["smoothpin"], res["baseline"]
        if s is None or b is None:
            print(f"| {d} | {K} | {n:.0e} | {s and round(s['median_s'], 3)} | {b and round(b['median_s'], 3)} "
                  f"| - | - | - | - |")
            continue
        diff = (torch.tensor(s["check"], dtype=torch.float64) - torch.tensor(b["check"], dtype=torch.float64)).abs().max().item()
        print(f"| {d} | {K} | {n:.0e} | {s['median_s']:.3f} | {b['median_s']:.3f} "
              f"| {b['median_s'] / s['median_s']:.1f}x | {s['peak_mb']:.0f} | {b['peak_mb']:.0f} | {diff:.1e} |")
    print()


if __name__ == "__main__":
    main()
