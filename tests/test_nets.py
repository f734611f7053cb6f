"""Unit tests of smoothpin.nets: shapes, dtypes, the time embedding, parameter counts, the PIS/DDS
structure of ControlNet and the interpolation of LinearDrift (float64 unless stated)."""

import pytest
import torch

from smoothpin.nets import ControlNet, LinearDrift, ScoreMLP, SinusoidalTimeEmbedding, count_parameters


D64 = torch.float64


def _x(n=7, d=3, seed=0, dtype=D64):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_time_embedding_formula():
    emb = SinusoidalTimeEmbedding(8, min_frequency=1.0, max_frequency=1000.0).double()
    t = torch.tensor([0.0, 0.3, 2.0], dtype=D64)
    w = torch.tensor([1.0, 10.0, 100.0, 1000.0], dtype=D64)  # geometric from 1 to 1000, 4 values
    expected = torch.cat([torch.sin(t[:, None] * w), torch.cos(t[:, None] * w)], -1)
    assert torch.allclose(emb(t), expected, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_score_mlp_shapes_dtype_and_time_forms(dtype):
    torch.manual_seed(0)
    net = ScoreMLP(3, width=16, depth=2).to(dtype=dtype)
    x = _x(dtype=dtype)
    out = net(x, 0.25)
    assert out.shape == x.shape and out.dtype == dtype
    # a float t, a 0-dim tensor and a per-sample tensor give the same result
    assert torch.equal(out, net(x, torch.tensor(0.25, dtype=dtype)))
    assert torch.allclose(out, net(x, torch.full((7,), 0.25, dtype=dtype)))
    # batch shapes (..., d)
    assert net(x.reshape(7, 1, 3).expand(7, 2, 3), 0.5).shape == (7, 2, 3)


def test_count_parameters_matches_formula():
    d, e, w, depth = 3, 16, 20, 3
    net = ScoreMLP(d, width=w, depth=depth, time_embedding_dim=e)
    expected = (d + e) * w + w + (depth - 1) * (w * w + w) + w * d + d
    assert count_parameters(net) == expected
    for p in net.out.parameters():
        p.requires_grad_(False)
    assert count_parameters(net) == expected - (w * d + d)


def test_masked_mlp_with_ones_mask_is_the_plain_network():
    torch.manual_seed(1)
    plain = ScoreMLP(3, 12, 2).double()
    masked = ScoreMLP(3, 12, 2, masked=True).double()
    masked.load_state_dict({**plain.state_dict(), "unit_mask": torch.ones(2, 12, dtype=D64)})
    x = _x()
    assert torch.equal(plain(x, 0.4), masked(x, 0.4))


def test_control_net_starts_at_reference_and_is_affine_in_the_gradient_feature():
    x = _x()
    net = ControlNet(3, width=8, depth=2, grad_log_target=lambda y: -y, x_coefficient=-0.5).double()
    assert torch.equal(net(x, 0.3), -0.5 * x)  # zero-initialised output layers
    torch.manual_seed(2)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    # out = c x + NN1 + NN2 * g: doubling g changes out by exactly NN2 * g
    net2 = ControlNet(3, width=8, depth=2, grad_log_target=lambda y: -2 * y, x_coefficient=-0.5).double()
    net2.load_state_dict(net.state_dict())
    net0 = ControlNet(3, width=8, depth=2, grad_log_target=lambda y: 0 * y, x_coefficient=-0.5).double()
    net0.load_state_dict(net.state_dict())
    a, b, c = net0(x, 0.3), net(x, 0.3), net2(x, 0.3)
    assert torch.allclose(c - b, b - a, atol=1e-12)
    assert not torch.allclose(b, a)


def test_control_net_clip():
    net = ControlNet(2, 4, 1, grad_log_target=lambda y: 100 * y, clip=1.0).double()
    with torch.no_grad():
        net.nn2[-1].bias.fill_(1.0)  # NN2 = 1, NN1 = 0: out = clip(grad)
    x = torch.tensor([[0.5, -0.001]], dtype=D64)
    assert torch.allclose(net(x, 0.1), torch.tensor([[1.0, -0.1]], dtype=D64))


def test_linear_drift_interpolates_between_knots():
    net = LinearDrift(3, knots=5, interval=(0.0, 2.0)).double()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        net.A.copy_(torch.randn(5, 3, 3, generator=g, dtype=D64))
        net.c.copy_(torch.randn(5, 3, generator=g, dtype=D64))
    x = _x()
    A, c = net.A.detach(), net.c.detach()
    assert torch.allclose(net(x, 1.0), x @ A[2].T + c[2], atol=1e-12)  # knot 2 is t = 1
    mid = 0.5 * (x @ A[1].T + c[1]) + 0.5 * (x @ A[2].T + c[2])  # t = 0.75 halfway
    assert torch.allclose(net(x, 0.75), mid, atol=1e-12)
    assert torch.allclose(net(x, 2.0), x @ A[4].T + c[4], atol=1e-12)
    t = torch.tensor([0.0, 0.75, 1.0, 1.3, 2.0, 0.1, 1.99], dtype=D64)
    rows = torch.stack([net(x[i:i + 1], float(t[i]))[0] for i in range(7)])
    assert torch.allclose(net(x, t), rows, atol=1e-12)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="dim"):
        ScoreMLP(0)
    with pytest.raises(ValueError, match="time_embedding_dim"):
        ScoreMLP(2, time_embedding_dim=7)
    with pytest.raises(ValueError, match="x"):
        ScoreMLP(2, 8, 1)(_x(d=3), 0.1)
    with pytest.raises(ValueError, match="grad_log_target"):
        ControlNet(2, grad_log_target=None)
    with pytest.raises(ValueError, match="interval"):
        LinearDrift(2, interval=(1.0, 1.0))
    with pytest.raises(ValueError, match="net"):
        count_parameters(lambda x: x)


def test_config_rebuilds_the_same_architecture():
    net = ScoreMLP(3, width=10, depth=2, time_embedding_dim=8, max_frequency=20.0)
    cfg = net.config()
    assert cfg == {"dim": 3, "width": 10, "depth": 2, "time_embedding_dim": 8,
                   "max_frequency": 20.0, "masked": False}
    twin = ScoreMLP(**cfg)
    twin.load_state_dict(net.state_dict())
    x = _x(dtype=torch.float32)
    assert torch.equal(twin(x, 0.3), net(x, 0.3))
    assert count_parameters(twin) == count_parameters(net)
