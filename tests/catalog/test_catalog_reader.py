"""catalog.read: magnitude units, unit conflicts, bad units, row selection, user columns
and ids carried through."""
import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astrogen.catalog.reader import CatalogFile
from astrogen.errors import CatalogError, ConfigError


def _user_table(n=40):
    rng = np.random.default_rng(3)
    t = Table()
    t["galaxy_id"] = np.arange(n, dtype=np.int64) * 7 + 1000
    t["mag"] = rng.uniform(20, 26, n) * u.ABmag
    t["hlr"] = rng.uniform(0.2, 1.0, n) * u.arcsec
    t["q"] = rng.uniform(0.2, 1.0, n)
    t["e1"] = rng.normal(0, 0.2, n)
    t["e2"] = rng.normal(0, 0.2, n)
    t["flux_aper"] = rng.uniform(1, 100, n) * u.nJy
    t["field"] = np.array([f"f{i % 3}" for i in range(n)])
    return t


@pytest.mark.parametrize("suffix", [".ecsv", ".fits"])
def test_astropy_magnitude_units_are_understood(tmp_path, suffix):
    """An ECSV / FITS written by astropy with ``mag(AB)`` is read (it used to be refused)."""
    t = _user_table()
    t.write(tmp_path / f"c{suffix}")
    out = CatalogFile(tmp_path / f"c{suffix}").read_rows(0, len(t))
    np.testing.assert_allclose(out["mag"], t["mag"].value)
    assert out["mag"].unit == u.mag


@pytest.mark.parametrize("spelling", ["ABmag", "mag(AB)", "AB", "mag"])
def test_units_entry_accepts_ab_spellings(tmp_path, spelling):
    Table({"MAG": [22.0, 23.0], "hlr": [0.3, 0.4]}).write(tmp_path / "c.fits")
    out = CatalogFile(tmp_path / "c.fits", columns={"mag": "MAG"},
                      units={"mag": spelling}).read_rows(0, 2)
    np.testing.assert_allclose(out["mag"], [22.0, 23.0])


def test_flux_density_becomes_ab_magnitude_and_other_systems_are_refused(tmp_path):
    Table({"flux": [3631.0, 36.31] * u.Jy, "hlr": [0.3, 0.4] * u.arcsec}).write(
        tmp_path / "f.fits")
    out = CatalogFile(tmp_path / "f.fits", columns={"mag": "flux"}).read_rows(0, 2)
    np.testing.assert_allclose(out["mag"], [0.0, 5.0], atol=1e-3)  # AB zero point 3630.8 Jy
    Table({"mag": [22.0], "hlr": [0.3]}).write(tmp_path / "st.fits")
    with pytest.raises(CatalogError, match="column 'mag'.*AB magnitude.*mag\\(ST\\)"):
        CatalogFile(tmp_path / "st.fits", units={"mag": "mag(ST)"}).read_rows(0, 1)


def test_units_entry_contradicting_the_file_is_an_error_naming_both(tmp_path):
    """Used to silently override: x60 on an arcsec column given arcmin."""
    _user_table().write(tmp_path / "c.fits")
    with pytest.raises(ConfigError, match=r"units\.hlr.*'arcmin'.*'arcsec'.*column 'hlr'"):
        CatalogFile(tmp_path / "c.fits", units={"hlr": "arcmin"}).read_rows(0, 2)
    # agreeing entries (even spelled differently) are fine
    out = CatalogFile(tmp_path / "c.fits", units={"hlr": "arcsec", "mag": "mag(AB)"})
    assert len(out) == 40


def test_unparseable_file_unit_is_an_error_naming_the_column(tmp_path):
    """A FITS TUNIT 'banana' used to be silently treated as the package's unit."""
    cols = [fits.Column(name="mag", format="D", array=np.array([22.0, 23.0])),
            fits.Column(name="SIZE", format="D", unit="banana", array=np.array([0.3, 0.4]))]
    fits.BinTableHDU.from_columns(cols).writeto(tmp_path / "b.fits")
    with pytest.raises(CatalogError, match="column 'SIZE'.*unit astropy does not "
                                           "understand.*banana"):
        CatalogFile(tmp_path / "b.fits", columns={"hlr": "SIZE"}).read_rows(0, 2)
    with pytest.raises(ConfigError, match=r"units\.hlr.*does not understand"):
        CatalogFile(tmp_path / "b.fits", columns={"hlr": "SIZE"}, units={"hlr": "banana"})


def test_user_columns_and_ids_are_carried_through_unchanged(tmp_path):
    t = _user_table()
    t.write(tmp_path / "c.fits")
    out = CatalogFile(tmp_path / "c.fits", id_column="galaxy_id").read_rows(0, len(t))
    np.testing.assert_array_equal(out["row_id"], t["galaxy_id"])
    for c in ("galaxy_id", "e1", "e2", "flux_aper", "field"):
        np.testing.assert_array_equal(np.asarray(out[c]), np.asarray(t[c]))
    assert out["flux_aper"].unit == u.nJy
    # without id_column, row_id is the file row index
    out = CatalogFile(tmp_path / "c.fits").read_rows(5, 8)
    np.testing.assert_array_equal(out["row_id"], [5, 6, 7])
    np.testing.assert_array_equal(out["galaxy_id"], t["galaxy_id"][5:8])


