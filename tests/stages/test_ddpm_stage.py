"""ddpm.generate: interface of galsim.parametric / flowvae.generate, per-row seeds,
chunking, samplers, ranges, pipeline wiring. (Model quality: benchmarks/ddpm_benchmark.py.)"""
import os
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from astropy.table import Table  # noqa: E402

from astrogen.batch import StampBatch  # noqa: E402
from astrogen.errors import CatalogError, ConfigError, ModelError  # noqa: E402
from astrogen.stages.base import StageContext  # noqa: E402


@pytest.fixture(scope="module")
def tiny_ddpm_file(tmp_path_factory):
    """An untrained 16x16 galaxy DDPM (random weights, 50-step schedule), saved."""
    import keras

    from astrogen.models.ddpm_galaxy import DDPMGalaxyModel
    from astrogen.models.ddpm_unet import DDPMUNet
    from astrogen.schedulers import NoiseSchedule

    keras.utils.set_random_seed(5)
    net = DDPMUNet(image_size=16, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                   attention_resolutions=(8,), cond_dim=3, cond_names=("mag", "ln_hlr", "ln_1pz"),
                   cond_mean=[22.0, -1.0, 0.6], cond_std=[2.0, 0.7, 0.3], norm_groups=4)
    net.build()
    rng = np.random.default_rng(0)
    for v in net.weights:  # small random weights: a non-trivial, bounded noise predictor
        v.assign((0.05 * rng.standard_normal(v.shape)).astype(v.dtype))
    meta = {"stamp_size": 16, "pixel_scale": 0.1, "flux_unit": "count/s", "zero_point": 25.94,
            "condition_range": {"mag": [17.0, 26.0], "hlr": [0.05, 1.5], "z": [0.05, 4.0]}}
    model = DDPMGalaxyModel(net, NoiseSchedule.cosine(50),
                            {"flux_normalize": True, "scale": 3e-3, "divisor": 3.0}, meta)
    path = tmp_path_factory.mktemp("ddpm") / "tiny.keras"
    model.save(path)
    return path


def _table(n=7, first=0):
    rng = np.random.default_rng(first)
    t = Table({"row_id": np.arange(first, first + n), "mag": rng.uniform(19, 24, n),
               "hlr": rng.uniform(0.15, 0.8, n), "z": rng.uniform(0.2, 1.5, n)})
    t["mag"].unit, t["hlr"].unit = "mag", "arcsec"
    return t


def _stage(path, tmp_path, seed=5, **kw):
    from astrogen.stages.ddpm import DDPMGenerate

    kw.setdefault("num_steps", 4)
    st = DDPMGenerate(model=str(path), **kw)
    st.setup(StageContext(name="gen", seed=seed, output_dir=tmp_path, work_dir=tmp_path))
    return st


def test_output_is_a_psf_free_stamp_batch(tiny_ddpm_file, tmp_path):
    batch = _stage(tiny_ddpm_file, tmp_path).process(_table())
    assert isinstance(batch, StampBatch)
    assert batch.images.shape == (7, 16, 16) and batch.images.dtype == np.float32
    assert batch.psf is None
    scaled = np.asarray(batch.catalog["gen_size_scaled"])
    np.testing.assert_allclose(batch.pixel_scales[~scaled], 0.1)
    good = scaled & np.isfinite(np.asarray(batch.catalog["gen_hlr"]))
    np.testing.assert_allclose(np.asarray(batch.catalog["gen_hlr"])[good],
                               np.asarray(batch.catalog["hlr"])[good], rtol=0.02)
    assert batch.flux_unit == "count/s" and batch.zero_point == pytest.approx(25.94)
    assert np.all(np.isfinite(batch.images))
    assert {"gen_mag", "stamp_flux_frac"} <= set(batch.catalog.colnames)
    assert batch.meta["generator"] == "ddpm.generate" and batch.meta["num_steps"] == 4
    assert len(batch.meta["model_sha256"]) == 64


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_rows_do_not_depend_on_chunking(tiny_ddpm_file, tmp_path, sampler):
    t = _table(9)
    whole = _stage(tiny_ddpm_file, tmp_path, sampler=sampler, batch_size=4).process(t).images
    a = _stage(tiny_ddpm_file, tmp_path, sampler=sampler, batch_size=4).process(t[:5]).images
    b = _stage(tiny_ddpm_file, tmp_path, sampler=sampler, batch_size=4).process(t[5:]).images
    np.testing.assert_array_equal(whole, np.concatenate([a, b]))
    odd = _stage(tiny_ddpm_file, tmp_path, sampler=sampler, batch_size=4).process(t[[6, 2]])
    np.testing.assert_array_equal(odd.images, whole[[6, 2]])


