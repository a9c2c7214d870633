"""Halo-map network: slab halo masks, mask -> catalog (periodic components), matching, Dice,
serialization and a few training steps on a synthetic slice dataset."""
import json
import os
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from astrogen.datasets.nbody_slices import halo_slab_maps  # noqa: E402
from astrogen.nbody.slabs import project_slabs  # noqa: E402
from astrogen.nbody.halo_maps import dice, mask_to_catalog, match_catalogs  # noqa: E402


def test_project_slabs_layout():
    f = np.arange(4 ** 3, dtype=float).reshape(4, 4, 4)
    p = project_slabs(f, 2)
    assert p.shape == (3 * 2, 4, 4)
    np.testing.assert_allclose(p[0], f[:2].mean(0))          # axis 0, slab 0
    np.testing.assert_allclose(p[3], f[:, 2:].mean(1))       # axis 1, slab 1
    np.testing.assert_allclose(p[5], f[:, :, 2:].mean(2))    # axis 2, slab 1
    assert project_slabs(f, 2).mean() == pytest.approx(f.mean())


def test_halo_slab_maps_geometry():
    # one halo at (x, y, z) = (5.0, 30.9, 17.0) Mpc/h in a 32 Mpc/h box of 16 cells (2 Mpc/h)
    h = {"x": [5.0], "y": [30.9], "z": [17.0], "mass": [2e13]}
    mask, logm = halo_slab_maps(h, 16, 32.0, 4, radius=1.0)
    assert mask.shape == (12, 16, 16)
    # along z (axis 2): cell z = 8.5 -> slab 2 -> image 2 * 4 + 2; centre (2.5, 15.45) px
    im = mask[10]
    assert im[2, 15] and im[3, 15] and im[2, 0]  # periodic in y
    assert mask[[8, 9, 11]].sum() == 0
    assert logm[10][im > 0] == pytest.approx(np.log10(2e13))
    # one slab per axis holds the halo
    assert [mask[a * 4:(a + 1) * 4].reshape(4, -1).any(1).sum() for a in range(3)] == [1, 1, 1]


def test_mask_to_catalog_planted_blobs_and_matching():
    n, cell = 32, 2.0
    prob = np.zeros((n, n))
    logm = np.full((n, n), 13.0)
    centres = [(5, 7), (20, 25), (31, 16)]  # the last wraps around the border
    for (i, j), lm in zip(centres, (13.2, 13.8, 14.1)):
        for di, dj in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
            prob[(i + di) % n, (j + dj) % n] = 0.9
            logm[(i + di) % n, (j + dj) % n] = lm
    cat = mask_to_catalog(prob, logm, 0.5, cell_size=cell)
    assert len(cat["u"]) == 3
    order = np.argsort(cat["mass"])
    np.testing.assert_allclose(np.log10(cat["mass"][order]), [13.2, 13.8, 14.1])
    got = np.column_stack([cat["u"], cat["v"]])[order]
    np.testing.assert_allclose(got, np.array(centres, float) * cell, atol=1e-6)
    assert list(cat["n_pixels"]) == [5, 5, 5]
    true = np.array(centres, float) * cell + 1.0
    true[2, 0] = 0.5  # across the periodic border from 62
    tm, pm = match_catalogs(true, got, n * cell, max_dist=3.0)
    assert tm.all() and pm.all()
    tm, pm = match_catalogs(true, got[:2], n * cell, max_dist=3.0)
    assert tm.sum() == 2 and pm.all()
    assert dice(prob > 0.5, prob > 0.5) == 1.0
    assert dice(np.zeros((2, 2)), np.ones((2, 2))) == 0.0


def test_halo_unet_round_trip_and_training(tmp_path):
    import keras

    from astrogen.models.halo_unet import HaloUNet, load_halo_unet
    from astrogen.training import run_training
    from astrogen.datasets.nbody_slices import (SliceDatasetConfig,
                                                write_synthetic_dataset)

    keras.utils.set_random_seed(0)
    m = HaloUNet(size=16, channels=[4, 8], transform_a=1.0, meta={"box_size": 32.0})
    x = np.exp(np.random.default_rng(1).standard_normal((2, 16, 16)))
    p, lm = m.predict(x)
    m.save(tmp_path / "h.keras")
    back = load_halo_unet(tmp_path / "h.keras")
    p2, lm2 = back.predict(x)
    np.testing.assert_array_equal(p, p2)
    np.testing.assert_array_equal(lm, lm2)
    assert back.meta == {"box_size": 32.0}

    write_synthetic_dataset(tmp_path / "data", SliceDatasetConfig(
        n_boxes=1, n_grid=16, box_size=32.0, slab_thickness=4, n_steps=3, z_init=4.0,
        min_members=8))
    cfg = tmp_path / "halo.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        model: halo_unet
        output: {tmp_path}/halo.keras
        dataset: {{path: {tmp_path}/data, n_boxes: 1, n_grid: 16, box_size: 32.0,
                   slab_thickness: 4, n_steps: 3, z_init: 4.0, min_members: 8}}
        halo_unet: {{channels: [4, 8]}}
        training: {{steps: 2, batch_size: 4, checkpoint_every: 1, log_every: 1}}
        """))
    res = run_training(str(cfg))
    assert res["complete"] and res["steps_done"] == 2
    rows = [json.loads(r) for r in
            (tmp_path / "halo_run" / "losses.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) and 0 <= r["soft_dice"] <= 1 for r in rows)
    model = load_halo_unet(tmp_path / "halo.keras")
    assert model.meta["halo_radius"] == 1.0 and model.meta["training"]["steps_done"] == 2
