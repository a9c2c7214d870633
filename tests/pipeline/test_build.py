"""The scene field is declared once and follows the pipeline graph (astrogen/pipeline/build.py).

``catalog.positions`` / ``catalog.stars`` (or the pipeline's ``field:`` key) declare the field;
the builder hands it to every stage downstream (``Stage.input_field``) and refuses, before
anything runs, a stage that needs one without one upstream or inputs placed in two fields.
"""
from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

from astrogen.errors import ConfigError, PipelineGraphError, UnknownKeyError
from astrogen.physics.scene import Field
from astrogen.pipeline import build_pipeline, load_config
from astrogen.stages.base import StageContext
from astrogen.stages.catalog import Positions
from astrogen.stages.galsim_stages import LensingField, Scene


def _yaml(tmp_path, head: str, stages: str) -> str:
    """A pipeline of ``stages`` (one flow mapping per ``- `` item, continued on the lines
    below it) after the top-level keys ``head``."""
    items: list[str] = []
    for line in stages.splitlines():
        t = line.strip()
        if t.startswith("- ") or (t and not items):
            items.append(t)
        elif t:
            items[-1] += " " + t
    text = textwrap.dedent(f"""\
    name: fields
    seed: 3
    output: {tmp_path / 'out'}
    """) + head + "stages:\n" + "".join(f"  {t}\n" for t in items)
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return load_config(path)


GALAXIES = """\
- {name: galaxies, type: catalog.cosmos, n_objects: 12, chunk_size: 4}
"""
DOWNSTREAM = """\
- {name: lensing, type: lensing.field, inputs: [catalog], model: constant, g1: 0.01}
- {name: render, type: galsim.parametric, inputs: [lensing], stamp_size: 16}
- {name: scene, type: scene, inputs: [render], survey: lsst_i, stamp_size: 16}
- {name: truth, type: output.catalog, inputs: [render]}
"""


def test_field_declared_once_reaches_every_stage_downstream(tmp_path):
    p = build_pipeline(_yaml(tmp_path, "", GALAXIES + """\
    - {name: catalog, type: catalog.positions, inputs: [galaxies], survey: lsst_i, size: 96,
       ra: 10.0, dec: -5.0}
    """ + DOWNSTREAM))
    field = p.node("catalog").stage.output_field()
    assert field == Field(96, 96, 0.2, 10.0, -5.0) and field.survey == "lsst_i"
    assert p.node("galaxies").stage.input_field is None
    for name in ("lensing", "render", "scene", "truth"):
        assert p.node(name).stage.input_field is field, name
    # the rows carry no geometry: the positions stage writes only its columns
    pos = p.node("catalog").stage
    pos.setup(StageContext("catalog", 1, tmp_path, tmp_path))
    gal = p.node("galaxies").stage
    gal.setup(StageContext("galaxies", 2, tmp_path, tmp_path))
    rows = pos.process(gal.read_chunk(0))
    assert "scene" not in rows.meta and {"x", "y", "ra", "dec"} <= set(rows.colnames)
    # it survives the pickling a Dask executor does, and a rebuild (what --resume does)
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)):
        scene = loads(dumps(p.node("scene").stage))
        assert scene.input_field == field and scene.input_field.wcs().to_header() == \
            field.wcs().to_header()
    again = build_pipeline(load_config(tmp_path / "p.yaml"))
    assert again.node("scene").stage.input_field == field


def test_pipeline_field_key_is_the_one_declaration_of_positions_and_stars(tmp_path):
    head = "field: {survey: euclid_vis, size: 300, ra: 10.0, dec: -5.0}\n"
    p = build_pipeline(_yaml(tmp_path, head, GALAXIES + """\
    - {name: placed, type: catalog.positions, inputs: [galaxies]}
    - {name: stars, type: catalog.stars, n_chunks: 3, density: 1.0}
    - {name: catalog, type: catalog.concat, inputs: [placed, stars]}
    """ + DOWNSTREAM))
    direct = Positions(survey="euclid_vis", size=300, ra=10.0, dec=-5.0).field
    assert direct == Field(300, 300, 0.1, 10.0, -5.0)
    assert p.node("placed").stage.output_field() == direct
    assert p.node("stars").stage.output_field() == direct
    assert p.node("scene").stage.input_field == direct
    assert p.resolved["field"] == {"survey": "euclid_vis", "size": 300, "ra": 10.0, "dec": -5.0}
    stage_cfg = {s["name"]: s for s in p.resolved["stages"]}
    assert stage_cfg["placed"]["size"] == 300 and stage_cfg["stars"]["survey"] == "euclid_vis"


