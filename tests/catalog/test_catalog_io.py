import astropy.units as u
import numpy as np
import pytest
from astropy.table import Table

from astrogen.catalog.cosmos import CosmosSampler
from astrogen.catalog.reader import CatalogFile
from astrogen.errors import CatalogError, ConfigError


def _file_table(n=10):
    rng = np.random.default_rng(0)
    t = Table()
    t["MAG_AUTO"] = rng.uniform(20, 25, n) * u.mag
    t["FLUX_RADIUS"] = rng.uniform(3, 10, n)        # pixels, no unit in file
    t["ZPHOT"] = rng.uniform(0.1, 2, n)
    t["ALPHA"] = rng.uniform(150, 151, n) * u.deg
    t["DELTA"] = rng.uniform(2, 3, n) * u.deg
    t["Q"] = rng.uniform(0.3, 1, n)
    return t


@pytest.mark.parametrize("suffix,fmt", [(".fits", None), (".ecsv", None),
                                        (".csv", "ascii.csv"), (".hdf5", None)])
def test_round_trip_with_units_and_mapping(tmp_path, suffix, fmt):
    t = _file_table()
    path = tmp_path / f"cat{suffix}"
    kw = {"path": "cat", "serialize_meta": True} if suffix == ".hdf5" else {}
    t.write(path, format=fmt, **kw) if fmt else t.write(path, **kw)
    cat = CatalogFile(path, format=fmt, pixel_scale=0.03,
                      columns={"mag": "MAG_AUTO", "hlr": "FLUX_RADIUS", "z": "ZPHOT",
                               "ra": "ALPHA", "dec": "DELTA", "q": "Q"},
                      units={"hlr": "pix", "mag": "mag"}, defaults={"sersic_n": 1.5})
    out = cat.read_rows(0, len(cat))
    np.testing.assert_allclose(out["hlr"], t["FLUX_RADIUS"] * 0.03)
    assert out["hlr"].unit == u.arcsec and out["ra"].unit == u.deg
    np.testing.assert_allclose(out["mag"], t["MAG_AUTO"].value)
    np.testing.assert_array_equal(out["sersic_n"], 1.5)
    np.testing.assert_array_equal(out["row_id"], np.arange(len(t)))
    # chunked reading gives the same rows with global row ids
    part = cat.read_rows(3, 7)
    np.testing.assert_array_equal(part["row_id"], [3, 4, 5, 6])
    np.testing.assert_allclose(part["z"], out["z"][3:7])


def test_units_in_file_are_converted(tmp_path):
    t = Table({"mag": [22.0], "hlr": [10.0] * u.mas, "q": [0.5]})
    t.write(tmp_path / "c.fits")
    out = CatalogFile(tmp_path / "c.fits").read_rows(0, 1)
    assert out["hlr"][0] == pytest.approx(0.01)


def test_pixel_size_without_pixel_scale_is_an_error(tmp_path):
    _file_table().write(tmp_path / "c.fits")
    with pytest.raises(ConfigError, match="pixel_scale"):
        CatalogFile(tmp_path / "c.fits", columns={"hlr": "FLUX_RADIUS"},
                    units={"hlr": "pix"}).read_rows(0, 2)


def test_incompatible_unit_names_the_column(tmp_path):
    t = Table({"mag": [22.0], "hlr": [1.0] * u.kg})
    t.write(tmp_path / "c.fits")
    with pytest.raises(CatalogError, match="column 'hlr'.*cannot be converted"):
        CatalogFile(tmp_path / "c.fits").read_rows(0, 1)


def test_cosmos_sampler_is_chunk_independent_and_in_range():
    s = CosmosSampler()
    a = s.sample(5, np.arange(500))
    b = s.sample(5, np.arange(200, 260))
    for c in a.colnames:
        np.testing.assert_array_equal(a[c][200:260], b[c])
    assert a["mag"].min() >= 16.5 and a["mag"].max() <= 26.0
    assert (a["hlr"] > 0).all() and (a["q"] > 0).all() and (a["q"] <= 1).all()
    assert (a["sersic_n"] >= 0.3).all() and (a["sersic_n"] <= 6.2).all()
    assert ((a["bulge_frac"] >= 0) & (a["bulge_frac"] <= 1)).all()


def test_cosmos_sampler_reproduces_cosmos_distributions():
    """Medians within a few percent and the size-magnitude anticorrelation of the data."""
    s = CosmosSampler()
    t = s.sample(1, np.arange(50_000))
    d = s.data
    faint = d["sample"] == "I<26"
    assert np.median(t["mag"]) == pytest.approx(np.median(d["mag"][faint]), abs=0.3)
    bright = d["sample"] == "I<23.5"
    sel = t["mag"] < 23.5
    assert np.median(t["sersic_n"][sel]) == pytest.approx(
        np.nanmedian(d["sersic_n"][bright]), rel=0.2)
    assert np.corrcoef(t["mag"], np.log10(t["hlr"]))[0, 1] < -0.4


def test_mag_range_truncates():
    t = CosmosSampler(mag_range=(22, 23)).sample(0, np.arange(2000))
    assert t["mag"].min() >= 22 and t["mag"].max() <= 23
    with pytest.raises(ConfigError, match="mag_range"):
        CosmosSampler(mag_range=(23, 22))
