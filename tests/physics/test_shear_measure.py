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


def _bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "ring_test.py"
    spec = importlib.util.spec_from_file_location("ring_test_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _generator_batch(kind, tmp_path):
    """A generator's PSF-free batch of 3 COSMOS-sampler rows: galsim.parametric's own, or
    smooth 'generated' stamps with per-stamp pixel scales."""
    from astrogen.batch import StampBatch
    from astrogen.catalog.cosmos import CosmosSampler
    from astrogen.stages.base import StageContext
    from astrogen.stages.galsim_stages import ParametricGalaxies

    rows = CosmosSampler().sample(7, np.arange(3))
    if kind == "parametric":
        stage = ParametricGalaxies()
        stage.setup(StageContext(name="p", seed=1, output_dir=tmp_path, work_dir=tmp_path))
        return stage.process(rows)
    scales = np.array([0.03, 0.045, 0.03])
    stamps = [g.withFlux(1.0).drawImage(nx=64, ny=64, scale=sc, method="no_pixel").array
              for g, sc in zip(_galaxies(3, seed=9), scales)]
    return StampBatch(images=stamps, pixel_scale=scales, catalog=rows)


@pytest.mark.parametrize("kind", ["parametric", "generated"])
def test_ring_test_benchmark_draws_exactly_what_observe_draws(kind, tmp_path):
    """The benchmark's lensed, PSF-convolved images of a row are observe's own, pixel for
    pixel (same batch, catalog g1/g2, stamp_size), and the public ``observed_object`` drawn
    on that grid gives them too; its 90-deg ring member is the galaxy rotated (rotating the
    image back gives the opposite shear's image)."""
    from astrogen.physics.observe import draw_profile
    from astrogen.stages.base import StageContext
    from astrogen.stages.galsim_stages import Observe, observed_object

    bench = _bench()
    batch = _generator_batch(kind, tmp_path)
    shears = ring_shears(0.02)
    n_out = 40
    for i in range(len(batch)):
        ring = bench.observe_ring(batch, i, shears, n_out)
        assert ring.shape == (2, 4, n_out, n_out)
        for j, (g1, g2) in enumerate(shears):
            cat = batch.catalog.copy()
            cat["g1"], cat["g2"] = np.full(len(cat), g1), np.full(len(cat), g2)
            lensed = batch.replace(catalog=cat)
            stage = Observe(survey="lsst_i", stamp_size=n_out, add_noise=False)
            stage.setup(StageContext(name="o", seed=2, output_dir=tmp_path, work_dir=tmp_path))
            obs = stage.process(lensed).stamp(i)
            assert obs.sum() > 0
            assert np.array_equal(ring[0, j], obs)
            img = draw_profile(observed_object(lensed, i, "lsst_i"),
                               galsim.ImageF(n_out, n_out, scale=0.2))
            assert np.array_equal(img.array, obs)
            # rotated member, rotated back by -90 deg, is the image under the opposite shear
            back = np.rot90(ring[1, j], -1)
            assert np.abs(back - ring[0, (j + 2) % 4]).max() < 1e-4 * obs.max()
            assert np.abs(ring[0, j] - ring[0, (j + 2) % 4]).max() > 1e-3 * obs.max()


def test_ring_test_benchmark_sees_an_injected_shear_bias(tmp_path):
    """A shear 0.5 % too large given to observe shows up as m = 5e-3 (to 1e-4)."""
    import json

    _bench().main(["--n", "2", "--generators", "parametric", "--n-boot", "5",
                   "--inject-m", "0.005", "--out", str(tmp_path)])
    b = json.loads((tmp_path / "results.json").read_text())["generators"]["parametric"][
        "comparisons"][0]
    assert abs(b["m1"] - 0.005) < 1e-4 and abs(b["m2"] - 0.005) < 1e-4
    assert not b["passes"]


def test_ring_test_benchmark_runs_and_finds_the_pipeline_unbiased(tmp_path):
    """Smoke run of benchmarks/ring_test.py (2 parametric galaxies through observe): files
    written, observe's exact-profile route agrees with the tight-GSParams analytic one."""
    import json

    _bench().main(["--n", "2", "--generators", "parametric", "--n-boot", "5",
                   "--out", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    (b,) = res["generators"]["parametric"]["comparisons"]
    assert b["reference"].startswith("analytic")
    assert b["n_gal"] == 2 and abs(b["m1"]) < 1e-3 and abs(b["c1"]) < 1e-4
    assert (tmp_path / "results.md").is_file() and (tmp_path / "ring_test.png").is_file()