def test_field_repeated_in_a_stage_is_an_error(tmp_path):
    head = "field: {survey: lsst_i, size: 128}\n"
    cfg = _yaml(tmp_path, head, GALAXIES + """\
    - {name: catalog, type: catalog.positions, inputs: [galaxies], size: 200}
    """ + DOWNSTREAM)
    with pytest.raises(ConfigError, match=r"declared once.*remove 'size'") as e:
        build_pipeline(cfg)
    assert e.value.key == "stages[1].size"
    with pytest.raises(UnknownKeyError, match="Did you mean 'size'") as e:
        build_pipeline(_yaml(tmp_path, "field: {sise: 128}\n", GALAXIES + """\
        - {name: catalog, type: catalog.positions, inputs: [galaxies]}
        """))
    assert e.value.key == "field.sise"
    with pytest.raises(ConfigError) as e:
        build_pipeline(_yaml(tmp_path, "field: {size: 0}\n", GALAXIES + """\
        - {name: catalog, type: catalog.positions, inputs: [galaxies]}
        """))
    assert e.value.key == "field.size"


def test_a_stage_that_needs_a_field_without_one_upstream_fails_validate(tmp_path):
    # rows with pixel positions (x, y) but no stage that says in which field they are
    cat = Path(__file__).resolve().parents[2] / "examples" / "catsim" / "catsim_example.fits"
    cfg = _yaml(tmp_path, "", f"""\
    - {{name: galaxies, type: catalog.read, file_name: {cat}, preset: catsim, max_rows: 4,
       defaults: {{x: 10.0, y: 10.0}}}}
    - {{name: render, type: galsim.parametric, inputs: [galaxies], profile: bulge_disk,
       stamp_size: 16}}
    - {{name: scene, type: scene, inputs: [render], survey: lsst_i}}
    """)
    with pytest.raises(PipelineGraphError, match=r"stage 'scene' \(scene\) needs the scene "
                                                 r"field.*render.*galaxies.*catalog.positions"):
        build_pipeline(cfg)


def test_inputs_placed_in_two_fields_are_an_error_naming_both(tmp_path):
    cfg = _yaml(tmp_path, "", GALAXIES + """\
    - {name: placed, type: catalog.positions, inputs: [galaxies], survey: lsst_i, size: 128}
    - {name: stars, type: catalog.stars, n_chunks: 3, survey: lsst_i, size: 200}
    - {name: catalog, type: catalog.concat, inputs: [placed, stars]}
    """ + DOWNSTREAM)
    with pytest.raises(PipelineGraphError) as e:
        build_pipeline(cfg)
    msg = str(e.value)
    assert "stage 'catalog'" in msg and "'placed' has 128 x 128" in msg
    assert "'stars' has 200 x 200" in msg and e.value.key == "stages[3].inputs"
    # the same field (only the survey name differs: same pixel scale) is one field
    same = _yaml(tmp_path, "", GALAXIES + """\
    - {name: placed, type: catalog.positions, inputs: [galaxies], survey: lsst_i, size: 128}
    - {name: stars, type: catalog.stars, n_chunks: 3, survey: lsst_r, size: 128}
    - {name: catalog, type: catalog.concat, inputs: [placed, stars]}
    """ + DOWNSTREAM)
    assert build_pipeline(same).node("scene").stage.input_field.nx == 128


