"""N-body emulator stages: nbody.emulate (shape, seeds, geometry), nbody.halo_map (planted
blobs, 2-D and 3-D inputs), nbody.compare and the two pipelines, with tiny untrained or
hand-set networks (the shipped models' quality is measured by
benchmarks/nbody_emulator_benchmark.py)."""
import json
import os
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from astropy.io import fits  # noqa: E402
from astropy.table import Table  # noqa: E402

from astrogen.batch import DensityField  # noqa: E402
from astrogen.errors import ConfigError, ModelError  # noqa: E402
from astrogen.pipeline import build_pipeline, load_config  # noqa: E402
from astrogen.pipeline.runner import run_pipeline  # noqa: E402
from astrogen.seeds import derive_seed  # noqa: E402
from astrogen.stages.base import StageContext  # noqa: E402
from astrogen.stages.nbody_emulate import HaloMap, NBodyEmulate  # noqa: E402

META = {"n_grid": 16, "box_size": 32.0, "slab_thickness": 4, "cell_size": 2.0,
        "slab_depth": 8.0, "redshift": 0.0,
        "cosmology": {"Om0": 0.3, "Ob0": 0.049, "h": 0.68, "sigma8": 0.9, "n_s": 0.96}}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """An untrained tiny GAN and a hand-set halo 'network' (1x1 convolution: halo where
    s(1 + delta) > 0.8, i.e. 1 + delta > 9; log10 M = 13.5)."""
    import keras

    from astrogen.models.halo_unet import HaloUNet
    from astrogen.models.nbody_gan import NBodyGAN

    d = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(0)
    NBodyGAN(size=16, channels=[4, 8], critic_channels=[4, 8], meta=META,
             build_critic_net=False).save(d / "gan.keras")
    inp = keras.Input((16, 16, 1))
    conv = keras.layers.Conv2D(2, 1)
    net = keras.Model(inp, conv(inp))
    conv.set_weights([np.array([[[[50.0, 0.0]]]], np.float32),
                      np.array([-40.0, 0.5], np.float32)])
    HaloUNet(size=16, channels=[4, 8], meta=META, network=net).save(d / "halo.keras")
    return {"gan": str(d / "gan.keras"), "halo": str(d / "halo.keras")}


def _ctx(tmp_path, name, seed=5):
    work = tmp_path / "work" / name
    work.mkdir(parents=True, exist_ok=True)
    return StageContext(name=name, seed=derive_seed(seed, name), output_dir=tmp_path,
                        work_dir=work)


def _linear(box_id=0, seed=1):
    rng = np.random.default_rng(seed)
    return DensityField(delta=rng.standard_normal((16, 16, 16)), box_size=32.0, redshift=0.0,
                        box_id=box_id, cosmology=META["cosmology"],
                        meta={"field": "linear", "growth_D1": 1.0})


def test_emulate_shape_geometry_and_seeds(models, tmp_path):
    st = NBodyEmulate(model=models["gan"], axis=1, slab=3)
    st.setup(_ctx(tmp_path, "emu"))
    out = st.process(_linear())
    assert out.delta.shape == (16, 16) and out.box_size == 32.0 and out.redshift == 0.0
    assert np.all(out.delta >= -1) and np.all(np.isfinite(out.delta))
    m = out.meta
    assert m["field"] == "emulated" and m["projection_axis"] == 1 and m["slab"] == 3
    assert m["slab_range"] == [24.0, 32.0] and m["slab_thickness"] == 4
    np.testing.assert_allclose(m["linear_slab"], _linear().delta[:, 12:16, :].mean(1),
                               rtol=1e-5, atol=1e-6)
    # same seed and box: identical; a fresh stage instance too
    np.testing.assert_array_equal(st.process(_linear()).delta, out.delta)
    st2 = NBodyEmulate(model=models["gan"], axis=1, slab=3)
    st2.setup(_ctx(tmp_path, "emu"))
    np.testing.assert_array_equal(st2.process(_linear()).delta, out.delta)
    # another box id draws other noise; another pipeline seed too
    assert not np.array_equal(st.process(_linear(box_id=1)).delta, out.delta)
    st3 = NBodyEmulate(model=models["gan"], axis=1, slab=3)
    st3.setup(_ctx(tmp_path, "emu", seed=6))
    assert not np.array_equal(st3.process(_linear()).delta, out.delta)


