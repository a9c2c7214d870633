"""``observe`` with several bands: one MultiBandStamps, same morphology, per-band fluxes and
files (issue 12, "Bands")."""
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astrogen.batch import MultiBandStamps, StampBatch
from astrogen.errors import CatalogError, ConfigError, PipelineGraphError
from astrogen.physics.surveys import SURVEYS
from astrogen.stages.base import StageContext
from astrogen.stages.galsim_stages import Observe, ParametricGalaxies
from astrogen.stages.output import CatalogOutput, PreviewOutput, StampsOutput

REPO = Path(__file__).resolve().parents[2]
GAUSS = {"type": "Gaussian", "fwhm": 0.7}


def _ctx(stage, tmp_path, name="s"):
    work = tmp_path / f"work_{name}"
    work.mkdir(parents=True, exist_ok=True)
    stage.setup(StageContext(name=name, seed=11, output_dir=tmp_path, work_dir=work,
                             provenance={"ASTROGEN": ("test", "version")}))
    return stage


def _rows():
    n = 3
    t = Table({"row_id": np.array([7, 3, 12]), "mag": np.full(n, 22.0),
               "hlr": np.array([0.3, 0.8, 0.5]), "q": np.array([0.4, 0.9, 0.6]),
               "beta": np.array([10.0, 80.0, -30.0]), "sersic_n": np.array([1.0, 2.5, 4.0]),
               "bulge_frac": np.full(n, 0.3)})
    t["mag_lsst_g"] = [23.0, 22.0, 21.5]
    t["mag_lsst_r"] = [22.5, 21.0, 22.0]
    t["mag_hsc_i"] = [21.0, 22.5, 23.0]
    t["mag_euclid_vis"] = [21.5, 21.5, 22.5]
    return t


def test_per_band_fluxes_match_magnitudes_and_surveycodex_zero_points():
    import surveycodex as sc

    batch = ParametricGalaxies().process(_rows())
    obs = Observe(survey="lsst_g", bands=["lsst_g", "hsc_i", "euclid_vis"],
                  add_noise=False).process(batch)
    assert isinstance(obs, MultiBandStamps) and obs.bands == ["lsst_g", "hsc_i", "euclid_vis"]
    for band, (survey, filt) in {"lsst_g": ("LSST", "g"), "hsc_i": ("HSC", "i"),
                                 "euclid_vis": ("Euclid_VIS", "IE")}.items():
        f = sc.get_survey(survey).get_filter(filt)
        b = obs[band]
        expected = (10 ** (-0.4 * (np.asarray(obs.catalog[f"mag_{band}"]) - f.zeropoint.value))
                    * f.full_exposure_time.value)
        np.testing.assert_allclose(b.fluxes, expected, rtol=5e-3)
        np.testing.assert_allclose(obs.catalog[f"flux_{band}"], expected, rtol=1e-12)
        assert b.pixel_scale == pytest.approx(sc.get_survey(survey).pixel_scale.to_value("arcsec"))
        assert list(b.catalog["row_id"]) == [7, 3, 12]
    # the pixel scales differ, so the stamp shapes do too: three real bands, not one copied
    assert obs["euclid_vis"].pixel_scale < obs["lsst_g"].pixel_scale


def test_same_object_same_psf_stamps_are_proportional_and_equal_single_band():
    batch = ParametricGalaxies().process(_rows())
    obs = Observe(survey="lsst", bands=["g", "r"], psf=GAUSS, add_noise=False).process(batch)
    g, r = obs["lsst_g"], obs["lsst_r"]
    for i in range(len(batch)):
        gi, ri = g.stamp(i), r.stamp(i)
        assert gi.shape == ri.shape
        ratio = ri.sum() / gi.sum()
        assert ratio == pytest.approx(10 ** (-0.4 * (batch.catalog["mag_lsst_r"][i]
                                                      - batch.catalog["mag_lsst_g"][i]))
                                      * SURVEYS["lsst_r"].electrons(0) / SURVEYS["lsst_g"].electrons(0),
                                      rel=1e-6)
        np.testing.assert_allclose(ri, ratio * gi, atol=1e-6 * gi.max() * ratio)
    # each band is exactly what a single-band observe of that band draws
    single = Observe(survey="lsst_r", psf=GAUSS, add_noise=False).process(batch)
    for i in range(len(batch)):
        np.testing.assert_array_equal(single.stamp(i), r.stamp(i))


def test_noise_is_per_band_and_reproducible(tmp_path):
    batch = ParametricGalaxies().process(_rows())
    a = _ctx(Observe(survey="lsst", bands=["g", "r"], psf=GAUSS), tmp_path, "a").process(batch)
    b = _ctx(Observe(survey="lsst", bands=["g", "r"], psf=GAUSS), tmp_path, "b").process(batch)
    clean = Observe(survey="lsst", bands=["g", "r"], psf=GAUSS, add_noise=False).process(batch)
    ng = a["lsst_g"].stamp(0) - clean["lsst_g"].stamp(0)
    nr = a["lsst_r"].stamp(0) - clean["lsst_r"].stamp(0)
    np.testing.assert_array_equal(a["lsst_g"].stamp(0), b["lsst_g"].stamp(0))
    assert abs(np.corrcoef(ng.ravel(), nr.ravel())[0, 1]) < 0.2  # independent streams
    assert ng.std() == pytest.approx(SURVEYS["lsst_g"].noise_sigma, rel=0.3)


