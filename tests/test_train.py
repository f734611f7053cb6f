"""Tests of smoothpin.train: the regression targets (their conditional means are the exact score /
drift), a linear network recovering the exact affine Föllmer drift of a Gaussian target from the
unnormalised density by the control objective, a small MLP trained by denoising score matching
against the closed-form score, the vectorised sweep against separate training, bit-identical
training for a seed, progress bars and ValueError on bad input (float64)."""
import math

import pytest
import torch

import smoothpin as sp
from smoothpin.train import _regression_batch, crop_mlp, pad_mlp, progress_enabled
from mixtures import D64, build  # tests/mixtures.py


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _mixture():
    return build("two2d")  # tests/mixtures.py


def _exact(process, target):
    if sp.process_kind(process) == "ou":
        return lambda x, t: process.score(target, x, t)
    return lambda x, t: process.drift(target, x, t)


# ---------------------------------------------------------------- regression targets


@pytest.mark.parametrize("process", [sp.OU(sigma=1.2, beta=0.8, T=2.0), sp.Follmer(sigma=0.9)],
                         ids=["ou", "follmer"])
@pytest.mark.parametrize("weighting", ["variance", "uniform"])
def test_regression_excess_loss_is_the_weighted_score_error(process, weighting):
    # E[target | X_t] is the exact score (OU) / drift (Föllmer), so for any f
    #   loss(f) - loss(exact) = E_t E lambda(t) |f - exact|^2   (the cross term has mean zero).
    # Left: per-sample differences on the same minibatch (common random numbers), with its se.
    # Right: the same weighted error computed independently on a time grid (metrics.score_error,
    # fresh samples of p_t, weights lambda(t) applied by hand, trapezoid rule on 129 times).
    mix = _mixture()
    exact = _exact(process, mix)
    f = lambda x, t: 0.7 * exact(x, t) + 0.2  # noqa: E731  (a fixed wrong score / drift)
    y = mix.sample(40000, _gen(0))
    xt, t, target, lam = _regression_batch(process, y, _gen(1), 0.05, weighting)
    with torch.no_grad():
        d = lam * (((f(xt, t) - target) ** 2).sum(-1) - ((exact(xt, t) - target) ** 2).sum(-1))
    lo, hi = process.interval
    lo, hi = (lo + 0.05, hi) if sp.process_kind(process) == "ou" else (lo, hi - 0.05)
    times = torch.linspace(lo, hi, 129, dtype=D64)
    err = sp.score_error(f, process, mix, times=times, n=4000, generator=_gen(2))
    if weighting == "uniform":
        w = torch.ones_like(times)
    elif sp.process_kind(process) == "ou":
        w = process.sigma ** 2 * -torch.expm1(-2 * process.integrated_beta(times))
    else:
        w = 1 - times
    right = float(torch.trapezoid(w * err.per_time, times)) / (hi - lo)
    se_right = float(torch.trapezoid(w * err.stderr, times)) / (hi - lo)  # conservative (adds se)
    se_left = float(d.std()) / math.sqrt(d.numel())
    assert abs(float(d.mean()) - right) < 4 * math.hypot(se_left, se_right), (float(d.mean()), right)
    # and regression_loss is the mean of the same per-sample terms
    net = lambda x, t: f(x, t)  # noqa: E731
    loss = sp.regression_loss(net, process, y, _gen(1), t_min=0.05, weighting=weighting)
    with torch.no_grad():
        assert abs(float(loss) - float((lam * ((f(xt, t) - target) ** 2).sum(-1)).mean())) < 1e-12


# ---------------------------------------------------------------- linear networks, Gaussian target


def _gaussian_affine(process, m, s2, t):
    """Exact affine coefficients (A(t) scalar times I, c(t)) of the OU score / Föllmer drift of
    N(m, s2 I), written out independently: OU: s = -(x - a m) / v, v = a^2 s2 + sigma^2 (1 - a^2);
    Föllmer: b = ((s2 - sigma^2) x + sigma^2 m) / (t s2 + sigma^2 (1 - t)) (DESIGN.md section 3:
    E[Y | x] = m + t s2 (x - t m) / (t^2 s2 + sigma^2 t (1 - t)), b = (E[Y | x] - x) / (1 - t))."""
    sig2 = process.sigma ** 2
    if sp.process_kind(process) == "ou":
        a = math.exp(-process.integrated_beta(t))
        v = a * a * s2 + sig2 * (1 - a * a)
        return -1 / v, a * m / v
    den = t * s2 + sig2 * (1 - t)
    return (s2 - sig2) / den, sig2 * m / den


