"""Scene stages: scene.generate, deblend.scene, deblend.scene_report."""
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from astrogen.errors import ConfigError
from astrogen.stages.deblend_scene import DeblendScene, SceneGenerate, SceneReport


def _config(out, extra=()):
    return {"name": "scenes", "seed": 4, "output": str(out), "stages": [
        {"name": "scenes", "type": "scene.generate", "n_scenes": 3, "size": 32,
         "bands": ["lsst_r", "lsst_i"], "chunk_size": 2, "density_scale": 3.0},
        {"name": "sep", "type": "deblend.scene", "inputs": ["scenes"], "method": "sep"},
        *extra,
        {"name": "report", "type": "deblend.scene_report",
         "inputs": [extra[-1]["name"] if extra else "sep"], "n_figures": 2}]}


def _build(cfg):
    import yaml

    from astrogen.pipeline import build_pipeline, load_config

    return build_pipeline(load_config(yaml.safe_dump(cfg, sort_keys=False)))


def test_config_equals_direct_construction(tmp_path):
    p = _build(_config(tmp_path))
    gen = SceneGenerate(n_scenes=3, size=32, bands=["lsst_r", "lsst_i"], chunk_size=2,
                        density_scale=3.0)
    assert p.node("scenes").stage.spec == gen.spec
    assert p.node("scenes").stage.n_chunks() == gen.n_chunks() == 2
    direct = DeblendScene(method="sep")
    built = p.node("sep").stage
    for k in ("method", "model", "survey", "pixel_scale", "bands", "n_samples"):
        assert getattr(built, k) == getattr(direct, k)


def test_bad_parameters_name_their_key():
    with pytest.raises(ConfigError, match="^method:"):
        DeblendScene(method="scarlet")
    with pytest.raises(ConfigError, match="^bands:"):
        SceneGenerate(bands="lsst_i")
    with pytest.raises(ConfigError, match="^pixel_scale:"):
        DeblendScene(pixel_scale=-0.2)
    with pytest.raises(ConfigError, match="^n_figures:"):
        SceneReport(n_figures=-1)
    from astrogen.errors import ModelError

    with pytest.raises(ModelError, match="^model: model file not found"):
        DeblendScene(model="/no/such/model.keras")


def test_pipeline_writes_scenes_with_wcs_truth_and_catalogs(tmp_path):
    from astrogen.pipeline.runner import run_pipeline

    run_pipeline(_build(_config(tmp_path)), progress=False)
    files = sorted(tmp_path.glob("scene_[0-9]*.fits"))
    assert len(files) == 3
    with fits.open(files[0]) as h:
        assert [x.header.get("FILTER") for x in h[:2]] == ["lsst_r", "lsst_i"]
        w = WCS(h[0].header)
        assert w.has_celestial and h[0].header["BUNIT"] == "electron"
        assert "TRUTH_LSST_I" in h and "TRUTH_SEG" in h
        img, truth = h[1].data, h["TRUTH_LSST_I"].data
        # observed = truth + noise of the survey
        assert np.std(img - truth) == pytest.approx(h[1].header["NOISE"], rel=0.1)
    cat = Table.read(tmp_path / "scene_catalog.fits", hdu="SEP")
    assert {"scene_id", "ra", "dec", "peak_x", "flux_lsst_i"} <= set(cat.colnames)
    assert cat["ra"].unit == "deg"
    truth = Table.read(tmp_path / "scene_truth.fits")
    assert set(cat["scene_id"]) <= set(truth["scene_id"])
    # 'electron' is no FITS standard unit; it must still come back from the FITS files
    # (fits.BinTableHDU(table) dropped it with a warning)
    from astropy import units as u
    from astropy.table import QTable

    for t in (cat, truth):
        assert t["flux_lsst_i"].unit == u.electron and t["x"].unit == u.pix
    assert cat["flux_err_lsst_i"].unit == u.electron
    assert truth["flux_scene_lsst_r"].unit == u.electron
    q = QTable.read(tmp_path / "scene_catalog.fits", hdu="SEP")
    assert q["flux_lsst_i"].unit == u.electron and q["flux_lsst_i"].value.sum() != 0
    np.testing.assert_array_equal(q["flux_lsst_i"].value, cat["flux_lsst_i"])
    with fits.open(files[0]) as h:
        assert u.Unit(h[0].header["BUNIT"]) == u.electron
    assert (tmp_path / "scenes.png").is_file()


def test_report_figure_holds_n_figures_scenes_across_chunks(tmp_path, monkeypatch):
    """3 scenes in chunks of 2 and n_figures = 3: the figure shows all 3, in order (it used
    to draw only from the first chunk)."""
    import astrogen.deblend.figures as figures
    from astrogen.pipeline.runner import run_pipeline

    shown = {}
    real = figures.plot_scenes

    def capture(path, images, truth, preds, unc, titles, **kwargs):
        shown.update(n=len(images), truth=len(truth), titles=list(titles),
                     preds={k: len(v) for k, v in preds.items()}, **kwargs)
        return real(path, images, truth, preds, unc, titles, **kwargs)

    monkeypatch.setattr(figures, "plot_scenes", capture)
    cfg = _config(tmp_path)
    cfg["stages"][-1]["n_figures"] = 3
    run_pipeline(_build(cfg), progress=False)
    assert shown["uncertainty_max"] == 1.0  # a probability, not the pair models' entropy
    truth = Table.read(tmp_path / "scene_truth.fits")
    assert shown["n"] == shown["truth"] == 3 and shown["preds"] == {"sep": 3}
    ids = sorted(int(f.stem.split("_")[1]) for f in tmp_path.glob("scene_[0-9]*.fits"))
    assert shown["titles"] == [f"scene {i}" for i in ids]
    assert set(truth["scene_id"]) == set(ids)
