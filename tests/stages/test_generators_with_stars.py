"""Stars in the stream of the generator stages (flowvae.generate, ddpm.generate): no network
call for ``is_star`` rows, galaxies unchanged by the stars, stars drawn as the PSF."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import galsim  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from astropy.table import Table  # noqa: E402

from astrogen.physics.surveys import get_bands  # noqa: E402
from astrogen.stages.base import StageContext  # noqa: E402
from astrogen.stages.galsim_stages import Observe, ParametricGalaxies  # noqa: E402
from astrogen.stages.stars import Concat  # noqa: E402
from test_ddpm_stage import tiny_ddpm_file  # noqa: E402,F401  (fixture)

STAR_MAGS = [18.5, 21.0, 23.0]


def _galaxies(n=5):
    rng = np.random.default_rng(1)
    t = Table({"row_id": np.arange(n), "mag": rng.uniform(19, 23, n),
               "hlr": rng.uniform(0.15, 0.5, n), "z": rng.uniform(0.2, 1.5, n),
               "q": rng.uniform(0.4, 1.0, n), "beta": rng.uniform(-90, 90, n),
               "sersic_n": rng.uniform(0.8, 3.0, n),
               "mag_lsst_i": rng.uniform(19, 23, n)})
    t["mag"].unit, t["hlr"].unit, t["beta"].unit = "mag", "arcsec", "deg"
    return t


def _stars():
    k = len(STAR_MAGS)
    return Table({"row_id": (2 ** 62) + np.arange(k), "is_star": np.ones(k, bool),
                  "mag": STAR_MAGS, "mag_lsst_i": np.array(STAR_MAGS) - 0.3, "z": np.zeros(k)})


def _mixed():
    """Galaxies and stars interleaved (stars first, in the middle and last)."""
    t = Concat().process(_galaxies(), _stars())
    order = [5, 0, 1, 6, 2, 3, 4, 7]
    return t[order]


def _ctx(tmp_path, name, seed=5):
    return StageContext(name=name, seed=seed, output_dir=tmp_path, work_dir=tmp_path)


def _generator(kind, path, tmp_path, **kw):
    if kind == "flowvae":
        from astrogen.stages.flowvae import FlowVAEGenerate as cls
    else:
        from astrogen.stages.ddpm import DDPMGenerate as cls

        kw.setdefault("num_steps", 4)
    st = cls(model=str(path), **kw)
    st.setup(_ctx(tmp_path, "gen"))
    return st


@pytest.fixture(params=["flowvae", "ddpm"])
def generator(request, tiny_flowvae_file, tiny_ddpm_file, tmp_path):  # noqa: F811
    path = tiny_flowvae_file if request.param == "flowvae" else tiny_ddpm_file
    return lambda **kw: _generator(request.param, path, tmp_path, **kw)


def test_star_rows_skip_the_network_and_galaxies_do_not_change(generator, monkeypatch):
    mixed = _mixed()
    stars = np.asarray(mixed["is_star"])
    alone = generator().process(_galaxies())
    st = generator()
    seen = []
    original = st.model.generate

    def spy(cond, seeds, **kw):
        seen.append(np.array(seeds))
        assert np.all(np.isfinite(cond))  # no NaN condition of a star reaches the network
        return original(cond, seeds, **kw)

    monkeypatch.setattr(st.model, "generate", spy)
    batch = st.process(mixed)
    assert sum(len(s) for s in seen) == int((~stars).sum())  # one network row per galaxy
    assert len(batch) == len(mixed)
    np.testing.assert_array_equal(batch.catalog["row_id"], mixed["row_id"])
    # every galaxy's stamp, pixel scale and truth columns are those of the run without stars
    gal = np.flatnonzero(~stars)
    np.testing.assert_array_equal(batch.images[gal], alone.images)
    np.testing.assert_array_equal(batch.pixel_scales[gal], alone.pixel_scales)
    for col in ("gen_mag", "gen_hlr", "gen_q", "gen_pixel_scale", "gen_cut"):
        np.testing.assert_array_equal(np.asarray(batch.catalog[col])[gal],
                                      np.asarray(alone.catalog[col]))
    assert batch.catalog["gen_hlr"].unit == alone.catalog["gen_hlr"].unit
    # star rows: a placeholder holding the catalog flux at the centre, sensible truth
    cat = batch.catalog[stars]
    np.testing.assert_allclose(cat["gen_mag"], cat["mag"], atol=1e-5)
    np.testing.assert_allclose(cat["stamp_flux_frac"], 1.0, rtol=1e-6)
    assert not np.any(cat["gen_cut"]) and not np.any(cat["gen_size_scaled"])
    assert np.all(np.isnan(cat["gen_hlr"])) and np.all(np.isnan(cat["gen_q"]))
    img = batch.images[np.flatnonzero(stars)[0]]
    n = img.shape[0]
    ys, xs = np.nonzero(img)
    assert np.allclose(ys.mean(), (n - 1) / 2) and np.allclose(xs.mean(), (n - 1) / 2)


def test_chunk_of_stars_only_has_the_galaxy_columns(generator):
    gal = generator().process(_galaxies(2))
    only = generator().process(Concat().process(_galaxies(0), _stars()))
    assert len(only) == len(STAR_MAGS)
    assert only.images.shape[1:] == gal.images.shape[1:]  # same stamp side as a galaxy chunk
    assert set(gal.catalog.colnames) <= set(only.catalog.colnames)
    np.testing.assert_allclose(only.catalog["gen_mag"], STAR_MAGS, atol=1e-5)


def _observe(batch, tmp_path):
    obs = Observe(survey="lsst_i", add_noise=False)
    obs.setup(_ctx(tmp_path, "observe"))
    return obs.process(batch)


def test_observed_stars_are_the_psf_with_the_catalog_flux(tiny_flowvae_file, tmp_path):
    mixed = _mixed()
    stars = np.asarray(mixed["is_star"])
    gen = _generator("flowvae", tiny_flowvae_file, tmp_path)
    obs = _observe(gen.process(mixed), tmp_path)
    alone = _observe(_generator("flowvae", tiny_flowvae_file, tmp_path).process(_galaxies()),
                     tmp_path)
    survey = get_bands("lsst_i", None)[0]
    psf = Observe(survey="lsst_i").psf
    for i in np.flatnonzero(stars):
        img = obs.images[i] if not obs.ragged else obs.stamp(i)
        flux = float(survey.electrons(np.array([mixed["mag_lsst_i"][i]]))[0])
        ref = psf.withFlux(flux).drawImage(galsim.ImageF(img.shape[1], img.shape[0],
                                                         scale=survey.pixel_scale)).array
        np.testing.assert_allclose(img, ref, rtol=1e-4, atol=1e-6 * ref.max())
        assert img.sum() == pytest.approx(flux, rel=0.01)  # the PSF's light is in the stamp
        assert obs.catalog["mu"][i] == 1.0
    for j, i in enumerate(np.flatnonzero(~stars)):
        np.testing.assert_array_equal(obs.stamp(i), alone.stamp(j))


def test_parametric_passes_stars_through_the_same_way(tmp_path):
    mixed = _mixed()
    stars = np.asarray(mixed["is_star"])
    par = ParametricGalaxies()
    par.setup(_ctx(tmp_path, "render"))
    obs = _observe(par.process(mixed), tmp_path)
    alone = ParametricGalaxies()
    alone.setup(_ctx(tmp_path, "render"))
    ref = _observe(alone.process(_galaxies()), tmp_path)
    psf = Observe(survey="lsst_i").psf
    survey = get_bands("lsst_i", None)[0]
    for i in np.flatnonzero(stars):
        img = obs.stamp(i)
        flux = float(survey.electrons(np.array([mixed["mag_lsst_i"][i]]))[0])
        want = psf.withFlux(flux).drawImage(galsim.ImageF(img.shape[1], img.shape[0],
                                                          scale=survey.pixel_scale)).array
        np.testing.assert_allclose(img, want, rtol=1e-4, atol=1e-6 * want.max())
    for j, i in enumerate(np.flatnonzero(~stars)):
        np.testing.assert_array_equal(obs.stamp(i), ref.stamp(j))
