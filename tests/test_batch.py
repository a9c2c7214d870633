"""StampBatch: one pixel scale for the batch or one per stamp."""
import numpy as np
import pytest
from astropy.table import Table

from astrogen.batch import StampBatch
from astrogen.errors import ConfigError


def _rows(n):
    return Table({"row_id": np.arange(n)})


def test_scalar_scale_broadcasts():
    b = StampBatch(np.zeros((3, 4, 4)), 0.03, _rows(3))
    assert isinstance(b.pixel_scale, float)
    assert b.pixel_scales.tolist() == [0.03] * 3 and b.uniform_scale


def test_per_stamp_scales():
    b = StampBatch(np.zeros((2, 4, 4)), [0.03, 0.06], _rows(2))
    assert b.pixel_scales.tolist() == [0.03, 0.06] and not b.uniform_scale


@pytest.mark.parametrize("scale", [[0.03, 0.06, 0.1], [0.03, 0.0], [0.03, np.nan], -1.0])
def test_bad_scales_refused(scale):
    with pytest.raises(ConfigError, match="pixel_scale"):
        StampBatch(np.zeros((2, 4, 4)), scale, _rows(2))
