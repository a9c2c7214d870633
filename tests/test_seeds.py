import numpy as np

from astrogen.seeds import derive_seed, galsim_seed, normals, row_seeds, uniforms


def test_row_seeds_do_not_depend_on_chunking():
    ids = np.arange(1000)
    whole = normals(row_seeds(3, ids), 4)
    parts = np.concatenate([normals(row_seeds(3, ids[a:a + 137]), 4)
                            for a in range(0, 1000, 137)])
    np.testing.assert_array_equal(whole, parts)


def test_uniform_and_normal_statistics():
    u = uniforms(row_seeds(11, np.arange(200_000)), 2)
    assert 0 < u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 3 * np.sqrt(1 / 12 / u.size)
    g = normals(row_seeds(11, np.arange(200_000)), 1)[:, 0]
    assert abs(g.mean()) < 0.01 and abs(g.std() - 1) < 0.01
    # columns are independent
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.01


def test_streams_differ_by_seed_and_key():
    assert derive_seed(1, "a") != derive_seed(1, "b") != derive_seed(2, "a")
    assert derive_seed(1, "a") == derive_seed(1, "a")
    a, b = row_seeds(1, np.arange(10)), row_seeds(2, np.arange(10))
    assert not np.any(a == b)
    assert all(1 <= galsim_seed(s) < 2**31 for s in a)