def test_sampler_is_deterministic_under_a_seed(tiny_ddpm_file, tmp_path):
    t = _table(3)
    for sampler in ("ddpm", "ddim", "dpm_solver"):
        one = _stage(tiny_ddpm_file, tmp_path, seed=1, sampler=sampler).process(t).images
        again = _stage(tiny_ddpm_file, tmp_path, seed=1, sampler=sampler).process(t).images
        other = _stage(tiny_ddpm_file, tmp_path, seed=2, sampler=sampler).process(t).images
        np.testing.assert_array_equal(one, again)
        assert np.abs(one - other).max() > 0


def test_flux_catalog_rescales_and_guidance_runs(tiny_ddpm_file, tmp_path):
    t = _table(4)
    batch = _stage(tiny_ddpm_file, tmp_path, flux="catalog").process(t)
    pos = batch.images.reshape(4, -1).sum(1) > 0
    np.testing.assert_allclose(np.asarray(batch.catalog["gen_mag"])[pos],
                               np.asarray(t["mag"])[pos], atol=1e-4)
    g = _stage(tiny_ddpm_file, tmp_path, guidance=2.0).process(t)
    plain = _stage(tiny_ddpm_file, tmp_path).process(t)
    assert g.images.shape == plain.images.shape and np.abs(g.images - plain.images).max() > 0


def test_argument_and_range_errors(tiny_ddpm_file, tmp_path):
    from astrogen.stages.ddpm import DDPMGenerate

    with pytest.raises(ConfigError, match=r"sampler.*Did you mean 'ddim'"):
        DDPMGenerate(model=str(tiny_ddpm_file), sampler="ddin")
    with pytest.raises(ConfigError, match="num_steps"):
        DDPMGenerate(model=str(tiny_ddpm_file), num_steps=0)
    with pytest.raises(ConfigError, match="num_steps"):  # more steps than the schedule's 50
        _stage(tiny_ddpm_file, tmp_path, num_steps=51)
    with pytest.raises(ConfigError, match="eta"):
        DDPMGenerate(model=str(tiny_ddpm_file), sampler="ddpm", eta=0.5)
    with pytest.raises(ModelError, match="neither a shipped DDPM"):
        DDPMGenerate(model=str(tmp_path / "nope.keras"))
    t = _table(3)
    t["mag"][1] = 29.5
    with pytest.raises(CatalogError, match=r"mag.*row_id=1.*29\.5"):
        _stage(tiny_ddpm_file, tmp_path).process(t)
    assert _stage(tiny_ddpm_file, tmp_path, out_of_range="clip").process(t).images.shape[0] == 3
    with pytest.raises(CatalogError, match="hlr"):
        _stage(tiny_ddpm_file, tmp_path).process(Table({"row_id": [0], "mag": [20.0], "z": [1.0]}))


