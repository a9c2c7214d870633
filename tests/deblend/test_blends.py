"""Blended scenes with truth (astrogen.physics.blends) and the blend training set builder."""
import json

import numpy as np
import pytest

from astrogen.catalog.cosmos import CosmosSampler
from astrogen.datasets.blends import (BlendDatasetConfig, blend_dataset_is_complete,
                                      build_blend_dataset, read_blend_scenes)
from astrogen.errors import ConfigError
from astrogen.physics.blends import (BlendBatch, BlendGeometry, blendedness, dihedral,
                                     fractions_in_order, make_blends, ownership, place,
                                     truth_targets)
from astrogen.physics.psf import build_psf
from astrogen.physics.surveys import get_survey

SURVEY = get_survey({"base": "hst_cosmos", "pixel_scale": 0.06})
PSF = build_psf(SURVEY.psf)
GEOM = BlendGeometry(stamp_size=32, min_objects=2, max_objects=3, central_offset=1.0,
                     separation=(0.5, 2.0), min_separation=2.5, max_separation=8.0, margin=12)


@pytest.fixture(scope="module")
def rows():
    return CosmosSampler(mag_range=(19, 23)).sample(11, np.arange(12))


@pytest.fixture(scope="module")
def noiseless(rows):
    return make_blends(rows, GEOM, SURVEY, PSF, seed=3, add_noise=False)


def test_shapes_and_truth_table(noiseless):
    b = noiseless
    assert isinstance(b, BlendBatch)
    assert b.images.shape == (4, 32, 32) and b.models.shape == (4, 3, 32, 32)
    assert list(b.scene_ids) == [0, 1, 2, 3]
    counts = np.bincount(np.asarray(b.objects["scene_id"]))
    assert set(counts) <= {2, 3}
    for col in ("x", "y", "flux", "flux_stamp", "mag", "blendedness", "sep_nearest", "central"):
        assert col in b.objects.colnames
    # empty slots are zero
    for sid, n in enumerate(counts):
        assert np.all(b.models[sid, n:] == 0)


def test_truth_sums_to_noiseless_scene(noiseless):
    b = noiseless
    np.testing.assert_array_equal(b.images, b.models.sum(axis=1))
    # flux in the stamp is the sum of the object's model and at most its true total flux
    fs = np.asarray(b.objects["flux_stamp"])
    ft = np.asarray(b.objects["flux"])
    assert np.all(fs <= ft * 1.001) and np.all(fs > 0.5 * ft)


def test_positions_are_the_centres(noiseless):
    b = noiseless
    for r in b.objects:
        m = b.models[list(b.scene_ids).index(r["scene_id"]), r["slot"]].astype(float)
        yy, xx = np.indices(m.shape)
        # first moments inside a circular aperture centred on the stated position: a
        # point-symmetric profile gives back its centre, even when the stamp cuts it
        rad = min(r["x"], r["y"], 31 - r["x"], 31 - r["y"], 6.0)
        assert rad >= 3.0
        w = m * (np.hypot(xx - r["x"], yy - r["y"]) <= rad)
        cx, cy = (xx * w).sum() / w.sum(), (yy * w).sum() / w.sum()
        assert abs(cx - r["x"]) < 0.2 and abs(cy - r["y"]) < 0.2


def test_noise_and_chunk_independence(rows):
    full = make_blends(rows, GEOM, SURVEY, PSF, seed=3)
    half = make_blends(rows[6:], GEOM, SURVEY, PSF, seed=3)
    np.testing.assert_array_equal(full.images[2:], half.images)
    clean = full.models.sum(axis=1)
    var = SURVEY.sky_level + np.clip(clean, 0, None) + SURVEY.read_noise ** 2
    assert abs(((full.images - clean) / np.sqrt(var)).std() - 1) < 0.05


def test_fractions_ownership_blendedness(noiseless):
    m = noiseless.models[0]
    f = fractions_in_order(m, 1.0)
    assert f.shape == (32, 32, 4)
    np.testing.assert_allclose(f.sum(-1), 1.0, atol=1e-5)
    t = np.percentile(m.sum(0), 50)
    lab = ownership(m, t)
    assert set(np.unique(lab)) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(lab == 0, m.sum(0) <= t)
    inside = lab > 0
    np.testing.assert_array_equal(lab[inside], 1 + np.argmax(m, 0)[inside])
    assert blendedness(m[:1])[0] == pytest.approx(0.0)
    tt = truth_targets(noiseless.models, np.full(4, 20.0))
    assert tt["fractions"].shape == (4, 32, 32, 4)
    assert set(np.unique(tt["classes"])) <= {0, 1, 2}