def test_stages_used_from_python_take_the_field_by_bind_field(tmp_path):
    from astropy.table import Table

    rows = Table({"row_id": np.arange(3), "x": [10.0, 50.0, 90.0], "y": [10.0, 50.0, 90.0]})
    lens = LensingField(model="constant", g1=0.02)
    lens.setup(StageContext("l", 1, tmp_path, tmp_path))
    with pytest.raises(ConfigError, match="catalog.positions.*bind_field"):
        lens.process(rows)
    out = lens.bind_field(Field(100, 100, 0.2)).process(rows)
    assert np.all(out["g1"] == 0.02)
    with pytest.raises(ConfigError, match="Field"):
        Scene(preview=None).bind_field({"nx": 100})


def test_field_reaches_map_stages_on_dask_workers(tmp_path, dask_address):
    """lensing.field (a map stage, so run by a Dask worker from the pickled stage) reads the
    field the builder gave it: the same shear as a local run, and a field that depends on it
    (grf on the field's extent)."""
    from astropy.table import Table

    from astrogen.pipeline.executors import ExecutorSpec
    from astrogen.pipeline.runner import run_pipeline

    stages = GALAXIES + """\
    - {name: catalog, type: catalog.positions, inputs: [galaxies]}
    - {name: lensing, type: lensing.field, inputs: [catalog], model: grf, sigma_kappa: 0.03,
       smoothing: 0.3}
    - {name: truth, type: output.catalog, inputs: [lensing]}
    """
    cfg = _yaml(tmp_path, "field: {survey: lsst_i, size: 200}\n", stages)
    run_pipeline(build_pipeline(cfg), progress=False)
    local = Table.read(tmp_path / "out" / "truth_catalog.fits")
    run_pipeline(build_pipeline(cfg), progress=False,
                 executor=ExecutorSpec(type="dask", address=dask_address))
    remote = Table.read(tmp_path / "out" / "truth_catalog.fits")
    for c in ("x", "y", "g1", "g2", "kappa"):
        np.testing.assert_array_equal(remote[c], local[c])
    assert np.std(local["kappa"]) > 0



def _generated_and_observed(tmp_path, observer: str, flux: str, flux_from: str):
    """COSMOS rows -> ``flowvae.generate`` (``flux``) -> ``observer`` (``flux_from``); with a
    field (``catalog.positions``) when the observer is a scene. Returns the loaded config."""
    gen_in = "galaxies"
    stages = "- {name: galaxies, type: catalog.cosmos, n_objects: 8, chunk_size: 4}\n"
    if observer == "scene":
        stages += "- {name: pos, type: catalog.positions, inputs: [galaxies], survey: lsst_i, size: 64}\n"
        gen_in = "pos"
    stages += f"- {{name: generate, type: flowvae.generate, inputs: [{gen_in}]{flux}}}\n"
    stages += f"- {{name: obs, type: {observer}, inputs: [generate]{flux_from}}}\n"
    return _yaml(tmp_path, "", stages)


@pytest.mark.parametrize("observer", ["observe", "scene"])
def test_flux_is_decided_once_by_the_stage_that_observes_the_stamps(tmp_path, observer):
    """A generator's explicit ``flux`` with a stage downstream that draws its stamps (whose
    ``flux_from`` decides) is refused, naming both; either key alone is accepted."""
    gen_index = 2 if observer == "scene" else 1
    for flux, obs in [(", flux: model", ""), (", flux: catalog", ", flux_from: stamp"),
                      (", flux: catalog", ", flux_from: catalog")]:
        with pytest.raises(ConfigError, match=r"decided once.*stage 'obs'.*Remove 'flux'") as e:
            build_pipeline(_generated_and_observed(tmp_path, observer, flux, obs))
        assert e.value.key == f"stages[{gen_index}].flux"
        assert e.value.received["obs.flux_from"] == (obs.split(": ")[1] if obs else "catalog")
    for obs in ("", ", flux_from: stamp"):
        p = build_pipeline(_generated_and_observed(tmp_path, observer, "", obs))
        assert p.node("obs").stage.flux_from == (obs.split(": ")[1] if obs else "catalog")
    # no stage observes the stamps: the generator's key is the one decision
    p = build_pipeline(_yaml(tmp_path, "", """\
    - {name: galaxies, type: catalog.cosmos, n_objects: 8, chunk_size: 4}
    - {name: generate, type: flowvae.generate, inputs: [galaxies], flux: catalog}
    """))
    assert p.node("generate").stage.flux == "catalog"
