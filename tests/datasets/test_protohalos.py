"""Protohalo data set: the mask is the lattice image of the FoF haloes above the
threshold, the build resumes (a finished shard is not redone, a missing one is rebuilt
identically), another configuration in the same folder is refused, settings are checked."""
import numpy as np
import pytest

from astrogen.datasets.protohalos import (ProtoHaloDatasetConfig, build_protohalo_dataset,
                                          protohalo_dataset_is_complete, read_protohalo_box,
                                          read_protohalo_boxes)
from astrogen.errors import ConfigError

TINY = dict(n_boxes=2, n_grid=16, box_size=16.0, n_steps=3, z_init=4.0, min_members=8,
            mask_min_particles=10, sigma8=1.2)


def test_build_resume_and_mask(tmp_path):
    cfg = ProtoHaloDatasetConfig(**TINY)
    logs = []
    build_protohalo_dataset(tmp_path, cfg, log=logs.append)
    assert len(logs) == 2 and protohalo_dataset_is_complete(tmp_path)
    first = read_protohalo_box(tmp_path, 0)
    # the mask is exactly the cells of particles in FoF haloes of >= mask_min_particles
    hid, counts = first["halo_id"], first["halo_n"]
    big = np.flatnonzero(counts >= 10)
    assert len(big) >= 1
    np.testing.assert_array_equal(first["mask"], np.isin(hid, big))
    assert (np.bincount(hid[hid >= 0], minlength=len(counts)) == counts).all()
    np.testing.assert_allclose(first["halo_mass"], counts * cfg.particle_mass())
    # resume: nothing to redo; a lost shard is rebuilt bit-identically
    (tmp_path / "box_00001.npz").rename(tmp_path / "lost.npz")
    mtime = (tmp_path / "box_00000.npz").stat().st_mtime_ns
    logs.clear()
    build_protohalo_dataset(tmp_path, cfg, log=logs.append)
    assert len(logs) == 1 and "box 1 " in logs[0]
    assert (tmp_path / "box_00000.npz").stat().st_mtime_ns == mtime
    with np.load(tmp_path / "lost.npz") as old:
        again = read_protohalo_box(tmp_path, 1)
        for k in ("linear", "mask", "halo_id", "halo_mass"):
            np.testing.assert_array_equal(old[k], again[k])
    data = read_protohalo_boxes(tmp_path)
    assert data["linear"].shape == (2, 16, 16, 16) and list(data["box_id"]) == [0, 1]
    # a held-out folder (other first_box) has other fields
    held = ProtoHaloDatasetConfig(**{**TINY, "n_boxes": 1, "first_box": 100})
    build_protohalo_dataset(tmp_path / "held", held, log=lambda s: None)
    assert not np.allclose(read_protohalo_box(tmp_path / "held", 100)["linear"],
                           first["linear"])
    with pytest.raises(ConfigError, match="another configuration"):
        build_protohalo_dataset(tmp_path, ProtoHaloDatasetConfig(**{**TINY, "seed": 1}))


@pytest.mark.parametrize("key, value", [("n_grid", 12), ("mask_min_particles", 4),
                                        ("box_size", -1.0), ("redshift", 20.0),
                                        ("first_box", -1)])
def test_config_is_checked(key, value):
    with pytest.raises(ConfigError, match=key if key != "mask_min_particles" else "min"):
        ProtoHaloDatasetConfig.from_dict({**TINY, key: value})