def test_each_band_magnitude_is_required():
    stage = Observe(survey="lsst", bands=["g", "r"], add_noise=False)
    assert stage.required_columns() == ("mag_lsst_g", "mag_lsst_r")
    assert stage.output_type is MultiBandStamps and Observe.output_type is StampBatch
    assert Observe(survey="lsst_r").required_columns() == ("mag",)
    rows = _rows()
    del rows["mag_lsst_r"]
    with pytest.raises(CatalogError, match="mag_lsst_r"):
        stage.process(ParametricGalaxies().process(rows))
    with pytest.raises(ConfigError, match=r"bands\[1\]"):
        Observe(survey="lsst", bands=["g", "q"])


def test_stamps_catalog_preview_outputs_one_file_per_band(tmp_path):
    batch = ParametricGalaxies().process(_rows())
    obs = Observe(survey="lsst_g", bands=["lsst_g", "euclid_vis"], add_noise=False).process(batch)
    out = _ctx(StampsOutput(file_name="st.fits"), tmp_path, "st")
    out.consume(0, obs)
    out.consume(1, obs)
    files = out.finalize()
    assert sorted(p.name for p in files) == ["st_euclid_vis.fits", "st_lsst_g.fits"]
    for band in obs.bands:
        s = SURVEYS[band]
        with fits.open(tmp_path / f"st_{band}.fits") as hl:
            hl.verify("exception")
            h = hl[0].header
            assert h["BAND"] == band and h["FILTER"] == s.band
            assert h["BANDS"] == "lsst_g,euclid_vis" and h["ASTROGEN"] == "test"
            assert h["MAGZERO"] == pytest.approx(s.zero_point + 2.5 * np.log10(s.exposure_time))
            assert h["PIXSCALE"] == pytest.approx(s.pixel_scale)
            r = hl["ROWS"].data
            assert list(r["row_id"]) == [7, 3, 12, 7, 3, 12]
            for k in range(6):
                img = (hl["STAMPS"].data["image"][k].reshape(r["stamp_ny"][k], r["stamp_nx"][k])
                       if h["STAMPLAY"] == "table" else hl[0].data[k])
                np.testing.assert_array_equal(img, obs[band].stamp(k % 3))
    cat = _ctx(CatalogOutput(file_name="cat.fits"), tmp_path, "cat")
    cat.consume(0, obs)
    cat.finalize()
    t = Table.read(tmp_path / "cat.fits")
    for band in obs.bands:
        np.testing.assert_allclose(t[f"stamp_flux_{band}"], obs[band].fluxes, rtol=1e-6)
        np.testing.assert_allclose(t[f"stamp_mag_{band}"], t[f"mag_{band}"], atol=0.01)
    prev = _ctx(PreviewOutput(file_name="p.png", band="euclid_vis"), tmp_path, "p")
    prev.consume(0, obs)
    assert "VIS" in prev.title or "euclid" in prev.title.lower()
    assert prev.finalize()[0].is_file()
    bad = _ctx(PreviewOutput(band="lsst_z"), tmp_path, "bad")
    with pytest.raises(ConfigError, match="band"):
        bad.consume(0, obs)


def _pipeline(tmp_path, observe_extra: str, after: str, name="p"):
    from astrogen.pipeline import build_pipeline, load_config

    text = f"""
name: observe_bands
seed: 5
output: {tmp_path / name}
stages:
  - {{name: catalog, type: catalog.read, file_name: {REPO}/examples/catsim/catsim_example.fits,
     preset: catsim, rows: [0, 8], chunk_size: 4}}
  - {{name: render, type: galsim.parametric, inputs: [catalog], profile: bulge_disk,
     pixel_scale: 0.03}}
  - {{name: observe, type: observe, inputs: [render], {observe_extra}}}
{after}
"""
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return build_pipeline(load_config(path))


def test_pipeline_observe_bands_to_stamps_and_catalog(tmp_path):
    from astrogen.pipeline.runner import run_pipeline

    after = """  - {name: stamps, type: output.stamps, inputs: [observe]}
  - {name: truth, type: output.catalog, inputs: [observe]}
  - {name: preview, type: output.preview, inputs: [observe], band: lsst_r}"""
    run_pipeline(_pipeline(tmp_path, "survey: lsst, bands: [g, r, i]", after), progress=False)
    out = tmp_path / "p"
    t = Table.read(out / "truth_catalog.fits")
    assert len(t) == 8
    for b in ("g", "r", "i"):
        with fits.open(out / f"stamps_lsst_{b}.fits") as hl:
            assert hl[0].header["NSTAMPS"] == 8 and hl[0].header["BAND"] == f"lsst_{b}"
        # noisy stamps: their magnitudes scatter around the catalog's (bright rows)
        bright = np.asarray(t[f"mag_lsst_{b}"]) < 23
        assert np.all(np.abs(t[f"stamp_mag_lsst_{b}"][bright] - t[f"mag_lsst_{b}"][bright]) < 0.1)
    assert (out / "preview.png").is_file()
    # a multi-band observe feeds no stage expecting one band's stamps: caught before running
    with pytest.raises(PipelineGraphError, match="MultiBandStamps"):
        _pipeline(tmp_path, "survey: lsst, bands: [g, r]",
                  "  - {name: again, type: observe, inputs: [observe]}", "q")