def test_dihedral_and_place():
    a = np.zeros((8, 8))
    a[5, 2] = 1  # y=5, x=2; centre 3.5 -> offset (-1.5, 1.5)
    for k in range(8):
        b, (dx, dy) = dihedral(a, (-1.5, 1.5), k)
        y, x = np.unravel_index(np.argmax(b), b.shape)
        assert (x - 3.5, y - 3.5) == (dx, dy)
    c = np.arange(16.0).reshape(4, 4)
    np.testing.assert_array_equal(place(c, (1, 0), 2), c[1:3, 0:2])
    with pytest.raises(ConfigError):
        place(c, (2, 0), 2)


def test_geometry_checks():
    with pytest.raises(ConfigError, match="margin"):
        BlendGeometry(stamp_size=32, max_separation=8, margin=4)
    with pytest.raises(ConfigError):
        BlendGeometry(stamp_size=33)
    with pytest.raises(ConfigError):
        BlendGeometry(min_objects=3, max_objects=2)


TINY = dict(n_scenes=24, n_library=6, stamp_size=32, central_offset=1.0,
            separation=[0.5, 2.0], max_separation=8.0, margin=12, mag_range=[19, 23],
            shard_size=10, library_shard_size=4, seed=5)


def test_dataset_build_resume_and_identity(tmp_path):
    full = build_blend_dataset(tmp_path / "a", TINY)
    assert full["status"] == "complete" and blend_dataset_is_complete(tmp_path / "a")
    a = read_blend_scenes(tmp_path / "a", ("image", "models", "sigma", "positions"))
    assert a["image"].shape == (24, 32, 32) and a["models"].shape == (24, 2, 32, 32)
    # an interrupted build (last shard and the status missing) resumes to the same data
    b_path = tmp_path / "b"
    build_blend_dataset(b_path, {**TINY, "shard_size": 10})
    man = json.loads((b_path / "manifest.json").read_text())
    last = man["shards"].pop()
    (b_path / last["file"]).unlink()
    man["status"] = "building"
    (b_path / "manifest.json").write_text(json.dumps(man))
    assert not blend_dataset_is_complete(b_path)
    build_blend_dataset(b_path, {**TINY, "shard_size": 10})
    b = read_blend_scenes(b_path, ("image", "models"))
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["models"], b["models"])
    # noise is the only difference between image and the summed models
    clean = a["models"].sum(1)
    var = SURVEY.sky_level + np.clip(clean, 0, None) + SURVEY.read_noise ** 2
    assert abs(((a["image"] - clean) / np.sqrt(var)).std() - 1) < 0.05
    # another configuration in the same folder is refused
    with pytest.raises(ConfigError, match="another configuration"):
        build_blend_dataset(tmp_path / "a", {**TINY, "seed": 6})
    # the sampler version is recorded; a folder built by the biased version-1 sampler (no
    # record) or any other version is refused, naming the key and the version
    from astrogen.catalog.cosmos import CosmosSampler

    assert full["sampler_version"] == CosmosSampler.VERSION >= 2
    for old in (None, CosmosSampler.VERSION + 1):
        man = json.loads((b_path / "manifest.json").read_text())
        man.pop("sampler_version", None)
        if old is not None:
            man["sampler_version"] = old
        (b_path / "manifest.json").write_text(json.dumps(man))
        with pytest.raises(ConfigError, match="sampler version") as err:
            build_blend_dataset(b_path, {**TINY, "shard_size": 10})
        assert err.value.key == "dataset.path"
    with pytest.raises(ConfigError):
        BlendDatasetConfig.from_dict({**TINY, "noise": "pink"})


def test_order_by_centre_distance():
    from astrogen.physics.blends import order_by_centre_distance

    c = 15.5  # centre of a 32-pixel stamp
    pos = np.array([[[c + 5, c], [c + 1, c - 1], [np.nan, np.nan]],
                    [[c, c + 2], [c + 9, c + 9], [c - 3, c]]])
    np.testing.assert_array_equal(order_by_centre_distance(pos, 32), [[1, 0, 2], [0, 2, 1]])
    np.testing.assert_array_equal(order_by_centre_distance(pos[0], 32), [1, 0, 2])
