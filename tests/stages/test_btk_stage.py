"""deblend.btk: BTK blend batches deblended by a scene deblender as a pipeline source."""
from pathlib import Path

import numpy as np
import pytest

from astrogen.errors import ConfigError
from astrogen.stages.base import StageContext
from astrogen.stages.btk import DeblendBTK

CATSIM = str(Path(__file__).resolve().parents[2] / "examples" / "catsim" / "catsim_example.fits")


@pytest.mark.parametrize("kwargs, key", [
    ({"method": "unet9"}, "method"),
    ({"survey": "LSTT"}, "survey"),
    ({"min_objects": 3, "max_objects": 2}, "max_objects"),
    ({"max_shift": 13.0}, "max_shift"),
    ({"add_noise": "some"}, "add_noise"),
])
def test_bad_parameters_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        DeblendBTK(catalog_file=CATSIM, **kwargs)


def test_chunks_are_matched_catalogs_that_repeat_with_the_seed(tmp_path):
    pytest.importorskip("btk", reason="BlendingToolKit not installed: pip install "
                                      "'astrogen[btk]'")
    stage = DeblendBTK(catalog_file=CATSIM, n_batches=2, batch_size=3, max_objects=3)
    ctx = StageContext(name="btk", seed=7, output_dir=tmp_path, work_dir=tmp_path)
    stage.setup(ctx)
    assert stage.n_chunks() == 2
    t = stage.read_chunk(1)
    assert set(t["blend"]) <= {3, 4, 5}
    det, matched = np.asarray(t["detected"]), np.asarray(t["matched"])
    # every true object appears once: matched to a detection or as an undetected row
    n_true = int(matched.sum() + (~det).sum())
    assert 3 <= n_true <= 9
    # matched pairs lie within the match radius (one LSST i PSF FWHM, ~3.5 pix)
    d = np.hypot(t["x"][matched] - t["true_x"][matched], t["y"][matched] - t["true_y"][matched])
    assert np.all(d <= stage.match_radius) and 3.0 < stage.match_radius < 4.5
    again = DeblendBTK(catalog_file=CATSIM, n_batches=2, batch_size=3, max_objects=3)
    again.setup(ctx)
    assert np.array_equal(again.read_chunk(1)["true_flux_lsst_i"], t["true_flux_lsst_i"],
                          equal_nan=True)


def test_the_scene_network_deblends_btk_blends_in_every_band(tmp_path):
    """method unet: the shipped LSST g r i z network on BTK's u..y batches; the bands it was
    not trained on are measured with its light fractions; fluxes close to BTK's isolated
    truth."""
    pytest.importorskip("btk", reason="BlendingToolKit not installed: pip install "
                                      "'astrogen[btk]'")
    stage = DeblendBTK(catalog_file=CATSIM, n_batches=1, batch_size=6, max_objects=3,
                       method="unet")
    assert stage.uses_tensorflow and not DeblendBTK(catalog_file=CATSIM).uses_tensorflow
    ctx = StageContext(name="btk", seed=3, output_dir=tmp_path, work_dir=tmp_path)
    stage.setup(ctx)
    t = stage.read_chunk(0)
    m = np.asarray(t["matched"])
    assert m.sum() >= 6
    for band in ("lsst_u", "lsst_i", "lsst_y"):
        ratio = np.asarray(t[f"flux_{band}"][m]) / np.asarray(t[f"true_flux_{band}"][m])
        assert np.all(np.isfinite(ratio))
        assert abs(np.median(ratio) - 1.0) < 0.15, (band, np.median(ratio))
