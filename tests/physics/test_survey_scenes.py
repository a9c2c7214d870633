"""Multi-band survey scenes with truth (astrogen.physics.survey_scenes)."""
import numpy as np
import pytest

from astrogen.errors import ConfigError
from astrogen.physics.survey_scenes import (SceneSpec, galaxy_density, render_scene,
                                            scene_blendedness)


@pytest.fixture(scope="module")
def spec():
    return SceneSpec(size=32, bands=("lsst_r", "lsst_i"), margin=4)


def test_noiseless_scene_is_the_sum_of_its_objects_and_noise_is_the_surveys(spec):
    clean = render_scene(spec, 5, 3, noise=False)
    assert np.allclose(clean["image"], clean["models"].sum(axis=0), atol=1e-3)
    noisy = render_scene(spec, 5, 3)
    resid = noisy["image"] - clean["image"]
    quiet = clean["image"].sum(axis=0) < 1.0
    for b in range(2):
        assert resid[b][quiet].std() == pytest.approx(noisy["noise_sigma"][b], rel=0.15)
    # per-band fluxes inside the scene are the models' sums, at most the totals
    t = clean["truth"]
    for b, name in enumerate(clean["bands"]):
        assert np.allclose(t[f"flux_scene_{name}"], clean["models"][:, b].sum(axis=(1, 2)))
        assert np.all(t[f"flux_scene_{name}"] <= t[f"flux_{name}"] * 1.001 + 1e-3)


def test_scenes_are_seeded_by_seed_and_scene_id(spec):
    a, b = render_scene(spec, 5, 7), render_scene(spec, 5, 7)
    assert np.array_equal(a["image"], b["image"])
    c = render_scene(spec, 5, 8)
    assert not np.array_equal(a["image"], c["image"])


def test_density_follows_the_sampler_counts(spec):
    d = galaxy_density(spec.sampler())
    assert d > galaxy_density(spec.sampler(), 25.3) == pytest.approx(40.0)
    n = [len(render_scene(SceneSpec(size=16, bands=("lsst_i",), margin=0, star_density=0),
                          1, s, noise=False)["truth"]) for s in range(60)]
    area = (16 * 0.2 / 60) ** 2
    # Poisson mean d * area per scene: the mean of 60 scenes within 4 standard errors
    assert abs(np.mean(n) - d * area) < 4 * np.sqrt(d * area / 60)


def test_blendedness_zero_when_isolated_and_grows_with_overlap():
    m = np.zeros((2, 10, 10))
    m[0, 1:3, 1:3] = 1
    m[1, 6:8, 6:8] = 1
    assert np.allclose(scene_blendedness(m), 0)
    m[1, 2:4, 2:4] = 1
    b = scene_blendedness(m)
    assert np.all(b > 0) and np.all(b < 1)


def test_bands_of_different_pixel_scales_are_refused():
    with pytest.raises(ConfigError, match="^bands:"):
        SceneSpec(bands=("lsst_i", "hst_f814w"))