def test_emulate_refuses_bad_inputs(models, tmp_path):
    with pytest.raises(ConfigError, match="axis"):
        NBodyEmulate(model=models["gan"], axis=3)
    st = NBodyEmulate(model=models["gan"])
    st.setup(_ctx(tmp_path, "emu"))
    bad = DensityField(delta=np.zeros((8, 8, 8)), box_size=32.0, redshift=0.0,
                       meta={"field": "linear"})
    with pytest.raises(ConfigError, match="trained on 16"):
        st.process(bad)
    with pytest.raises(ConfigError, match="slab"):
        NBodyEmulate(model=models["gan"], slab=4).setup(_ctx(tmp_path, "emu"))
    with pytest.raises(ModelError):
        NBodyEmulate(model=str(tmp_path / "missing.keras")).setup(_ctx(tmp_path, "emu"))


def test_halo_map_finds_planted_blobs(models, tmp_path):
    st = HaloMap(model=models["halo"])
    st.setup(_ctx(tmp_path, "halo"))
    x = np.ones((16, 16))
    planted = [(3, 4), (10, 12), (15, 0)]  # the last sits on a corner (periodic)
    for i, j in planted:
        x[i, j] = 30.0
    field = DensityField(delta=x - 1.0, box_size=32.0, redshift=0.0, box_id=7,
                         meta={"field": "emulated", "projection_axis": 0, "slab": 2,
                               "slab_depth": 8.0})
    t = st.process(field)
    assert len(t) == 3 and set(t["box_id"]) == {7}
    assert list(t["halo_id"]) == [0, 1, 2]
    got = sorted(zip(np.round(t["y"], 6), np.round(t["z"], 6)))
    assert got == sorted((2.0 * i, 2.0 * j) for i, j in planted)
    np.testing.assert_allclose(t["x"], 20.0)  # centre of slab 2 along axis 0
    np.testing.assert_allclose(np.log10(t["mass"]), 13.5, rtol=1e-5)
    # Msun/h and Mpc/h as astropy littleh units, with the model's h to convert them
    from astropy import units as u
    from astropy.cosmology import units as cu

    assert t["mass"].unit == u.Msun / cu.littleh and t["y"].unit == u.Mpc / cu.littleh
    h0 = cu.with_H0(100 * META["cosmology"]["h"] * u.km / u.s / u.Mpc)
    np.testing.assert_allclose(t["mass"].quantity.to_value(u.Msun, h0),
                               10 ** 13.5 / 0.68, rtol=1e-5)
    assert t.meta["projection_axis"] == 0 and t.meta["slab"] == 2
    # a 3-D input is projected with the model's slab thickness (4 cells)
    cube = np.zeros((16, 16, 16))
    cube[5, 9, 8:12] = 40.0  # 1 + delta = 41 on 4 cells of slab 2 along z -> mean 41 there
    t3 = HaloMap(model=models["halo"], axis=2, slab=2)
    t3.setup(_ctx(tmp_path, "halo"))
    r = t3.process(DensityField(delta=cube, box_size=32.0, redshift=0.0,
                                meta={"field": "nbody"}))
    assert len(r) == 1 and (r["x"][0], r["y"][0], r["z"][0]) == (10.0, 18.0, 20.0)


def _pipeline(tmp_path, models, compare: bool):
    head = f"""\
    name: tiny_emulate
    seed: 4
    output: {tmp_path / ('cmp' if compare else 'emu')}
    stages:
      - name: ic
        type: cosmology.initial_field
        n_boxes: 2
        n_grid: 16
        box_size: 32.0
        Om0: 0.3
        sigma8: 0.9
      - name: emulated
        type: nbody.emulate
        inputs: [ic]
        model: {models['gan']}
        slab: 1
      - name: halo_map
        type: nbody.halo_map
        inputs: [emulated]
        model: {models['halo']}
    """
    if compare:
        tail = """\
      - name: pm
        type: nbody.pm
        inputs: [ic]
        n_steps: 3
        z_init: 4.0
      - name: fof
        type: nbody.fof
        inputs: [pm]
        min_members: 8
      - name: compare
        type: nbody.compare
        inputs: [emulated, pm, fof, halo_map]
    """
    else:
        tail = """\
      - name: density
        type: output.field
        inputs: [emulated]
        file_name: emulated.fits
        preview: null
      - name: catalog
        type: output.catalog
        inputs: [halo_map]
        file_name: halos.fits
    """
    p = tmp_path / ("cmp.yaml" if compare else "emu.yaml")
    p.write_text(textwrap.dedent(head.rstrip(" ") + tail))
    return run_pipeline(build_pipeline(load_config(p)), progress=False)


