"""Tests of the displacement-emulator stage nbody.displace (astrogen.stages.nbody_displace)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from astrogen.errors import ConfigError  # noqa: E402
from astrogen.nbody.snapshot import NBodySnapshot  # noqa: E402
from astrogen.seeds import derive_seed  # noqa: E402
from astrogen.stages.base import StageContext  # noqa: E402
from astrogen.stages.nbody import FoFHalos, InitialField  # noqa: E402
from astrogen.stages.nbody_displace import NBodyDisplace  # noqa: E402

COSMO = dict(Om0=0.30966, Ob0=0.04897, h=0.6766, sigma8=0.8102, n_s=0.9665)


def _ctx(tmp_path, name):
    work = tmp_path / "work" / name
    work.mkdir(parents=True, exist_ok=True)
    return StageContext(name=name, seed=derive_seed(7, name), output_dir=tmp_path,
                        work_dir=work)


@pytest.fixture(scope="module")
def untrained_model(tmp_path_factory):
    """A D3M with a zero head (it returns its input: the Zel'dovich displacement) and the
    metadata of a 2 Mpc/h, z = 0 training set."""
    pytest.importorskip("keras")
    from astrogen.models.d3m import D3M

    m = D3M(channels=[4, 8], scale=4.0,
            meta={"cell_size": 2.0, "redshift": 0.0, "force_resolution": 2, "z_init": 9.0,
                  "pm_n_steps": 20, "cosmology": COSMO})
    return m.save(tmp_path_factory.mktemp("d3m") / "tiny.keras")


def test_untrained_model_gives_the_zeldovich_particles(untrained_model, tmp_path):
    """A zero-head emulator must reproduce 1LPT particles at z = 0 on the PM's lattice: the
    stage wires growth, lattice offset and units right."""
    from astrogen.cosmology import Cosmology
    from astrogen.cosmology.initial import lpt_particles

    ic = InitialField(n_grid=16, box_size=32.0, redshift=1.0, **COSMO)
    ic.setup(_ctx(tmp_path, "ic"))
    lin = ic.read_chunk(0)
    st = NBodyDisplace(model=str(untrained_model))
    st.setup(_ctx(tmp_path, "particles"))
    snap = st.process(lin)
    assert isinstance(snap, NBodySnapshot) and snap.n_particles == 16 ** 3
    assert snap.redshift == 0.0 and snap.meta["source"] == "nbody.displace"
    c = Cosmology(**COSMO)
    d0 = lin.delta / c.growth_D1(1.0)
    pos, mom = lpt_particles(d0, 32.0, c, 1.0, order=1, shift=0.25)
    diff = np.mod(snap.positions - pos + 16.0, 32.0) - 16.0
    assert np.abs(diff).max() < 1e-4
    np.testing.assert_allclose(snap.velocities, 100.0 * mom, rtol=1e-5, atol=1e-3)
    assert abs(snap.delta.mean()) < 1e-10
    # the particles go on to the FoF stage
    fof = FoFHalos(min_members=5)
    fof.setup(_ctx(tmp_path, "halos"))
    tab = fof.process(snap)
    assert "mass" in tab.colnames


def test_wrong_lattice_spacing_or_cosmology_is_refused(untrained_model, tmp_path):
    st = NBodyDisplace(model=str(untrained_model))
    st.setup(_ctx(tmp_path, "particles"))
    for ic in (InitialField(n_grid=16, box_size=64.0, **COSMO),
               InitialField(n_grid=16, box_size=32.0, **{**COSMO, "sigma8": 0.7})):
        ic.setup(_ctx(tmp_path, "ic"))
        with pytest.raises(ConfigError) as e:
            st.process(ic.read_chunk(0))
        assert e.value.key == "inputs"


def test_yaml_equals_direct_construction():
    from astrogen.pipeline import build_pipeline, load_config

    p = build_pipeline(load_config("pipelines/nbody_displace.yaml"))
    node = p.node("particles")
    direct = NBodyDisplace(model="d3m_64")
    assert type(node.stage) is NBodyDisplace and vars(node.stage) == vars(direct)


@pytest.mark.parametrize("kw, key", [({"model": ""}, "model"), ({"density_grid": 1},
                                                                "density_grid"),
                                     ({"batch_size": 0}, "batch_size")])
def test_bad_parameters_name_the_key(kw, key):
    with pytest.raises(ConfigError) as e:
        NBodyDisplace(**kw)
    assert e.value.key == key