def _linear_error(net, process, m, s2, knots_to_check):
    lo, hi = net.interval
    errs = []
    for k in knots_to_check:
        t = lo + (hi - lo) * k / (net.knots - 1)
        A, c = _gaussian_affine(process, m, s2, t)
        errs.append(float((net.A[k] - A * torch.eye(2, dtype=D64)).abs().max()))
        errs.append(float((net.c[k] - c).abs().max()))
    return max(errs)


def test_linear_drift_trained_by_the_control_objective_recovers_the_follmer_drift():
    # PIS objective, Föllmer + EM with N = 10 steps and a LinearDrift with one (A_k, c_k) per step.
    # The optimum of the discrete problem is the exact drift at the grid times (train.py module
    # docstring), here affine: A(t) = (s2 - 1) / (t s2 + 1 - t), c(t) = m / (t s2 + 1 - t).
    # A_0 multiplies X_0 = 0 and is not identifiable; the last knot (t = 1) is never used.
    # Tolerance 0.03 absolute (6% of the smallest |A| = 0.5). What is left is the optimiser's
    # stochastic-gradient noise after 400 Adam steps with cosine decay: over seeds 0, 1, 2 the max
    # error is 0.012-0.021 and the max seed-to-seed difference 0.016-0.024.
    m, s2 = torch.tensor([1.0, -0.5], dtype=D64), 0.5
    target, fol = sp.Gaussian(m, s2), sp.Follmer(1.0)
    net = sp.LinearDrift(2, knots=11).double()
    J = sp.train_control(net, fol, target, steps=400, n=512, sde_steps=10, lr=0.05, cosine=True,
                         seed=0, progress=False)
    with torch.no_grad():
        errs = [float((net.c[0] - m).abs().max())]  # b(., 0) = E_pi[Y]
        errs.append(_linear_error(net, fol, m, s2, range(1, 10)))
    assert max(errs) < 0.03, errs
    # J >= -ln Z = 0 in expectation. At u = 0, X_1 ~ phi and J = KL(phi || pi) = 1.557 (closed form;
    # sd of log phi - log pi under phi is sqrt(6), so se = 0.108 with 512 paths: 4 se = 0.43). At
    # the optimum J exceeds -ln Z only by the O(h) KL of the discrete chain: the last 50
    # iterations average below 0.05 nats (0.013-0.022 over seeds 0, 1, 2).
    assert abs(float(J[0]) - 1.557) < 0.43 and 0 < float(J[-50:].mean()) < 0.05


# ---------------------------------------------------------------- a small MLP by DSM


def test_small_mlp_trained_by_dsm_has_small_integrated_score_error():
    # A 2 x 32 ScoreMLP, 1000 Adam steps (batch 256, lr 1e-2, cosine), OU on [0.01, 1]. Measured
    # against the closed-form score: int_{0.01}^1 E|s - s_hat|^2 dt ~ 0.04 (relative L2 ~ 0.13).
    # Threshold 0.06, i.e. under 10% of the error 0.72 of the untrained reference score -x; the
    # Monte Carlo se of the estimate (2048 draws at each of 33 times) is ~ 0.003.
    mix, ou = _mixture(), sp.OU(sigma=1.0, beta=1.0, T=1.0)
    torch.manual_seed(0)
    net = sp.ScoreMLP(2, width=32, depth=2, max_frequency=10.0).double()
    sp.train_regression(net, ou, mix, steps=1000, batch=256, lr=1e-2, t_min=0.01, cosine=True,
                        progress=False)
    times = torch.linspace(0.01, 1.0, 33, dtype=D64)
    ref = sp.score_error(lambda x, t: -x, ou, mix, times=times, n=2048, generator=_gen(5))
    err = sp.score_error(net, ou, mix, times=times, n=2048, generator=_gen(5))
    assert 0.6 < float(ref.integrated) < 0.85
    assert float(err.integrated) < 0.06 and float(err.relative) < 0.2, err.integrated
    # the Girsanov bound it implies: 1/2 int g^2 e dt with g^2 = 2 (sigma = beta = 1)
    bound, _ = sp.girsanov_kl_bound(net, ou, mix, times=times, n=2048, generator=_gen(5))
    assert abs(float(bound) - float(err.integrated)) < 1e-12


# ---------------------------------------------------------------- vectorised sweep


