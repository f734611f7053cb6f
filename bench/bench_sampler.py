"""Benchmark: SDE integration, smoothpin's hand-written Euler-Maruyama vs torchsde.sdeint (Euler).

Run as ``python bench/bench_sampler.py`` (options: --repeats, --dtype, --device, --particles,
--steps, --threads, --quick). Default one intra-op thread for both: on the shared 2-core machine two
threads make these (10^4 x 2)-sized operations up to 20x slower (threads wait on each other).
Throughput is particles x steps per second; times are medians over --repeats runs after one
warm-up, each case in its own subprocess so that peak memory (CPU: maximum resident set size
beyond import and set-up; CUDA: torch.cuda.max_memory_allocated) is that case's alone.

Problems (the same SDE, step size and number of particles for both integrators, d = 2):
- ``ou``: the forward OU / VP-SDE dX = -X dt + sqrt(2) dW on [0, 1] (a cheap drift: the integrator's
  own cost is what is measured);
- ``follmer``: the Föllmer sampler dX = b(X, t) dt + dW on [0, 1] with the exact drift of a
  2-component Gaussian mixture (Follmer.drift; the drift dominates, so the ratio shows what a user
  saves in a real run).
Ours: ``smoothpin.euler_maruyama`` (explicit generator, noise drawn in chunks, in-place updates).
Baseline: what a user would write with torchsde: an SDE object with f, g (noise_type "diagonal",
sde_type "ito") and ``torchsde.sdeint(sde, x0, ts=[0, 1], method="euler", dt=1/steps)`` with its
default Brownian motion. Both results are checked to have the same mean and variance (printed).
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import measure, run_child  # noqa: E402


def _problem(name, dtype, device):
    """(drift(x, t float), diffusion coefficient g) for a problem name."""
    import smoothpin as sp
    if name == "ou":
        return (lambda x, t: -x), 2 ** 0.5
    mix = sp.GaussianMixture.isotropic(torch.tensor([0.3, 0.7]), torch.tensor([[-1.5, 0.5], [1.0, -1.0]]),
                                       torch.tensor([0.3, 0.5])).to(device=device, dtype=dtype)
    fol = sp.Follmer(1.0)
    return (lambda x, t: fol.drift(mix, x, t)), 1.0


def run_case(method, problem, n, steps, dtype, device, repeats):
    import smoothpin as sp
    drift, g = _problem(problem, dtype, device)
    x0 = torch.zeros(n, 2, dtype=dtype, device=device)
    times = torch.linspace(0, 1, steps + 1, dtype=dtype, device=device)
    if method == "smoothpin":
        gen = torch.Generator(device=device).manual_seed(0)

        def fn():
            return sp.euler_maruyama(drift, x0, times, g, gen)
    else:
        import torchsde

        class SDE(torch.nn.Module):
            noise_type, sde_type = "diagonal", "ito"

            def f(self, t, y):
                return drift(y, float(t))

            def g(self, t, y):
                return torch.full_like(y, g)

        sde = SDE()
        ts = torch.tensor([0.0, 1.0], dtype=dtype, device=device)

        def fn():
            with torch.no_grad():
                return torchsde.sdeint(sde, x0, ts, method="euler", dt=1.0 / steps)[-1]
    m = measure(fn, device, repeats)
    out = m.out
    out = out.double().cpu()
    return {"median_s": m.median_s, "peak_mb": m.peak_mb,
            "mean": out.mean(0).tolist(), "var": out.var(0).tolist()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=["float64", "float32"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--particles", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="200 steps, 1 repeat (a smoke run)")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.quick:
        a.steps, a.repeats = 200, 1
    torch.set_num_threads(a.threads)
    if a.case:  # child: one measurement, JSON on stdout
        method, problem = a.case.split(",")
        r = run_case(method, problem, a.particles, a.steps, getattr(torch, a.dtype), a.device, a.repeats)
        print(json.dumps(r))
        return
    try:
        import torchsde
        sde_version = torchsde.__version__
    except ImportError:
        sde_version = None
    print("## SDE integration: Euler-Maruyama vs torchsde.sdeint (Euler)\n")
    print(f"torch {torch.__version__}, torchsde {sde_version}, device {a.device}, dtype {a.dtype}, "
          f"threads {torch.get_num_threads()}, {a.particles} particles x {a.steps} steps in d = 2, "
          f"median of {a.repeats} runs\n")
    if sde_version is None:
        print("torchsde is not installed (`pip install torchsde==0.2.6`): baseline skipped.\n")
    print("| problem | smoothpin (s) | torchsde (s) | smoothpin (particle-steps/s) | torchsde (particle-steps/s) "
          "| speed-up | smoothpin peak (MB) | torchsde peak (MB) | mean, var (smoothpin / torchsde) |")
    print("|---|---|---|---|---|---|---|---|---|")
    work = a.particles * a.steps
    for problem in ("ou", "follmer"):
        res = {}
        for method in ("smoothpin", "torchsde"):
            if method == "torchsde" and sde_version is None:
                res[method] = None
                continue
            res[method] = run_child(__file__, f"{method},{problem}", [
                "--dtype", a.dtype, "--device", a.device, "--repeats", a.repeats,
                "--particles", a.particles, "--steps", a.steps, "--threads", a.threads], f"{method} {problem}")
        s, b = res["smoothpin"], res["torchsde"]
        if s is None or b is None:
            st = f"{s['median_s']:.3f}" if s else "-"
            print(f"| {problem} | {st} | - | - | - | - | - | - | - |")
            continue
        fmt = lambda r: f"{r['mean'][0]:+.3f}, {r['var'][0]:.3f}"  # noqa: E731
        print(f"| {problem} | {s['median_s']:.3f} | {b['median_s']:.3f} | {work / s['median_s']:.2e} "
              f"| {work / b['median_s']:.2e} | {b['median_s'] / s['median_s']:.1f}x | {s['peak_mb']:.0f} "
              f"| {b['peak_mb']:.0f} | {fmt(s)} / {fmt(b)} |")
    print("\nThe `ou` row measures the integrators (cheap drift); in the `follmer` row the exact "
          "mixture drift dominates both, so the ratio is what a real run saves. Means and variances "
          "of the first coordinate agree within Monte Carlo error (same SDE, independent noise).")


if __name__ == "__main__":
    main()
