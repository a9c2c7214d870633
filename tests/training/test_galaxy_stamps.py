"""Simulated COSMOS-like stamp datasets and the real COSMOS realism set
(astrogen.datasets.galaxy_stamps)."""
import json

import numpy as np
import pytest

from astrogen.datasets import (build_stamp_dataset, dataset_is_complete, load_real_cosmos,
                               read_manifest, read_stamps, stamp_dataset)
from astrogen.datasets.galaxy_stamps import _catalog_variances
from astrogen.errors import ConfigError, UnknownKeyError

ALL = ("row_id", "observed", "truth", "psf", "psf_id", "noise_sigma", "noise_power",
       "conditions")
SMALL = dict(n_galaxies=10, stamp_size=32, seed=11)


def test_shards_identical_for_any_shard_size_and_resumable(tmp_path):
    a = build_stamp_dataset(tmp_path / "a", dict(SMALL, shard_size=3))
    assert a["status"] == "complete" and [s["n"] for s in a["shards"]] == [3, 3, 3, 1]
    # interrupted build (one new shard per call) with another shard size
    part = build_stamp_dataset(tmp_path / "b", dict(SMALL, shard_size=4), max_new_shards=1)
    assert part["status"] == "incomplete" and not dataset_is_complete(tmp_path / "b")
    first = (tmp_path / "b" / "shard_00000.npz").stat().st_mtime_ns
    b = build_stamp_dataset(tmp_path / "b", dict(SMALL, shard_size=4))
    assert b["status"] == "complete" and [s["n"] for s in b["shards"]] == [4, 4, 2]
    assert (tmp_path / "b" / "shard_00000.npz").stat().st_mtime_ns == first  # kept, not redone
    da, db = read_stamps(tmp_path / "a", ALL), read_stamps(tmp_path / "b", ALL)
    for f in ALL:
        np.testing.assert_array_equal(da[f], db[f], err_msg=f)
    np.testing.assert_array_equal(da["row_id"], np.arange(10))
    assert not np.array_equal(da["observed"], da["truth"])
    m = read_manifest(tmp_path / "a")
    assert m["seed"] == 11 and m["config"]["shard_size"] == 3 and m["conditions"]["names"] == [
        "mag", "hlr", "z"]
    assert m["provenance"]["galsim_version"] and m["flux_unit"] == "count/s"
    # same folder, another content -> error; another shard size of a complete set is fine
    with pytest.raises(ConfigError, match="another configuration"):
        build_stamp_dataset(tmp_path / "a", dict(SMALL, shard_size=3, seed=12))
    assert build_stamp_dataset(tmp_path / "a", dict(SMALL, shard_size=5))["status"] == "complete"
    sub = read_stamps(tmp_path / "a", ("row_id",), rows=slice(2, 7))
    np.testing.assert_array_equal(sub["row_id"], np.arange(2, 7))


