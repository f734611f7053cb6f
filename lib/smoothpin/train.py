"""Training score / drift networks (chapter "Learning the score and the drift").

From samples (generative modelling), one regression chosen by the process object:
- OU, denoising score matching: t ~ U(t_min, T), X_t = a_t Y + s_t Z (a_t = e^{-int beta},
  s_t^2 = sigma^2 (1 - a_t^2)); target -Z / s_t = grad log p(X_t | Y), whose conditional mean is
  the score grad log p_t(X_t).
- Föllmer, Brownian-bridge regression: t ~ U(0, 1 - t_min), X_t = t Y + sigma sqrt(t (1 - t)) Z;
  target (Y - X_t) / (1 - t), whose conditional mean is the drift b(X_t, t) (equivalently sigma^2
  times the DSM target of the bridge kernel plus X_t / t).
Loss = E[lambda(t) |net(X_t, t) - target|^2] (sum over coordinates, mean over the batch).
Time weighting (the documented choice): ``weighting="variance"`` (default) takes lambda(t) inversely
proportional to the conditional noise of the target, lambda = s_t^2 for OU (target variance d / s_t^2)
and lambda = 1 - t for Föllmer (target variance ~ d sigma^2 t / (1 - t)), so every time contributes
O(1) and the minibatch gradient stays bounded at both ends; ``weighting="uniform"`` takes
lambda = 1, the weighting of the time-integrated error int E|s - s_hat|^2 dt that the paper's bounds
use, at the price of a high-variance target near t = 0 (OU) or t = 1 (Föllmer).

From an unnormalised density gamma (sampling; PIS for Föllmer, DDS for OU), the control objective
J(u) = E[ sum_k |kappa u_k|^2 / (2 varsigma_k^2) + log phi_ref(X_T) - log gamma(X_T) ]
     -> E[ int |u|^2 / (2 g^2) dt + log phi_ref(X_T) - log gamma(X_T) ] = KL(Q^u || Q*) - ln Z,
simulated by ``sample._run_follmer`` (Euler-Maruyama) or ``sample._run_ou`` (exact-OU step) with
gradients through the path; for the discrete chains the identity J = KL - ln Z holds exactly.

Vectorised sweeps: ``train_sweep`` trains networks of several widths and seeds in one pass with
torch.func (stack_module_state + functional_call + vmap). Choice: every member is zero-padded to
the largest width and a 0/1 ``unit_mask`` buffer switches the padded units off, so the padded
network computes exactly the member's function and its padded weights get exactly zero gradient
(Adam leaves them at zero). Members are initialised as standalone networks of their own width (the
init scale depends on fan-in), see the same minibatches (common random numbers), and are cropped
back to ordinary ScoreMLPs at the end. Cost per step: one batched pass at the largest width.
"""
from __future__ import annotations

import copy
import math
from typing import NamedTuple

import torch
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import trange

from ._checks import (check_callable, check_choice, check_finite, check_generator, check_int,
                      check_positive, check_tensor)
from .nets import ScoreMLP
from .sample import _log_gamma, _log_phi, _run_follmer, _run_ou

__all__ = ["regression_loss", "train_regression", "control_objective", "train_control",
           "train_sweep", "SweepResult", "pad_mlp", "crop_mlp", "unstack_networks"]


def _kind(process):
    if hasattr(process, "integrated_beta"):
        return "ou"
    if hasattr(process, "sample_bridge"):
        return "follmer"
    raise ValueError("process: expected a smoothpin OU or Follmer process object")


def _regression_batch(process, x0, generator, t_min, weighting):
    """(x_t, t, target, lambda) for one minibatch of clean samples x0: (n, d)."""
    n = x0.shape[0]
    u = torch.rand(n, generator=generator, dtype=x0.dtype, device=x0.device)
    z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    sigma = float(process.sigma)
    if _kind(process) == "ou":
        T = float(process.interval[1])
        t0 = 1e-3 * T if t_min is None else t_min
        t = t0 + (T - t0) * u
        B = process.integrated_beta(t)
        a = torch.exp(-B)
        s = sigma * torch.sqrt(-torch.expm1(-2 * B))  # expm1: accurate for small t
        xt = a[:, None] * x0 + s[:, None] * z
        target = -z / s[:, None]
        lam = s * s if weighting == "variance" else torch.ones_like(s)
    else:
        t1 = 1.0 - (1e-3 if t_min is None else t_min)
        t = t1 * u
        xt = t[:, None] * x0 + (sigma * torch.sqrt(t * (1 - t)))[:, None] * z
        target = (x0 - xt) / (1 - t)[:, None]
        lam = 1 - t if weighting == "variance" else torch.ones_like(t)
    return xt, t, target, lam


def _weighted_mse(pred, target, lam):
    return (lam * ((pred - target) ** 2).sum(-1)).mean(-1)


