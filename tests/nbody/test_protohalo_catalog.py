"""Protohalo mask -> catalogue: periodic components join across faces, the watershed and
the size-guided growth split two touching spheres that the components merge, masses are
cells x particle mass, centres are periodic, matching is one-to-one by shared cells."""
import numpy as np
import pytest

from astrogen.errors import ConfigError
from astrogen.nbody.protohalo_catalog import (grow_regions, match_regions,
                                              periodic_components, protohalo_regions,
                                              regions_to_catalog)

N = 24


def _ball(centre, radius, n=N):
    d = np.indices((n, n, n)).reshape(3, -1).T - np.asarray(centre, float)
    d -= n * np.rint(d / n)
    return (np.sqrt((d ** 2).sum(1)) <= radius).reshape(n, n, n)


def test_components_join_across_the_periodic_faces():
    ball = _ball((0, 0, 12), 3)  # split over the x and y faces by the array edges
    from scipy import ndimage

    assert ndimage.label(ball)[1] == 4  # non-periodic labelling cuts it in 4
    lab, n = periodic_components(ball)
    assert n == 1 and (lab > 0).sum() == ball.sum()


def _two_touching():
    a, b = _ball((8, 12, 12), 4.0), _ball((15, 12, 12), 4.0)  # overlap: one component
    return a, b


def test_watershed_and_growth_split_touching_spheres():
    a, b = _two_touching()
    mask = a | b
    assert periodic_components(mask)[1] == 1
    lab, n = protohalo_regions(mask.astype(float), 0.5, "watershed", min_distance=2)
    assert n == 2
    npred = np.where(a & ~b, a.sum(), 0) + np.where(b & ~a, b.sum(), 0) \
        + np.where(a & b, a.sum(), 0)
    lab_g, n_g = grow_regions(mask, np.maximum(npred, 1))
    assert n_g == 2
    for labels in (lab, lab_g):
        sizes = np.sort(np.bincount(labels.ravel())[1:])
        assert sizes.sum() == mask.sum()
        assert abs(sizes[0] - sizes[1]) <= 0.1 * sizes.sum()
        # each region is centred on its own sphere
        cat = regions_to_catalog(labels, 24.0, 1.0)
        xs = np.sort(cat["x_lag"])
        np.testing.assert_allclose(xs, [8.0, 15.0], atol=0.7)
    with pytest.raises(ConfigError, match="n_pred"):
        protohalo_regions(mask.astype(float), 0.5, "grow")


def test_catalogue_masses_and_periodic_centres():
    ball = _ball((23.5, 0.0, 12.0), 3.2)
    lab, _ = periodic_components(ball)
    cat = regions_to_catalog(lab, 48.0, 2.5e11, min_particles=5, lattice_shift=0.25)
    assert len(cat["mass"]) == 1
    assert cat["n_particles"][0] == ball.sum()
    assert cat["mass"][0] == pytest.approx(ball.sum() * 2.5e11)
    # cell i sits at (i + 0.25) * 2 Mpc/h; the centre wraps instead of averaging to the middle
    x = np.mod(cat["x_lag"][0] - (23.5 + 0.25) * 2.0 + 24.0, 48.0) - 24.0
    assert abs(x) < 0.2 and min(cat["y_lag"][0], 48 - cat["y_lag"][0]) < 0.7
    assert np.isnan(cat["x"][0])  # no linear field given: no Eulerian estimate
    assert len(regions_to_catalog(lab, 48.0, 1.0, min_particles=int(ball.sum()) + 1)
               ["mass"]) == 0


def test_eulerian_positions_follow_the_displacement():
    from astrogen.cosmology.background import Cosmology

    n, L = 16, 32.0
    k = 2 * np.pi / L
    x = (np.arange(n) + 0.25) * L / n
    # a single plane wave: Zel'dovich displacement psi_x = -A sin(kx) / k ... at z = 0
    lin = 0.5 * np.cos(k * x)[:, None, None] * np.ones((n, n, n))
    lab = np.zeros((n, n, n), int)
    lab[3:6, 4:8, 4:8] = 1
    cat = regions_to_catalog(lab, L, 1.0, delta_linear=lin, cosmology=Cosmology(),
                             lattice_shift=0.25)
    moved = cat["x"][0] - cat["x_lag"][0]
    assert moved < -0.5  # particles stream towards the crest of the wave at x = 0
    assert cat["y"][0] == pytest.approx(cat["y_lag"][0], abs=1e-6)


def test_match_is_one_to_one_by_shared_cells():
    true = np.zeros((4, 4, 4), int)
    true[0, :, :] = 1
    true[2, :2, :] = 2
    pred = np.zeros_like(true)
    pred[0, :, :3] = 5  # 12 of 16 cells of halo 1
    pred[1, 1:, :] = 5  # and 12 cells outside it: shared = 0.75 of the smaller (16)
    pred[2:, :, :] = 6  # holds halo 2 but is 4x its size: still >= half of the smaller
    pred[1, 0, 0] = 7  # touches nothing
    m = match_regions(pred, true)
    assert sorted(m) == [(5, 1, 12), (6, 2, 8)]
    assert match_regions(pred, true, min_shared=0.9) == [(6, 2, 8)]
