"""SceneResult: the one type every scene deblender returns; shapes are checked on creation."""
import numpy as np
import pytest
from astropy.table import Table

from astrogen.deblend.result import SceneResult


def _cat(n):
    return Table({"id": np.arange(1, n + 1), "x": np.zeros(n), "y": np.zeros(n)})


def test_consistent_result_counts_objects():
    seg = np.zeros((5, 6), np.int32)
    seg[1, 1], seg[3, 4] = 1, 2
    r = SceneResult(_cat(2), seg, fractions=np.zeros((2, 5, 6), np.float32),
                    uncertainty=np.zeros((5, 6), np.float32), bands=("i",), pixel_scale=0.2)
    assert r.n_objects == 2


def test_empty_scene_is_valid():
    assert SceneResult(_cat(0), np.zeros((4, 4), np.int32)).n_objects == 0


@pytest.mark.parametrize("kwargs, match", [
    ({"segmentation": np.zeros((2, 3, 3), np.int32)}, "segmentation must be"),
    ({"segmentation": np.full((3, 3), 3, np.int32)}, "object id 3"),
    ({"fractions": np.zeros((1, 3, 3))}, "fractions must have shape"),
    ({"uncertainty": np.zeros((2, 2))}, "uncertainty must have shape"),
])
def test_inconsistent_shapes_are_refused(kwargs, match):
    args = {"catalog": _cat(2), "segmentation": np.zeros((3, 3), np.int32)} | kwargs
    with pytest.raises(ValueError, match=match):
        SceneResult(**args)
