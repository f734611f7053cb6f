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
The optimal control of the discrete Föllmer chain is the exact drift at the grid times: the
reweighted reference chain Q* has transitions N(x, sigma^2 h) * h_{k+1} / h_k with
h_k = Q_{1 - t_k} f (the reference increments are exact Brownian increments), whose mean is
x + sigma^2 h grad log Q_{1 - t_k} f(x) = x + b(x, t_k) h by Gaussian integration by parts; the KL
decomposes over steps and is minimised step by step by matching that mean. (For the exact-OU step
the discrete optimum is kappa u = (varsigma^2 / a) grad log U_{t_k} f, which differs from the
continuous score's 2 sigma^2 (1 - a) grad log U_{t_k} f at order h^2 per step.)

Vectorised sweeps: ``train_sweep`` trains networks of several widths and seeds in one pass with
torch.func (stack_module_state + functional_call + vmap): one minibatch, one backward pass and one
Adam step per iteration for all members. Members of one width are stacked as they are. Members of
different widths are either zero-padded to the largest width with a 0/1 ``unit_mask`` buffer that
switches the padded units off (grouping "pad": one batched network; the padded network computes
exactly the member's function and its padded weights get exactly zero gradient, so Adam leaves
them at zero; cost M times the largest member's arithmetic), or stacked per width (grouping
"by_width": one batched network per distinct width, no wasted arithmetic, one pass per width).
"auto" pads when padding at most doubles the arithmetic. Members are initialised as standalone
networks of their own width (the init scale depends on fan-in), see the same minibatches (common
random numbers), and come back as ordinary ScoreMLPs. Against a Python loop the sweep wins where
per-step overhead dominates (small networks, many members); bench/bench_sweep.py measures it.
"""
from __future__ import annotations

import copy
import os
from typing import NamedTuple

import torch
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import trange

from ._checks import (check_callable, check_choice, check_finite, check_generator, check_int,
                      check_positive, check_tensor)
from .nets import ScoreMLP
from .sample import (_log_gamma, _log_phi, _ou_coefficients, _run_follmer, _run_ou, follmer_times,
                     ou_times, process_kind)

__all__ = ["regression_loss", "train_regression", "control_objective", "train_control",
           "train_sweep", "SweepResult", "pad_mlp", "crop_mlp", "unstack_networks",
           "progress_enabled"]

_kind = process_kind


def progress_enabled(progress=None):
    """Whether a training loop shows its tqdm.auto bar: never when the environment variable
    SMOOTHPIN_PROGRESS is "0" (set by the notebook runners, so bars stay out of committed
    outputs), otherwise ``progress`` (None means yes)."""
    if os.environ.get("SMOOTHPIN_PROGRESS", "1").strip() == "0":
        return False
    return True if progress is None else bool(progress)


def _check_t_min(process, t_min):
    """t_min = None or a number in [0, end): the cut-off at the noisy end (t_min for OU, 1 - t_min
    for Föllmer, whose regression target blows up as t -> 1)."""
    kind = _kind(process)
    if t_min is None:
        return None
    end = float(process.interval[1]) if kind == "ou" else 1.0
    if isinstance(t_min, bool) or not isinstance(t_min, (int, float)) or not 0 <= t_min < end:
        raise ValueError(f"t_min: expected None or a number in [0, {end:g}), got {t_min!r}")
    return float(t_min)


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
    t_min = _check_t_min(process, t_min)
    xt, t, target, lam = _regression_batch(process, x0, generator, t_min, weighting)
    return _weighted_mse(net(xt, t), target, lam)


def _data_fn(data, like):
    """Returns draw(n, generator) -> (n, d) from a tensor of samples, a sampler or a target."""
    if isinstance(data, torch.Tensor):
        check_tensor("data", data, 2)
        check_finite("data", data)
        data = data.to(dtype=like.dtype, device=like.device)  # once: the networks' dtype/device
        return lambda n, g: data[torch.randint(data.shape[0], (n,), generator=g, device=data.device)]
    draw = getattr(data, "sample", data)
    check_callable("data", draw)

    def sampled(n, g):
        return draw(n, generator=g).to(dtype=like.dtype, device=like.device)
    return sampled


def _first_parameter(net):
    if not isinstance(net, torch.nn.Module) or next(net.parameters(), None) is None:
        raise ValueError("net: expected a torch.nn.Module with trainable parameters")
    return next(net.parameters())


def _loop(steps, progress, desc):
    return trange(steps, disable=not progress_enabled(progress), desc=desc, leave=False)


def _generator(seed, device):
    return torch.Generator(device=device).manual_seed(check_int("seed", seed, lo=0))


def train_regression(net, process, data, steps=2000, batch=512, lr=1e-3, seed=0, t_min=None,
                     weighting="variance", cosine=False, progress=None):
    """Trains ``net`` in place by Adam on ``regression_loss``; returns the (steps,) loss history.

    data: (N, d) tensor of samples (minibatches drawn with replacement), a callable
    sampler(n, generator=...) or an object with .sample(n, generator=...). All randomness comes
    from a generator seeded with ``seed`` (bit-identical on CPU for the same seed and net).
    cosine: cosine decay of the learning rate to 0. progress: show a tqdm.auto bar (default yes,
    never when SMOOTHPIN_PROGRESS=0). Raises ValueError for bad sizes, lr or an unknown process.
    """
    steps, batch = check_int("steps", steps), check_int("batch", batch)
    check_positive("lr", lr)
    t_min = _check_t_min(process, t_min)
    check_choice("weighting", weighting, ("variance", "uniform"))
    p0 = _first_parameter(net)
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
                      return_log_weights=False, grid_power=1.0):
    """Monte Carlo estimate of J(u) = E[sum |kappa u|^2/(2 varsigma^2) + log phi_ref - log gamma]
    (differentiable in the parameters of ``net``) with n paths of ``steps`` steps.

    Föllmer (PIS): net is the drift u = b, Euler-Maruyama from 0, phi_ref = N(0, sigma^2 I).
    OU (DDS): net is the score s, the path starts at N(0, sigma^2 I) and uses the exact-OU step
    (``method="exact"``, or "em"). target: log_unnormalised / log_prob / callable log gamma (then
    pass ``dim``). J >= -ln Z in expectation, with equality iff the control is optimal for the
    discrete chain (for Föllmer + EM the optimum is the exact drift at the grid times, see the
    module docstring). Returns the scalar J (and the (n,) log importance weights
    log gamma - log phi_ref - log dQ^u/dP_ref if ``return_log_weights``).
    """
    n = check_int("n", n)
    check_generator("generator", generator)
    log_gamma = _log_gamma(target)
    kind = _kind(process)
    dim = check_int("dim", dim if dim is not None else getattr(target, "dim", None))
    p0 = _first_parameter(net)
    sigma = float(process.sigma)
    if kind == "ou":
        check_choice("method", method, ("em", "exact"))
        coef = _ou_coefficients(process, ou_times(process, steps, 0.0, grid_power), method)
        y = sigma * torch.randn(n, dim, generator=generator, dtype=p0.dtype, device=p0.device)
        x, cost, mart = _run_ou(net, y, process, coef, generator, track=True, grad=True)
    else:
        x = torch.zeros(n, dim, dtype=p0.dtype, device=p0.device)
        x, cost, mart = _run_follmer(net, x, sigma, follmer_times(steps, grid_power), generator,
                                     track=True, grad=True)
    terminal = _log_phi(x, sigma) - log_gamma(x)
    J = (cost + terminal).mean()
    if return_log_weights:
        return J, (-(cost + mart + terminal)).detach()
    return J


def train_control(net, process, target, steps=500, n=256, sde_steps=50, lr=1e-3, seed=0,
                  method="exact", cosine=False, grid_power=1.0, progress=None):
    """Trains ``net`` in place by Adam on ``control_objective`` (n paths of ``sde_steps`` steps per
    iteration); returns the (steps,) history of J (an upper bound on -ln Z in expectation).
    Randomness from a generator seeded with ``seed`` (bit-identical on CPU for the same seed and
    net). progress: as ``train_regression``. Raises ValueError for bad sizes or lr."""
    steps, n, sde_steps = check_int("steps", steps), check_int("n", n), check_int("sde_steps", sde_steps)
    check_positive("lr", lr)
    _kind(process)
    p0 = _first_parameter(net)
    gen = _generator(seed, p0.device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    losses = torch.empty(steps, dtype=p0.dtype, device=p0.device)
    for k in _loop(steps, progress, "control"):
        J = control_objective(net, process, target, n, sde_steps, gen, method, grid_power=grid_power)
        opt.zero_grad(set_to_none=True)
        J.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses[k] = J.detach()
    return losses


def _like_mlp(net, width, masked):
    """A ScoreMLP with ``net``'s dimension, depth and time embedding (copied exactly) and ``width``."""
    p0 = next(net.parameters())
    new = ScoreMLP(net.dim, width, net.depth, net.time_embedding_dim, masked=masked,
                   max_frequency=net.max_frequency).to(p0.device, p0.dtype)
    new.embed.log_range = net.embed.log_range
    return new


def pad_mlp(net, width):
    """A masked ScoreMLP of ``width`` >= net.width computing exactly ``net``'s function (zero
    padding, padded units masked off)."""
    if not isinstance(net, ScoreMLP) or net.masked:
        raise ValueError("net: expected an unmasked ScoreMLP")
    if width < net.width:
        raise ValueError(f"width: must be >= net.width = {net.width}, got {width}")
    big = _like_mlp(net, width, masked=True)
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
    if not isinstance(net, ScoreMLP) or not 1 <= width <= net.width:
        raise ValueError(f"width: expected a ScoreMLP and 1 <= width <= net.width, got {width}")
    small = _like_mlp(net, width, masked=False)
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


def _sweep_group(nets):
    """Stacked parameters/buffers of same-shaped networks and their vmapped forward."""
    params, buffers = stack_module_state(nets)
    base = copy.deepcopy(nets[0]).to("meta")

    def one(p, b, x, t):
        return functional_call(base, (p, b), (x, t))

    return params, buffers, vmap(one, in_dims=(0, 0, None, None))


def train_sweep(process, data, widths, seeds=(0,), depth=3, steps=2000, batch=512, lr=1e-3,
                seed=0, t_min=None, weighting="variance", time_embedding_dim=32, max_frequency=100.0,
                cosine=False, dtype=None, device=None, grouping="auto", progress=None):
    """Trains ScoreMLPs for every (width, init seed) in widths x seeds in one vectorised pass.

    Each member is initialised as ScoreMLP(d, width, depth, time_embedding_dim, max_frequency)
    under torch.manual_seed(init seed) (global RNG state restored afterwards) and trained by Adam
    on ``regression_loss`` with minibatches from a generator seeded with ``seed``, shared by all
    members: one minibatch, one backward pass and one Adam step per iteration for the whole sweep.
    grouping: "pad" stacks every member, zero-padded and masked to the largest width, into one
    vmapped network (module docstring); "by_width" stacks the members of each width into their
    own vmapped network (no padding: one batched pass per distinct width); "auto" pads when that
    costs at most twice the arithmetic of the members (M max(w)^2 <= 2 sum w^2), else by width.
    Equivalent, up to rounding, to ``train_regression`` with the same ``seed`` on each member
    built the same way (tested). data: as ``train_regression`` (a target needs ``.dim``).
    dtype, device: of the networks. Returns SweepResult(nets, losses, members), members =
    [(width, init seed), ...] in the order of ``nets``. Raises ValueError for empty widths/seeds,
    bad sizes, an unknown grouping or process.
    """
    widths = [check_int("widths", w) for w in widths]
    seeds = [check_int("seeds", s, lo=0) for s in seeds]
    if not widths or not seeds:
        raise ValueError("widths, seeds: pass at least one width and one seed")
    steps, batch = check_int("steps", steps), check_int("batch", batch)
    check_positive("lr", lr)
    t_min = _check_t_min(process, t_min)
    check_choice("grouping", grouping, ("auto", "pad", "by_width"))
    dtype = dtype or torch.get_default_dtype()
    members = [(w, s) for w in widths for s in seeds]
    check_choice("weighting", weighting, ("variance", "uniform"))
    dim = (data.shape[-1] if isinstance(data, torch.Tensor)
           else check_int("data.dim", getattr(data, "dim", None)))
    W = max(widths)
    if grouping == "auto":
        grouping = "pad" if len(members) * W * W <= 2 * sum(w * w for w, _ in members) else "by_width"
    if len(set(widths)) == 1:
        grouping = "by_width"  # one width (a seed sweep): no padding, no mask
    nets = []
    for w, s in members:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            net = ScoreMLP(dim, w, depth, time_embedding_dim, max_frequency).to(device, dtype)
        nets.append(pad_mlp(net, W) if grouping == "pad" else net)
    # groups: lists of member indices sharing one stacked network
    keys = [0] * len(members) if grouping == "pad" else [w for w, _ in members]
    order = list(dict.fromkeys(keys))
    groups = [[i for i, k in enumerate(keys) if k == key] for key in order]
    stacks = [_sweep_group([nets[i] for i in g]) for g in groups]
    like = torch.empty((), dtype=dtype, device=device)
    gen = _generator(seed, like.device)
    draw = _data_fn(data, like)
    opt = torch.optim.Adam([p for params, _, _ in stacks for p in params.values()], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    losses = torch.empty(len(members), steps, dtype=dtype, device=like.device)
    for k in _loop(steps, progress, "sweep"):
        xt, t, target, lam = _regression_batch(process, draw(batch, gen), gen, t_min, weighting)
        per = [_weighted_mse(fn(params, buffers, xt, t), target, lam)  # (members of the group,)
               for params, buffers, fn in stacks]
        opt.zero_grad(set_to_none=True)
        sum(p.sum() for p in per).backward()  # members' parameters are disjoint
        opt.step()
        if sched is not None:
            sched.step()
        with torch.no_grad():
            for g, p in zip(groups, per):
                losses[g, k] = p
    out = [None] * len(members)
    for g, (params, buffers, _) in zip(groups, stacks):
        for i, net in zip(g, unstack_networks(params, buffers, nets[g[0]])):
            out[i] = crop_mlp(net, members[i][0]) if grouping == "pad" else net
    return SweepResult(out, losses, members)
