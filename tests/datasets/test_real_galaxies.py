"""Real-galaxy training set (astrogen.datasets.real_galaxies) and the FlowVAE trained on it."""
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from astrogen.datasets import real_galaxies as rg  # noqa: E402
from astrogen.errors import ConfigError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
REAL_CONFIG = REPO / "configs" / "flowvae_real.yaml"
SMALL = {"source": "real_galaxy_catalog", "stamp_size": 32, "max_galaxies": 6,
         "holdout_fraction": 0.34, "shard_size": 16, "seed": 3}


def _galsim_transform(a):
    """galsim (dudx, dudy, dvdx, dvdy) of dihedral transform ``a`` of an array
    ``img[y, x]``: transpose, then flip y, then flip x."""
    t, fy, fx = a & 1, (a >> 1) & 1, (a >> 2) & 1
    m = np.array([[0, 1], [1, 0]]) if t else np.eye(2)
    m = np.diag([-1 if fx else 1, -1 if fy else 1]) @ m  # new (x, y) = m @ old (x, y)
    return m


@pytest.mark.parametrize("a", range(8))
def test_dihedral_power_is_the_spectrum_of_the_transformed_noise(a):
    """The transformed noise power equals, exactly, the power of the COSMOS correlated
    noise transformed by GalSim the same way as the image."""
    import galsim

    from astrogen.data import cosmos_dir
    from astrogen.physics.noise_power import noise_power_from_correlation

    n = 16
    noise = galsim.getCOSMOSNoise(file_name=str(cosmos_dir() / "acs_I_unrot_sci_20_cf.fits"),
                                  cosmos_scale=0.03)
    p0 = noise_power_from_correlation(noise, n, 0.03)
    m = _galsim_transform(a)
    moved = noise.transform(*m.ravel().tolist()) if a else noise
    expected = noise_power_from_correlation(moved, n, 0.03)
    got = rg.dihedral_power(p0, a)
    # exact but for the lag N/2, which the periodic N x N grid takes from one side only
    err = np.abs(got - expected).max()
    assert err < 1e-3 * p0.max()
    if a not in (0, 6):  # the COSMOS correlations are anisotropic: the transform matters
        assert np.abs(p0 - expected).max() > 10 * err


