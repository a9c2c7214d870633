"""The FlowVAE benchmark measures generated stamps at their own per-stamp pixel scale."""
import importlib.util
from pathlib import Path

import galsim
import numpy as np
from astropy.table import Table

from astrogen.batch import StampBatch


def _bench():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "flowvae_benchmark.py"
    spec = importlib.util.spec_from_file_location("flowvae_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _batch(hlrs, scales, n=96):
    """Round exponential profiles of half-light radius ``hlrs`` (arcsec) drawn on n x n stamps
    at per-stamp ``scales`` (arcsec/pixel), flux 100."""
    imgs = np.stack([galsim.Exponential(half_light_radius=h, flux=100.0)
                     .drawImage(nx=n, ny=n, scale=s).array for h, s in zip(hlrs, scales)])
    cat = Table({"row_id": np.arange(len(hlrs)), "hlr": np.asarray(hlrs, float)})
    return StampBatch(images=imgs.astype(np.float32), pixel_scale=np.asarray(scales, float),
                      catalog=cat)


def test_r50_uses_each_stamps_own_pixel_scale():
    bench = _bench()
    hlrs, scales = [0.15, 0.6], [0.03, 0.09]  # same size in pixels, different in arcsec
    b = _batch(hlrs, scales)
    r50 = np.array([bench.half_light_radius(b.images[i], float(b.pixel_scales[i]))
                    for i in range(len(b))])
    np.testing.assert_allclose(r50 / np.asarray(hlrs), 1.0, atol=0.03)


def test_on_grid_keeps_flux_and_size_and_passes_grid_stamps_through():
    bench = _bench()
    hlrs, scales = [0.12, 0.3], [0.03, 0.06]
    b = _batch(hlrs, scales)
    out = bench._on_grid(b, 64, 0.03)
    assert out.shape == (2, 64, 64)
    # a stamp already on the grid is returned bit for bit
    on = _batch([0.12], [0.03], n=64)
    np.testing.assert_array_equal(bench._on_grid(on, 64, 0.03)[0], on.images[0])
    # others (96 x 96 at 0.03" and at 0.06") become the profile drawn directly on the grid:
    # same flux (both cut by the same 1.92" field) and same measured size
    for i, h in enumerate(hlrs):
        direct = _batch([h], [0.03], n=64).images[0]
        assert abs(out[i].sum() / direct.sum() - 1.0) < 0.005
        r_out, r_direct = (bench.half_light_radius(a, 0.03) for a in (out[i], direct))
        assert abs(r_out / r_direct - 1.0) < 0.015  # coarse pixels broaden a little
