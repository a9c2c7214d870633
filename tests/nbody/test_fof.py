"""FoF finds planted groups, across periodic boundaries, with the right masses."""
import numpy as np
import pytest

from astrogen.nbody import friends_of_friends, mass_function, particle_mass


def test_finds_planted_clumps_with_periodic_wrapping():
    rng = np.random.default_rng(1)
    L = 100.0
    background = rng.uniform(0, L, size=(4000, 3))
    # mean spacing 100/4090^(1/3) ~ 6.25 Mpc/h -> linking length ~ 1.25 Mpc/h
    centres = np.array([[20.0, 30.0, 40.0], [70.0, 60.0, 50.0], [0.0, 50.0, 99.9]])  # last wraps
    sizes = [30, 45, 60]
    clumps = [c + rng.normal(0, 0.15, size=(s, 3)) for c, s in zip(centres, sizes)]
    pos = np.mod(np.concatenate([background] + clumps), L)
    vel = np.zeros_like(pos)
    vel[-60:] = [100.0, -50.0, 0.0]
    t = friends_of_friends(pos, L, velocities=vel, min_members=20)
    assert len(t) == 3
    np.testing.assert_array_equal(t["n_particles"], [60, 45, 30])  # sorted by mass
    mp = particle_mass(0.30966, L, len(pos))
    np.testing.assert_allclose(t["mass"], np.array([60, 45, 30]) * mp, rtol=1e-12)
    # periodic centre of mass of the wrapped clump
    got = np.array([t["x"][0], t["y"][0], t["z"][0]])
    d = (got - centres[2] + L / 2) % L - L / 2
    assert np.all(np.abs(d) < 0.1)
    assert t["vx"][0] == pytest.approx(100.0) and t["vy"][0] == pytest.approx(-50.0)
    assert t.meta["linking_length_mpc_h"] == pytest.approx(0.2 * L / len(pos) ** (1 / 3))


def test_particle_mass_and_mass_function():
    # Om0 rho_crit (L/n)^3: 2.775e11 Msun/h / (Mpc/h)^3
    assert particle_mass(1.0, 1.0, 1) == pytest.approx(2.775e11, rel=1e-3)
    m = np.array([1e13, 2e13, 4e13, 8e13])
    mc, dn, err, cnt = mass_function(m, 100.0, bins=[5e12, 1.5e13, 1e14])
    np.testing.assert_array_equal(cnt, [1, 3])
    np.testing.assert_allclose(dn, cnt / 1e6 / np.log([3.0, 1e14 / 1.5e13]))


def test_halo_table_carries_littleh_units_that_convert_only_with_h():
    from astropy import units as u
    from astropy.cosmology import units as cu

    from astrogen.errors import ConfigError

    rng = np.random.default_rng(4)
    L = 50.0
    pos = np.mod(np.concatenate([rng.uniform(0, L, (1000, 3)),
                                 [25.0, 10.0, 5.0] + rng.normal(0, 0.1, (30, 3))]), L)
    t = friends_of_friends(pos, L, min_members=20, particle_mass_msun_h=1e12)
    assert len(t) == 1 and t["mass"][0] == pytest.approx(3e13)  # values stay in Msun/h
    assert t["mass"].unit == u.Msun / cu.littleh and t["x"].unit == u.Mpc / cu.littleh
    with pytest.raises(u.UnitConversionError):  # the old 'solMass' label converted silently
        t["mass"].quantity.to(u.Msun)
    h = 0.6766
    m = t["mass"].quantity.to(u.Msun, cu.with_H0(100 * h * u.km / u.s / u.Mpc))
    assert m.value[0] == pytest.approx(3e13 / h, rel=1e-12)  # 1.48x more than the h-value
    x = t["x"].quantity.to(u.Mpc, cu.with_H0(100 * h * u.km / u.s / u.Mpc))
    assert x.value[0] == pytest.approx(t["x"][0] / h, rel=1e-12)
    # mass_function takes the column; masses in plain Msun are refused (they need h)
    assert mass_function(t["mass"], L, bins=[1e13, 1e14])[3][0] == 1
    with pytest.raises(ConfigError) as e:
        mass_function(m, L)
    assert e.value.key == "masses"
