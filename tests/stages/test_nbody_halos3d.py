"""nbody.halos3d: YAML == direct construction, a pipeline run equals the stage called by
hand, masses and positions carry littleh units that come back from the FITS in Msun and Mpc
converting correctly with ``with_H0``, bad inputs are clear errors. The network is hand-set
(every cell a halo cell of predicted size 50) so the catalogue is known; the shipped model's
quality is measured by benchmarks/nbody_halo3d_benchmark.py."""
import os
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from astropy import units as u  # noqa: E402
from astropy.cosmology import units as cu  # noqa: E402
from astropy.io import fits  # noqa: E402
from astropy.table import Table  # noqa: E402

from astrogen.batch import DensityField  # noqa: E402
from astrogen.errors import ConfigError  # noqa: E402
from astrogen.pipeline import build_pipeline, load_config  # noqa: E402
from astrogen.pipeline.runner import run_pipeline  # noqa: E402
from astrogen.seeds import derive_seed  # noqa: E402
from astrogen.stages.base import StageContext  # noqa: E402
from astrogen.stages.nbody_halos3d import Halos3D  # noqa: E402

COSMO = {"Om0": 0.3, "Ob0": 0.049, "h": 0.7, "sigma8": 0.9, "n_s": 0.96}
META = {"n_grid": 16, "box_size": 32.0, "mask_min_particles": 20, "force_resolution": 2,
        "cosmology": COSMO}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from astrogen.models.halo_vnet import HaloVNet

    m = HaloVNet(size=16, channels=(2, 2), meta=META)
    head = m.network.get_layer("head")
    k, _ = head.get_weights()
    head.set_weights([np.zeros_like(k), np.array([8.0, np.log10(50.0)], np.float32)])
    return str(m.save(tmp_path_factory.mktemp("vnet") / "vnet.keras"))


def _ctx(tmp_path, name):
    work = tmp_path / "work" / name
    work.mkdir(parents=True, exist_ok=True)
    return StageContext(name=name, seed=derive_seed(1, name), output_dir=tmp_path,
                        work_dir=work)


def _yaml(tmp_path, model_file):
    p = tmp_path / "h3d.yaml"
    p.write_text(textwrap.dedent(f"""\
        name: h3d
        seed: 3
        output: {tmp_path / 'out'}
        stages:
          - name: ic
            type: cosmology.initial_field
            n_boxes: 2
            n_grid: 16
            box_size: 32.0
            redshift: 1.0
            Om0: 0.3
            h: 0.7
            sigma8: 0.9
          - name: halos
            type: nbody.halos3d
            inputs: [ic]
            model: {model_file}
            method: grow
            threshold: 0.4
          - name: catalog
            type: output.catalog
            inputs: [halos]
            file_name: halos3d.fits
        """))
    return p


def test_yaml_equals_direct_and_units_round_trip_through_fits(model_file, tmp_path):
    p = build_pipeline(load_config(_yaml(tmp_path, model_file)))
    direct = Halos3D(model=model_file, method="grow", threshold=0.4)
    node = p.node("halos")
    assert type(node.stage) is Halos3D and vars(node.stage) == vars(direct)
    res = run_pipeline(p, progress=False)
    back = Table.read(res.output / "halos3d.fits")
    # the same boxes by hand
    ic = p.node("ic").stage
    direct.setup(_ctx(tmp_path, "halos"))
    tabs = [direct.process(ic.read_chunk(i)) for i in range(2)]
    t = tabs[0]
    # every cell is a halo cell of predicted size 50: 4096 cells -> about 80 haloes of 50
    assert 60 <= len(t) <= 90 and (t["n_particles"] >= 20).all()
    assert len(back) == sum(len(x) for x in tabs)
    mp = t.meta["particle_mass_msun_h"]
    np.testing.assert_allclose(t["mass"], t["n_particles"] * mp)
    assert mp == pytest.approx(0.3 * 2.775e11 * 32.0 ** 3 / 16 ** 3, rel=2e-3)
    # in memory: littleh units, no silent conversion
    assert t["mass"].unit == u.Msun / cu.littleh and t["x_lag"].unit == u.Mpc / cu.littleh
    with pytest.raises(u.UnitConversionError):
        t["mass"].quantity.to(u.Msun)
    h0 = cu.with_H0(70.0 * u.km / u.s / u.Mpc)
    # read back from FITS: Msun and Mpc with h = 0.7 applied
    assert back["mass"].unit == u.Msun and back["x"].unit == u.Mpc
    np.testing.assert_allclose(back["mass"].quantity.to_value(u.Msun)[:len(t)],
                               t["mass"].quantity.to_value(u.Msun, h0), rtol=1e-12)
    np.testing.assert_allclose(back["mass"][:len(t)], np.asarray(t["mass"]) / 0.7, rtol=1e-12)
    np.testing.assert_allclose(back["z_lag"][:len(t)], np.asarray(t["z_lag"]) / 0.7,
                               rtol=1e-12)
    prim = fits.getheader(res.output / "halos3d.fits", 0)
    assert prim["HUBBLE"] == 0.7 and "littleh" in prim["units_note"]
    assert prim["particle_mass_msun_h"] == pytest.approx(mp, rel=1e-12)
    # positions inside the box; Eulerian estimates near the Lagrangian centres
    for c in ("x", "y", "z"):
        assert ((t[c] >= 0) & (t[c] < 32.0)).all()
        d = np.asarray(t[c]) - np.asarray(t[f"{c}_lag"])
        d -= 32.0 * np.rint(d / 32.0)
        assert np.abs(d).max() < 8.0


def test_bad_inputs_are_clear_errors(model_file, tmp_path):
    for kw, key in [({"threshold": 1.0}, "threshold"), ({"method": "flood"}, "method"),
                    ({"min_particles": 0}, "min_particles"), ({"model": ""}, "model"),
                    ({"redshift": -1.0}, "redshift")]:
        with pytest.raises(ConfigError, match=key):
            Halos3D(**{"model": model_file, **kw})
    st = Halos3D(model=model_file)
    st.setup(_ctx(tmp_path, "h"))
    rng = np.random.default_rng(0)
    ok = dict(box_size=32.0, redshift=0.0, cosmology=COSMO, meta={"field": "linear"})
    with pytest.raises(ConfigError, match="linear"):
        st.process(DensityField(delta=rng.standard_normal((16,) * 3),
                                **{**ok, "meta": {"field": "nbody"}}))
    with pytest.raises(ConfigError, match="16"):
        st.process(DensityField(delta=rng.standard_normal((8,) * 3), **ok))
    with pytest.raises(ConfigError, match="32.0 Mpc/h"):
        st.process(DensityField(delta=rng.standard_normal((16,) * 3),
                                **{**ok, "box_size": 64.0}))
