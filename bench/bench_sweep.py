"""Benchmark: the vectorised width/seed sweep (smoothpin.train_sweep, torch.func) vs a Python loop
of smoothpin.train_regression over the same networks.

Run as ``python bench/bench_sweep.py`` (options: --repeats, --steps, --dtype, --device, --threads,
--quick). Both sides train the same members (same initialisation, same minibatches, same Adam
settings; the sweep is equivalent to the loop up to rounding, see tests/test_train.py) on denoising
score matching for a 2-D Gaussian mixture, batch 256. Times per training step are medians over
--repeats runs after one warm-up (the sweep's first call pays a one-off torch.func set-up of about
a second, reported separately); each case runs in its own subprocess so that peak memory (CPU:
maximum resident set size beyond set-up; CUDA: torch.cuda.max_memory_allocated) is its own.

Sweeps:
- ``seeds``: one width (32), 12 initialisation seeds, depth 2 (the error bars of the book's curves);
- ``widths``: widths 4, 8, 16, 32, 64 x 3 seeds, depth 2 (a CPU-sized parameter-count sweep);
- ``widths-wide``: widths 16, 32, 64, 128, 256 x 2 seeds, depth 2.
The sweep runs with its default grouping "auto" (members of one width stacked as they are; for
these width sweeps "auto" picks one stacked network per width), and, for comparison, with every
member padded to the largest width (grouping "pad": M times the largest member's arithmetic).
Against the loop, the sweep saves the per-step Python and dispatch overhead of M - 1 members: it
wins most where that overhead dominates (small networks, many members).
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import measure, run_child  # noqa: E402

SWEEPS = {"seeds": ([32], list(range(12))), "widths": ([4, 8, 16, 32, 64], [0, 1, 2]),
          "widths-wide": ([16, 32, 64, 128, 256], [0, 1])}
DEPTH, BATCH = 2, 256


def run_case(method, sweep, steps, dtype, device, repeats):
    """method: "loop", "sweep" (grouping "auto") or "pad" (the sweep with grouping "pad")."""
    import smoothpin as sp
    widths, seeds = SWEEPS[sweep]
    mix = sp.GaussianMixture.isotropic(torch.tensor([0.3, 0.7]), torch.tensor([[-1.5, 0.5], [1.0, -1.0]]),
                                       torch.tensor([0.3, 0.5])).to(device=device, dtype=dtype)
    data = mix.sample(20000, torch.Generator(device=device).manual_seed(0))
    ou = sp.OU(T=1.0)

    if method in ("sweep", "pad"):
        grouping = "auto" if method == "sweep" else "pad"

        def fn():
            res = sp.train_sweep(ou, data, widths, seeds, depth=DEPTH, steps=steps, batch=BATCH,
                                 dtype=dtype, device=device, grouping=grouping, progress=False)
            return res.losses[:, -1]
    else:
        def fn():
            last = []
            for w in widths:
                for s in seeds:
                    torch.manual_seed(s)
                    net = sp.ScoreMLP(2, w, DEPTH).to(device=device, dtype=dtype)
                    losses = sp.train_regression(net, ou, data, steps=steps, batch=BATCH, progress=False)
                    last.append(losses[-1])
            return torch.stack(last)
    m = measure(fn, device, repeats)
    out = m.out
    return {"median_s": m.median_s, "first_s": m.first_s, "peak_mb": m.peak_mb,
            "last_loss": out.double().cpu().tolist()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--dtype", default="float32", choices=["float64", "float32"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="50 steps, 1 repeat (a smoke run)")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.quick:
        a.steps, a.repeats = 50, 1
    torch.set_num_threads(a.threads)
    if a.case:  # child: one measurement, JSON on stdout
        method, sweep = a.case.split(",")
        print(json.dumps(run_case(method, sweep, a.steps, getattr(torch, a.dtype), a.device, a.repeats)))
        return
    print("## Vectorised sweep (torch.func) vs a Python loop over the same networks\n")
    print(f"torch {torch.__version__}, device {a.device}, dtype {a.dtype}, threads {a.threads}, "
          f"DSM on a 2-D mixture, depth {DEPTH}, batch {BATCH}, {a.steps} Adam steps per member, "
          f"median of {a.repeats} runs\n")
    print("| sweep | members | loop (ms/step) | sweep (ms/step) | speed-up | sweep, all padded (ms/step) "
          "| sweep first call (s) | loop peak (MB) | sweep peak (MB) | max abs diff of final losses |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for sweep, (widths, seeds) in SWEEPS.items():
        res = {}
        for method in ("loop", "sweep", "pad"):
            if method == "pad" and len(widths) == 1:
                res[method] = None  # one width: nothing to pad
                continue
            res[method] = run_child(__file__, f"{method},{sweep}", [
                "--dtype", a.dtype, "--device", a.device, "--repeats", a.repeats,
                "--steps", a.steps, "--threads", a.threads], f"{method} {sweep}")
        lo, sw, pad = res["loop"], res["sweep"], res["pad"]
        members = f"{len(widths)} widths {widths} x {len(seeds)} seeds"
        if lo is None or sw is None:
            print(f"| {sweep} | {members} | - | - | - | - | - | - | - | - |")
            continue
        diff = max(abs(x - y) for x, y in zip(lo["last_loss"], sw["last_loss"]))
        per = lambda r: 1e3 * r["median_s"] / a.steps  # noqa: E731
        padded = f"{per(pad):.1f}" if pad else "-"
        print(f"| {sweep} | {members} | {per(lo):.1f} | {per(sw):.1f} | {lo['median_s'] / sw['median_s']:.1f}x "
              f"| {padded} | {sw['first_s']:.1f} | {lo['peak_mb']:.0f} | {sw['peak_mb']:.0f} | {diff:.1e} |")
    print("\nms/step is the wall time of one Adam step of the whole sweep (all members). The final "
          "losses agree to float32 rounding: both sides train the same networks on the same batches.")


if __name__ == "__main__":
    main()
