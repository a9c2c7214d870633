"""Shear-recovery measurement of a simulator: ring test, fixed-weight moments, m and c.

The question answered here is whether a simulator applies a requested shear exactly: not
whether some shape estimator recovers it. Each galaxy is therefore drawn twice with the same
shear, once by the route under test and once by a *reference* route that shears the same
galaxy exactly (an analytic GalSim profile, or the same stamp reconstructed with a
higher-accuracy interpolant and tighter GSParams), and both images go through the same
estimator. Writing the ring-averaged estimator response of a galaxy as ``s(g)``,

.. math:: s_{\\rm test}(g) = (1 + m)\\, s_{\\rm ref}(g) + c\\, R,

with ``R`` the reference's response per unit shear, so that the estimator's own response
(its model bias, its weight) divides out of ``m`` and ``c``, and the intrinsic shape cancels
because every galaxy is also drawn rotated by 90 deg: the fixed, round, centred weight of
:func:`fixed_weight_ellipticity` gives exactly ``e(rot90 I) = -e(I)`` on a square pixel grid,
so the unsheared ring average is zero to rounding, not merely to first order.

Shears are applied in four directions, ``(g, 0)``, ``(0, g)``, ``(-g, 0)``, ``(0, -g)``
(position angles 0, 45, 90, 135 deg), see :func:`ring_shears`. ``m1`` uses the ``+-g1`` pair,
``m2`` the ``+-g2`` pair; ``c1``, ``c2`` use all four. Uncertainties are bootstrap standard
deviations over galaxies (the resampling unit is the galaxy with its whole ring).
"""
from __future__ import annotations

import numpy as np

from astrogen.errors import ConfigError

__all__ = ["ring_shears", "fixed_weight_ellipticity", "shear_bias"]


def ring_shears(g: float = 0.02) -> np.ndarray:
    """The four reduced shears of the ring test, shape (4, 2): position angles 0, 45, 90, 135 deg.

    Parameters
    ----------
    g : float
        Modulus ``|g|`` of the reduced shear (dimensionless), ``0 < g < 1``.
    """
    if not 0.0 < float(g) < 1.0:
        raise ConfigError("must be in (0, 1).", key="g", received={"g": g})
    g = float(g)
    return np.array([[g, 0.0], [0.0, g], [-g, 0.0], [0.0, -g]])


def fixed_weight_ellipticity(images: np.ndarray, sigma_pix, center=None) -> np.ndarray:
    """Ellipticity ``(e1, e2)`` from second moments with a fixed round Gaussian weight.

    .. math:: e_1 = (Q_{xx} - Q_{yy}) / (Q_{xx} + Q_{yy}), \\quad
              e_2 = 2 Q_{xy} / (Q_{xx} + Q_{yy}),
              \\quad Q_{ij} = \\sum W(x) I(x)\\, x_i x_j

    with ``x`` measured from ``center`` (not from the light centroid, so the estimator is
    a fixed ratio of two linear functionals of the image and rotating the image by 90 deg
    about ``center`` flips the sign of ``e`` exactly).

    Parameters
    ----------
    images : numpy.ndarray, shape (n, ny, nx) or (ny, nx)
        Images (any flux unit).
    sigma_pix : float or array (n,)
        Weight standard deviation in pixels.
    center : (float, float), optional
        ``(xc, yc)`` in 0-based pixel coordinates; default the geometric centre
        ``((nx - 1) / 2, (ny - 1) / 2)``, where GalSim draws a centred profile.

    Returns
    -------
    numpy.ndarray, shape (n, 2) (or (2,) for one image)
    """
    imgs = np.asarray(images, dtype=np.float64)
    single = imgs.ndim == 2
    if single:
        imgs = imgs[None]
    n, ny, nx = imgs.shape
    sig = np.broadcast_to(np.asarray(sigma_pix, dtype=np.float64), (n,))
    if not np.all(sig > 0):
        raise ConfigError("the weight sigma must be > 0 pixels.", key="sigma_pix",
                          received={"sigma_pix": float(np.min(sig))})
    xc, yc = ((nx - 1) / 2.0, (ny - 1) / 2.0) if center is None else center
    x = np.arange(nx) - xc
    y = np.arange(ny) - yc
    xx, yy = np.meshgrid(x, y)  # xx[j, i] = x_i (numpy row = y)
    r2 = xx ** 2 + yy ** 2
    w = np.exp(-0.5 * r2[None] / sig[:, None, None] ** 2) * imgs
    qxx = np.einsum("nij,ij->n", w, xx ** 2)
    qyy = np.einsum("nij,ij->n", w, yy ** 2)
    qxy = np.einsum("nij,ij->n", w, xx * yy)
    tr = qxx + qyy
    out = np.stack([(qxx - qyy) / tr, 2.0 * qxy / tr], axis=1)
    return out[0] if single else out