def test_train_sweep_equals_training_each_member_separately():
    # Same init (torch.manual_seed(init seed)), same minibatch seed: the vmapped sweep (padded and
    # masked, or stacked per width) computes the same function and gradients as each member alone,
    # so parameters and loss histories agree to rounding (float64; the padded sums add exact zeros).
    mix, ou = _mixture(), sp.OU(T=1.0)
    data = mix.sample(2048, _gen(0))
    padded, by_width = (sp.train_sweep(ou, data, widths=[3, 8], seeds=[0, 5], depth=2, steps=25,
                                       batch=64, lr=3e-3, dtype=D64, grouping=g, progress=False)
                        for g in ("pad", "by_width"))
    assert padded.members == [(3, 0), (3, 5), (8, 0), (8, 5)] and padded.losses.shape == (4, 25)
    seeds_only = sp.train_sweep(ou, data, widths=[6], seeds=[1, 2], depth=2, steps=25, batch=64,
                                lr=3e-3, dtype=D64, progress=False)  # one width: no padding
    for r in (padded, by_width, seeds_only):
        for net, (w, s), losses in zip(r.nets, r.members, r.losses):
            assert isinstance(net, sp.ScoreMLP) and net.width == w and not net.masked
            torch.manual_seed(s)
            alone = sp.ScoreMLP(2, w, 2).double()
            ref = sp.train_regression(alone, ou, data, steps=25, batch=64, lr=3e-3, progress=False)
            assert torch.allclose(losses, ref, rtol=1e-10, atol=1e-12)
            for (k, a), b in zip(net.state_dict().items(), alone.state_dict().values()):
                assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), k
    # the sweep also takes a target (sampled on the fly) and the Föllmer process
    res2 = sp.train_sweep(sp.Follmer(), mix, widths=[4], seeds=[1], depth=1, steps=3, batch=16,
                          dtype=D64, progress=False)
    assert res2.nets[0](torch.zeros(2, 2, dtype=D64), 0.5).shape == (2, 2)


def test_pad_and_crop_preserve_the_function():
    torch.manual_seed(3)
    net = sp.ScoreMLP(2, 5, 2, max_frequency=7.0).double()
    big = pad_mlp(net, 12)
    x, t = torch.randn(9, 2, dtype=D64), torch.rand(9, dtype=D64)
    assert big.masked and big.width == 12
    assert torch.allclose(big(x, t), net(x, t), atol=1e-14)
    small = crop_mlp(big, 5)
    assert torch.equal(small(x, t), net(x, t))
    with pytest.raises(ValueError, match="width"):
        pad_mlp(net, 3)


# ---------------------------------------------------------------- reproducibility


def test_training_is_bit_identical_for_a_seed():
    mix, ou, fol = _mixture(), sp.OU(T=1.0), sp.Follmer()

    def regression(seed):
        torch.manual_seed(0)
        net = sp.ScoreMLP(2, 8, 2).double()
        losses = sp.train_regression(net, ou, mix, steps=15, batch=32, seed=seed, progress=False)
        return losses, net.state_dict()

    def control(seed):
        net = sp.LinearDrift(2, knots=6).double()
        return sp.train_control(net, fol, mix, steps=5, n=32, sde_steps=5, seed=seed,
                                progress=False), net.state_dict()

    for fn in (regression, control):
        (l1, s1), (l2, s2), (l3, _) = fn(0), fn(0), fn(1)
        assert torch.equal(l1, l2) and not torch.equal(l1, l3)
        assert all(torch.equal(a, b) for a, b in zip(s1.values(), s2.values()))
    r1 = sp.train_sweep(ou, mix, [4, 6], [0], depth=1, steps=5, batch=16, dtype=D64, progress=False)
    r2 = sp.train_sweep(ou, mix, [4, 6], [0], depth=1, steps=5, batch=16, dtype=D64, progress=False)
    assert torch.equal(r1.losses, r2.losses)


def test_control_objective_weights_match_log_normalising_constant():
    # the same paths (same generator seed) give the same log importance weights in both functions
    mix, fol, ou = _mixture(), sp.Follmer(), sp.OU(T=2.0)
    lin = sp.LinearDrift(2, knots=9).double()
    with torch.no_grad():
        lin.c.fill_(0.3)
    J, lw = sp.control_objective(lin, fol, mix, 200, 8, _gen(3), return_log_weights=True)
    _, lw2 = sp.log_normalising_constant(lin, fol, mix, 200, 8, generator=_gen(3), dtype=D64,
                                         return_log_weights=True)
    assert torch.allclose(lw, lw2, atol=1e-12)
    net = sp.ScoreMLP(2, 4, 1, zero_output=True).double()
    with torch.no_grad():
        net.out.bias.fill_(0.1)
    for method in ("exact", "em"):
        J, lw = sp.control_objective(net, ou, mix, 100, 6, _gen(4), method, return_log_weights=True)
        _, lw2 = sp.log_normalising_constant(net, ou, mix, 100, 6, method, _gen(4), dtype=D64,
                                             return_log_weights=True)
        assert torch.allclose(lw, lw2, atol=1e-12)
        assert J.requires_grad