def test_mapped_away_canonical_name_is_kept(tmp_path):
    """A file column named like a canonical one but not used for it is kept as input_<name>."""
    Table({"mag": [22.0], "hlr": [5.0], "R50": [0.4] * u.arcsec}).write(tmp_path / "c.fits")
    out = CatalogFile(tmp_path / "c.fits", columns={"hlr": "R50"}).read_rows(0, 1)
    assert out["hlr"][0] == pytest.approx(0.4) and out["input_hlr"][0] == 5.0


@pytest.mark.parametrize("ids,match", [([1, 2, 2, 4], r"unique.*rows=\[1, 2\]"),
                                       ([1, -2, 3, 4], "non-negative.*row=1"),
                                       ([1.0, 2.5, 3.0, 4.0], "integers.*row=1")])
def test_bad_ids_are_refused_naming_column_and_row(tmp_path, ids, match):
    Table({"ID": ids, "mag": [22.0] * 4, "hlr": [0.3] * 4}).write(tmp_path / "c.fits")
    with pytest.raises(CatalogError, match="column 'ID'.*" + match):
        len(CatalogFile(tmp_path / "c.fits", id_column="ID"))
    with pytest.raises(ConfigError, match="id_column.*Did you mean 'ID'"):
        CatalogFile(tmp_path / "c.fits", id_column="IDD")


@pytest.mark.parametrize("suffix", [".fits", ".ecsv"])
def test_row_selection_count_slice_and_range(tmp_path, suffix):
    t = _user_table(40)
    t.write(tmp_path / f"c{suffix}")
    mags = t["mag"].value
    cat = CatalogFile(tmp_path / f"c{suffix}", rows=[5, 35], where={"mag": [22.0, 25.0],
                                                                 "e1": [None, 0.1]},
                      max_rows=8)
    expect = [i for i in range(5, 35) if 22 <= mags[i] <= 25 and t["e1"][i] <= 0.1][:8]
    assert len(cat) == len(expect) == 8
    for size in (1, 3, 8):
        parts = [cat.read_rows(a, min(a + size, len(cat))) for a in range(0, len(cat), size)]
        rid = np.concatenate([np.asarray(p["row_id"]) for p in parts])
        np.testing.assert_array_equal(rid, expect)  # file row index, whatever the chunking
        np.testing.assert_array_equal(
            np.concatenate([np.asarray(p["galaxy_id"]) for p in parts]), t["galaxy_id"][expect])


def test_selection_errors_name_the_key(tmp_path):
    _user_table().write(tmp_path / "c.fits")
    with pytest.raises(ConfigError, match=r"where\.magg.*Did you mean 'mag'"):
        len(CatalogFile(tmp_path / "c.fits", where={"magg": [20, 21]}))
    with pytest.raises(CatalogError, match="no row passes"):
        len(CatalogFile(tmp_path / "c.fits", where={"mag": [40, 41]}))
    with pytest.raises(ConfigError, match="rows"):
        CatalogFile(tmp_path / "c.fits", rows=[10, 5])
    with pytest.raises(ConfigError, match="max_rows"):
        CatalogFile(tmp_path / "c.fits", max_rows=0)


def test_rows_outside_the_selection_are_not_validated(tmp_path):
    """A bad row that is not selected does not stop the read; a selected one is named."""
    Table({"mag": [22.0, 23.0, 99.0, 24.0], "hlr": [0.3, 0.3, -1.0, 0.3]}).write(
        tmp_path / "c.fits")
    assert len(CatalogFile(tmp_path / "c.fits", where={"mag": [None, 30]})) == 3
    with pytest.raises(CatalogError, match="column 'mag'.*row=2"):
        len(CatalogFile(tmp_path / "c.fits", rows=[1, None]))


def test_canonical_contract_columns_are_validated(tmp_path):
    Table({"mag": [22.0, 23.0], "hlr": [0.3, 0.3], "g1": [0.1, 1.2],
           "mag_lsst_r": [22.0, 23.0]}).write(tmp_path / "c.fits")
    with pytest.raises(CatalogError, match=r"column 'g1'.*\(-1, 1\).*row=1"):
        len(CatalogFile(tmp_path / "c.fits"))
    Table({"mag": [22.0], "mag_lsst_r": [22.0] * u.ABmag, "is_star": [True]}).write(
        tmp_path / "d.fits")
    out = CatalogFile(tmp_path / "d.fits").read_rows(0, 1)
    assert out["mag_lsst_r"].unit == u.mag and bool(out["is_star"][0])
