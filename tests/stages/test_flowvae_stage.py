"""flowvae.generate: interface of galsim.parametric, per-row seeds, ranges, files."""
import os
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from astropy.io import fits  # noqa: E402
from astropy.table import Table  # noqa: E402

from astrogen.batch import StampBatch  # noqa: E402
from astrogen.errors import CatalogError, ConfigError, ModelError  # noqa: E402
from astrogen.pipeline import build_pipeline, load_config  # noqa: E402
from astrogen.pipeline.runner import run_pipeline  # noqa: E402
from astrogen.stages.base import StageContext  # noqa: E402
from astrogen.stages.flowvae import FlowVAEGenerate, apply_condition_range  # noqa: E402


def _table(n=7, first=0):
    rng = np.random.default_rng(first)
    t = Table({"row_id": np.arange(first, first + n),
               "mag": rng.uniform(19, 24, n), "hlr": rng.uniform(0.15, 0.8, n),
               "z": rng.uniform(0.2, 1.5, n)})
    t["mag"].unit, t["hlr"].unit = "mag", "arcsec"
    return t


def _stage(path, tmp_path, seed=5, **kw):
    st = FlowVAEGenerate(model=str(path), **kw)
    st.setup(StageContext(name="gen", seed=seed, output_dir=tmp_path, work_dir=tmp_path))
    return st


def test_output_is_a_psf_free_stamp_batch(tiny_flowvae_file, tmp_path):
    batch = _stage(tiny_flowvae_file, tmp_path).process(_table())
    assert isinstance(batch, StampBatch)
    assert batch.images.shape == (7, 32, 32) and batch.images.dtype == np.float32
    assert batch.psf is None and batch.pixel_scale == pytest.approx(0.03)
    assert np.all(batch.images >= 0)  # softplus decoder: non-negative light
    assert np.all(np.isfinite(batch.catalog["gen_mag"]))
    assert batch.meta["generator"] == "flowvae.generate" and len(batch.meta["model_sha256"]) == 64


def test_rows_do_not_depend_on_chunking_or_batch_size(tiny_flowvae_file, tmp_path):
    t = _table(9)
    whole = _stage(tiny_flowvae_file, tmp_path, batch_size=4).process(t).images
    a = _stage(tiny_flowvae_file, tmp_path, batch_size=3).process(t[:5]).images
    b = _stage(tiny_flowvae_file, tmp_path, batch_size=7).process(t[5:]).images
    np.testing.assert_array_equal(whole, np.concatenate([a, b]))


def test_seed_changes_the_galaxies_and_is_reproducible(tiny_flowvae_file, tmp_path):
    t = _table(4)
    one = _stage(tiny_flowvae_file, tmp_path, seed=1).process(t).images
    again = _stage(tiny_flowvae_file, tmp_path, seed=1).process(t).images
    other = _stage(tiny_flowvae_file, tmp_path, seed=2).process(t).images
    np.testing.assert_array_equal(one, again)
    assert np.abs(one - other).max() > 0


def test_flux_catalog_rescales_to_the_catalog_magnitude(tiny_flowvae_file, tmp_path):
    t = _table(5)
    batch = _stage(tiny_flowvae_file, tmp_path, flux="catalog").process(t)
    np.testing.assert_allclose(batch.catalog["gen_mag"], t["mag"], atol=1e-4)
    np.testing.assert_allclose(batch.catalog["stamp_flux_frac"], 1.0, rtol=1e-4)


def test_out_of_range_rows_are_refused_with_the_column_and_value(tiny_flowvae_file, tmp_path):
    t = _table(3)
    t["mag"][1] = 29.5
    with pytest.raises(CatalogError, match=r"mag.*row_id=1.*29\.5"):
        _stage(tiny_flowvae_file, tmp_path).process(t)
    clipped = _stage(tiny_flowvae_file, tmp_path, out_of_range="clip").process(t)
    assert clipped.images.shape == (3, 32, 32)


def test_apply_condition_range_clips_into_the_range():
    c = np.array([[10.0, 0.5], [30.0, 5.0]], dtype=np.float32)
    out = apply_condition_range(c, ["mag", "hlr"], [[18, 0.1], [25, 1.0]], "clip")
    np.testing.assert_array_equal(out, [[18, 0.5], [25, 1.0]])
    assert apply_condition_range(c, ["mag", "hlr"], [[18, 0.1], [25, 1.0]], "allow") is c


def test_missing_condition_column_is_named(tiny_flowvae_file, tmp_path):
    t = _table(3)
    del t["z"]
    with pytest.raises(CatalogError, match="'z'|z"):
        _stage(tiny_flowvae_file, tmp_path).process(t)


def test_bad_arguments_raise_before_loading(tiny_flowvae_file, tmp_path):
    with pytest.raises(ModelError, match="model"):
        FlowVAEGenerate(model=str(tmp_path / "nope.keras"))
    with pytest.raises(ModelError, match="flowvae_cosmos64"):
        FlowVAEGenerate(model="flowvae_cosmos_typo")
    with pytest.raises(ConfigError, match="out_of_range"):
        FlowVAEGenerate(model=str(tiny_flowvae_file), out_of_range="ignore")
    with pytest.raises(ConfigError, match="temperature"):
        FlowVAEGenerate(model=str(tiny_flowvae_file), temperature=-1)


def test_pipeline_runs_to_observed_stamps_with_model_provenance(tiny_flowvae_file, tmp_path):
    out = tmp_path / "out"
    text = textwrap.dedent(f"""\
    name: flowvae_tiny
    seed: 3
    output: {out}
    stages:
      - name: catalog
        type: catalog.cosmos
        n_objects: 12
        chunk_size: 5
      - name: gen
        type: flowvae.generate
        inputs: [catalog]
        model: {tiny_flowvae_file}
        out_of_range: clip
      - name: lsst
        type: observe
        inputs: [gen]
        survey: lsst_i
      - name: stamps
        type: output.stamps
        inputs: [lsst]
        file_name: stamps.fits
    """)
    (tmp_path / "p.yaml").write_text(text)
    run_pipeline(build_pipeline(load_config(tmp_path / "p.yaml")))
    with fits.open(out / "stamps.fits") as hdul:
        assert hdul[0].data.shape[0] == 12
        assert hdul[0].header["GENERATR"] == "flowvae.generate"
        assert len(hdul[0].header["GENMDSHA"]) == 64
        assert np.isfinite(hdul[0].data).all()
