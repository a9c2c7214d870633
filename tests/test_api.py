"""The public Python API (astrogen.load_model, sample, deblend, run, the registries)."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from astropy.io import fits  # noqa: E402
from astropy.table import Table  # noqa: E402

import astrogen  # noqa: E402
from astrogen.errors import CatalogError, ConfigError, ModelError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("tensorflow", "keras", "galsim", "astropy", "numpy", "dask", "scipy")


def _python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, check=True, env=env, cwd=ROOT).stdout


def _cube(path) -> np.ndarray:
    with fits.open(path) as hl:
        return next(np.array(h.data) for h in hl if h.data is not None and h.data.ndim == 3)


def _rows(n=6):
    rng = np.random.default_rng(3)
    return Table({"mag": rng.uniform(20.5, 23.5, n), "hlr": rng.uniform(0.15, 0.3, n),
                  "z": rng.uniform(0.3, 1.2, n)})


# ----------------------------------------------------------------------------- import cost
def test_import_and_api_access_do_not_import_heavy_modules():
    out = _python(f"""
        import sys
        import astrogen
        first = [m for m in {HEAVY!r} if m in sys.modules]
        astrogen.sample, astrogen.load_model, astrogen.run, astrogen.Model
        astrogen.load_model("flowvae_cosmos64")  # resolves the file: no network loaded
        print(first, [m for m in ("tensorflow", "keras", "galsim") if m in sys.modules])
        """)
    assert out.strip() == "[] []"


def test_deblend_is_callable_whatever_the_import_order():
    out = _python("""
        import astrogen.deblend.metrics        # the subpackage imported first
        import astrogen
        from astrogen.deblend import sep_deblend
        print(callable(astrogen.deblend), astrogen.deblend.sep_deblend is sep_deblend)
        """)
    assert out.split() == ["True", "True"]
    out = _python("import astrogen; print(callable(astrogen.deblend), "
                  "hasattr(astrogen.deblend, 'iou'))")
    assert out.split() == ["True", "True"]


# ------------------------------------------------------------------------------ load_model
def test_every_shipped_file_has_a_name_and_its_stage_accepts_it():
    from astrogen.api import COMPANION_FILES, KINDS, SHIPPED_MODELS
    from astrogen.models.pretrained import models_dir

    files = {f for _, f, _ in SHIPPED_MODELS.values() if f}
    assert not files & set(COMPANION_FILES)
    assert files | set(COMPANION_FILES) == {p.name for p in models_dir().glob("*.keras")}
    for name in SHIPPED_MODELS:
        m = astrogen.load_model(name)
        assert m.kind in KINDS and m.stage in astrogen.STAGES
        assert (m.path is None) == (m.kind == "parametric")
        stage = m.make_stage()  # the registered stage takes the model's stage value
        assert type(stage).type_name == m.stage
    assert astrogen.load_model("flowvae_cosmos64").pixel_scale == 0.03
    assert astrogen.load_model("ddpm_cosmos64").conditions == ["mag", "hlr", "z"]


def test_unknown_model_name_lists_the_shipped_names():
    with pytest.raises(ModelError) as e:
        astrogen.load_model("flowvae_cosmo64")
    text = str(e.value)
    assert text.startswith("model: is neither a shipped model")
    assert "Did you mean 'flowvae_cosmos64'?" in text
    for name in ("flowvae_cosmos64", "ddpm_cosmos64", "nbody_gan_32", "unet_blends"):
        assert name in text


def test_trained_file_kind_from_its_sidecar_or_class(tmp_path):
    from astrogen.models.pretrained import models_dir

    for file, kind in (("ddpm_cosmos64.keras", "ddpm"), ("halo_unet_32.keras", "halo_unet"),
                       ("prob_unet_blends.keras", "prob_unet")):
        m = astrogen.load_model(str(models_dir() / file))
        assert (m.kind, m.stage_model) == (kind, str(models_dir() / file))
    bad = tmp_path / "not_a_model.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="is not an astrogen model file"):
        astrogen.load_model(bad)


# ---------------------------------------------------------------------------------- sample
def test_sample_gives_the_pixels_of_a_pipeline_with_the_same_seed(tmp_path):
    rows = _rows(6)
    rows.write(tmp_path / "cat.fits")
    # two chunks of 4 and 2 rows: sample() must not depend on chunking either
    config = {"name": "api_parity", "seed": 17, "output": str(tmp_path / "out"),
              "stages": [
                  {"name": "catalog", "type": "catalog.read",
                   "file_name": str(tmp_path / "cat.fits"), "chunk_size": 4},
                  {"name": "generate", "type": "flowvae.generate", "inputs": ["catalog"],
                   "temperature": 0.8},
                  {"name": "stamps", "type": "output.stamps", "inputs": ["generate"]}]}
    res = astrogen.run(config)
    assert res.n_chunks == 2
    piped = _cube(tmp_path / "out" / "stamps.fits")
    batch = astrogen.sample("flowvae_cosmos64", rows, seed=17, temperature=0.8,
                            as_galsim=False)
    assert batch.images.shape == piped.shape == (6, 64, 64)
    np.testing.assert_array_equal(batch.images.astype(np.float32), piped)
    assert list(batch.catalog["row_id"]) == list(range(6))
    # the seed and the stage name both enter each row's draw
    other = astrogen.sample("flowvae_cosmos64", rows, seed=18, temperature=0.8,
                            as_galsim=False)
    renamed = astrogen.sample("flowvae_cosmos64", rows, seed=17, stage_name="gen",
                              temperature=0.8, as_galsim=False)
    assert not np.allclose(other.images, batch.images)
    assert not np.allclose(renamed.images, batch.images)
    # a row keeps its pixels when sampled alone, by its row_id
    one = rows[4:5]
    one["row_id"] = [4]
    alone = astrogen.sample("flowvae_cosmos64", one, seed=17, temperature=0.8,
                            as_galsim=False)
    np.testing.assert_array_equal(alone.images[0], batch.images[4])


def test_sample_as_galsim_objects_scale_flux_and_pixels():
    import galsim

    mag = np.array([21.0, 22.5, 23.0])
    model = astrogen.load_model("flowvae_cosmos64")
    hlr = [0.15, 0.25, 0.18]  # 0.25" > the FlowVAE's native 0.2": drawn in units of its size
    batch = model.sample(mag=mag, hlr=hlr, z=0.7, seed=4, as_galsim=False)
    gals = model.sample(mag=mag, hlr=hlr, z=0.7, seed=4)
    assert len(gals) == 3 and all(isinstance(g, galsim.InterpolatedImage) for g in gals)
    for g, stamp, scale, h in zip(gals, batch.images, batch.pixel_scales, hlr):
        assert g.image.scale == scale
        assert scale == 0.03 if h < 0.2 else scale > 0.03
        # flux: the stamp's total in count/s (zero point 25.94 = the stamp's gen_mag)
        assert g.flux == pytest.approx(float(stamp.sum(dtype=np.float64)), rel=1e-12)
        # drawn without a pixel at the stamp's scale, the object is the stamp
        drawn = g.drawImage(nx=stamp.shape[1], ny=stamp.shape[0], scale=scale, method="no_pixel").array
        np.testing.assert_allclose(drawn, stamp, atol=1e-6 * stamp.max())
    gen_mag = np.asarray(batch.catalog["gen_mag"])
    assert 25.94 - 2.5 * np.log10([g.flux for g in gals]) == pytest.approx(gen_mag, abs=1e-6)
    # flux="catalog" (a stage option) gives the catalog magnitude; zero_point rescales it
    exact = model.sample(mag=mag, hlr=[0.2, 0.25, 0.18], z=0.7, seed=4, flux="catalog",
                         zero_point=30.0)
    assert [g.flux for g in exact] == pytest.approx(10 ** (-0.4 * (mag - 30.0)), rel=1e-5)


def test_galsim_objects_take_each_stamps_own_pixel_scale():
    import galsim

    from astrogen.batch import StampBatch

    # the same Gaussian drawn at two pixel scales: one object each, same size in arcsec
    scales = np.array([0.03, 0.06])
    stamps = [galsim.Gaussian(half_light_radius=0.3, flux=50.0)
              .drawImage(nx=64, ny=64, scale=s, method="no_pixel").array for s in scales]
    batch = StampBatch(images=np.stack(stamps), pixel_scale=scales,
                       catalog=Table({"row_id": [10, 11]}))
    gals = astrogen.galsim_objects(batch)
    assert [g.image.scale for g in gals] == list(scales)
    for g, stamp in zip(gals, stamps):
        assert g.flux == pytest.approx(stamp.sum(dtype=np.float64), rel=1e-12)
        assert g.calculateHLR() == pytest.approx(0.3, rel=0.02)  # arcsec, not pixels
    dim = astrogen.galsim_objects(batch, zero_point=batch.zero_point - 2.5)
    assert dim[0].flux == pytest.approx(gals[0].flux / 10, rel=1e-12)
    empty = StampBatch(images=np.zeros((1, 8, 8)), pixel_scale=0.1,
                       catalog=Table({"row_id": [7]}))
    with pytest.raises(ModelError, match="empty stamp.*row_id=7"):
        astrogen.galsim_objects(empty)


def test_sample_converts_units_and_checks_its_input():
    import astropy.units as u

    cols = dict(mag=[21.0, 22.0], q=[0.6, 0.9], beta=[10.0, 80.0], sersic_n=[1.0, 2.5])
    t_arcsec = Table({**cols, "hlr": [0.3, 0.5]})
    t_arcmin = Table({**cols, "hlr": [0.3 / 60, 0.5 / 60]})
    t_arcmin["hlr"].unit = u.arcmin
    a = astrogen.sample("parametric", t_arcsec, as_galsim=False)
    b = astrogen.sample("parametric", t_arcmin, as_galsim=False)
    for i in range(2):
        np.testing.assert_allclose(np.asarray(a.images[i]), np.asarray(b.images[i]),
                                   rtol=1e-9, atol=1e-12)
    # a parametric object is the exact GalSim profile: its whole flux is the catalog's
    gals = astrogen.sample("parametric", t_arcsec)
    want = 10 ** (-0.4 * (np.array(cols["mag"]) - 25.94))
    assert [g.flux for g in gals] == pytest.approx(want, rel=1e-12)
    assert all(not isinstance(g, __import__("galsim").InterpolatedImage) for g in gals)
    # and its stamp holds >= 99.5 % of it
    assert np.all([np.sum(a.images[i], dtype=np.float64) / want[i] for i in range(2)] >
                  np.full(2, 0.995))
    with pytest.raises(ConfigError, match=r"^table: give either a table or column arrays"):
        astrogen.sample("parametric", t_arcsec, mag=[21.0])
    with pytest.raises(ConfigError, match=r"^hlr: has unit 'pix'"):
        astrogen.sample("flowvae_cosmos64", mag=22.0, hlr=[3, 4] * u.pix, z=0.5)
    with pytest.raises(ConfigError, match=r"^z: has 3 values; the other columns have 2"):
        astrogen.sample("flowvae_cosmos64", mag=[22, 23], hlr=[0.2, 0.3], z=[0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match=r"^temprature: is not a parameter of stage type "
                                          r"'flowvae.generate'. Did you mean 'temperature'"):
        astrogen.sample("flowvae_cosmos64", mag=22, hlr=0.2, z=0.5, temprature=0.5)
    with pytest.raises(ModelError, match=r"^model: is a unet model, not a galaxy generator"):
        astrogen.sample("unet_blends", mag=22, hlr=0.2, z=0.5)
    with pytest.raises(CatalogError, match="'z' is required by flowvae.generate"):
        astrogen.sample("flowvae_cosmos64", mag=22, hlr=0.2)
    with pytest.raises(CatalogError, match="column 'hlr'"):
        astrogen.sample("flowvae_cosmos64", mag=22, hlr=-0.2, z=0.5)


# --------------------------------------------------------------------------------- deblend
def test_deblend_finds_two_separated_galaxies_with_their_fluxes():
    import galsim

    img = galsim.ImageD(64, 64, scale=0.06)
    fluxes = (4000.0, 2500.0)
    for flux, (dx, dy) in zip(fluxes, ((-0.7, -0.3), (0.8, 0.5))):
        galsim.Gaussian(sigma=0.15, flux=flux).drawImage(img, offset=(dx / 0.06, dy / 0.06),
                                                         add_to_image=True)
    res = astrogen.deblend(img.array, noise_sigma=1.0, method="sep", pixel_scale=0.06,
                           bands=["hst_f814w"], psf=0.35)
    cat = res.catalog
    assert len(cat) == 2
    assert sorted(cat["flux_hst_f814w"]) == pytest.approx(sorted(fluxes), rel=0.03)
    assert res.segmentation.shape == (64, 64) and res.segmentation.max() == 2
    with pytest.raises(ConfigError, match=r"^method: must be one of"):
        astrogen.deblend(img.array, method="sepp", pixel_scale=0.06, bands=["hst_f814w"])
    with pytest.raises(ConfigError, match=r"^pixel_scale: is required"):
        astrogen.deblend(img.array, method="sep", bands=["hst_f814w"])


# ------------------------------------------------------------------- run and the registries
def _parametric_config(out, n=12):
    return {"name": "api_run", "seed": 2, "output": str(out),
            "stages": [
                {"name": "catalog", "type": "catalog.cosmos", "n_objects": n, "chunk_size": 5},
                {"name": "render", "type": "galsim.parametric", "inputs": ["catalog"],
                 "stamp_size": 32},
                {"name": "stamps", "type": "output.stamps", "inputs": ["render"]}]}


def test_run_from_a_dict_a_file_and_with_overrides(tmp_path):
    import yaml

    res = astrogen.run(_parametric_config(tmp_path / "a"))
    assert res.n_rows == 12 and res.n_chunks == 3
    assert (tmp_path / "a" / "stamps.fits").is_file()
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(_parametric_config(tmp_path / "b", n=7)))
    res_b = astrogen.run(str(path), overrides={"stages.catalog.n_objects": 12})
    assert res_b.n_rows == 12
    np.testing.assert_array_equal(_cube(tmp_path / "b" / "stamps.fits"),
                                  _cube(tmp_path / "a" / "stamps.fits"))
    res_c = astrogen.run(path, overrides=["seed=3", f"output={tmp_path / 'c'}"])
    assert res_c.output == tmp_path / "c"
    assert not np.array_equal(_cube(tmp_path / "c" / "stamps.fits"),
                              _cube(tmp_path / "a" / "stamps.fits"))
    with pytest.raises(ConfigError, match=r"^executor"):
        astrogen.run(path, executor={"type": "dask", "n_workers": 0})


def test_plug_in_stage_registered_through_the_public_api(tmp_path):
    from astrogen.batch import StampBatch

    name = "apitest.double"
    if name not in astrogen.STAGES:
        @astrogen.register_stage(name)
        class Double(astrogen.Stage):
            """Multiply every stamp by ``factor`` (a test plug-in)."""

            input_types = (StampBatch,)
            output_type = StampBatch

            def __init__(self, factor: float = 2.0):
                self.factor = float(factor)

            def process(self, batch):
                return batch.replace(images=batch.images * self.factor)

    assert "galsim.parametric" in astrogen.STAGES and name in astrogen.STAGES
    cfg = _parametric_config(tmp_path / "plain")
    astrogen.run(cfg)
    cfg = _parametric_config(tmp_path / "doubled")
    cfg["stages"].insert(2, {"name": "double", "type": name, "inputs": ["render"],
                             "factor": 3.0})
    cfg["stages"][-1]["inputs"] = ["double"]
    astrogen.run(cfg)
    np.testing.assert_allclose(_cube(tmp_path / "doubled" / "stamps.fits"),
                               3.0 * _cube(tmp_path / "plain" / "stamps.fits"), rtol=1e-6)


def test_trainer_registry_is_exposed_when_the_training_package_has_one():
    try:
        from astrogen.training import registry
    except ImportError:
        with pytest.raises(AttributeError, match="not part of this installation"):
            astrogen.register_trainer  # noqa: B018
        return
    assert astrogen.register_trainer is registry.register_trainer
    assert astrogen.TRAINERS is registry.TRAINERS
