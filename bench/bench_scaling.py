"""Benchmark: how time and memory grow with points, dimension, components, samples and steps (issue 8).

Run as ``python bench/bench_scaling.py`` (options: --quick, --device, --dtype, --repeats, --threads).
Measured, all with the library's own functions and the full-covariance mixture of bench_score:
- exact mixture score ``GaussianMixture.score`` vs n points, dimension d and components K;
- semigroup estimators ``ou_semigroup`` (the value U_t f) and ``ou_score_from_semigroup`` (which
  calls ``grad_log_ou_semigroup``), f = d pi / d phi for a K = 4 mixture pi at t = 0.5: Monte Carlo
  vs n_samples and vs query points, Gauss-Hermite vs dimension (grid n_nodes^d), with the error
  against the closed forms U_t f = p_t / phi (reversibility of OU) and the exact ``OU.score``;
- samplers ``sample_follmer`` (exact ``Follmer.drift``) and ``sample_ou_reverse`` ("exact" step,
  exact ``OU.score``) vs particles, steps and d.
Times and peaks come from ``_timing.measure`` (median of --repeats calls after a warm-up; peak =
growth of ``ru_maxrss`` on CPU, of ``torch.cuda.max_memory_allocated`` on CUDA). Each table runs in
its own process (--quick: all in one), and before each case the process's peak resident set size is
reset (``/proc/self/clear_refs``, after ``malloc_trim``) so that the peak is that case's growth over
what was resident before it; where that is not allowed, every case gets its own process.

Where the time goes: one more call (after the timed ones) runs under a ``TorchDispatchMode`` that
counts every aten op, times it, and records its bytes (inputs + outputs) and matmul FLOPs (a tiny
case of each kind runs under it first: its first use of an op pays one-time costs). The time of a call splits into
Python outside aten ops (wall time minus the summed op time), small ops (largest operand < 16 KB, or
views: dispatch-bound), matmul, exp/log-type ops, random numbers, and other elementwise ops,
reductions and copies. Each class's op time is compared with the machine's rate for that kind of op
measured at the start (``add``/``exp``/``randn`` at operand sizes 16 KB ... 64 MB, a square gemm);
the ratio (model time / measured time) says whether the class runs at the machine's rate. The
sentence after each table names the class that dominates at the largest size and the resource it
is bound by.
"""
import argparse
import ctypes
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import measure, sync  # noqa: E402
from bench_score import _mixture  # noqa: E402

BINS = [1 << 14, 1 << 17, 1 << 20, 1 << 23, 1 << 26]     # operand sizes (bytes) of the reference rates
SMALL = BINS[0]
MM = {"mm", "addmm", "bmm", "baddbmm", "addbmm", "mv", "addmv", "dot"}
TR = {"exp", "exp_", "log", "log_", "log1p", "expm1", "sqrt", "rsqrt", "pow", "tanh", "sigmoid", "erf",
      "logsumexp", "_softmax", "_log_softmax", "softplus", "_softmax_backward_data", "_log_softmax_backward_data"}
RNG = {"normal", "normal_", "randn", "rand", "uniform_", "multinomial", "randint", "bernoulli_", "random_"}
NO_DATA = {"empty", "empty_strided", "empty_like", "_local_scalar_dense", "set_", "resize_"}
CLASSES = ("py", "small", "mm", "exp", "rng", "ew")


# ----------------------------------------------------------------------------- memory

