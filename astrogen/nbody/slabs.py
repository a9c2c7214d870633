"""Projection of 3-D fields into 2-D slabs (pure numpy): the geometry shared by the slice
data sets, the N-body emulators and their stages."""
from __future__ import annotations

import numpy as np

from astrogen.errors import ConfigError

__all__ = ["slab_geometry", "project_slabs"]


def slab_geometry(n_grid: int, box_size: float, slab_thickness: int) -> dict:
    """Cell size (Mpc/h), slab depth (Mpc/h) and slabs per axis."""
    cell = float(box_size) / int(n_grid)
    return {"cell_size": cell, "slab_depth": cell * int(slab_thickness),
            "n_slabs": int(n_grid) // int(slab_thickness)}


def project_slabs(field3d: np.ndarray, thickness: int, axes=(0, 1, 2)) -> np.ndarray:
    """Mean of ``field3d`` over slabs of ``thickness`` cells along each axis of ``axes``.

    Returns an array ``(len(axes) * n / thickness, n, n)``: slab ``s`` along ``axes[a]`` is
    image ``a * n_slabs + s`` (the remaining two axes in increasing order).
    """
    f = np.asarray(field3d, dtype=np.float64)
    n = f.shape[0]
    if f.ndim != 3 or len(set(f.shape)) != 1 or n % int(thickness):
        raise ConfigError("must be a cube whose side is a multiple of the slab thickness.",
                          key="field", received={"shape": f.shape, "thickness": thickness})
    out = []
    for a in axes:
        g = np.moveaxis(f, a, 0).reshape(n // thickness, thickness, n, n).mean(axis=1)
        out.append(g)
    return np.concatenate(out, axis=0).astype(np.float32)
