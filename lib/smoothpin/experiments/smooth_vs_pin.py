"""The headline experiment: how many parameters does each process need? (chapter "Smooth or pin").

For each target (``data.make_target``), each process (OU score by denoising score matching,
Föllmer drift by Brownian-bridge regression) and each (width, seed) of ScoreMLP(d, width, depth):

1. learning rate, tuned once per process by one rule: a pilot run on the first target at the
   middle width, first seed, ``pilot_steps`` steps, for every rate in ``lr_grid``; the rate with the
   smallest Girsanov bound is kept for every target, width and seed (ties go to the smaller rate);
2. training: ``sp.train_sweep`` (all seeds of a width in one vectorised pass; widths up to
   ``group_max_width`` share one pass), ``steps`` Adam steps of ``batch`` fresh target samples,
   cosine decay, the library's default "variance" time weighting. Both processes get the same
   steps x batch, the same initialisations (init seed) and the same minibatch stream (data seed);
3. errors on one scale: ``sp.girsanov_kl_bound`` on a grid of times that is the same grid of
   signal-to-noise ratios lambda for both processes (log-spaced in [lambda_min, lambda_max]):
   OU  X = a Y + sigma sqrt(1 - a^2) Z,  lambda = a^2 / (sigma^2 (1 - a^2)), a = e^{-beta t};
   Föllmer  X = t Y + sigma sqrt(t (1 - t)) Z,  lambda = t / (sigma^2 (1 - t)),
   lambda_min = lambda(T) of the OU horizon, lambda_max the common cut-off (training uses the same
   cut-offs; the Föllmer grid also holds t = 0). The OU start-up error KL(p_T || phi) is estimated
   separately and never added to the network term;
4. samples: ``sample_n`` draws from each learned sampler (OU exact step / Föllmer Euler-Maruyama,
   ``sample_steps`` steps), MMD^2 (and W2 in d <= ``w2_max_dim``) to one fixed target sample,
   beside the floor (two independent target samples) and the same sampler with the exact
   score / drift (its discretisation error, kept apart from the network error).

Scales: ``ci`` (the chapter runs it live), ``medium`` (one CPU run, results/ committed), ``full``
(GPU size). ``python -m smoothpin.experiments.smooth_vs_pin --scale medium`` writes
results/smooth_vs_pin_<scale>.json with provenance (configuration, versions, device, date, commit).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from .. import __version__
from ..cache import cached
from ..bounds import kl_bound_stderr
from ..metrics import girsanov_kl_bound, mmd, sample_floor, w2
from ..nets import count_parameters
from ..processes import OU, Follmer
from ..sample import sample_follmer, sample_ou_reverse
from ..train import train_sweep
from .data import make_target

__all__ = ["SCALES", "SCHEMA", "BridgeClockOU", "make_process", "build_config", "snr_grid",
           "process_times", "run", "run_cached",
           "results_path", "save_results", "load_results", "provenance"]

SCALES = ("ci", "medium", "full")
SCHEMA = 1
ROOT = Path(__file__).resolve().parents[3]

_TARGETS = {
    "circle2": {"kind": "circle", "modes": 8, "radius": 2.5, "variance": 0.02},
    "sphere8": {"kind": "sphere", "dim": 8, "modes": 8, "radius": 2.5, "variance": 0.05, "seed": 0},
    "sphere32": {"kind": "sphere", "dim": 32, "modes": 8, "radius": 2.5, "variance": 0.05,
                 "seed": 1},
    "digits": {"kind": "digits", "modes": 10, "reg_covar": 1.3e-3, "seed": 0},
}

_SIZES = {  # per scale: what changes; everything else is shared
    "ci": dict(processes=["ou", "follmer"], targets=["circle2"], widths=[8, 32], seeds=[0, 1],
               steps=300, batch=256, lr_grid=[0.01, 0.03], pilot_steps=60, n_times=25,
               eval_n=512, sample_n=500, sample_steps=50, floor_repeats=3, w2_max_dim=0),
    "medium": dict(processes=["ou", "follmer", "ou_bridge_clock"],
                   targets=["circle2", "sphere8", "sphere32", "digits"],
                   widths=[6, 12, 24, 48, 96], seeds=[0, 1, 2], steps=1000, batch=256,
                   lr_grid=[0.01, 0.03, 0.1], pilot_steps=250, n_times=33, eval_n=512,
                   sample_n=500, sample_steps=50, floor_repeats=5, w2_max_dim=2),
    "full": dict(processes=["ou", "follmer", "ou_bridge_clock"],
                 targets=["circle2", "sphere8", "sphere32", "digits"],
                 widths=[2, 4, 8, 16, 32, 64, 128, 224], seeds=[0, 1, 2, 3, 4], steps=20000,
                 batch=1024, lr_grid=[0.001, 0.003, 0.01, 0.03, 0.1], pilot_steps=5000,
                 n_times=81, eval_n=4096, sample_n=2000, sample_steps=500, floor_repeats=10,
                 w2_max_dim=2),
}


def build_config(scale):
    """The JSON-able configuration of ``scale`` ("ci", "medium" or "full")."""
    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {SCALES}, got {scale!r}")
    size = _SIZES[scale]
    T = 3.0  # OU horizon: KL(p_T || phi) <= e^{-2T} KL(pi || phi), and lambda_min = lambda(T)
    specs = {"ou": {"kind": "ou", "sigma": 1.0, "beta": 1.0, "T": T},
             "follmer": {"kind": "follmer", "sigma": 1.0},
             "ou_bridge_clock": {"kind": "ou_bridge_clock", "sigma": 1.0,
                                 "T": -math.expm1(-2 * T)}}  # the same p_T as "ou"
    cfg = dict(schema=SCHEMA, scale=scale, dtype="float32", process_specs=specs,
               snr_max=1000.0, depth=3, time_embedding_dim=32, cosine=True,
               weighting="variance", group_max_width=32, data_seed=0, eval_seed=1,
               sample_seed=2, **{k: v for k, v in size.items() if k != "targets"})
    cfg["targets"] = {name: dict(_TARGETS[name]) for name in size["targets"]}
    return json.loads(json.dumps(cfg))  # plain JSON types, as they come back from a file


class BridgeClockOU(OU):
    """The OU process run on the Föllmer bridge's clock: beta(t) = 1 / (2 (1 - t)) on [0, T], T < 1.

    B(t) = int_0^t beta = -log(1 - t) / 2, so a^2 = e^{-2 B(t)} = 1 - t and the signal-to-noise
    ratio a^2 / (sigma^2 (1 - a^2)) = (1 - t) / (sigma^2 t) is the Föllmer one at time 1 - t. Uniform
    training times then cover the signal-to-noise ratios exactly as the Föllmer regression does; only
    the function the network must represent (score in OU coordinates vs drift) differs. Every OU
    method (marginals, scores, samplers, g^2 = 2 beta sigma^2) follows from beta_at/integrated_beta.
    """

    def __init__(self, sigma=1.0, T=0.99):
        if not 0.0 < float(T) < 1.0:
            raise ValueError(f"T: must lie in (0, 1) for the bridge clock, got {T}")
        super().__init__(sigma=sigma, beta=1.0, T=T)

    def beta_at(self, t):
        """beta(t) = 1 / (2 (1 - t))."""
        return 0.5 / (1 - self._t(t))

    def integrated_beta(self, t):
        """B(t) = -log(1 - t) / 2."""
        t = self._t(t)
        return -0.5 * (torch.log1p(-t) if isinstance(t, torch.Tensor) else math.log1p(-t))

    def __repr__(self):
        return f"BridgeClockOU(sigma={self.sigma:g}, T={self.T:g})"


def make_process(spec):
    """OU(sigma, beta, T), Follmer(sigma) or BridgeClockOU(sigma, T) from a config entry."""
    kw = {k: v for k, v in spec.items() if k != "kind"}
    kinds = {"ou": OU, "follmer": Follmer, "ou_bridge_clock": BridgeClockOU}
    if spec.get("kind") not in kinds:
        raise ValueError(f"spec: unknown process kind {spec.get('kind')!r}; use one of {list(kinds)}")
    return kinds[spec["kind"]](**kw)


def _processes(cfg):
    return {name: make_process(cfg["process_specs"][name]) for name in cfg["processes"]}


def snr_grid(cfg, dtype=torch.float64):
    """n_times log-spaced lambdas in [lambda(T) of the "ou" process, snr_max] (increasing)."""
    ou = make_process(cfg["process_specs"]["ou"])
    a, s = ou.mean_std(ou.T)
    lo = a * a / (s * s)
    return torch.logspace(math.log10(lo), math.log10(cfg["snr_max"]), cfg["n_times"], dtype=dtype)


def process_times(process, snr):
    """Times with the given signal-to-noise ratios (increasing times; Föllmer also gets t = 0).

    OU: lambda = a^2 / (sigma^2 (1 - a^2)), so B(t) = log(1 + 1 / (sigma^2 lambda)) / 2 and
    t = B / beta (constant beta) or t = 1 - e^{-2B} (bridge clock); Föllmer: lambda =
    t / (sigma^2 (1 - t)), so t = sigma^2 lambda / (1 + sigma^2 lambda).
    Returns (times, snr per time)."""
    s2 = process.sigma ** 2
    if isinstance(process, OU):
        B = torch.log1p(1 / (s2 * snr)) / 2
        t = -torch.expm1(-2 * B) if isinstance(process, BridgeClockOU) else B / process.beta
        return t.clamp(max=process.T).flip(0), snr.flip(0)  # clamp: rounding at lambda(T)
    t = s2 * snr / (1 + s2 * snr)
    return torch.cat([t.new_zeros(1), t]), torch.cat([snr.new_zeros(1), snr])


def _t_min(process, cfg):
    """Training cut-off at lambda = snr_max: OU t >= t_min, Föllmer t <= 1 - t_min."""
    lam = torch.tensor([cfg["snr_max"]], dtype=torch.float64)
    t = process_times(process, lam)[0]
    return t[0].item() if isinstance(process, OU) else 1.0 - t[-1].item()


def _groups(widths, cap):
    small = [w for w in widths if w <= cap]
    return ([small] if small else []) + [[w] for w in widths if w > cap]


def _sweep(cfg, proc, target, widths, seeds, steps, lr, data_seed, dtype, device):
    return train_sweep(proc, target, widths, seeds, depth=cfg["depth"], steps=steps,
                       batch=cfg["batch"], lr=lr, seed=data_seed, t_min=_t_min(proc, cfg),
                       weighting=cfg["weighting"], time_embedding_dim=cfg["time_embedding_dim"],
                       cosine=cfg["cosine"], dtype=dtype, device=device, progress=False)


def _evaluate(cfg, proc, target, net, times):
    gen = torch.Generator(device=times.device).manual_seed(cfg["eval_seed"])
    kl, res = girsanov_kl_bound(net, proc, target, times=times, n=cfg["eval_n"], generator=gen)
    return float(kl), res


def _draw(proc, fn, cfg, dim, dtype, device):
    gen = torch.Generator(device=device).manual_seed(cfg["sample_seed"])
    n, steps = cfg["sample_n"], cfg["sample_steps"]
    if not isinstance(proc, OU):
        return sample_follmer(fn, n, steps, proc.sigma, gen, dim=dim, dtype=dtype, device=device)
    x_T = proc.sigma * torch.randn(n, dim, generator=gen, dtype=dtype, device=device)
    return sample_ou_reverse(fn, proc, x_T, steps, "exact", gen, t_min=_t_min(proc, cfg))


def _sample_metrics(x, ref, bw, use_w2):
    out = {"mmd": float(mmd(x, ref, bw))}
    out["w2"] = float(w2(x, ref)) if use_w2 else None
    return out


def _kl_to_reference(law, sigma, n, gen):
    """Monte Carlo KL(law || N(0, sigma^2 I)) = E[log law - log phi]: (value, stderr)."""
    x = law.sample(n, generator=gen)
    d = x.shape[-1]
    log_phi = -0.5 * (x * x).sum(-1) / sigma ** 2 - 0.5 * d * math.log(2 * math.pi * sigma ** 2)
    v = (law.log_prob(x) - log_phi).double()
    return v.mean().item(), (v.std() / math.sqrt(n)).item()


def _rounded(xs, sig=5):
    return [float(f"{v:.{sig}g}") for v in xs]


def _pilot(cfg, proc, target, snr, dtype, device):
    """The learning-rate rule: Girsanov bound after pilot_steps at the middle width, first seed."""
    times = process_times(proc, snr)[0].to(dtype=dtype, device=device)
    mid = cfg["widths"][len(cfg["widths"]) // 2]
    kl = [_evaluate(cfg, proc, target, _sweep(cfg, proc, target, [mid], cfg["seeds"][:1],
                                              cfg["pilot_steps"], lr, cfg["data_seed"] + 1,
                                              dtype, device).nets[0], times)[0]
          for lr in cfg["lr_grid"]]
    score = [v if math.isfinite(v) else math.inf for v in kl]  # a diverged run never wins
    best = min(range(len(kl)), key=lambda i: (score[i], cfg["lr_grid"][i]))
    return {"width": mid, "lr": cfg["lr_grid"], "kl_bound": kl, "chosen": cfg["lr_grid"][best]}


def _run_process(cfg, name, proc, target, snr, lr, ref, bw, dtype, device, log):
    times, snr_t = process_times(proc, snr)
    times = times.to(dtype=dtype, device=device)
    t0 = time.perf_counter()
    members, norm = [], None
    use_w2 = target.dim <= cfg["w2_max_dim"]
    for group in _groups(cfg["widths"], cfg["group_max_width"]):
        sweep = _sweep(cfg, proc, target, group, cfg["seeds"], cfg["steps"], lr,
                       cfg["data_seed"], dtype, device)
        tail = max(1, cfg["steps"] // 10)
        for net, (w, s), loss in zip(sweep.nets, sweep.members, sweep.losses):
            kl, res = _evaluate(cfg, proc, target, net, times)
            norm = res.norm
            se = float(kl_bound_stderr(proc, res.stderr.double().cpu(), times.double().cpu()))
            m = dict(width=w, seed=s, params=count_parameters(net), kl_bound=kl,
                     kl_bound_stderr=se, relative_error=float(res.relative), per_time=_rounded(res.per_time.tolist()),
                     final_loss=float(loss[-tail:].mean()))
            m.update(_sample_metrics(_draw(proc, net, cfg, target.dim, dtype, device),
                                     ref, bw, use_w2))
            members.append(m)
        log(f"  {name}: widths {group} done ({time.perf_counter() - t0:.0f} s)")
    exact = (lambda x, t: proc.score(target, x, t)) if isinstance(proc, OU) else (
        lambda x, t: proc.drift(target, x, t))
    out = dict(lr=lr, times=_rounded(times.tolist(), 8), snr=_rounded(snr_t.tolist(), 8),
               norm=_rounded(norm.tolist()), members=members,
               exact_sampler=_sample_metrics(_draw(proc, exact, cfg, target.dim, dtype, device),
                                             ref, bw, use_w2))
    if isinstance(proc, OU):
        gen = torch.Generator(device=device).manual_seed(cfg["eval_seed"] + 1)
        out["initial_kl"] = _kl_to_reference(proc.marginal(target, proc.T), proc.sigma,
                                             16 * cfg["eval_n"], gen)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def run(cfg, device="cpu", log=None):
    """Runs the experiment described by ``cfg`` (from ``build_config``) on ``device``.

    Returns the results dict (JSON-able): {"schema", "config", "targets": {name: {...}}}; see the
    chapter for the fields. ``log``: optional callable(str) for progress lines.
    """
    log = log or (lambda msg: None)
    dtype = getattr(torch, cfg["dtype"])
    device = torch.device(device)
    out = {"schema": SCHEMA, "config": cfg, "pilot": {}, "targets": {}}
    processes = _processes(cfg)
    for tname, spec in cfg["targets"].items():
        target = make_target(spec, dtype=dtype, device=device)
        snr = snr_grid(cfg)
        gen = torch.Generator(device=device).manual_seed(cfg["sample_seed"] + 1)
        ref = target.sample(cfg["sample_n"], generator=gen)
        z = torch.cat([ref, target.sample(cfg["sample_n"], generator=gen)])
        med = torch.cdist(z, z).median().item()
        bw = [med * f for f in (0.25, 0.5, 1.0, 2.0, 4.0)]
        use_w2 = target.dim <= cfg["w2_max_dim"]
        floor = {"mmd": sample_floor(lambda a, b: mmd(a, b, bw), target.sample, cfg["sample_n"],
                                     cfg["floor_repeats"], gen)}
        if use_w2:
            floor["w2"] = sample_floor(w2, target.sample, cfg["sample_n"], cfg["floor_repeats"],
                                       gen)
        entry = dict(dim=target.dim, snr=_rounded(snr.tolist(), 8), mmd_bandwidths=_rounded(bw),
                     sample_floor={k: [float(v.mean), float(v.std)] for k, v in floor.items()})
        procs = {}
        for name, proc in processes.items():
            if name not in out["pilot"]:  # once per process, on the first target
                out["pilot"][name] = dict(target=tname, **_pilot(cfg, proc, target, snr, dtype,
                                                                 device))
                log(f"pilot {name} on {tname}: lr = {out['pilot'][name]['chosen']:g}")
            log(f"{tname} (d = {target.dim}), {name}")
            procs[name] = _run_process(cfg, name, proc, target, snr, out["pilot"][name]["chosen"],
                                       ref, bw, dtype, device, log)
        entry["processes"] = procs
        gen = torch.Generator(device=device).manual_seed(cfg["eval_seed"] + 2)
        entry["kl_pi_to_reference"] = _kl_to_reference(target, cfg["process_specs"]["ou"]["sigma"],
                                                       16 * cfg["eval_n"], gen)
        out["targets"][tname] = entry
    return out


def run_cached(scale, device="cpu", directory=None):
    """``run(build_config(scale))`` through the content-addressed cache (sp.cached)."""
    cfg = build_config(scale)
    return cached({"experiment": "smooth_vs_pin", "config": cfg}, lambda: run(cfg, device),
                  directory=directory, device=device, dtype=getattr(torch, cfg["dtype"]))


def _git(*args):
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(device, seconds=None):
    """Library / torch / Python versions, device, threads, UTC date, git commit (and whether the
    tree had uncommitted changes), the command line, wall time."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        platform.processor() or platform.machine())
    return {"smoothpin": __version__, "torch": torch.__version__,
            "python": platform.python_version(), "device": str(device), "device_name": name,
            "threads": torch.get_num_threads(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": _git("rev-parse", "HEAD") or None,
            "git_dirty": None if _git("rev-parse", "HEAD") is None else bool(_git("status", "--porcelain")),
            "command": "python -m smoothpin.experiments.smooth_vs_pin " + " ".join(sys.argv[1:]),
            "wall_seconds": seconds}


def results_path(scale):
    """<repository>/results/smooth_vs_pin_<scale>.json."""
    return ROOT / "results" / f"smooth_vs_pin_{scale}.json"


def _finite_or_none(obj):
    """NaN / inf (a diverged sampler's MMD, say) become None, so the file is standard JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_none(v) for v in obj]
    return obj


def save_results(results, path):
    """Writes ``results`` as indented standard JSON (non-finite numbers as null), atomically
    (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_finite_or_none(results), indent=1, allow_nan=False) + "\n")
    tmp.replace(path)


def load_results(path_or_scale):
    """Reads a results file (a path, or a scale name meaning ``results_path(scale)``)."""
    p = results_path(path_or_scale) if path_or_scale in SCALES else Path(path_or_scale)
    return json.loads(Path(p).read_text())


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m smoothpin.experiments.smooth_vs_pin",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--scale", choices=SCALES, default="medium")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    ap.add_argument("--out", default=None, help="default: results/smooth_vs_pin_<scale>.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available here")
    cfg = build_config(args.scale)
    start = time.perf_counter()
    res = run(cfg, args.device, log=lambda m: print(m, flush=True))
    res["provenance"] = provenance(args.device, round(time.perf_counter() - start, 1))
    out = Path(args.out) if args.out else results_path(args.scale)
    save_results(res, out)
    print(f"wrote {out} in {res['provenance']['wall_seconds']} s")


if __name__ == "__main__":
    sys.exit(main())