def _reset_peak():
    """Resets the process's peak resident set size (Linux >= 4.0), after handing freed heap pages back,
    so that ``measure``'s ru_maxrss growth is the next case's alone. False where not allowed."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- op accounting

def _bin(nbytes):
    return min(range(len(BINS)), key=lambda i: abs(math.log2(max(nbytes, 1)) - math.log2(BINS[i])))


def _op_class(func, sizes):
    name = func.overloadpacket.__name__
    if func.is_view or name in NO_DATA or not sizes or max(sizes) < SMALL:
        return "small"
    if name in MM:
        return "mm"
    if name in TR:
        return "exp"
    if name in RNG:
        return "rng"
    return "ew"


def _mm_flops(name, args):
    shp = [a.shape for a in args if isinstance(a, torch.Tensor)]
    if name == "mm" and len(shp) >= 2:
        return 2 * shp[0][0] * shp[0][1] * shp[1][1]
    if name in ("addmm", "baddbmm", "addbmm") and len(shp) >= 3:
        a, b = shp[1], shp[2]
        return 2 * math.prod(a) * b[-1]
    if name == "bmm" and len(shp) >= 2:
        return 2 * math.prod(shp[0]) * shp[1][-1]
    if name in ("mv", "addmv", "dot"):
        return 2 * max(math.prod(s) for s in shp)
    return 0


def _counter_class():
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class OpCounter(TorchDispatchMode):
        """Counts, times and sizes every aten op run under it (CUDA: synchronised per op)."""

        def __init__(self, device):
            super().__init__()
            self.cuda = device.startswith("cuda")
            self.n_ops, self.flops = 0, 0
            self.time = dict.fromkeys(CLASSES[1:], 0.0)
            self.traffic = {}   # "class:bin" -> bytes

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            t0 = time.perf_counter()
            out = func(*args, **(kwargs or {}))
            if self.cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            ts = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
            sizes = [min(t.numel() * t.element_size(), t.untyped_storage().nbytes()) for t in ts]
            cls = _op_class(func, sizes)
            self.n_ops += 1
            self.time[cls] += dt
            if cls == "mm":
                self.flops += _mm_flops(func.overloadpacket.__name__, args)
            elif cls != "small":
                key = f"{cls}:{_bin(max(sizes))}"
                self.traffic[key] = self.traffic.get(key, 0) + sum(sizes)
            return out

    return OpCounter


# ----------------------------------------------------------------------------- cases

def _semigroup_problem(d, m, dtype, device):
    """K = 4 mixture pi, f = d pi / d phi, t = 0.5 (sigma = beta = 1), m query points from p_t;
    closed forms (float64): U_t f = p_t / phi and the OU score."""
    import smoothpin as sp
    gm64 = sp.GaussianMixture(*_mixture(4, d, torch.float64, "cpu"))
    ou, t = sp.OU(sigma=1.0, beta=1.0, T=5.0), 0.5
    g = torch.Generator().manual_seed(2)
    x64 = ou.sample_transition(gm64.sample(m, generator=g), t, generator=g)
    exact_u = torch.exp(ou.marginal(gm64, t).log_prob(x64) - ou.invariant(d, like=x64).log_prob(x64))
    log_f = sp.log_density_ratio(gm64.to(device=device, dtype=dtype), 1.0)
    return log_f, x64.to(device=device, dtype=dtype), t, exact_u, ou.score(gm64, x64, t)


def build(case, dtype, device):
    """(fn, error(out) or None) for one case: fn() is one call of the measured function."""
    import smoothpin as sp
    kind, d = case["kind"], case["d"]
    gen = lambda: torch.Generator(device=device).manual_seed(0)  # noqa: E731
    if kind == "score":
        mix = sp.GaussianMixture(*_mixture(case["K"], d, dtype, device))
        x = torch.randn(case["n"], d, generator=torch.Generator().manual_seed(1),
                        dtype=torch.float64).to(dtype=dtype, device=device)
        return (lambda: mix.score(x)), None
    if kind in ("sg_value", "sg_score"):
        from bench_semigroup import rel_rms
        log_f, x, t, exact_u, exact_s = _semigroup_problem(d, case["m"], dtype, device)
        kw = dict(method=case["method"], n_samples=case.get("n_samples", 2), n_nodes=case.get("n_nodes", 2))
        if kind == "sg_value":
            f = lambda y: torch.exp(log_f(y))  # noqa: E731
            fn = lambda: sp.ou_semigroup(f, x, t, generator=gen(), **kw)  # noqa: E731
            return fn, (lambda out: float((((out.double().cpu() - exact_u) / exact_u) ** 2).mean().sqrt()))
        fn = lambda: sp.ou_score_from_semigroup(log_f, x, t, generator=gen(), **kw)  # noqa: E731
        return fn, (lambda out: rel_rms(out.double().cpu(), exact_s))
    mix = sp.GaussianMixture(*_mixture(case["K"], d, dtype, device))
    n, steps = case["n"], case["steps"]
    if kind == "follmer":
        fol = sp.Follmer(1.0)
        drift = lambda x, t: fol.drift(mix, x, t)  # noqa: E731
        return (lambda: sp.sample_follmer(drift, n, steps, 1.0, gen(), dim=d, dtype=dtype, device=device)), None
    ou = sp.OU(sigma=1.0, beta=1.0, T=5.0)
    x_T = torch.randn(n, d, generator=torch.Generator().manual_seed(3),
                      dtype=torch.float64).to(dtype=dtype, device=device)
    score = lambda y, t: ou.score(mix, y, t)  # noqa: E731
    return (lambda: sp.sample_ou_reverse(score, ou, x_T, steps, "exact", gen(), t_min=1e-3)), None


def run_case(case, dtype, device, repeats, counter_cls):
    fn, err = build(case, dtype, device)
    if not device.startswith("cuda"):
        _reset_peak()
    m = measure(fn, device, repeats)
    error = err(m.out) if err else None
    median_s, peak_mb = m.median_s, m.peak_mb
    del m
    counter = counter_cls(device)
    with counter:
        fn()
    return {"median_s": median_s, "peak_mb": peak_mb, "error": error, "n_ops": counter.n_ops,
            "flops": counter.flops, "op_time": counter.time, "traffic": counter.traffic}


def _tiny(case):
    """A cheap case of the same kind: run once first so that one-time costs (lazy imports, first use
    of autograd and of the counting mode) do not land in the first measured case's peak memory."""
    small = {"n": 64, "m": 2, "n_samples": 64, "n_nodes": 2, "steps": 2}
    return {k: (min(v, small[k]) if k in small else v) for k, v in case.items()}


