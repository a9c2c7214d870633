"""CatSim / BlendingToolKit catalogs read natively (catalog.read preset: catsim), and user
columns and ids carried to the truth table of a pipeline."""
import textwrap

import astropy.units as u
import galsim
import numpy as np
import pytest
from astropy.table import Table

from astrogen.catalog.reader import CatalogFile
from astrogen.errors import CatalogError
from astrogen.pipeline import build_pipeline, load_config
from astrogen.pipeline.runner import run_pipeline

# bulge-only, disk-only, mixed, mixed with an AGN, mixed with b > a written (swapped axes)
ROWS = {
    "galtileid": [9_000_000_001, 9_000_000_005, 9_000_000_002, 9_000_000_010, 9_000_000_003],
    "ra": [-0.001, 0.002, 0.0, 0.001, 359.999], "dec": [0.0, 0.001, -0.001, 0.0, 0.0],
    "redshift": [0.3, 0.8, 1.2, 0.5, 0.7],
    "fluxnorm_bulge": [2e-9, 0.0, 1e-9, 1e-9, 3e-9],
    "fluxnorm_disk": [0.0, 3e-9, 3e-9, 1e-9, 1e-9],
    "fluxnorm_agn": [0.0, 0.0, 0.0, 0.5e-9, 0.0],
    "a_b": [0.40, 0.0, 0.30, 0.2, 0.1], "b_b": [0.25, 0.0, 0.30, 0.1, 0.2],
    "a_d": [0.0, 0.90, 0.80, 0.5, 0.6], "b_d": [0.0, 0.30, 0.40, 0.5, 0.3],
    "pa_bulge": [30.0, 0.0, 10.0, 100.0, 50.0], "pa_disk": [0.0, 120.0, 20.0, 100.0, 60.0],
    **{f"{b}_ab": [22.0, 23.0, 23.5, 22.5, 24.0] for b in "ugrizy"},
}


def _catsim_file(tmp_path, rows=ROWS, name="catsim.fits"):
    t = Table(rows)
    t["i_ab"] = t["i_ab"] + 0.1
    t["z_ab"] = t["z_ab"] + 0.3
    t.write(tmp_path / name)
    return tmp_path / name, t


