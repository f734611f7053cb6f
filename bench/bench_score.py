"""Benchmark: exact Gaussian-mixture score, smoothpin vs torch.distributions + autograd.

Run as ``python bench/bench_score.py`` (options: --repeats, --dtype, --device, --n2, --n64).
Cases: (d=2, K=8) and (d=64, K=16), full covariances, 10^6 points each. Every case runs in its own
subprocess so that peak memory is that case's alone: on CPU the peak resident set size
(resource.getrusage maxrss, after import and data creation subtracted) -- tracemalloc does not see
torch's allocator; on CUDA torch.cuda.max_memory_allocated. Times are medians over --repeats runs
after one warm-up. The baseline is what a user would write:
``MixtureSameFamily(Categorical(w), MultivariateNormal(mu, covariance_matrix=S))`` then
``autograd.grad(log_prob(x).sum(), x)``. Prints a markdown table.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch


def _mixture(K, d, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(K, generator=g, dtype=torch.float64) + 0.5
    mu = 2 * torch.randn(K, d, generator=g, dtype=torch.float64)
    A = torch.randn(K, d, d, generator=g, dtype=torch.float64) / d ** 0.5
    S = 0.3 * A @ A.mT + 0.2 * torch.eye(d, dtype=torch.float64)
    f = lambda t: t.to(dtype=dtype, device=device)
    return f(w / w.sum()), f(mu), f(S)


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_case(method, K, d, n, dtype, device, repeats):
    import smoothpin as sp
    w, mu, S = _mixture(K, d, dtype, device)
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype=dtype, device=device)
    if method == "smoothpin":
        gm = sp.GaussianMixture(w, mu, S)
        fn = lambda: gm.score(x)
    else:
        D = torch.distributions
        mix = D.MixtureSameFamily(D.Categorical(probs=w), D.MultivariateNormal(mu, covariance_matrix=S))

        def fn():
            xx = x.detach().requires_grad_(True)
            return torch.autograd.grad(mix.log_prob(xx).sum(), xx)[0]
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    out = fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    if device.startswith("cuda"):
        peak_mb = (torch.cuda.max_memory_allocated() - base_cuda) / 2 ** 20
    else:  # ru_maxrss is in KiB on Linux
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    chk = out[:1000].double().cpu()
    return {"median_s": statistics.median(times), "peak_mb": peak_mb, "check": chk.tolist()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n2", type=int, default=10 ** 6, help="points for d=2, K=8")
    ap.add_argument("--n64", type=int, default=10 ** 5, help="points for d=64, K=16")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.case:  # child: one measurement, JSON on stdout
        method, K, d, n = a.case.split(",")
        r = run_case(method, int(K), int(d), int(n), getattr(torch, a.dtype), a.device, a.repeats)
        print(json.dumps(r))
        return
    print(f"torch {torch.__version__}, device {a.device}, dtype {a.dtype}, threads {torch.get_num_threads()}, "
          f"median of {a.repeats} runs\n")
    print("| d | K | n | smoothpin (s) | baseline (s) | speed-up | smoothpin peak (MB) | baseline peak (MB) | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for K, d, n in ((8, 2, a.n2), (16, 64, a.n64)):
        res = {}
        for method in ("smoothpin", "baseline"):
            cmd = [sys.executable, os.path.abspath(__file__), "--case", f"{method},{K},{d},{n}",
                   "--dtype", a.dtype, "--device", a.device, "--repeats", str(a.repeats)]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                res[method] = None
                print(f"<!-- {method} d={d} failed: {p.stderr.strip().splitlines()[-1:]} -->")
                continue
            res[method] = json.loads(p.stdout.strip().splitlines()[-1])
        s, b = res["smoothpin"], res["baseline"]
        if s is None or b is None:
            print(f"| {d} | {K} | {n} | {s and round(s['median_s'], 3)} | {b and round(b['median_s'], 3)} | - | - | - | - |")
            continue
        diff = (torch.tensor(s["check"]) - torch.tensor(b["check"])).abs().max().item()
        print(f"| {d} | {K} | {n:.0e} | {s['median_s']:.3f} | {b['median_s']:.3f} | {b['median_s'] / s['median_s']:.1f}x "
              f"| {s['peak_mb']:.0f} | {b['peak_mb']:.0f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