def _bias_point(e_test: np.ndarray, e_ref: np.ndarray, shears: np.ndarray) -> dict:
    """m1, m2, c1, c2 of one sample; ``e_*`` are (n_gal, n_rot, 4, 2) ellipticities."""
    s_t = e_test.mean(axis=1).sum(axis=0)  # (4, 2): ring average, summed over galaxies
    s_r = e_ref.mean(axis=1).sum(axis=0)
    out = {}
    resp = np.empty((2, 2))  # resp[i, j] = d s_ref_i / d g_j
    for j, (plus, minus) in enumerate(((0, 2), (1, 3))):  # shears +-g_j
        dg = shears[plus, j] - shears[minus, j]
        resp[:, j] = (s_r[plus] - s_r[minus]) / dg
        r_test = (s_t[plus, j] - s_t[minus, j]) / dg
        out[f"m{j + 1}"] = float(r_test / resp[j, j] - 1.0)
    # s_test = (1 + m) s_ref + R c, averaged over the four shear directions (the 2-point
    # ring does not make R diagonal, so the full 2x2 response is inverted)
    one_m = 1.0 + np.array([out["m1"], out["m2"]])
    c = np.linalg.solve(resp, np.mean(s_t - one_m[None, :] * s_r, axis=0))
    out["c1"], out["c2"] = float(c[0]), float(c[1])
    out["response_ref"] = (resp / e_ref.shape[0]).tolist()
    return out


def shear_bias(e_test, e_ref, shears, n_boot: int = 1000, seed: int = 0) -> dict:
    """Multiplicative and additive shear bias of a test route relative to a reference route.

    Parameters
    ----------
    e_test, e_ref : array_like, shape (n_gal, n_rot, 4, 2)
        Ellipticities (any linear-response estimator, the same for both routes) of every
        galaxy, for each ring rotation and each of the four shears of :func:`ring_shears`.
    shears : array_like, shape (4, 2)
        The applied reduced shears.
    n_boot : int
        Bootstrap resamplings of the galaxies for the uncertainties.
    seed : int
        Seed of the bootstrap.

    Returns
    -------
    dict
        ``m1, m2, c1, c2`` (dimensionless, ``c`` in units of shear), their bootstrap standard
        deviations ``sigma_m1...``, ``m`` and ``c`` (the larger in absolute value of the two
        components, with its uncertainty), ``response_ref`` (the reference's mean 2x2
        response per galaxy per unit shear, ``[i][j] = d e_i / d g_j``), ``n_gal``.
    """
    e_test = np.asarray(e_test, dtype=np.float64)
    e_ref = np.asarray(e_ref, dtype=np.float64)
    shears = np.asarray(shears, dtype=np.float64)
    if e_test.shape != e_ref.shape or e_test.ndim != 4 or e_test.shape[2:] != (4, 2):
        raise ConfigError("test and reference ellipticities must both have shape "
                          "(n_gal, n_rot, 4, 2).", key="e_test",
                          received={"e_test": e_test.shape, "e_ref": e_ref.shape})
    point = _bias_point(e_test, e_ref, shears)
    rng = np.random.default_rng(seed)
    n = e_test.shape[0]
    boots = {k: [] for k in ("m1", "m2", "c1", "c2")}
    for _ in range(int(n_boot)):
        idx = rng.integers(0, n, n)
        b = _bias_point(e_test[idx], e_ref[idx], shears)
        for k in boots:
            boots[k].append(b[k])
    for k, v in boots.items():
        point[f"sigma_{k}"] = float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
    for q in ("m", "c"):
        k = max((f"{q}1", f"{q}2"), key=lambda name: abs(point[name]))
        point[q], point[f"sigma_{q}"] = point[k], point[f"sigma_{k}"]
    point["n_gal"] = int(n)
    return point