def test_emulate_pipeline_and_compare_pipeline(models, tmp_path):
    res = _pipeline(tmp_path, models, compare=False)
    with fits.open(res.output / "emulated.fits") as hl:
        assert [h.name for h in hl[1:]] == ["BOX0", "BOX1"]
        assert hl[1].data.shape == (16, 16) and hl[1].header["FIELD"] == "emulated"
        first = np.array(hl[1].data)
    halos = Table.read(res.output / "halos.fits")  # possibly empty: untrained GAN
    assert halos["mass"].unit == "solMass" and halos["x"].unit == "Mpc"  # h applied
    assert fits.getheader(res.output / "halos.fits", 0)["HUBBLE"] == pytest.approx(0.6766)
    again = _pipeline(tmp_path, models, compare=False)  # same seed: same bytes
    with fits.open(again.output / "emulated.fits") as hl:
        np.testing.assert_array_equal(hl[1].data, first)
    pytest.importorskip("matplotlib")
    res = _pipeline(tmp_path, models, compare=True)
    summary = json.loads((res.output / "comparison.json").read_text())
    assert [b["box_id"] for b in summary["boxes"]] == [0, 1]
    b = summary["boxes"][0]
    assert len(b["power_ratio"]) == len(b["k"]) == len(b["r_k"]) and b["slab"] == 1
    assert (res.output / "comparison.png").stat().st_size > 10_000


def test_emulate_with_an_lpt_conditioned_model_moves_the_particles_first(tmp_path):
    """A 2LPT-conditioned model: the stage's slab is the generator applied to the projected
    2LPT density of the whole box (not of the linear slab), with the stage's noise seed."""
    import keras

    from astrogen.models.nbody_gan import NBodyGAN, load_nbody_gan

    keras.utils.set_random_seed(1)
    NBodyGAN(size=16, channels=[4, 8], critic_channels=[4, 8], meta=META, condition="lpt",
             build_critic_net=False).save(tmp_path / "lpt.keras")
    st = NBodyEmulate(model=str(tmp_path / "lpt.keras"), axis=0, slab=2)
    ctx = _ctx(tmp_path, "emu_lpt")
    st.setup(ctx)
    field = _linear(box_id=3)
    field.delta *= 0.2  # a mildly non-linear box
    out = st.process(field)
    model = load_nbody_gan(tmp_path / "lpt.keras")
    cond = model.condition_slabs(field.delta, axes=(0,))[2]
    expect = model.emulate(cond, seed=derive_seed(ctx.seed, 3))
    np.testing.assert_allclose(out.delta, expect - 1.0, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.meta["linear_slab"], field.delta[8:12].mean(0), atol=1e-6)
    assert not np.allclose(cond, 1.0 + field.delta[8:12].mean(0), atol=1e-3)


def test_shipped_models_run_the_emulate_pipeline(tmp_path):
    """pipelines/nbody_emulate.yaml with the shipped weights (1 box)."""
    from astrogen.models.pretrained import models_dir

    if not (models_dir() / "nbody_gan_32.keras").is_file() or not (
            models_dir() / "halo_unet_32.keras").is_file():
        pytest.skip("shipped N-body emulator weights not installed")
    from astrogen.pipeline.config import apply_overrides

    from pathlib import Path

    yaml_file = Path(__file__).resolve().parents[2] / "pipelines" / "nbody_emulate.yaml"
    cfg = apply_overrides(load_config(yaml_file),
                          [f"output={tmp_path / 'out'}", "stages.ic.n_boxes=1"])
    res = run_pipeline(build_pipeline(cfg), progress=False)
    with fits.open(res.output / "emulated_slab_z0.fits") as hl:
        x = np.array(hl[1].data, dtype=np.float64)
    assert x.shape == (32, 32) and x.min() >= 0 and 0.5 < x.mean() < 2.0
    t = Table.read(res.output / "emulated_halos.fits")
    assert np.all(t["mass"] > 1e12)