def regression_loss(net, process, x0, generator=None, t_min=None, weighting="variance"):
    """Denoising score matching (OU) or Brownian-bridge drift regression (Föllmer) on x0: (n, d).

    Returns the scalar E[lambda(t) |net(X_t, t) - target|^2] (see the module docstring for the
    targets and the weighting). t_min: the time cut-off (default 1e-3 T for OU, 1e-3 for the
    Föllmer end 1 - t_min). Raises ValueError for an unknown process/weighting or bad x0.
    """
    check_tensor("x0", x0, 2)
    check_generator("generator", generator)
    check_choice("weighting", weighting, ("variance", "uniform"))
    _kind(process)
    xt, t, target, lam = _regression_batch(process, x0, generator, t_min, weighting)
    return _weighted_mse(net(xt, t), target, lam)


def _data_fn(data, like):
    """Returns draw(n, generator) -> (n, d) from a tensor of samples, a sampler or a target."""
    if isinstance(data, torch.Tensor):
        check_tensor("data", data, 2)
        check_finite("data", data)
        return lambda n, g: data[torch.randint(data.shape[0], (n,), generator=g, device=data.device)]
    draw = getattr(data, "sample", data)
    check_callable("data", draw)

    def sampled(n, g):
        return draw(n, generator=g).to(dtype=like.dtype, device=like.device)
    return sampled


def _loop(steps, progress, desc):
    return trange(steps, disable=not progress, desc=desc, leave=False)


def _generator(seed, device):
    return torch.Generator(device=device).manual_seed(check_int("seed", seed, lo=0))


def train_regression(net, process, data, steps=2000, batch=512, lr=1e-3, seed=0, t_min=None,
                     weighting="variance", cosine=False, progress=False):
    """Trains ``net`` in place by Adam on ``regression_loss``; returns the (steps,) loss history.

    data: (N, d) tensor of samples (minibatches drawn with replacement), a callable
    sampler(n, generator=...) or an object with .sample(n, generator=...). All randomness comes
    from a generator seeded with ``seed`` (bit-identical on CPU for the same seed and net).
    cosine: cosine decay of the learning rate to 0. progress: show a tqdm.auto bar.
    """
    steps, batch = check_int("steps", steps), check_int("batch", batch)
    check_positive("lr", lr)
    p0 = next(net.parameters())
    gen = _generator(seed, p0.device)
    draw = _data_fn(data, p0)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    losses = torch.empty(steps, dtype=p0.dtype, device=p0.device)
    for k in _loop(steps, progress, "regression"):
        loss = regression_loss(net, process, draw(batch, gen), gen, t_min, weighting)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses[k] = loss.detach()
    return losses


def control_objective(net, process, target, n, steps, generator=None, method="exact", dim=None,
                      return_log_weights=False):
    """Monte Carlo estimate of J(u) = E[sum |kappa u|^2/(2 varsigma^2) + log phi_ref - log gamma]
    (differentiable in the parameters of ``net``) with n paths of ``steps`` steps.

    Föllmer: net is the drift u = b, Euler-Maruyama from 0, phi_ref = N(0, sigma^2 I).
    OU (DDS): net is the score s, the path starts at N(0, sigma^2 I) and uses the exact-OU step
    (``method="exact"``, or "em"). target: log_unnormalised / log_prob / callable log gamma.
    J >= -ln Z, with equality iff the control is optimal. Returns the scalar J (and the (n,)
    log importance weights log gamma - log phi_ref - log dQ^u/dP_ref if ``return_log_weights``).
    """
    n, steps = check_int("n", n), check_int("steps", steps)
    check_generator("generator", generator)
    log_gamma = _log_gamma(target)
    dim = check_int("dim", dim if dim is not None else getattr(target, "dim", None))
    p0 = next(net.parameters())
    sigma = float(process.sigma)
    if _kind(process) == "ou":
        check_choice("method", method, ("em", "exact"))
        y = sigma * torch.randn(n, dim, generator=generator, dtype=p0.dtype, device=p0.device)
        x, cost, mart = _run_ou(net, y, process, steps, method, generator, track=True, grad=True)
    else:
        x = torch.zeros(n, dim, dtype=p0.dtype, device=p0.device)
        x, cost, mart = _run_follmer(net, x, sigma, steps, generator, track=True, grad=True)
    terminal = _log_phi(x, sigma) - log_gamma(x)
    J = (cost + terminal).mean()
    if return_log_weights:
        return J, (-(cost + mart + terminal)).detach()
    return J


