"""Targets of the headline experiment (chapter "Smooth or pin: the headline experiment").

Every target is a ``smoothpin.GaussianMixture``, so the OU score and the Föllmer drift are exact:

- ``circle``: K equal-weight modes N(r u_k, v I) in d = 2 with u_k = (cos 2 pi k / K, sin 2 pi k / K)
  (narrow, well separated when r sin(pi / K) >> sqrt(v)).
- ``sphere``: K equal-weight modes N(r u_k, v I) in d dimensions, u_k independent uniform unit
  vectors drawn from a generator seeded with ``seed`` (pairwise distances about r sqrt(2)).
- ``digits``: a K-component full-covariance Gaussian mixture fitted by EM (scikit-learn,
  ``random_state=seed``) to the 1797 8x8 images of scikit-learn's digits data set, pixels mapped
  from {0, ..., 16} to [-1, 1]. ``reg_covar`` is added to every covariance: 1.3e-3 is the variance
  of the uniform dequantisation noise of one grey level ((2 / 16)^2 / 12), so the fitted density is
  a smoothed version of the image distribution with exact scores ("image-like data").
  ``digits_images()`` returns the images themselves (the empirical data set).
- ``gaussian``: N(mean, diag(scales^2)), the log-concave case.
- ``scale_mixture``: sum_k w_k N(0, v_k I) with v_k = v0 r^k, w_k proportional to v_k^{-nu/2}: a
  discrete Gaussian scale mixture (like Student's t, a continuous one) whose density decays like a
  power of |x| over the range of radii sqrt(v_k) covers; the heavy-tailed case.

A target is described by a JSON-able ``spec`` dict (``{"kind": "circle", ...}``) that lives in the
experiment's configuration, and built by ``make_target(spec)``.
"""
from __future__ import annotations

import math

import torch

from ..targets import GaussianMixture

__all__ = ["make_target", "digits_images", "fit_digits_mixture"]


def digits_images(dtype=torch.float64, device=None):
    """The 1797 digit images as an (1797, 64) tensor with pixels in [-1, 1] (x = 2 p / 16 - 1).

    Raises ImportError with the fix if scikit-learn is missing (it ships the data; no download)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the digits target needs scikit-learn (pip install scikit-learn)") from e
    pixels = torch.as_tensor(load_digits().data, dtype=torch.float64)
    return (pixels / 8.0 - 1.0).to(dtype=dtype, device=device)


def fit_digits_mixture(n_components=10, reg_covar=1.3e-3, seed=0):
    """GaussianMixture (float64, CPU) fitted by EM to ``digits_images()`` (full covariances)."""
    from sklearn.mixture import GaussianMixture as SkMixture
    from threadpoolctl import threadpool_limits

    x = digits_images().numpy()
    with threadpool_limits(1):  # one BLAS thread: deterministic and ~20x faster on a busy CPU
        gm = SkMixture(n_components=n_components, covariance_type="full", reg_covar=reg_covar,
                       random_state=seed, max_iter=500).fit(x)
    to = lambda a: torch.as_tensor(a, dtype=torch.float64)
    w = to(gm.weights_)
    cov = to(gm.covariances_)
    cov = 0.5 * (cov + cov.mT)  # exact symmetry for the eigendecomposition
    return GaussianMixture(w / w.sum(), to(gm.means_), cov)


def _isotropic(means, variance):
    K = means.shape[0]
    w = torch.full((K,), 1.0 / K, dtype=torch.float64)
    return GaussianMixture.isotropic(w, means, float(variance))


def make_target(spec, dtype=torch.float32, device=None):
    """The GaussianMixture described by ``spec`` (see the module docstring), in ``dtype`` on ``device``.

    spec: {"kind": "circle", "modes": K, "radius": r, "variance": v}
          {"kind": "sphere", "dim": d, "modes": K, "radius": r, "variance": v, "seed": s}
          {"kind": "digits", "modes": K, "reg_covar": c, "seed": s}
          {"kind": "gaussian", "scales": [s_1, ..., s_d], "mean": [...] (optional)}
          {"kind": "scale_mixture", "dim": d, "modes": K, "min_variance": v0, "ratio": r, "tail": nu}
    Raises ValueError for an unknown kind.
    """
    kind = spec.get("kind")
    if kind == "circle":
        K, r = int(spec["modes"]), float(spec["radius"])
        ang = 2 * math.pi * torch.arange(K, dtype=torch.float64) / K
        mix = _isotropic(r * torch.stack([ang.cos(), ang.sin()], -1), spec["variance"])
    elif kind == "sphere":
        g = torch.Generator().manual_seed(int(spec["seed"]))
        u = torch.randn(int(spec["modes"]), int(spec["dim"]), generator=g, dtype=torch.float64)
        mix = _isotropic(float(spec["radius"]) * u / u.norm(dim=-1, keepdim=True), spec["variance"])
    elif kind == "gaussian":
        sd = torch.as_tensor(spec["scales"], dtype=torch.float64)
        mean = torch.as_tensor(spec.get("mean", [0.0] * sd.numel()), dtype=torch.float64)
        mix = GaussianMixture(torch.ones(1, dtype=torch.float64), mean[None],
                              torch.diag(sd * sd)[None])
    elif kind == "scale_mixture":
        K, d = int(spec["modes"]), int(spec["dim"])
        v = float(spec["min_variance"]) * float(spec["ratio"]) ** torch.arange(K, dtype=torch.float64)
        w = v ** (-0.5 * float(spec["tail"]))
        mix = GaussianMixture.isotropic(w / w.sum(), torch.zeros(K, d, dtype=torch.float64), v)
    elif kind == "digits":
        mix = fit_digits_mixture(int(spec["modes"]), float(spec["reg_covar"]), int(spec["seed"]))
    else:
        raise ValueError(f"spec: unknown target kind {kind!r}; use 'circle', 'sphere' or 'digits'")
    return mix.to(device=device, dtype=dtype)