def test_catsim_preset_maps_components(tmp_path):
    path, t = _catsim_file(tmp_path)
    c = CatalogFile(path, preset="catsim").read_rows(0, len(t))
    np.testing.assert_array_equal(c["row_id"], t["galtileid"])
    np.testing.assert_allclose(c["bulge_frac"], [1.0, 0.0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(c["hlr_bulge"], [np.sqrt(0.4 * 0.25), 0.0, 0.3, np.sqrt(0.02),
                                                np.sqrt(0.02)])
    np.testing.assert_allclose(c["hlr_disk"], [0.0, np.sqrt(0.27), np.sqrt(0.32), 0.5,
                                               np.sqrt(0.18)])
    np.testing.assert_allclose(c["q_bulge"], [0.625, 1.0, 1.0, 0.5, 0.5])
    np.testing.assert_allclose(c["q_disk"], [1.0, 1 / 3, 0.5, 1.0, 0.5])
    # absent components take the other's angle; b > a is a 90 deg rotation
    np.testing.assert_allclose(c["beta_bulge"], [30.0, 120.0, 10.0, 100.0, 140.0])
    np.testing.assert_allclose(c["beta_disk"], [30.0, 120.0, 20.0, 100.0, 60.0])
    assert c["hlr_bulge"].unit == u.arcsec and c["beta_disk"].unit == u.deg
    # one-profile columns: flux-weighted size and axis ratio, brighter component's angle
    bf = np.asarray(c["bulge_frac"])
    np.testing.assert_allclose(c["hlr"], bf * c["hlr_bulge"] + (1 - bf) * c["hlr_disk"])
    np.testing.assert_allclose(c["sersic_n"], 1 + 3 * bf)
    np.testing.assert_allclose(c["mag_lsst_i"], t["i_ab"])
    # F814W (807 nm) between LSST i (756 nm) and z (870 nm) in log wavelength
    w = np.log(807.343 / 756.469) / np.log(870.164 / 756.469)
    np.testing.assert_allclose(c["mag"], (1 - w) * t["i_ab"] + w * t["z_ab"], atol=1e-6)
    np.testing.assert_allclose(c["ra"], np.asarray(t["ra"]) % 360.0)
    np.testing.assert_allclose(c["z"], t["redshift"])
    # every CatSim column is carried through unchanged
    for col in ("a_b", "b_d", "fluxnorm_agn", "pa_bulge", "u_ab", "galtileid", "redshift"):
        np.testing.assert_array_equal(np.asarray(c[col]), np.asarray(t[col]))
    np.testing.assert_array_equal(np.asarray(c["input_ra"]), np.asarray(t["ra"]))


def _btk_profile(row, total_flux):
    """A CatSim row drawn as BlendingToolKit does (btk.draw_blends: sqrt(a b), b/a, pa),
    with the AGN's flux shared by bulge and disk as the preset documents."""
    tot = row["fluxnorm_bulge"] + row["fluxnorm_disk"]
    comps = []
    if row["fluxnorm_disk"] > 0 and row["a_d"] > 0:
        comps.append(galsim.Exponential(flux=row["fluxnorm_disk"] / tot * total_flux,
                                        half_light_radius=np.sqrt(row["a_d"] * row["b_d"]))
                     .shear(q=row["b_d"] / row["a_d"], beta=row["pa_disk"] * galsim.degrees))
    if row["fluxnorm_bulge"] > 0 and row["a_b"] > 0:
        a, b, pa = row["a_b"], row["b_b"], row["pa_bulge"]
        if b > a:
            a, b, pa = b, a, pa + 90
        comps.append(galsim.DeVaucouleurs(flux=row["fluxnorm_bulge"] / tot * total_flux,
                                          half_light_radius=np.sqrt(a * b))
                     .shear(q=b / a, beta=pa * galsim.degrees))
    return galsim.Add(comps)


def _canonical_profile(row, total_flux):
    comps = []
    bf = row["bulge_frac"]
    if bf < 1:
        comps.append(galsim.Exponential(flux=(1 - bf) * total_flux,
                                        half_light_radius=row["hlr_disk"])
                     .shear(q=row["q_disk"], beta=row["beta_disk"] * galsim.degrees))
    if bf > 0:
        comps.append(galsim.DeVaucouleurs(flux=bf * total_flux, half_light_radius=row["hlr_bulge"])
                     .shear(q=row["q_bulge"], beta=row["beta_bulge"] * galsim.degrees))
    return galsim.Add(comps)


def test_catsim_rows_render_as_btk_draws_them(tmp_path):
    """Bulge-only, disk-only and mixed rows drawn from the canonical per-component columns
    match BlendingToolKit's drawing of the raw CatSim row pixel by pixel, with the total
    flux of ``i_ab``."""
    path, t = _catsim_file(tmp_path)
    c = CatalogFile(path, preset="catsim").read_rows(0, len(t))
    for i in range(len(t)):
        flux = 10 ** (-0.4 * (float(c["mag_lsst_i"][i]) - 27.0))
        mine = _canonical_profile(c[i], flux).drawImage(nx=128, ny=128, scale=0.03,
                                                        method="no_pixel")
        ref = _btk_profile(t[i], flux).drawImage(nx=128, ny=128, scale=0.03,
                                                 method="no_pixel")
        np.testing.assert_allclose(mine.array, ref.array, rtol=0,
                                   atol=1e-6 * ref.array.max())
        big = _canonical_profile(c[i], flux).drawImage(nx=1024, ny=1024, scale=0.03,
                                                        method="no_pixel")
        assert _canonical_profile(c[i], flux).flux == pytest.approx(flux, rel=1e-12)
        # drawn: 97 % or more inside 31" (de Vaucouleurs wings reach further)
        assert 0.97 * flux < big.array.sum() <= flux * (1 + 1e-6)


def test_row_without_any_component_is_refused_naming_the_row(tmp_path):
    rows = {k: list(v) for k, v in ROWS.items()}
    rows["a_d"][2] = 0.0
    rows["a_b"][2] = 0.0  # row 2 has neither a bulge nor a disk
    path, _ = _catsim_file(tmp_path, rows)
    with pytest.raises(CatalogError, match="column 'hlr.*row=2"):
        len(CatalogFile(path, preset="catsim"))
    # selecting the other rows reads them
    assert len(CatalogFile(path, preset="catsim", where={"redshift": [None, 1.0]})) == 4


def test_catsim_missing_column_is_named(tmp_path):
    rows = {k: v for k, v in ROWS.items() if k != "b_d"}
    path, _ = _catsim_file(tmp_path, rows)
    with pytest.raises(CatalogError, match="column 'b_d'.*preset.*catsim"):
        len(CatalogFile(path, preset="catsim"))


def _run(tmp_path, yaml_text):
    p = tmp_path / "pipe.yaml"
    p.write_text(textwrap.dedent(yaml_text))
    run_pipeline(build_pipeline(load_config(p)), progress=False)
    return Table.read(tmp_path / "out" / "truth_catalog.fits")


def test_user_columns_and_ids_reach_the_truth_table(tmp_path):
    """catalog.read -> galsim.parametric -> output.catalog keeps the user's ids (as row_id
    and as themselves), e1/e2 with their unit, and text columns, for every row."""
    rng = np.random.default_rng(1)
    n = 7
    t = Table({"galaxy_id": np.array([905, 17, 33, 2, 4000, 61, 8], np.int64),
               "MAG": rng.uniform(21, 24, n), "R50": rng.uniform(0.2, 0.6, n) * u.arcsec,
               "e1": rng.normal(0, 0.2, n), "e2": rng.normal(0, 0.2, n),
               "sfr": rng.uniform(0, 3, n) * u.Msun / u.yr,
               "field": [f"deep{i % 2}" for i in range(n)]})
    t.write(tmp_path / "user.ecsv")
    truth = _run(tmp_path, f"""\
    name: user_cols
    seed: 3
    output: {tmp_path / 'out'}
    stages:
      - name: catalog
        type: catalog.read
        file_name: {tmp_path / 'user.ecsv'}
        columns: {{mag: MAG, hlr: R50}}
        defaults: {{q: 0.8, beta: 0.0, sersic_n: 1.0}}
        id_column: galaxy_id
        chunk_size: 3
      - name: render
        type: galsim.parametric
        inputs: [catalog]
        stamp_size: 32
      - name: truth
        type: output.catalog
        inputs: [render]
    """)
    np.testing.assert_array_equal(truth["row_id"], t["galaxy_id"])
    truth.convert_bytestring_to_unicode()  # FITS text columns are read back as bytes
    for col in ("galaxy_id", "e1", "e2", "sfr", "field", "MAG"):
        np.testing.assert_array_equal(np.asarray(truth[col]), np.asarray(t[col]))
    assert truth["sfr"].unit == u.Msun / u.yr and truth["R50"].unit == u.arcsec


def test_catsim_pipeline_truth_keeps_catsim_columns(tmp_path):
    path, t = _catsim_file(tmp_path)
    truth = _run(tmp_path, f"""\
    name: catsim_small
    seed: 3
    output: {tmp_path / 'out'}
    stages:
      - name: catalog
        type: catalog.read
        file_name: {path}
        preset: catsim
        chunk_size: 2
      - name: render
        type: galsim.parametric
        inputs: [catalog]
        profile: bulge_disk
        stamp_size: 32
      - name: truth
        type: output.catalog
        inputs: [render]
    """)
    np.testing.assert_array_equal(truth["row_id"], t["galtileid"])
    for col in ("a_b", "b_b", "a_d", "b_d", "pa_bulge", "fluxnorm_agn", "i_ab"):
        np.testing.assert_array_equal(np.asarray(truth[col]), np.asarray(t[col]))
    for col in ("hlr_bulge", "hlr_disk", "q_bulge", "q_disk", "beta_bulge", "beta_disk"):
        assert col in truth.colnames


def test_user_columns_reach_the_blend_truth_table():
    """blend.generate's per-object truth keeps every catalog column of its row."""
    from astrogen.catalog.cosmos import CosmosSampler
    from astrogen.physics.blends import BlendGeometry, make_blends
    from astrogen.physics.psf import build_psf
    from astrogen.physics.surveys import get_survey

    survey = get_survey({"base": "hst_cosmos", "pixel_scale": 0.06})
    geom = BlendGeometry(stamp_size=32, min_objects=2, max_objects=3, central_offset=1.0,
                         separation=(0.5, 2.0), min_separation=2.5, max_separation=8.0,
                         margin=12)
    rows = CosmosSampler(mag_range=(19, 23)).sample(11, np.arange(9))
    rows["galaxy_id"] = np.arange(9) * 11 + 5000
    rows["e1"] = np.linspace(-0.3, 0.3, 9)
    rows["e1"].unit = u.dimensionless_unscaled
    b = make_blends(rows, geom, survey, build_psf(survey.psf), seed=3, add_noise=False)
    obj = b.objects
    idx = np.searchsorted(np.asarray(rows["row_id"]), np.asarray(obj["row_id"]))
    np.testing.assert_array_equal(obj["galaxy_id"], rows["galaxy_id"][idx])
    np.testing.assert_array_equal(obj["e1"], rows["e1"][idx])
    np.testing.assert_array_equal(obj["mag_hsc_g"], rows["mag_hsc_g"][idx])
