"""``observe`` and ``scene`` with ``survey`` omitted take the survey of the scene field bound to
them (astrogen/stages/galsim_stages.py, issue 16 item 4: the survey named once), and keep
today's ``lsst_i`` when no field is bound."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astrogen.errors import ConfigError
from astrogen.physics.scene import Field
from astrogen.physics.surveys import SURVEYS
from astrogen.pipeline import build_pipeline, load_config
from astrogen.stages.base import StageContext
from astrogen.stages.catalog import Positions
from astrogen.stages.galsim_stages import Observe, ParametricGalaxies, Scene


def _ctx(stage, tmp_path, name="s"):
    work = tmp_path / f"work_{name}"
    work.mkdir(parents=True, exist_ok=True)
    stage.setup(StageContext(name=name, seed=5, output_dir=tmp_path, work_dir=work))
    return stage


def _batch(n=3, size=64):
    rows = Table({"row_id": np.arange(n), "mag": np.linspace(20.0, 22.0, n),
                  "hlr": np.full(n, 0.4), "q": np.full(n, 0.7), "beta": np.linspace(0, 90, n),
                  "sersic_n": np.full(n, 1.5), "bulge_frac": np.full(n, 0.2),
                  "x": np.linspace(15.0, size - 15.0, n), "y": np.linspace(20.0, size - 20.0, n)})
    return ParametricGalaxies(stamp_size=32).process(rows)


def _config(tmp_path, positions: str, head: str = ""):
    text = textwrap.dedent(f"""\
    name: survey_once
    seed: 3
    output: {tmp_path / 'out'}
    {head}
    stages:
      - {{name: catalog, type: catalog.cosmos, n_objects: 6, chunk_size: 3}}
      - {{name: positions, type: catalog.positions, inputs: [catalog]{positions}}}
      - {{name: render, type: galsim.parametric, inputs: [positions], stamp_size: 16}}
      - {{name: observe, type: observe, inputs: [render]}}
      - {{name: scene, type: scene, inputs: [render], preview: null}}
    """)
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return load_config(path)


def test_omitted_survey_is_the_fields_config_equals_direct_construction(tmp_path):
    p = build_pipeline(_config(tmp_path, ", survey: hsc_i, size: 64"))
    field = Positions(size=64, survey="hsc_i").output_field()
    for name, cls in (("observe", Observe), ("scene", Scene)):
        built = p.node(name).stage
        direct = cls().bind_field(field)
        named = cls(survey="hsc_i")
        assert built.survey_spec is None and built.input_field == field
        for s in (built, direct):
            assert [b.name for b in s.bands] == ["hsc_i"]
            assert s.survey == named.survey == SURVEYS["hsc_i"]
            assert {k: v[0] for k, v in s.psfs.items()} == {k: v[0] for k, v in named.psfs.items()}
    assert p.node("scene").stage.band_surveys == {"hsc_i": SURVEYS["hsc_i"]}


def test_pipeline_field_key_names_the_survey_once(tmp_path):
    p = build_pipeline(_config(tmp_path, "", "field: {survey: euclid_vis, size: 64}"))
    for name in ("observe", "scene"):
        assert p.node(name).stage.survey == SURVEYS["euclid_vis"]
        assert p.node(name).stage.input_field.pixel_scale == SURVEYS["euclid_vis"].pixel_scale


def test_no_field_keeps_lsst_i_as_before(tmp_path):
    batch = _batch()
    omitted, named = Observe(), Observe(survey="lsst_i")
    assert omitted.input_field is None and omitted.survey == SURVEYS["lsst_i"]
    a = _ctx(omitted, tmp_path, "a").process(batch)
    b = _ctx(named, tmp_path, "b").process(batch)
    assert a.catalog.colnames == b.catalog.colnames and "flux_lsst_i" in a.catalog.colnames
    for i in range(len(batch)):  # same survey, same noise stream: the same stamps, bit for bit
        np.testing.assert_array_equal(a.stamp(i), b.stamp(i))
    np.testing.assert_array_equal(a.pixel_scales, np.full(len(batch), 0.2))
    # a field that names no survey (a resumed canvas, a hand-made Field) also keeps lsst_i
    assert Scene(preview=None).bind_field(Field(64, 64, 0.2)).survey == SURVEYS["lsst_i"]


@pytest.mark.parametrize("survey", ["euclid_vis", "hsc_i"])
def test_field_of_another_survey_gives_that_surveys_pixels(tmp_path, survey):
    field = Positions(size=64, survey=survey).output_field()
    scale = SURVEYS[survey].pixel_scale
    obs = _ctx(Observe(add_noise=False).bind_field(field), tmp_path, "o").process(_batch())
    np.testing.assert_allclose(obs.pixel_scales, scale)
    assert f"flux_{survey}" in obs.catalog.colnames and "flux_lsst_i" not in obs.catalog.colnames
    scene = _ctx(Scene(add_noise=False, preview=None, file_name="sc.fits").bind_field(field),
                 tmp_path, "c")
    scene.consume(0, _batch())
    scene.finalize()
    with fits.open(tmp_path / "sc.fits") as hl:
        h = hl[0].header
        assert h["SURVEY"] == survey
        assert abs(abs(h["CDELT1"]) * 3600 - scale) < 1e-9
        assert hl[0].data.shape == (64, 64)  # the field's grid: no re-projection
        assert hl[0].data.sum() > 0


def test_named_survey_wins_over_the_field(tmp_path):
    field = Positions(size=64, survey="euclid_vis").output_field()
    assert Observe(survey="lsst_r").bind_field(field).survey == SURVEYS["lsst_r"]
    listed = Scene(bands=["lsst_g", "lsst_r"], preview=None).bind_field(field)
    assert [b.name for b in listed.bands] == ["lsst_g", "lsst_r"]


def test_customised_field_survey_must_be_named(tmp_path):
    field = Positions(size=64, survey={"base": "lsst_i", "pixel_scale": 0.1}).output_field()
    with pytest.raises(ConfigError, match="customised") as err:
        Observe().bind_field(field)
    assert err.value.key == "survey"
    cfg = _config(tmp_path, ", survey: {base: lsst_i, pixel_scale: 0.1}, size: 64")
    with pytest.raises(ConfigError, match=r"stages\[3\]\.survey.*customised"):
        build_pipeline(cfg)