def test_pipeline_ddpm_then_observe(tiny_ddpm_file, tmp_path):
    """ddpm.generate swapped in for galsim.parametric: catalog -> ddpm -> observe -> files."""
    from astropy.io import fits

    from astrogen.pipeline import build_pipeline, load_config
    from astrogen.pipeline.runner import run_pipeline

    text = textwrap.dedent(f"""
        name: ddpm_small
        seed: 3
        output: {tmp_path / 'out'}
        stages:
          - {{name: catalog, type: catalog.cosmos, n_objects: 6, mag_range: [19, 23], chunk_size: 4}}
          - {{name: generate, type: ddpm.generate, inputs: [catalog], model: {tiny_ddpm_file},
              num_steps: 3, out_of_range: clip, max_native_hlr: null}}
          - {{name: lsst, type: observe, inputs: [generate], survey: lsst_i, stamp_size: 12}}
          - {{name: stamps, type: output.stamps, inputs: [lsst], file_name: stamps.fits}}
        """)
    res = run_pipeline(build_pipeline(load_config(text)), progress=False)
    assert "stamps.fits" in {f.name for f in res.files}
    with fits.open(tmp_path / "out" / "stamps.fits") as h:
        assert h[0].data.shape == (6, 12, 12)


def test_shipped_model_and_pipeline_run_small(tmp_path):
    """pipelines/ddpm_mock.yaml with the shipped weights, shrunk to 4 galaxies, 10 DDIM steps:
    PSF-free stamps near the catalog flux, observed stamps written with provenance."""
    from pathlib import Path

    from astropy.io import fits

    from astrogen.models.ddpm_galaxy import shipped_model_path
    from astrogen.pipeline import build_pipeline, load_config
    from astrogen.pipeline.config import apply_overrides
    from astrogen.pipeline.runner import run_pipeline

    assert shipped_model_path().is_file() and shipped_model_path().stat().st_size < 10e6
    path = Path(__file__).resolve().parents[2] / "pipelines" / "ddpm_mock.yaml"
    cfg = apply_overrides(load_config(path), [f"output={tmp_path / 'out'}",
                                              "stages.catalog.n_objects=4",
                                              "stages.generate.num_steps=10",
                                              # observe reads one pixel scale per batch on
                                              # this branch (per-stamp: other branch)
                                              "stages.generate.max_native_hlr=null"])
    res = run_pipeline(build_pipeline(cfg), progress=False)
    assert {"stamps_intrinsic.fits", "stamps_lsst_i.fits", "truth_catalog.fits"} <= \
        {f.name for f in res.files}
    with fits.open(tmp_path / "out" / "stamps_intrinsic.fits") as hdul:
        stamps = hdul[0].data
        assert stamps.shape == (4, 96, 96) and hdul[0].header["GENERATR"] == "ddpm.generate"
    truth = Table.read(tmp_path / "out" / "truth_catalog.fits")
    ratio = stamps.sum(axis=(1, 2)) / 10 ** (-0.4 * (np.asarray(truth["mag"]) - 25.94))
    assert np.isfinite(stamps).all() and np.all((ratio > 0.3) & (ratio < 3.0)), ratio


def test_large_galaxy_is_drawn_whole_at_its_requested_size(tmp_path):
    """Shipped DDPM, hlr = 3 x its comfortable size (0.45"), 10 DDIM steps: drawn in units of
    its size, the requested half-light radius within 10 % and < 0.5 % of the light in the
    outer 2-pixel ring (typical row); drawn in the native 1.92" field it is cut."""
    from astrogen.stages.ddpm import DDPM_MAX_NATIVE_HLR, DDPMGenerate
    from astrogen.stages.generated import measure_stamps, ring_fraction

    big = 3 * DDPM_MAX_NATIVE_HLR
    n = 8
    t = Table({"row_id": np.arange(n), "mag": np.linspace(20.0, 22.0, n),
               "hlr": np.full(n, big), "z": np.linspace(0.4, 1.2, n),
               "q": np.full(n, 0.7), "beta": np.linspace(-60, 60, n)})

    def run(**kw):
        st = DDPMGenerate(model="ddpm_cosmos64", num_steps=10, batch_size=8, **kw)
        st.setup(StageContext(name="gen", seed=2, output_dir=tmp_path, work_dir=tmp_path))
        return st.process(t)

    out = run(edge_taper=False)  # the network's own output, untapered
    assert np.all(out.catalog["gen_size_scaled"])
    hlr = measure_stamps(out.images, out.pixel_scales)["hlr"]
    np.testing.assert_allclose(hlr, big, rtol=0.10)
    ring = ring_fraction(out.images)
    assert np.median(ring) < 0.005, ring
    cut = ring_fraction(run(max_native_hlr=None, edge_taper=False).images)
    assert np.median(cut) > 2 * np.median(ring)
    tapered = run()  # default: the grainy floor at the border tapered off (~1.4 % here)
    assert np.median(tapered.catalog["gen_taper_loss"]) < 0.03
    np.testing.assert_allclose(measure_stamps(tapered.images, tapered.pixel_scales)["hlr"],
                               big, rtol=0.10)