def child(cases, dtype, device, repeats):
    dt, counter_cls = getattr(torch, dtype), _counter_class()
    for kind in dict.fromkeys(c["kind"] for c in cases):   # one-time costs, and the counting mode warm
        fn, _ = build(_tiny(next(c for c in cases if c["kind"] == kind)), dt, device)
        with counter_cls(device):
            fn()
    for case in cases:
        r = run_case(case, dt, device, repeats, counter_cls)
        print("CASE " + json.dumps({"id": case["id"], **r}), flush=True)


# ----------------------------------------------------------------------------- machine references

def _best(fn, device, min_s=0.02, rounds=5):
    fn()
    sync(device)
    k, t = 1, 0.0
    while True:   # iterations per round: enough for min_s
        t0 = time.perf_counter()
        for _ in range(k):
            fn()
        sync(device)
        t = time.perf_counter() - t0
        if t >= min_s or k >= 1 << 16:
            break
        k *= 4
    best = t / k
    for _ in range(rounds - 1):
        t0 = time.perf_counter()
        for _ in range(k):
            fn()
        sync(device)
        best = min(best, (time.perf_counter() - t0) / k)
    return best


def machine_refs(dtype, device):
    """Best-of-5 rates: tiny op (s), gemm (FLOP/s), and per operand size add / exp / randn (bytes/s)."""
    e = torch.empty((), dtype=dtype).element_size()
    one = torch.ones(1, dtype=dtype, device=device)
    tiny = _best(lambda: torch.add(one, one), device)
    nm = 4096 if device.startswith("cuda") else 1024
    a = torch.randn(nm, nm, dtype=dtype, device=device)
    gemm = 2 * nm ** 3 / _best(lambda: a @ a, device)
    del a
    rates = {"ew": [], "exp": [], "rng": []}
    g = torch.Generator(device=device).manual_seed(0)
    for nb in BINS:
        x = torch.rand(nb // e, dtype=dtype, device=device) + 0.5
        y, z = torch.rand_like(x), torch.empty_like(x)
        rates["ew"].append(3 * nb / _best(lambda: torch.add(x, y, out=z), device))
        rates["exp"].append(2 * nb / _best(lambda: torch.exp(x, out=z), device))
        rates["rng"].append(nb / _best(lambda: z.normal_(generator=g), device))
    return {"tiny_s": tiny, "gemm": gemm, "rates": rates}


# ----------------------------------------------------------------------------- analysis and printing

def split(r, refs):
    """Shares of the wall time by class, and per class model time / op time (1 = machine rate)."""
    wall, op = r["median_s"], r["op_time"]
    shares = {"py": max(0.0, wall - sum(op.values()))}
    shares.update(op)
    tot = sum(shares.values())
    shares = {k: v / tot for k, v in shares.items()}
    model = dict.fromkeys(("ew", "exp", "rng"), 0.0)
    for key, b in r["traffic"].items():
        cls, i = key.split(":")
        model[cls] += b / refs["rates"][cls][int(i)]
    model["mm"] = r["flops"] / refs["gemm"]
    eff = {k: model[k] / op[k] for k in model if op[k] > 0}
    return shares, eff, sum(op.values()) / wall


def _traffic_level(r, cls):
    """Where the bytes of class ``cls`` mostly live: the operand size bin with most bytes."""
    by_bin = {}
    for key, b in r["traffic"].items():
        if not key.startswith(cls + ":"):
            continue
        i = int(key.split(":")[1])
        by_bin[i] = by_bin.get(i, 0) + b
    if not by_bin:
        return "-"
    nb = BINS[max(by_bin, key=by_bin.get)]
    where = "L2-resident" if nb <= 1 << 19 else "L3-resident" if nb <= 1 << 24 else "DRAM"
    return f"operands ~{nb / 2 ** 20:.2g} MB, {where}"


NAMES = {"py": "Python outside aten ops", "small": "small ops/views (dispatch)", "mm": "matmul",
         "exp": "exp/log-type ops", "rng": "random numbers", "ew": "other elementwise ops, reductions, copies"}


def bound_sentence(label, size_txt, r, refs, slope, device, work, unit):
    shares, eff, inflation = split(r, refs)
    dom = max(shares, key=shares.get)
    parts = []
    for k in CLASSES:
        if shares[k] >= 0.05:
            s = f"{NAMES[k]} {shares[k]:.0%}"
            if k in eff:
                ref = {"mm": "gemm", "exp": "`exp`", "rng": "`randn`", "ew": "`add`"}[k]
                s += f" (at {eff[k]:.0%} of the {ref} rate measured for its operand sizes)"
            parts.append(s)
    floor = r["n_ops"] * refs["tiny_s"]
    head = (f"**Bound** ({label}): measured at {size_txt}: {r['median_s']:.3g} s per call, "
            f"{r['n_ops']} aten ops (their floor at the tiny-op time: {floor:.2g} s, "
            f"{floor / r['median_s']:.0%}); " + ", ".join(parts))
    if inflation > 1.3:
        head += (f" (op times under the counter sum to {inflation:.1f}x the plain call's time: the split is "
                 "approximate, the Python share a lower bound)")
    if dom in ("py", "small"):
        why = ("Python and per-op dispatch overhead bounds it: most of the time is outside aten ops or in "
               "ops on operands under 16 KB, whose cost is per call, not per byte")
        if slope is not None and slope < 0.5:
            why += f"; with exponent {slope:.2f} the time is nearly flat in the size"
    elif dom == "mm":
        why = ("matrix-multiply FLOPs bound it" if eff.get("mm", 0) > 0.3 else
               "matrix products bound it, running well below the gemm peak (small or skinny shapes)")
    else:
        e = eff.get(dom, 0)
        what = {"exp": "the exp/log throughput of the cores", "rng": "random-number generation",
                "ew": "elementwise passes over intermediates"}[dom]
        moved = sum(b for k, b in r["traffic"].items() if k.startswith(dom)) / work
        what += f" ({moved:.3g} bytes moved per {unit}; {_traffic_level(r, dom)})"
        if e >= 0.4:
            why = f"{what} bound it, running near the machine's rate for their operand sizes"
        else:
            why = (f"{what} bound it, running at {e:.0%} of the machine's rate for their operand sizes: "
                   "the limit is the number and per-element cost of these kernels, not bandwidth or FLOPs")
    if device.startswith("cuda"):
        why += " (CUDA: op times include a synchronisation per op, so shares are approximate)"
    return head + "; so " + why + "."


def slope(xs, ys, last=3):
    xs, ys = [math.log(v) for v in xs[-last:]], [math.log(v) for v in ys[-last:]]
    if len(xs) < 2:
        return None
    mx, my = statistics.mean(xs), statistics.mean(ys)
    return sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sum((a - mx) ** 2 for a in xs)


def fmt(v):
    if v >= 10_000 and float(v) == 10 ** round(math.log10(v)):
        return f"1e{round(math.log10(v))}"
    return str(v)


def tables(quick):
    """Table specs: title, description, size label, unit of work, series: (label, [(size, case, work)])."""
    if quick:
        ns, dn, ds, Ks = [1000, 10_000, 100_000], 10_000, [2, 8, 32], [1, 4, 16]
        mcs, m, ms, ghd = [256, 1024, 4096], 16, [4, 16, 64], [1, 2, 3]
        parts, steps0, stepss = [100, 1000, 10_000], 20, [10, 20, 40]
        sd, sn, ssteps = [2, 8, 32], 1000, 20
    else:
        ns, dn, ds, Ks = [1000, 10_000, 100_000, 1_000_000], 100_000, [2, 8, 32, 64], [1, 4, 16, 64]
        mcs, m, ms, ghd = [256, 1024, 4096, 16384, 65536], 64, [16, 64, 256, 1024], [1, 2, 3, 4, 5]
        parts, steps0, stepss = [100, 1000, 10_000, 100_000], 100, [25, 50, 100, 200]
        sd, sn, ssteps = [2, 8, 32, 64], 10_000, 20
    sc = lambda n, d, K: {"kind": "score", "n": n, "d": d, "K": K}  # noqa: E731
    sg = lambda kind, d, m, meth, **kw: {"kind": kind, "d": d, "m": m, "method": meth, **kw}  # noqa: E731
    smp = lambda kind, n, steps, d: {"kind": kind, "n": n, "steps": steps, "d": d, "K": 8}  # noqa: E731
    sg_series = lambda sizes, mk, meth: [  # noqa: E731
        (f"`{name}` ({meth})", [(s, mk(kind, s), w) for s, w in sizes])
        for kind, name in (("sg_value", "ou_semigroup"), ("sg_score", "ou_score_from_semigroup"))]
    samplers = lambda sizes, mk: [  # noqa: E731
        (f"`{name}`", [(s, mk(kind, s), w) for s, w in sizes])
        for kind, name in (("follmer", "sample_follmer"), ("ou", "sample_ou_reverse"))]
    return [
        ("Exact mixture score vs number of points",
         "`GaussianMixture(w, mu, S).score(x)`, d = 2, K = 8, full covariances.",
         "n", "point", [("`score`", [(n, sc(n, 2, 8), n) for n in ns])]),
        ("Exact mixture score vs dimension", f"n = {fmt(dn)}, K = 8, full covariances.",
         "d", "point", [("`score`", [(d, sc(dn, d, 8), dn) for d in ds])]),
        ("Exact mixture score vs number of components", f"n = {fmt(dn)}, d = 8, full covariances.",
         "K", "point", [("`score`", [(K, sc(dn, 8, K), dn) for K in Ks])]),
        ("Monte Carlo semigroup vs n_samples", f"d = 2, {m} query points from p_t, t = 0.5; error: relative RMS "
         "against the closed forms U_t f = p_t / phi and the exact `OU.score`.", "n_samples", "point-sample",
         sg_series([(s, m * s) for s in mcs], lambda kind, s: sg(kind, 2, m, "mc", n_samples=s), "mc")),
        ("Monte Carlo semigroup vs query points", "d = 2, n_samples = 4096, t = 0.5.", "points", "point-sample",
         sg_series([(q, q * 4096) for q in ms], lambda kind, q: sg(kind, 2, q, "mc", n_samples=4096), "mc")),
        ("Gauss-Hermite semigroup vs dimension", f"n_nodes = 8 per axis (grid 8^d), {m} query points, t = 0.5. "
         "The exponent is fitted against the grid size 8^d.", "d", "point-node",
         sg_series([(d, m * 8 ** d) for d in ghd],
                   lambda kind, d: sg(kind, d, m, "gauss-hermite", n_nodes=8), "gauss-hermite")),
        ("Samplers vs particles", f"d = 2, K = 8, {steps0} steps; exact drift / score.", "particles",
         "particle-step", samplers([(n, n * steps0) for n in parts], lambda kind, n: smp(kind, n, steps0, 2))),
        ("Samplers vs steps", f"{fmt(sn)} particles, d = 2, K = 8.", "steps", "particle-step",
         samplers([(s, sn * s) for s in stepss], lambda kind, s: smp(kind, sn, s, 2))),
        ("Samplers vs dimension", f"{fmt(sn)} particles, {ssteps} steps, K = 8.", "d", "particle-step",
         samplers([(d, sn * ssteps) for d in sd], lambda kind, d: smp(kind, sn, ssteps, d))),
    ]


def run_children(groups, a):
    results = {}
    for cases in groups:
        cmd = [sys.executable, os.path.abspath(__file__), "--cases", json.dumps(cases), "--dtype", a.dtype,
               "--device", a.device, "--repeats", str(a.repeats), "--threads", str(a.threads)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        for line in p.stdout.splitlines():
            if line.startswith("CASE "):
                r = json.loads(line[5:])
                results[r["id"]] = r
        if p.returncode != 0:
            print(f"<!-- child failed (exit {p.returncode}): {p.stderr.strip().splitlines()[-1:]} -->")
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, 1 repeat, one process (a smoke run)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per case (default 3, --quick 1)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1, as bench_sampler: on a shared 2-core machine two threads wait on each other; 0: the process default)")
    ap.add_argument("--cases", help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.repeats = a.repeats or (1 if a.quick else 3)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.cases:
        child(json.loads(a.cases), a.dtype, a.device, a.repeats)
        return
    if a.device == "cuda" and not torch.cuda.is_available():
        print("## Scaling\n\nCUDA requested but not available: skipped.\n")
        return
    t_start = time.perf_counter()
    load = os.getloadavg()[0]
    refs = machine_refs(getattr(torch, a.dtype), a.device)
    specs = tables(a.quick)
    n_case = 0
    for spec in specs:
        for _, rows in spec[4]:
            for row in rows:
                row[1]["id"] = n_case
                n_case += 1
    reset = a.device == "cuda" or _reset_peak()
    per_table = [[row[1] for _, rows in spec[4] for row in rows] for spec in specs]
    if not reset:
        groups = [[c] for g in per_table for c in g]
    elif a.quick:
        groups = [[c for g in per_table for c in g]]
    else:
        groups = per_table
    results = run_children(groups, a)
    dev = torch.cuda.get_device_name(0) if a.device == "cuda" else f"CPU, {os.cpu_count()} cores"
    print("## Scaling: time and memory vs points, dimension, components, samples and steps\n")
    threads = f"{torch.get_num_threads()} threads ({'--threads' if a.threads else 'the process default'})"
    calls = f"{a.repeats} call{'s' if a.repeats > 1 else ''}"
    print(f"Library functions only; device {a.device} ({dev}), {a.dtype}, torch {torch.__version__}, {threads}, "
          f"load average {load:.1f} at the start{', --quick sizes' if a.quick else ''}. Time: median of {calls} "
          "after a warm-up. Peak: "
          "growth of the resident set (CPU, reset per case) or of `torch.cuda.max_memory_allocated` over the "
          "case's set-up. Exponent: least-squares slope of log time vs log size over the three largest sizes. "
          "Split: share of the call's wall time in Python outside aten ops (py), small ops and views "
          "(sm: dispatch-bound), matmul (mm), exp/log-type ops (exp), random numbers (rng) and other "
          "elementwise ops, reductions and copies (ew), from one more call under a counting "
          "`TorchDispatchMode`. GFLOP/s counts matmul FLOPs only; GB/s counts the operand bytes of all "
          "non-matmul ops on operands of 16 KB or more.\n")
    load_end = os.getloadavg()[0]
    if torch.get_num_threads() > 1 and max(load, load_end) > 1.0 and a.device == "cpu":
        print(f"> **Warning**: load average {load:.1f} at the start and {load_end:.1f} at the end: other "
              f"processes were running, and with {torch.get_num_threads()} threads on {os.cpu_count()} cores "
              "an op's threads wait for each other whenever one is descheduled, so these times (and the "
              "reference rates) can be several times too slow. Rerun on an idle machine or with --threads 1.\n")
    rr = refs["rates"]
    print("Machine rates measured now (best of 5): tiny op "
          f"{refs['tiny_s'] * 1e6:.1f} us, gemm {refs['gemm'] / 1e9:.0f} GFLOP/s; "
          + "; ".join(f"{nm} " + ", ".join(f"{r / 1e9:.3g}" for r in rr[k]) + " GB/s"
                      for k, nm in (("ew", "`add`"), ("exp", "`exp`"), ("rng", "`randn`")))
          + " at operand sizes " + ", ".join(f"{b // 1024} KB" for b in BINS) + ".\n")
    for title, desc, size_label, unit, series in specs:
        has_err = any(s[1][0][1]["kind"].startswith("sg") for s in series)
        print(f"### {title}\n\n{desc}\n")
        print(f"| function | {size_label} | time (s) | {unit}s/s | peak (MB) | aten ops "
              "| split py/sm/mm/exp/rng/ew (%) | GFLOP/s | GB/s |" + (" error |" if has_err else ""))
        print("|---" * (9 + has_err) + "|")
        notes = []
        for label, rows in series:
            xs, ys, errs, last = [], [], [], None
            for size, case, work in rows:
                r = results.get(case["id"])
                if r is None:
                    print(f"| {label} | {fmt(size)} | failed |" + " |" * (6 + has_err))
                    continue
                shares, _, _ = split(r, refs)
                sp_txt = "/".join(f"{100 * shares[k]:.0f}" for k in CLASSES)
                gb = sum(r["traffic"].values()) / r["median_s"] / 1e9
                line = (f"| {label} | {fmt(size)} | {r['median_s']:.4f} | {work / r['median_s']:.3g} | "
                        f"{r['peak_mb']:.0f} | {r['n_ops']} | {sp_txt} | "
                        f"{r['flops'] / r['median_s'] / 1e9:.3g} | {gb:.3g} |")
                if has_err:
                    line += f" {r['error']:.2e} |" if r["error"] is not None else " - |"
                print(line)
                xs.append(8 ** size if "Gauss" in title else size)
                ys.append(r["median_s"])
                errs.append(r["error"])
                last = (size, r, work)
            if last is None:
                continue
            sl = slope(xs, ys)
            txt = f"{label}: time exponent {sl:.2f}" if sl is not None else f"{label}: -"
            if size_label == "n_samples" and all(e for e in errs) and len(errs) > 1:
                txt += f", error exponent {slope(xs, errs):.2f}"
            size_txt = f"{size_label} = {fmt(last[0])}"
            notes.append((txt, bound_sentence(label, size_txt, last[1], refs, sl, a.device, last[2], unit)))
        print()
        print("Exponents: " + "; ".join(t for t, _ in notes) + ".\n")
        for _, s in notes:
            print(s + "\n")
    print(f"<!-- bench_scaling wall time {time.perf_counter() - t_start:.0f} s -->")


if __name__ == "__main__":
    main()