def test_psf_normalised_and_centred(tiny_dataset):
    import galsim

    d = read_stamps(tiny_dataset, ("psf", "psf_id"))
    n = d["psf"].shape[-1]
    lib = np.load(tiny_dataset / "psf_library.npz")["psf"]
    assert lib.shape == (200, n, n)  # 100 + 100 shipped HST PSFs
    np.testing.assert_allclose(lib.sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert np.all(lib.reshape(200, -1).argmax(axis=1) == (n // 2) * n + n // 2)  # peak
    for p in lib[::20]:
        mom = galsim.Image(p.astype(np.float64)).FindAdaptiveMom()
        # GalSim pixel (i+1) is numpy index i: centroid at numpy (N//2, N//2)
        assert abs(mom.moments_centroid.x - 1 - n // 2) < 0.05
        assert abs(mom.moments_centroid.y - 1 - n // 2) < 0.05
    np.testing.assert_array_equal(d["psf"], lib[d["psf_id"]])
    assert len(np.unique(d["psf_id"])) > 20  # PSFs picked per galaxy


@pytest.mark.parametrize("noise", ["cosmos", "gaussian"])
def test_noise_level_as_configured(tmp_path, noise):
    from astrogen.models.psf_likelihood import convolve, estimate_noise_power

    var = 2e-5
    build_stamp_dataset(tmp_path, dict(n_galaxies=24, stamp_size=32, shard_size=24, seed=5,
                                       noise=noise, noise_variance=var, mag_range=[22.5, 26]))
    d = read_stamps(tmp_path, ALL)
    np.testing.assert_allclose(d["noise_sigma"], np.sqrt(var), rtol=1e-6)
    np.testing.assert_allclose(d["noise_power"].mean(axis=(1, 2)), var, rtol=0.02)
    resid = d["observed"] - convolve(d["truth"], d["psf"]).numpy()
    assert abs(np.median(resid.var(axis=(1, 2))) / var - 1) < 0.05
    ratio = estimate_noise_power(resid) / d["noise_power"][0]
    assert abs(np.median(ratio) - 1) < 0.06
    if noise == "gaussian":
        np.testing.assert_allclose(d["noise_power"], var, rtol=1e-6)
    else:  # correlated: the stored spectrum is far from flat
        assert d["noise_power"][0].max() / d["noise_power"][0].min() > 10


def test_catalog_noise_and_conditions(tiny_dataset):
    d = read_stamps(tiny_dataset, ("noise_sigma", "conditions"))
    var = d["noise_sigma"].astype(np.float64) ** 2
    rel = np.abs(var[:, None] / _catalog_variances()[None, :] - 1).min(axis=1)
    assert np.all(rel < 1e-6)  # each galaxy has the variance of one real COSMOS stamp
    assert len(np.unique(var)) > 10
    c = d["conditions"]
    assert c.shape == (64, 3) and np.all(np.isfinite(c))
    assert np.all((c[:, 0] > 16) & (c[:, 0] < 26.01))
    assert np.all(c[:, 1] > 0) and np.all(c[:, 2] > 0)


def test_loader_shapes_and_determinism(tiny_dataset):
    fields = ("observed", "psf", "noise_power", "noise_sigma", "conditions", "row_id")

    def rows(seed, epoch=0):
        ds = stamp_dataset(tiny_dataset, 8, fields=fields, shuffle_buffer=16, seed=seed,
                           epoch=epoch)
        batches = list(ds)
        return batches, np.concatenate([b["row_id"].numpy() for b in batches])

    batches, r1 = rows(3)
    assert len(batches) == 8
    b = batches[0]
    assert b["observed"].shape == (8, 32, 32) and b["psf"].shape == (8, 32, 32)
    assert b["noise_power"].shape == (8, 32, 17) and b["noise_sigma"].shape == (8,)
    assert b["conditions"].shape == (8, 3) and b["observed"].dtype.name == "float32"
    assert sorted(r1) == list(range(64)) and list(r1) != list(range(64))
    _, r2 = rows(3)
    np.testing.assert_array_equal(r1, r2)  # same seed, same order
    assert list(rows(4)[1]) != list(r1) and list(rows(3, epoch=1)[1]) != list(r1)
    ordered = list(stamp_dataset(tiny_dataset, 10, fields=("row_id",), shuffle_buffer=0,
                                 drop_remainder=False))
    np.testing.assert_array_equal(np.concatenate([x["row_id"] for x in ordered]), np.arange(64))
    full = read_stamps(tiny_dataset, fields)
    i = int(b["row_id"][0])
    np.testing.assert_array_equal(b["observed"][0].numpy(), full["observed"][i])
    with pytest.raises(UnknownKeyError, match="noise_power"):
        stamp_dataset(tiny_dataset, 8, fields=("noise_powr",))


def test_real_cosmos_realism_set():
    r = load_real_cosmos(64)
    assert r["observed"].shape == (100, 64, 64) and r["psf"].shape == (100, 64, 64)
    assert r["noise_power"].shape == (100, 64, 33) and np.all(r["noise_power"] > 0)
    assert r["conditions"].shape == (100, 3) and np.all(np.isfinite(r["conditions"]))
    assert np.all(np.isfinite(r["observed"])) and np.all(r["noise_sigma"] > 0)
    np.testing.assert_allclose(r["psf"].sum(axis=(1, 2)), 1.0, atol=1e-5)
    cat = r["catalog"]
    assert len(cat) == 100 and np.all(np.isfinite(cat["hlr_psf_free"]))
    np.testing.assert_allclose(r["conditions"][:, 1], 0.03 * cat["flux_radius"], rtol=1e-6)
    # the galaxy is at the centre of its stamp: the flux-weighted centre is near (N-1)/2
    img = np.clip(r["observed"], 0, None).sum(axis=0)
    yy, xx = np.indices(img.shape)
    assert abs((img * yy).sum() / img.sum() - 31.5) < 1.5
    assert abs((img * xx).sum() / img.sum() - 31.5) < 1.5
    # stamp flux in the catalog unit: total flux of the brightest stamps ~ 10**(-0.4 (MAG-25.94))
    bright = np.argsort(r["conditions"][:, 0])[:10]
    ratio = r["observed"][bright].sum(axis=(1, 2)) / 10 ** (-0.4 * (r["conditions"][bright, 0]
                                                                     - 25.94))
    assert np.all((ratio > 0.5) & (ratio < 1.5))


def test_dataset_config_errors(tmp_path):
    with pytest.raises(UnknownKeyError, match="Did you mean 'stamp_size'"):
        build_stamp_dataset(tmp_path, dict(n_galaxies=4, stamp_sise=32))
    with pytest.raises(ConfigError, match="noise"):
        build_stamp_dataset(tmp_path, dict(n_galaxies=4, noise="poisson"))
    with pytest.raises(ConfigError, match="stamp_size"):
        build_stamp_dataset(tmp_path, dict(n_galaxies=4, stamp_size=31))
    with pytest.raises(ConfigError, match="incomplete"):
        build_stamp_dataset(tmp_path / "x", dict(n_galaxies=4, stamp_size=16, shard_size=2),
                            max_new_shards=1)
        read_stamps(tmp_path / "x")
    assert json.loads((tmp_path / "x" / "manifest.json").read_text())["status"] == "incomplete"
