"""The headline experiment (smoothpin.experiments): committed results match the code's schema, the
analysis helpers agree with closed forms, and a tiny run of the ci code path works end to end."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import smoothpin as sp
from smoothpin.experiments import analysis
from smoothpin.experiments import smooth_vs_pin as exp

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="no CUDA device"))]
MEMBER_KEYS = {"width": int, "seed": int, "params": int, "kl_bound": float,
               "kl_bound_stderr": float, "relative_error": float, "per_time": list,
               "final_loss": float}


def _check_results(res, cfg):
    """Keys and types of a results dict produced by smooth_vs_pin.run for configuration cfg."""
    assert res["schema"] == exp.SCHEMA
    assert res["config"] == cfg
    assert set(res["pilot"]) == set(cfg["processes"])
    for name, p in res["pilot"].items():
        assert p["target"] == next(iter(cfg["targets"]))
        assert p["lr"] == cfg["lr_grid"] and p["chosen"] in cfg["lr_grid"]
        assert len(p["kl_bound"]) == len(cfg["lr_grid"])
    assert list(res["targets"]) == list(cfg["targets"])
    for tname, T in res["targets"].items():
        assert isinstance(T["dim"], int) and len(T["snr"]) == cfg["n_times"]
        assert "mmd" in T["sample_floor"] and len(T["sample_floor"]["mmd"]) == 2
        assert ("w2" in T["sample_floor"]) == (T["dim"] <= cfg["w2_max_dim"])
        assert len(T["kl_pi_to_reference"]) == 2 and T["kl_pi_to_reference"][0] > 0
        assert list(T["processes"]) == cfg["processes"]
        for name, P in T["processes"].items():
            n_t = cfg["n_times"] + (name == "follmer")  # the Föllmer grid also holds t = 0
            assert len(P["times"]) == len(P["snr"]) == len(P["norm"]) == n_t
            assert P["lr"] == res["pilot"][name]["chosen"]
            assert ("initial_kl" in P) == (name != "follmer")
            assert set(P["exact_sampler"]) == {"mmd", "w2"}
            members = P["members"]
            assert [(m["width"], m["seed"]) for m in members] == [
                (w, s) for w in cfg["widths"] for s in cfg["seeds"]]
            for m in members:
                for key, typ in MEMBER_KEYS.items():
                    assert isinstance(m[key], typ), (tname, name, key)
                assert m["mmd"] is None or isinstance(m["mmd"], float)  # None: sampler diverged
                assert m["w2"] is None or isinstance(m["w2"], float)
                if T["dim"] > cfg["w2_max_dim"]:
                    assert m["w2"] is None
                assert len(m["per_time"]) == n_t
                assert math.isfinite(m["kl_bound"]) and m["kl_bound"] >= 0
                net = sp.ScoreMLP(T["dim"], m["width"], cfg["depth"], cfg["time_embedding_dim"])
                assert m["params"] == sp.count_parameters(net)


def test_committed_medium_results_match_the_configuration_schema():
    path = exp.results_path("medium")
    assert path.is_file(), f"{path} missing: run python -m smoothpin.experiments.smooth_vs_pin"
    res = exp.load_results("medium")
    _check_results(res, exp.build_config("medium"))
    prov = res["provenance"]
    for key, typ in {"smoothpin": str, "torch": str, "python": str, "device": str, "date": str,
                     "threads": int, "wall_seconds": float}.items():
        assert isinstance(prov[key], typ), key
    assert prov["git_commit"] is None or len(prov["git_commit"]) == 40


def test_full_scale_configuration_spans_1e2_to_1e5_parameters():
    cfg = exp.build_config("full")
    counts = [sp.count_parameters(sp.ScoreMLP(2, w, cfg["depth"], cfg["time_embedding_dim"]))
              for w in cfg["widths"]]
    assert counts[0] < 200 and 9e4 < counts[-1] < 2e5
    with pytest.raises(ValueError, match="scale"):
        exp.build_config("huge")


def test_signal_to_noise_grid_maps_to_times_and_back():
    cfg = exp.build_config("ci")
    snr = exp.snr_grid(cfg)
    for name in ("ou", "follmer", "ou_bridge_clock"):
        proc = exp.make_process(exp.build_config("medium")["process_specs"][name])
        times, lam = exp.process_times(proc, snr)
        assert bool((times[1:] > times[:-1]).all())
        for t, l in zip(times.tolist(), lam.tolist()):
            if isinstance(proc, sp.OU):
                a, s = proc.mean_std(t)
                got = a * a / (s * s)
            else:
                got = t / (proc.sigma ** 2 * (1 - t))
            assert got == pytest.approx(l, rel=1e-9)


def test_bridge_clock_ou_has_the_follmer_signal_to_noise_ratio():
    """a^2 = e^{-2B(t)} = 1 - t: the OU marginal at t equals the Föllmer marginal at 1 - t
    divided by sqrt(1 - t) (means and covariances, closed forms)."""
    target = sp.GaussianMixture.isotropic(torch.tensor([0.3, 0.7], dtype=torch.float64),
                                          torch.tensor([[1.0, -1.0], [-2.0, 0.5]], dtype=torch.float64),
                                          torch.tensor([0.1, 0.3], dtype=torch.float64))
    ou, fol = exp.BridgeClockOU(T=0.99), sp.Follmer()
    for t in (0.05, 0.5, 0.9):
        p, q = ou.marginal(target, t), fol.marginal(target, 1 - t)
        c = 1 / math.sqrt(1 - t)
        torch.testing.assert_close(p.mean, c * q.mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(p.covariance, c * c * q.covariance, rtol=1e-12, atol=1e-12)
    assert ou.g2(0.5) == pytest.approx(2 * 0.5 / (1 - 0.5))
    with pytest.raises(ValueError, match="T"):
        exp.BridgeClockOU(T=1.0)


def test_follmer_drift_is_the_ou_score_plus_the_denoiser_at_equal_snr():
    """b(a x, a^2) = sigma^2 a s(x, t) + E[Y | X_t = x] with a = e^{-t}: both closed forms."""
    torch.manual_seed(0)
    target = sp.GaussianMixture.isotropic(torch.tensor([0.5, 0.5], dtype=torch.float64),
                                          torch.tensor([[2.0, 0.0], [-1.0, 1.5]], dtype=torch.float64),
                                          0.05)
    ou, fol = sp.OU(T=3.0), sp.Follmer()
    x = torch.randn(64, 2, dtype=torch.float64)
    for t in (0.01, 0.3, 2.0):
        a, s = ou.mean_std(t)
        score = ou.score(target, x, t)
        denoiser = (x + s * s * score) / a
        torch.testing.assert_close(fol.drift(target, a * x, a * a), a * score + denoiser,
                                   rtol=1e-9, atol=1e-9)


def test_params_to_reach_is_exact_on_a_power_law():
    params = np.array([100.0, 1000.0, 10000.0])
    kl = 5.0 * params ** -0.5                     # log-log linear: interpolation is exact
    eps = 5.0 * 3000.0 ** -0.5
    assert analysis.params_to_reach(params, kl, eps) == pytest.approx(3000.0, rel=1e-12)
    assert analysis.params_to_reach(params, kl, 10.0) == 100.0
    assert math.isnan(analysis.params_to_reach(params, kl, 1e-3))


@pytest.mark.parametrize("name", ["ou", "follmer", "ou_bridge_clock"])
def test_kl_density_integrates_to_the_girsanov_bound(name):
    """int density dlog(lambda) = kl_from_score_error on the same smooth error curve; the two
    trapezoid rules (in t and in log lambda, 4001 points) agree to < 1e-4 relative."""
    spec = exp.build_config("medium")["process_specs"][name]
    proc = exp.make_process(spec)
    snr = torch.logspace(-2, 3, 4001, dtype=torch.float64)
    times, lam = exp.process_times(proc, snr)
    e = 1 + torch.sin(3 * torch.log(lam.clamp_min(1e-12))) ** 2  # any smooth error curve
    e[lam == 0] = 1.0
    bound = float(sp.kl_from_score_error(proc, e, times))
    keep = lam > 0
    order = torch.argsort(lam[keep])
    dens = analysis.kl_density(spec, lam[keep][order].numpy(), e[keep][order].numpy())
    via_snr = float(np.trapezoid(dens, np.log(lam[keep][order].numpy())))
    if name == "follmer":  # the grid's first step [0, t(lambda_min)] has no log-lambda image
        via_snr += float(sp.kl_from_score_error(proc, e[:2], times[:2]))
    assert via_snr == pytest.approx(bound, rel=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_tiny_run_of_the_ci_code_path(device):
    cfg = exp.build_config("ci")
    cfg.update(widths=[4, 8], seeds=[0, 1], steps=6, pilot_steps=3, n_times=5, eval_n=64,
               sample_n=40, sample_steps=4, floor_repeats=2, w2_max_dim=2)
    res = exp.run(cfg, device=device)
    _check_results(res, cfg)
    rows, line = analysis.verdict(res)
    assert set(rows) == {"circle2"} and isinstance(line, str)