@pytest.mark.parametrize("a", range(8))
def test_dihedral_transforms_commute_with_the_psf_convolution(a):
    """transform(galaxy * PSF) == transform(galaxy) * transform(PSF): the PSF-aware
    likelihood of a transformed stamp is exact."""
    from astrogen.models.psf_likelihood import convolve

    rng = np.random.default_rng(a)
    n = 16
    gal = np.zeros((n, n))
    gal[4:12, 5:10] = rng.random((8, 5))  # away from the border: the convolution is local
    psf = np.zeros((n, n))
    psf[n // 2 - 2:n // 2 + 3, n // 2 - 1:n // 2 + 2] = rng.random((5, 3))
    psf /= psf.sum()
    obs = np.asarray(convolve(gal[None].astype(np.float32), psf[None].astype(np.float32)))[0]
    lhs = rg.dihedral_image(obs, a)
    rhs = np.asarray(convolve(rg.dihedral_image(gal, a)[None].astype(np.float32),
                              rg.dihedral_psf(psf, a)[None].astype(np.float32)))[0]
    assert np.allclose(lhs, rhs, atol=1e-5 * obs.max())
    assert rg.dihedral_psf(psf, a).sum() == pytest.approx(1.0)


def test_dihedral_transforms_are_the_eight_distinct_elements():
    img = np.arange(16.0).reshape(4, 4)
    images = {rg.dihedral_image(img, a).tobytes() for a in range(8)}
    assert len(images) == 8
    with pytest.raises(ConfigError, match="transform"):
        rg.dihedral_image(img, 8)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    path = tmp_path_factory.mktemp("real") / "set"
    return path, rg.build_real_dataset(path, SMALL)


def test_build_splits_whole_galaxies_and_augments_each_eight_times(small_set):
    from astrogen.datasets.galaxy_stamps import read_stamps

    path, m = small_set
    assert m["status"] == "complete" and m["split"] == {
        "train_galaxies": 4, "holdout_galaxies": 2, "holdout_fraction": 0.34,
        "holdout_path": "holdout"}
    train_ids, hold_ids = set(), set()
    for f in sorted(path.glob("shard_*.npz")):
        with np.load(f) as z:
            train_ids |= set(z["galaxy_index"].tolist())
            assert np.array_equal(z["transform"], z["row_id"] % 8)
    with np.load(path / "holdout" / "shard_00000.npz") as z:
        hold_ids = set(z["galaxy_index"].tolist())
        assert set(z["transform"].tolist()) == {0}
    assert not train_ids & hold_ids and train_ids | hold_ids == set(range(6))
    d = read_stamps(path, fields=("observed", "psf", "noise_power", "noise_sigma",
                                  "conditions"))
    assert d["observed"].shape == (32, 32, 32) and d["noise_power"].shape == (32, 32, 17)
    for g in range(4):
        rows = slice(8 * g, 8 * g + 8)
        # same galaxy, its 8 transforms: equal flux, conditions and noise variance
        assert np.allclose(d["observed"][rows].sum(axis=(1, 2)), d["observed"][8 * g].sum(),
                           rtol=1e-5)
        assert np.all(d["conditions"][rows] == d["conditions"][8 * g])
        assert len({d["observed"][r].tobytes() for r in range(8 * g, 8 * g + 8)}) == 8
        assert np.allclose(d["noise_sigma"][rows], d["noise_sigma"][8 * g])
        # the transforms move the spectrum's values around (checked against GalSim above)
        assert np.allclose(d["noise_power"][rows].max(axis=(1, 2)),
                           d["noise_power"][8 * g].max(), rtol=1e-6)
    assert np.allclose(d["psf"].sum(axis=(1, 2)), 1.0, atol=1e-5)


def test_untransformed_rows_equal_the_real_cosmos_loader(small_set):
    """Row 8g of the data set is the shipped stamp of its galaxy exactly as the realism set
    loads it (same cut, padding noise, PSF and noise power)."""
    from astrogen.datasets.galaxy_stamps import load_real_cosmos, read_stamps

    path, _ = small_set
    d = read_stamps(path, fields=("observed", "psf", "noise_power", "conditions"))
    idx = []
    for f in sorted(path.glob("shard_*.npz")):
        with np.load(f) as z:
            idx += z["galaxy_index"][::8].tolist()
    ref = load_real_cosmos(32, seed=SMALL["seed"])
    for k, i in enumerate(idx):
        np.testing.assert_array_equal(d["observed"][8 * k], ref["observed"][i])
        np.testing.assert_array_equal(d["psf"][8 * k], ref["psf"][i])
        np.testing.assert_allclose(d["noise_power"][8 * k], ref["noise_power"][i], rtol=1e-5)
        assert d["conditions"][8 * k][0] == pytest.approx(ref["conditions"][i][0])
        assert d["conditions"][8 * k][2] == pytest.approx(ref["conditions"][i][2])


def test_rebuild_is_a_no_op_and_another_config_is_refused(small_set):
    path, m = small_set
    assert rg.build_real_dataset(path, SMALL)["shards"] == m["shards"]
    with pytest.raises(ConfigError, match="another real-galaxy data set"):
        rg.build_real_dataset(path, dict(SMALL, seed=4))


@pytest.mark.parametrize("key, value", [("stamp_size", 31), ("holdout_fraction", 1.0),
                                        ("augment", "rot45"), ("max_galaxies", 1),
                                        ("source", "simulated")])
def test_bad_settings_name_the_key(key, value):
    with pytest.raises(ConfigError) as exc:
        rg.RealGalaxyDatasetConfig.from_dict(dict(SMALL, **{key: value}))
    assert exc.value.key == key and repr(value) in str(exc.value.received)


def test_auto_finds_the_downloaded_cosmos_sample(tmp_path, monkeypatch):
    """catalog_dir: auto uses GalSim's download folder when it holds the 25.2 catalog, so a
    user with the full sample runs the same command."""
    import galsim

    from astrogen.data import cosmos_dir

    cfg = rg.RealGalaxyDatasetConfig.from_dict(SMALL)
    monkeypatch.setattr(galsim.meta_data, "share_dir", str(tmp_path))
    assert rg.resolve_catalog(cfg)[0] == cosmos_dir()  # nothing downloaded: shipped sample
    full = tmp_path / rg.FULL_SAMPLE_DIR
    full.mkdir()
    for f in cosmos_dir().iterdir():
        (full / f.name).symlink_to(f)
    (full / rg.FULL_SAMPLE_CATALOG).symlink_to(cosmos_dir() / rg.SHIPPED_CATALOG)
    (full / "real_galaxy_catalog_25.2_fits.fits").symlink_to(
        cosmos_dir() / "real_galaxy_catalog_26_extension_example_fits.fits")
    assert rg.resolve_catalog(cfg) == (full, rg.FULL_SAMPLE_CATALOG,
                                       "real_galaxy_catalog_25.2_fits.fits")


def test_real_training_config_runs_end_to_end(small_set, tmp_path):
    """configs/flowvae_real.yaml through the trainer registry and the one loop, tiny: the
    training rows are the augmented split, the ELBO is evaluated on the held-out galaxies,
    the saved model decodes positive 32x32 profiles."""
    from astrogen.models.flowvae import load_flowvae
    from astrogen.training import run_training

    path, _ = small_set
    ov = [f"dataset.path={path}", "dataset.stamp_size=32", "dataset.max_galaxies=6",
          "dataset.holdout_fraction=0.34", "dataset.shard_size=16", "dataset.seed=3",
          f"output={tmp_path / 'm.keras'}", f"run_dir={tmp_path / 'run'}",
          "flowvae.latent_dim=4", "flowvae.channels=[4,4]", "flowvae.flow_hidden_units=[8]",
          "flowvae.flow_num_bijectors=1", "flowvae.kl_warmup_steps=0",
          "training.batch_size=8", "training.vae_steps=4", "training.flow_steps=2",
          "training.flow_batch_size=16", "training.latent_batch_size=16",
          "training.monitor_size=0", "training.shuffle_buffer=8", "training.log_every=1",
          "training.progress=false"]
    res = run_training(str(REAL_CONFIG), overrides=ov)
    assert res["complete"]
    ev = json.loads((tmp_path / "run" / "eval_real.json").read_text())
    assert ev["n"] == 2 and ev["set"].startswith("holdout") and np.isfinite(ev["loss"])
    model = load_flowvae(tmp_path / "m.keras")
    assert (model.upsampling, model.padding) == ("bilinear", "reflect")
    img = np.asarray(model.decode(np.zeros((2, 4), np.float32)))
    assert img.shape == (2, 32, 32) and np.all(img > 0)