# ---------------------------------------------------------------- progress bars and errors


def test_progress_bar_hidden_when_smoothpin_progress_is_0(monkeypatch, capsys):
    mix, ou = _mixture(), sp.OU(T=1.0)

    def run(progress):
        net = sp.ScoreMLP(2, 4, 1).double()
        sp.train_regression(net, ou, mix, steps=3, batch=8, progress=progress)
        return capsys.readouterr().err

    monkeypatch.delenv("SMOOTHPIN_PROGRESS", raising=False)
    assert progress_enabled() and progress_enabled(True) and not progress_enabled(False)
    assert "regression" in run(None)  # tqdm.auto writes its bar to stderr outside notebooks
    assert run(False) == ""
    monkeypatch.setenv("SMOOTHPIN_PROGRESS", "0")
    assert not progress_enabled(True)
    assert run(True) == "" and run(None) == ""


def test_bad_input_raises():
    mix, ou = _mixture(), sp.OU(T=1.0)
    net = sp.ScoreMLP(2, 4, 1).double()
    data = mix.sample(10, _gen(0))
    with pytest.raises(ValueError, match="process"):
        sp.regression_loss(net, object(), data)
    with pytest.raises(ValueError, match="weighting"):
        sp.regression_loss(net, ou, data, weighting="snr")
    with pytest.raises(ValueError, match="x0"):
        sp.regression_loss(net, ou, data[0])
    with pytest.raises(ValueError, match="steps"):
        sp.train_regression(net, ou, data, steps=0)
    with pytest.raises(ValueError, match="lr"):
        sp.train_regression(net, ou, data, lr=-1.0)
    with pytest.raises(ValueError, match="data"):
        sp.train_regression(net, ou, torch.full((5, 2), float("nan"), dtype=D64))
    with pytest.raises(ValueError, match="data"):
        sp.train_regression(net, ou, "samples")
    with pytest.raises(ValueError, match="seed"):
        sp.train_regression(net, ou, data, seed=-1)
    with pytest.raises(ValueError, match="t_min"):
        sp.train_regression(net, ou, data, t_min=1.0)
    with pytest.raises(ValueError, match="t_min"):
        sp.regression_loss(net, sp.Follmer(), data, t_min=-0.1)
    with pytest.raises(ValueError, match="net"):
        sp.train_regression(lambda x, t: x, ou, data)
    with pytest.raises(ValueError, match="method"):
        sp.control_objective(net, ou, mix, 4, 3, method="heun")
    with pytest.raises(ValueError, match="target"):
        sp.control_objective(net, ou, 3.0, 4, 3)
    with pytest.raises(ValueError, match="widths"):
        sp.train_sweep(ou, data, widths=[], progress=False)
    with pytest.raises(ValueError, match="widths"):
        sp.train_sweep(ou, data, widths=[0], progress=False)
    with pytest.raises(ValueError, match="process"):
        sp.train_sweep(None, data, widths=[4], progress=False)
    with pytest.raises(ValueError, match="grouping"):
        sp.train_sweep(ou, data, widths=[4], grouping="block", progress=False)


_DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here"))]


@pytest.mark.parametrize("device", _DEVICES)
def test_training_follows_device_and_dtype(device):
    mix = _mixture().to(device=device, dtype=torch.float32)
    ou, fol = sp.OU(T=1.0), sp.Follmer()
    net = sp.ScoreMLP(2, 8, 1).to(device)
    losses = sp.train_regression(net, ou, mix, steps=3, batch=16, progress=False)
    assert losses.device.type == device and losses.dtype == torch.float32
    lin = sp.LinearDrift(2, knots=4).to(device)
    J = sp.train_control(lin, fol, mix, steps=2, n=8, sde_steps=3, progress=False)
    assert J.device.type == device
    res = sp.train_sweep(ou, mix.sample(64), [4, 6], [0], depth=1, steps=2, batch=8,
                         dtype=torch.float32, device=device, progress=False)
    assert next(res.nets[1].parameters()).device.type == device
    err = sp.score_error(net, ou, mix, n=16, n_times=3, dtype=torch.float32, device=device)
    assert err.integrated.device.type == device
