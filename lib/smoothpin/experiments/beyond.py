"""Small studies beyond the paper (chapter "Beyond the paper"), on the headline experiment's code.

- ``discretisation_kl``: for a Gaussian target, the law of every sampler driven by the *exact*
  score / drift is Gaussian (the chain is affine in its state and noise), so KL(sampler || pi) is
  the Gaussian KL of its mean and covariance, estimated from n samples (the estimation bias,
  about (d + d(d + 1) / 2) / (2 n) nats, is the floor). Samplers: OU reverse with Euler-Maruyama
  ("ou_em") and with the exact-OU step ("ou_exact"), started at N(0, sigma^2 I); Föllmer with
  Euler-Maruyama from 0 ("follmer_em"). The continuous-time reference is KL(phi || p_T) for OU
  (data processing from the start-up error) and 0 for Föllmer.
- ``sample_size_study``: networks trained on N samples of the target instead of fresh draws; their
  Girsanov bound against the true score / drift, for several N (N = None: fresh draws each step).
- ``structure_config``: the headline experiment's ``ci`` configuration on a log-concave, a
  multimodal and a heavy-tailed target (``data.make_target``), one width (32), two seeds, 200-sample metrics.
"""
from __future__ import annotations

import torch

from ..bounds import gaussian_kl
from ..cache import cached
from ..metrics import girsanov_kl_bound
from ..sample import sample_follmer, sample_ou_reverse
from .smooth_vs_pin import _sweep, build_config, make_process, process_times, snr_grid

__all__ = ["discretisation_kl", "sample_size_study", "structure_config", "STRUCTURE_TARGETS"]

STRUCTURE_TARGETS = {
    "gaussian": {"kind": "gaussian", "scales": [0.3, 1.5]},
    "circle2": {"kind": "circle", "modes": 8, "radius": 2.5, "variance": 0.02},
    "heavy": {"kind": "scale_mixture", "dim": 2, "modes": 6, "min_variance": 0.05, "ratio": 4.0,
              "tail": 1.0},
}


def _moment_kl(x, target):
    m = x.mean(0)
    c = torch.cov(x.T).reshape(x.shape[1], x.shape[1])
    return float(gaussian_kl(m, c, target.mean, target.covariance))


def discretisation_kl(target, ou, follmer, steps, n=100_000, seed=0):
    """{"steps", "ou_em", "ou_exact", "follmer_em", "ou_start", "floor"}: KL(sampler || target)
    for each step count (target: a one-component GaussianMixture, float64)."""
    if target.n_components != 1:
        raise ValueError("target: the moment KL is exact only for a Gaussian target")
    gen = torch.Generator().manual_seed(seed)
    d = target.dim
    out = {"steps": list(steps), "ou_em": [], "ou_exact": [], "follmer_em": []}
    score = lambda x, t: ou.score(target, x, t)
    drift = lambda x, t: follmer.drift(target, x, t)
    for k in steps:
        for method in ("em", "exact"):
            x_T = ou.sigma * torch.randn(n, d, generator=gen, dtype=target.means.dtype)
            out[f"ou_{method}"].append(_moment_kl(sample_ou_reverse(score, ou, x_T, k, method,
                                                                    gen), target))
        x = sample_follmer(drift, n, k, follmer.sigma, gen, dim=d, dtype=target.means.dtype)
        out["follmer_em"].append(_moment_kl(x, target))
    p_T = ou.marginal(target, ou.T)
    zero = torch.zeros(d, dtype=target.means.dtype)
    out["ou_start"] = float(gaussian_kl(zero, ou.sigma ** 2, p_T.mean, p_T.covariance))
    out["floor"] = (d + d * (d + 1) / 2) / (2 * n)
    return out


def sample_size_study(target_spec, sizes, process_names=("ou", "follmer"), width=32, seeds=(0, 1),
                      steps=400, lr=0.03, scale="ci", directory=None):
    """{process: {"sizes", "kl" (len(sizes) x len(seeds))}}: Girsanov bounds of ScoreMLPs of
    ``width`` trained on N target samples (N in ``sizes``; None = fresh draws), cached."""
    from .data import make_target

    cfg = build_config(scale)
    key = {"study": "sample_size", "target": target_spec, "sizes": [s or 0 for s in sizes],
           "processes": list(process_names), "width": width, "seeds": list(seeds), "steps": steps,
           "lr": lr, "config": cfg}

    def compute():
        target = make_target(target_spec)
        snr = snr_grid(cfg)
        out = {}
        for name in process_names:
            proc = make_process(cfg["process_specs"][name])
            times = process_times(proc, snr)[0].float()
            rows = []
            for N in sizes:
                g = torch.Generator().manual_seed(100 + (N or 0))
                data = target if N is None else target.sample(N, generator=g)
                nets = _sweep(cfg, proc, data, [width], list(seeds), steps, lr, cfg["data_seed"],
                              torch.float32, "cpu").nets
                gen = lambda: torch.Generator().manual_seed(cfg["eval_seed"])
                rows.append([float(girsanov_kl_bound(net, proc, target, times=times,
                                                     n=cfg["eval_n"], generator=gen())[0])
                             for net in nets])
            out[name] = {"sizes": [s or 0 for s in sizes], "kl": rows}
        return out

    return cached(key, compute, directory=directory)


def structure_config(scale="ci"):
    """The headline configuration of ``scale`` on STRUCTURE_TARGETS, one width (32), two seeds,
    sample metrics from 200 draws."""
    cfg = build_config(scale)
    cfg.update(targets={k: dict(v) for k, v in STRUCTURE_TARGETS.items()}, widths=[32],
               seeds=[0, 1], sample_n=200, floor_repeats=2)
    return cfg