@pytest.fixture(scope="module")
def tiny_student_file(tiny_ddpm_file, tmp_path_factory):
    """The tiny DDPM's network saved as a 2-step distilled student (grid of 4 teacher steps)."""
    from astrogen.models.ddpm_galaxy import DDPMGalaxyModel, load_ddpm

    m = load_ddpm(tiny_ddpm_file)
    meta = dict(m.meta, distillation={"method": "progressive", "num_steps": 2,
                                      "base_steps": 4, "timestep_spacing": "trailing"})
    path = tmp_path_factory.mktemp("ddpm_student") / "tiny_2step.keras"
    DDPMGalaxyModel(m.network, m.schedule, m.intensity, meta).save(path)
    return path


def test_distilled_sampler_yaml_equals_direct_and_samples(tiny_ddpm_file, tiny_student_file,
                                                          tmp_path):
    from astrogen.pipeline import build_pipeline, load_config
    from astrogen.stages.ddpm import DDPMGenerate

    text = textwrap.dedent(f"""
        name: ddpm_distilled
        seed: 3
        output: {tmp_path / 'out'}
        stages:
          - {{name: catalog, type: catalog.cosmos, n_objects: 4}}
          - {{name: generate, type: ddpm.generate, inputs: [catalog], model: {tiny_student_file},
              sampler: distilled, num_steps: 2, batch_size: 3}}
        """)
    node = build_pipeline(load_config(text)).node("generate")
    direct = DDPMGenerate(model=str(tiny_student_file), sampler="distilled", num_steps=2,
                          batch_size=3)
    assert type(node.stage) is DDPMGenerate and vars(node.stage) == vars(direct)
    st = _stage(tiny_student_file, tmp_path, sampler="distilled", num_steps=2, batch_size=3)
    t = _table(5)
    a = st.process(t).images
    assert a.shape[0] == 5 and np.all(np.isfinite(a))
    b = _stage(tiny_student_file, tmp_path, sampler="distilled", num_steps=2,
               batch_size=2).process(t[2:4]).images  # rows do not depend on their batch
    np.testing.assert_array_equal(a[2:4], b)
    assert st.process(t).meta["sampler"] == "distilled"
    with pytest.raises(ConfigError, match=r"num_steps.*exactly 2 steps"):
        _stage(tiny_student_file, tmp_path, sampler="distilled", num_steps=1)
    with pytest.raises(ConfigError, match=r"sampler.*distilled student"):
        _stage(tiny_ddpm_file, tmp_path, sampler="distilled", num_steps=2)


def test_shipped_distilled_students_resolve_by_steps():
    from astrogen.stages.ddpm import DDPMGenerate

    for k in (1, 2, 4):
        st = DDPMGenerate(sampler="distilled", num_steps=k)
        assert st.model_path.name == f"ddpm_cosmos64_distilled_{k}step.keras"
        assert st.model_path.with_suffix(".json").is_file()
    with pytest.raises(ConfigError, match=r"num_steps.*\[1, 2, 4\]"):
        DDPMGenerate(sampler="distilled", num_steps=8)
