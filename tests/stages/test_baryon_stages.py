"""Baryon stages: initial field -> PM -> baryons.paint -> output.baryons (FITS cubes, Compton-y
and gas maps with WCS, PNG), with a tiny painter saved for the test (4 Mpc/h cells)."""
import os
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from astropy.io import fits  # noqa: E402
from astropy.wcs import WCS  # noqa: E402

from astrogen.errors import ConfigError  # noqa: E402
from astrogen.pipeline import build_pipeline, load_config  # noqa: E402
from astrogen.pipeline.runner import run_pipeline  # noqa: E402
from astrogen.stages.baryons import (MPC_CM, SIGMA_T_CM2, ME_C2_KEV,  # noqa: E402
                                     compton_y_map)


@pytest.fixture(scope="module")
def tiny_painter(tmp_path_factory):
    import keras

    from astrogen.models.baryon_painter import BaryonPainter

    keras.utils.set_random_seed(0)
    m = BaryonPainter(channels=[2, 3, 4], latent_channels=1, margin=1, input_norm=[-0.3, 1.0],
                      target_norm=[[0, 1], [0, 1], [5.0, 1.0], [-9.0, 1.0]],
                      gas_fraction=0.9, meta={"cell_size": 4.0})
    path = tmp_path_factory.mktemp("painter") / "tiny.keras"
    m.save(path)
    return path


def _yaml(out, model, n_samples=2):
    return textwrap.dedent(f"""\
    name: tiny_baryons
    seed: 3
    output: {out}
    stages:
      - name: ic
        type: cosmology.initial_field
        n_boxes: 2
        n_grid: 16
        box_size: 64.0
      - name: pm
        type: nbody.pm
        inputs: [ic]
        n_steps: 3
        z_init: 4.0
      - name: paint
        type: baryons.paint
        inputs: [pm]
        model: {model}
        n_samples: {n_samples}
      - name: gas
        type: output.baryons
        inputs: [paint]
        preview: baryons.png
    """)


def test_pipeline_writes_cubes_maps_and_png(tmp_path, tiny_painter):
    cfg_path = tmp_path / "p.yaml"
    cfg_path.write_text(_yaml(tmp_path / "out", tiny_painter))
    run_pipeline(build_pipeline(load_config(cfg_path)))
    out = tmp_path / "out"
    assert (out / "baryons.png").stat().st_size > 1000
    with fits.open(out / "gas_cubes.fits") as cubes, fits.open(out / "gas_maps.fits") as maps:
        names = [h.name for h in cubes[1:]]
        assert names == [f"BOX{b}_{f}" for b in (0, 1) for f in ("TOTAL", "GAS", "TEMP", "PE")]
        h = cubes["BOX0_PE"].header
        assert h["BUNIT"] == "keV cm-3" and h["CELLSIZE"] == 4.0
        w = WCS(h)
        assert w.wcs.cunit[0] == "Mpc"
        np.testing.assert_allclose(w.wcs.cdelt, 4.0 / h["HUBBLE"])
        assert WCS(h, key="H").wcs.cdelt[0] == 4.0
        tot = cubes["BOX1_TOTAL"].data.astype(np.float64)
        gas = cubes["BOX1_GAS"].data.astype(np.float64)
        pe = cubes["BOX1_PE"].data.astype(np.float64)
        # conservation (conserve: true): mean matter of the box, gas at the model's fraction
        assert abs(tot.mean() - 1.0) < 1e-4 and abs(gas.mean() - 0.9) < 1e-4
        y = maps["BOX1_YMAP"].data.astype(np.float64)
        # FITS data are transposed (z, y, x): the projection along z sums axis 0
        dl = 4.0 / h["HUBBLE"] * MPC_CM
        np.testing.assert_allclose(y, SIGMA_T_CM2 / ME_C2_KEV * pe.sum(axis=0) * dl,
                                   rtol=1e-4)
        assert WCS(maps["BOX1_YMAP"].header).naxis == 2
        sig = maps["BOX1_SIGMAGAS"].data.astype(np.float64)
        rho_b = h["OMEGAB"] * 2.77536627e11
        np.testing.assert_allclose(sig.mean(), gas.mean() * rho_b * 64.0, rtol=1e-4)
        assert "AG_SEED" in cubes[0].header


def test_stage_equals_direct_painting(tmp_path, tiny_painter):
    """The stage's output equals the painter called directly with the stage's seed."""
    from astrogen.models.baryon_painter import load_baryon_painter
    from astrogen.seeds import derive_seed

    cfg_path = tmp_path / "p.yaml"
    cfg_path.write_text(_yaml(tmp_path / "out", tiny_painter, n_samples=3))
    from astrogen.stages.base import StageContext

    p = build_pipeline(load_config(cfg_path))
    nodes = {n.name: n for n in p.nodes}
    for k in ("ic", "pm", "paint"):
        nodes[k].stage.setup(StageContext(name=k, seed=derive_seed(p.seed, k),
                                          output_dir=tmp_path, work_dir=tmp_path / k))
    ic, pm, paint = (nodes[k].stage for k in ("ic", "pm", "paint"))
    field = pm.process(ic.read_chunk(1))
    got = paint.process(field)
    assert got.n_samples == 3 and got.total.shape == (3, 16, 16, 16)
    direct = load_baryon_painter(tiny_painter).paint(
        1.0 + field.delta, n_samples=3, seed=derive_seed(paint.ctx.seed, 1))
    for f in ("total", "gas", "temperature", "pressure"):
        np.testing.assert_array_equal(getattr(got, f), direct[f])


def test_cell_size_mismatch_is_refused(tmp_path, tiny_painter):
    cfg_path = tmp_path / "p.yaml"
    cfg_path.write_text(_yaml(tmp_path / "out", tiny_painter).replace("box_size: 64.0",
                                                                      "box_size: 32.0"))
    with pytest.raises(ConfigError, match="Mpc/h cells"):
        run_pipeline(build_pipeline(load_config(cfg_path)))


def test_compton_y_of_a_uniform_box():
    pe = np.full((8, 8, 8), 1e-6)  # keV cm^-3
    y = compton_y_map(pe, cell_size=2.0, h=0.5)
    np.testing.assert_allclose(y, SIGMA_T_CM2 / ME_C2_KEV * 1e-6 * 8 * 4.0 * MPC_CM)


def test_bad_parameters_name_the_key(tiny_painter):
    from astrogen.stages.baryons import BaryonOutput, BaryonPaint

    with pytest.raises(ConfigError, match="n_samples"):
        BaryonPaint(model=str(tiny_painter), n_samples=0)
    with pytest.raises(Exception, match="model"):
        BaryonPaint(model="no_such_painter")
    with pytest.raises(ConfigError, match="maps_file"):
        BaryonOutput(cubes_file="a.fits", maps_file="a.fits")
