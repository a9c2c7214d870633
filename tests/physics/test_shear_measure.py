"""Shear-recovery measurement: exact estimator properties, injected biases recovered, and the
pipeline's stamp route (InterpolatedImage -> lens -> PSF -> pixel) applying the shear."""
import galsim
import numpy as np
import pytest

from astrogen.errors import ConfigError
from astrogen.physics.lensing import apply_lensing
from astrogen.physics.shear_measure import fixed_weight_ellipticity, ring_shears, shear_bias

PSF = galsim.Gaussian(fwhm=0.7)
SCALE = 0.2


def _ring(profiles, shears, sigma_pix, transform=lambda g: g, n_out=48, draw=None):
    """(n_gal, 2, 4, 2) ellipticities of analytic profiles, ring of 2 rotations."""
    out = np.empty((len(profiles), 2, len(shears), 2))
    for i, prof in enumerate(profiles):
        for rot in (0, 1):
            p = prof.rotate(90 * rot * galsim.degrees)
            for j, g in enumerate(shears):
                g1, g2 = transform(np.asarray(g))
                obj = galsim.Convolve(apply_lensing(p, g1, g2, 0.0), PSF)
                img = obj.drawImage(nx=n_out, ny=n_out, scale=SCALE, method="no_pixel").array
                out[i, rot, j] = fixed_weight_ellipticity(img, sigma_pix)
    return out


def _galaxies(n=6, seed=3):
    """Elliptical Sersic galaxies (n 0.5 to 1, hlr 0.25" to 0.5": well sampled at 0.03")."""
    rng = np.random.default_rng(seed)
    gals = []
    for _ in range(n):
        e = rng.uniform(0.05, 0.5)
        beta = rng.uniform(0, 180)
        gal = galsim.Sersic(n=rng.choice([0.5, 0.75, 1.0]),
                            half_light_radius=rng.uniform(0.25, 0.5))
        gals.append(gal.shear(e=e, beta=beta * galsim.degrees))
    return gals


def test_ring_shears_are_four_directions_of_equal_modulus():
    s = ring_shears(0.02)
    assert s.shape == (4, 2)
    np.testing.assert_allclose(np.hypot(s[:, 0], s[:, 1]), 0.02)
    angles = np.degrees(0.5 * np.arctan2(s[:, 1], s[:, 0])) % 180
    np.testing.assert_allclose(np.sort(angles), [0, 45, 90, 135])
    with pytest.raises(ConfigError, match="g"):
        ring_shears(1.0)


def test_rotation_by_90_degrees_flips_the_ellipticity_exactly():
    img = np.random.default_rng(0).random((5, 32, 32))
    e = fixed_weight_ellipticity(img, 4.0)
    e_rot = fixed_weight_ellipticity(np.rot90(img, axes=(1, 2)), 4.0)
    np.testing.assert_allclose(e_rot, -e, atol=1e-14)


def test_weighted_ellipticity_of_a_sheared_gaussian_is_analytic():
    # I * W of a sheared Gaussian (covariance C) and a round Gaussian weight (sigma_w) is a
    # Gaussian of covariance (C^-1 + I / sigma_w^2)^-1
    sigma, sigma_w, g1, g2 = 0.4, 0.5, 0.3, -0.2
    obj = galsim.Gaussian(sigma=sigma).shear(g1=g1, g2=g2)
    img = obj.drawImage(nx=400, ny=400, scale=0.01, method="no_pixel").array
    e = fixed_weight_ellipticity(img, sigma_w / 0.01)
    jac = galsim.Shear(g1=g1, g2=g2).getMatrix()
    cov = sigma ** 2 * jac @ jac.T
    cw = np.linalg.inv(np.linalg.inv(cov) + np.eye(2) / sigma_w ** 2)
    expect = [(cw[0, 0] - cw[1, 1]) / np.trace(cw), 2 * cw[0, 1] / np.trace(cw)]
    np.testing.assert_allclose(e, expect, atol=1e-6)


def test_injected_multiplicative_and_additive_bias_are_recovered():
    gals = _galaxies()
    shears = ring_shears(0.02)
    m_inj, c_inj = 2e-3, np.array([3e-4, -2e-4])
    ref = _ring(gals, shears, 3.0)
    test = _ring(gals, shears, 3.0, transform=lambda g: (1 + m_inj) * g + c_inj)
    b = shear_bias(test, ref, shears, n_boot=50)
    assert b["m1"] == pytest.approx(m_inj, abs=2e-5)
    assert b["m2"] == pytest.approx(m_inj, abs=2e-5)
    assert b["c1"] == pytest.approx(c_inj[0], abs=2e-6)
    assert b["c2"] == pytest.approx(c_inj[1], abs=2e-6)
    # and an unbiased route measures zero, with the intrinsic shapes cancelled by the ring
    b0 = shear_bias(ref, ref, shears, n_boot=10)
    assert b0["m1"] == 0 and b0["c2"] == 0


def test_stamp_route_applies_the_shear_of_analytic_galaxies():
    """What observe does with a PSF-free stamp (quintic InterpolatedImage, lens, PSF, pixel)
    shears a well-sampled galaxy like GalSim's analytic profile: |m| < 1e-3, |c| < 1e-4."""
    gals = [g.withFlux(1.0) for g in _galaxies(4, seed=5)]
    shears = ring_shears(0.02)
    ref = _ring(gals, shears, 3.0, n_out=40)
    test = np.empty_like(ref)
    for i, gal in enumerate(gals):
        # 6" stamp: > 99.5 % of the light of every galaxy here
        stamp = gal.drawImage(nx=200, ny=200, scale=0.03, method="no_pixel").array
        for rot in (0, 1):
            ii = galsim.InterpolatedImage(galsim.Image(np.ascontiguousarray(np.rot90(stamp, rot)),
                                                       scale=0.03), x_interpolant="quintic")
            for j, (g1, g2) in enumerate(shears):
                obj = galsim.Convolve(apply_lensing(ii, g1, g2, 0.0), PSF)
                img = obj.drawImage(nx=40, ny=40, scale=SCALE, method="no_pixel").array
                test[i, rot, j] = fixed_weight_ellipticity(img, 3.0)
    b = shear_bias(test, ref, shears, n_boot=20)
    assert abs(b["m1"]) < 1e-3 and abs(b["m2"]) < 1e-3
    assert abs(b["c1"]) < 1e-4 and abs(b["c2"]) < 1e-4


def test_shear_bias_refuses_mismatched_shapes():
    with pytest.raises(ConfigError, match="e_test"):
        shear_bias(np.zeros((3, 2, 4, 2)), np.zeros((3, 2, 3, 2)), ring_shears())


def test_ring_test_benchmark_runs_and_finds_the_pipeline_unbiased(tmp_path):
    """Smoke run of benchmarks/ring_test.py (2 parametric galaxies): files written, the
    pipeline route agrees with the same-stamp reference."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "ring_test.py"
    spec = importlib.util.spec_from_file_location("ring_test_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--n", "2", "--generators", "parametric", "--n-boot", "5", "--max-stamp", "96",
                "--out", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    comps = res["generators"]["parametric"]["comparisons"]
    same = next(c for c in comps if c["reference"].startswith("same stamp"))
    assert same["n_gal"] == 2 and abs(same["m1"]) < 1e-3 and abs(same["c1"]) < 1e-4
    assert (tmp_path / "results.md").is_file() and (tmp_path / "ring_test.png").is_file()