def train_control(net, process, target, steps=500, n=256, sde_steps=50, lr=1e-3, seed=0,
                  method="exact", cosine=False, progress=False):
    """Trains ``net`` in place by Adam on ``control_objective``; returns the (steps,) history of J
    (an upper bound on -ln Z in expectation). Randomness from a generator seeded with ``seed``."""
    steps, n, sde_steps = check_int("steps", steps), check_int("n", n), check_int("sde_steps", sde_steps)
    check_positive("lr", lr)
    p0 = next(net.parameters())
    gen = _generator(seed, p0.device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    losses = torch.empty(steps, dtype=p0.dtype, device=p0.device)
    for k in _loop(steps, progress, "control"):
        J = control_objective(net, process, target, n, sde_steps, gen, method)
        opt.zero_grad(set_to_none=True)
        J.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses[k] = J.detach()
    return losses


def pad_mlp(net, width):
    """A masked ScoreMLP of ``width`` >= net.width computing exactly ``net``'s function (zero
    padding, padded units masked off)."""
    if width < net.width:
        raise ValueError(f"width: must be >= net.width = {net.width}, got {width}")
    p0 = next(net.parameters())
    big = ScoreMLP(net.dim, width, net.depth, net.embed.dim, masked=True,
                   max_frequency=math.exp(net.embed.log_range[1])).to(p0.device, p0.dtype)
    w = net.width
    with torch.no_grad():
        for src, dst in zip(net.hidden, big.hidden):
            dst.weight.zero_()
            dst.bias.zero_()
            dst.weight[:w, :src.weight.shape[1]] = src.weight
            dst.bias[:w] = src.bias
        big.out.weight.zero_()
        big.out.weight[:, :w] = net.out.weight
        big.out.bias.copy_(net.out.bias)
        big.unit_mask.zero_()
        big.unit_mask[:, :w] = 1
    return big


def crop_mlp(net, width):
    """The ordinary (unmasked) ScoreMLP of ``width`` held in the first units of a padded one."""
    p0 = next(net.parameters())
    small = ScoreMLP(net.dim, width, net.depth, net.embed.dim,
                     max_frequency=math.exp(net.embed.log_range[1])).to(p0.device, p0.dtype)
    with torch.no_grad():
        for src, dst in zip(net.hidden, small.hidden):
            dst.weight.copy_(src.weight[:width, :dst.weight.shape[1]])
            dst.bias.copy_(src.bias[:width])
        small.out.weight.copy_(net.out.weight[:, :width])
        small.out.bias.copy_(net.out.bias)
    return small


def unstack_networks(params, buffers, template):
    """Splits stacked parameters/buffers (from stack_module_state) into ordinary modules, each a
    deep copy of ``template`` loaded with member i's tensors."""
    m = next(iter(params.values())).shape[0]
    nets = []
    for i in range(m):
        net = copy.deepcopy(template)
        state = {k: v[i].detach().clone() for k, v in {**params, **buffers}.items()}
        net.load_state_dict(state)
        nets.append(net)
    return nets


class SweepResult(NamedTuple):
    """Trained networks (ordinary ScoreMLPs), their (M, steps) losses, and (width, seed) per member."""
    nets: list
    losses: torch.Tensor
    members: list


def train_sweep(process, data, widths, seeds=(0,), depth=3, steps=2000, batch=512, lr=1e-3,
                seed=0, t_min=None, weighting="variance", time_embedding_dim=32, cosine=False,
                dtype=None, device=None, progress=False):
    """Trains ScoreMLPs for every (width, init seed) in widths x seeds in one vectorised pass.

    Each member is initialised as ScoreMLP(d, width, depth) under torch.manual_seed(init seed)
    (global RNG state restored afterwards), padded (see the module docstring), and trained by Adam
    on ``regression_loss`` with minibatches from a generator seeded with ``seed``, shared by all
    members. Equivalent, up to rounding, to ``train_regression`` on each padded member.
    Returns SweepResult(nets, losses, members). Raises ValueError for empty widths/seeds.
    """
    widths = [check_int("widths", w) for w in widths]
    seeds = [check_int("seeds", s, lo=0) for s in seeds]
    if not widths or not seeds:
        raise ValueError("widths, seeds: pass at least one width and one seed")
    steps, batch = check_int("steps", steps), check_int("batch", batch)
    dtype = dtype or torch.get_default_dtype()
    members = [(w, s) for w in widths for s in seeds]
    check_choice("weighting", weighting, ("variance", "uniform"))
    dim = data.shape[-1] if isinstance(data, torch.Tensor) else check_int("data.dim", data.dim)
    W = max(widths)
    padded = []
    for w, s in members:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            net = ScoreMLP(dim, w, depth, time_embedding_dim).to(device, dtype)
        padded.append(pad_mlp(net, W))
    params, buffers = stack_module_state(padded)
    base = copy.deepcopy(padded[0]).to("meta")

    def one(p, b, x, t):
        return functional_call(base, (p, b), (x, t))

    batched = vmap(one, in_dims=(0, 0, None, None))
    like = torch.empty((), dtype=dtype, device=device)
    gen = _generator(seed, like.device)
    draw = _data_fn(data, like)
    opt = torch.optim.Adam(list(params.values()), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    losses = torch.empty(len(members), steps, dtype=dtype, device=like.device)
    for k in _loop(steps, progress, "sweep"):
        xt, t, target, lam = _regression_batch(process, draw(batch, gen), gen, t_min, weighting)
        per = _weighted_mse(batched(params, buffers, xt, t), target, lam)  # (M,)
        opt.zero_grad(set_to_none=True)
        per.sum().backward()  # members' parameters are disjoint: each gets its own gradient
        opt.step()
        if sched is not None:
            sched.step()
        losses[:, k] = per.detach()
    nets = [crop_mlp(p, w) for p, (w, _) in zip(unstack_networks(params, buffers, padded[0]),
                                                 members)]
    return SweepResult(nets, losses, members)
