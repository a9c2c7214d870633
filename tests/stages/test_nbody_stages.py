"""N-body stages: initial field -> particle mesh -> FoF -> field FITS / halo catalog.

Tiny boxes (16^3 particles, 3 PM steps) keep the whole module at a few seconds.
"""
import os
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from astropy import units as u  # noqa: E402
from astropy.cosmology import units as cu  # noqa: E402
from astropy.io import fits  # noqa: E402
from astropy.table import Table  # noqa: E402
from astropy.wcs import WCS  # noqa: E402

from astrogen.batch import DensityField  # noqa: E402
from astrogen.cosmology import Cosmology, LinearPower  # noqa: E402
from astrogen.errors import ConfigError  # noqa: E402
from astrogen.nbody.snapshot import NBodySnapshot  # noqa: E402
from astrogen.pipeline import build_pipeline, load_config  # noqa: E402
from astrogen.pipeline.runner import WORK_DIR, run_pipeline  # noqa: E402
from astrogen.seeds import derive_seed  # noqa: E402
from astrogen.stages.base import StageContext  # noqa: E402
from astrogen.stages.nbody import (FieldOutput, FoFHalos, InitialField, NBodyPM,  # noqa: E402
                                   _SliceSpectrum)
from astrogen.stages.output import CatalogOutput  # noqa: E402

SEED = 11
IC = dict(n_grid=16, box_size=64.0, redshift=0.0, Om0=0.3, sigma8=0.9)
PM = dict(n_steps=3, z_init=4.0, redshift=0.0, force_resolution=2)


def _yaml(out, n_boxes=2, first_box=0, seed=SEED):
    return textwrap.dedent(f"""\
    name: tiny_nbody
    seed: {seed}
    output: {out}
    stages:
      - name: ic
        type: cosmology.initial_field
        n_boxes: {n_boxes}
        first_box: {first_box}
        n_grid: {IC['n_grid']}
        box_size: {IC['box_size']}
        redshift: {IC['redshift']}
        Om0: {IC['Om0']}
        sigma8: {IC['sigma8']}
      - name: pm
        type: nbody.pm
        inputs: [ic]
        n_steps: {PM['n_steps']}
        z_init: {PM['z_init']}
        redshift: {PM['redshift']}
        force_resolution: {PM['force_resolution']}
      - name: halos
        type: nbody.fof
        inputs: [pm]
        min_members: 8
      - name: density
        type: output.field
        inputs: [pm]
        file_name: density.fits
        preview: density.png
      - name: linear
        type: output.field
        inputs: [ic]
        file_name: linear.fits
        quantity: delta
        preview: null
      - name: halo_catalog
        type: output.catalog
        inputs: [halos]
        file_name: halos.fits
    """)


def _run(tmp_path, name, **kw):
    out = tmp_path / name
    path = tmp_path / f"{name}.yaml"
    path.write_text(_yaml(out, **kw))
    return run_pipeline(build_pipeline(load_config(path)), progress=False)


def _ctx(tmp_path, name, seed=SEED):
    work = tmp_path / "work" / name
    work.mkdir(parents=True, exist_ok=True)
    return StageContext(name=name, seed=derive_seed(seed, name), output_dir=tmp_path,
                        work_dir=work)


def _boxes(path):
    with fits.open(path) as hl:
        return {h.header["BOXID"]: np.array(h.data) for h in hl[1:]}


@pytest.fixture(scope="module")
def two_boxes(tmp_path_factory):
    """The tiny pipeline run once with 2 boxes."""
    pytest.importorskip("tensorflow")
    return _run(tmp_path_factory.mktemp("nbody"), "two")


# ---------------------------------------------------------------- end to end
def test_pipeline_writes_readable_fits_with_headers(two_boxes):
    out = two_boxes.output
    names = {f.name for f in two_boxes.files}
    assert {"density.fits", "density.png", "linear.fits", "halos.fits",
            "provenance.json"} <= names
    assert not (out / WORK_DIR).exists() and two_boxes.n_chunks == 2
    with fits.open(out / "density.fits") as hl:
        assert [h.name for h in hl] == ["PRIMARY", "BOX0", "BOX1"]
        prim = hl[0].header
        assert prim["NBOXES"] == 2 and prim["AG_PIPE"] == "tiny_nbody" and prim["AG_SEED"] == SEED
        assert any("n_steps" in str(c) for c in prim["HISTORY"])
        for i, h in enumerate(hl[1:]):
            hd = h.header
            assert h.data.shape == (16, 16, 16) and h.data.dtype.kind == "f"
            assert hd["BOXID"] == i and hd["BOXSIZE"] == 64.0 and hd["NGRID"] == 16
            assert hd["REDSHIFT"] == 0.0 and hd["BUNIT"] == "1+delta" and hd["FIELD"] == "nbody"
            assert hd["OMEGAM"] == 0.3 and hd["SIGMA8"] == 0.9
            assert hd["HUBBLE"] == pytest.approx(Cosmology().h) and "OMEGAB" in hd
            assert hd["NPART"] == 16**3 and hd["NSTEPS"] == 3 and hd["ZINIT"] == pytest.approx(4)
            assert hd["AG_STAGE"] == "density"
            # linear WCS in Mpc (CUNIT, h applied): pixel (i+1) is at i * cell size / h;
            # the alternate WCS "H" is in Mpc/h
            w = WCS(hd)
            assert list(w.wcs.cunit) == ["Mpc"] * 3
            np.testing.assert_allclose(w.wcs_pix2world([[1, 1, 1], [16, 9, 2]], 1),
                                       np.array([[0, 0, 0], [60, 32, 4]]) / hd["HUBBLE"])
            wh = WCS(hd, key="H")
            np.testing.assert_allclose(wh.wcs_pix2world([[16, 9, 2]], 1), [[60, 32, 4]])
            assert hd["PARTMSUN"] == pytest.approx(hd["PARTMASS"] / hd["HUBBLE"], rel=1e-12)
            assert hd["BOXMPC"] == pytest.approx(64.0 / hd["HUBBLE"], rel=1e-12)
            # mass conservation: CIC painting of all particles, mean of 1 + delta is 1
            assert float(np.mean(h.data, dtype=np.float64)) == pytest.approx(1.0, abs=1e-6)
            assert h.data.min() >= 0 and h.data.std() > 0.3
    with fits.open(out / "linear.fits") as hl:
        assert hl[1].header["BUNIT"] == "delta" and hl[1].header["FIELD"] == "linear"
        assert abs(hl[1].data.mean()) < 1e-6
    halos = Table.read(out / "halos.fits")
    assert len(halos) > 0 and set(halos["box_id"]) <= {0, 1}
    # FITS units are plain units (Msun, Mpc): the h-scaled values were divided by h
    assert halos["mass"].unit == u.Msun and halos["x"].unit == u.Mpc
    assert str(halos["vx"].unit) == "km / s"
    with fits.open(out / "density.fits") as hl:
        mp_h, hub = hl[1].header["PARTMASS"], hl[1].header["HUBBLE"]
    np.testing.assert_allclose(halos["mass"].quantity.to_value(u.Msun),
                               halos["n_particles"] * mp_h / hub, rtol=1e-12)
    assert np.all(halos["n_particles"] >= 8)
    assert np.all((halos["x"] >= 0) & (halos["x"] < 64.0 / hub))
    # the catalog's primary header keeps the particle mass, h and the units note
    prim = fits.getheader(out / "halos.fits", 0)
    assert prim["particle_mass_msun_h"] == pytest.approx(mp_h, rel=1e-12)
    assert prim["HUBBLE"] == pytest.approx(hub) and "littleh" in prim["units_note"]
    assert prim["box_size_mpc_h"] == 64.0 and "box_id" not in prim  # per-box items dropped


def test_yaml_equals_direct_construction(two_boxes, tmp_path):
    p = build_pipeline(load_config(two_boxes.output.parent / "two.yaml"))
    ic_direct = InitialField(n_boxes=2, **IC)
    pm_direct = NBodyPM(**PM)
    for node, direct in ((p.node("ic"), ic_direct), (p.node("pm"), pm_direct),
                         (p.node("halos"), FoFHalos(min_members=8))):
        assert type(node.stage) is type(direct)
        assert vars(node.stage) == vars(direct)
    ic_direct.setup(_ctx(tmp_path, "ic"))
    pm_direct.setup(_ctx(tmp_path, "pm"))
    lin = ic_direct.read_chunk(1)
    snap = pm_direct.process(lin)
    assert isinstance(snap, NBodySnapshot) and isinstance(snap, DensityField)
    assert snap.box_id == 1 and snap.n_particles == 16**3
    # the FITS images are the transposed fields (FITS axes 1, 2, 3 = x, y, z)
    np.testing.assert_array_equal(_boxes(two_boxes.output / "linear.fits")[1],
                                  lin.delta.T.astype(np.float32))
    np.testing.assert_array_equal(_boxes(two_boxes.output / "density.fits")[1],
                                  (1.0 + snap.delta).T.astype(np.float32))
    # particle mass: Om0 rho_crit V / N; velocities in km/s of the right order
    mp = 0.3 * Cosmology().rho_crit0 * 64.0**3 / 16**3
    assert snap.particle_mass == pytest.approx(mp, rel=1e-12)
    assert 50 < np.std(snap.velocities) < 2000
    assert abs(snap.delta.mean()) < 1e-10  # mass conservation of the evolved field


def test_box_alone_equals_box_of_larger_run(two_boxes, tmp_path):
    res = _run(tmp_path, "one", n_boxes=1, first_box=1)
    for name in ("linear.fits", "density.fits"):
        alone = _boxes(res.output / name)
        assert list(alone) == [1]
        np.testing.assert_array_equal(alone[1], _boxes(two_boxes.output / name)[1])
    h2 = Table.read(two_boxes.output / "halos.fits")
    h1 = Table.read(res.output / "halos.fits")
    np.testing.assert_array_equal(h1["mass"], h2["mass"][h2["box_id"] == 1])


def test_resume_after_interruption_gives_same_boxes(two_boxes, tmp_path, monkeypatch):
    path = tmp_path / "res.yaml"
    out = tmp_path / "res"
    path.write_text(_yaml(out))
    original = NBodyPM.process

    def interrupted(self, field):
        if field.box_id == 1:
            raise KeyboardInterrupt
        return original(self, field)

    monkeypatch.setattr(NBodyPM, "process", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(build_pipeline(load_config(path)), progress=False)
    assert (out / WORK_DIR / "ledger.json").is_file()
    monkeypatch.setattr(NBodyPM, "process", original)
    res = run_pipeline(build_pipeline(load_config(path)), resume=True, progress=False)
    assert res.resumed_from == 1
    for name in ("linear.fits", "density.fits"):
        a, b = _boxes(out / name), _boxes(two_boxes.output / name)
        assert list(a) == [0, 1]
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


# ---------------------------------------------------------------- seeds (numpy only)
def test_same_seed_same_field_other_box_or_seed_differs(tmp_path):
    a = InitialField(n_boxes=3, **IC)
    a.setup(_ctx(tmp_path, "ic"))
    b = InitialField(n_boxes=1, first_box=2, **IC)
    b.setup(_ctx(tmp_path, "ic"))
    f0, f2 = a.read_chunk(0), a.read_chunk(2)
    np.testing.assert_array_equal(a.read_chunk(0).delta, f0.delta)
    np.testing.assert_array_equal(b.read_chunk(0).delta, f2.delta)  # chunking-independent
    assert b.read_chunk(0).box_id == 2 and f0.box_id == 0
    assert not np.allclose(f0.delta, a.read_chunk(1).delta)
    c = InitialField(**IC)
    c.setup(_ctx(tmp_path, "ic", seed=SEED + 1))
    assert not np.allclose(c.read_chunk(0).delta, f0.delta)
    # growth: the same draw at z = 1 is D1(z=1) times the z = 0 field
    d = InitialField(**{**IC, "redshift": 1.0})
    d.setup(_ctx(tmp_path, "ic"))
    growth = float(Cosmology(Om0=0.3, sigma8=0.9).growth_D1(1.0))
    np.testing.assert_allclose(d.read_chunk(0).delta, growth * f0.delta, rtol=1e-12)
    assert f0.meta["field"] == "linear" and f0.cosmology["Om0"] == 0.3


def test_2d_slice_has_the_statistics_of_a_plane_of_the_box(tmp_path):
    n, L = 32, 100.0
    p3 = LinearPower(Cosmology())
    p2 = _SliceSpectrum(p3, n, L)
    # variance of the 2-D field (sum_k P2 / L^2) equals that of the 3-D grid (sum_k P3 / L^3)
    f = np.fft.fftfreq(n, 1.0 / n) * 2 * np.pi / L
    k3 = np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2)
    k2 = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    var3 = p3(k3[k3 > 0]).sum() / L**3
    var2 = p2(k2[k2 > 0]).sum() / L**2 + p3(np.abs(f[f != 0])).sum() / L**3  # k2 = 0 column
    assert var2 == pytest.approx(var3, rel=1e-3)
    st = InitialField(n_grid=n, box_size=L, ndim=2)
    st.setup(_ctx(tmp_path, "ic2"))
    field = st.read_chunk(0)
    assert field.delta.shape == (n, n) and field.delta.std() > 0
    # a 2-D field cannot start the particle mesh
    with pytest.raises(ConfigError, match="3-D") as e:
        NBodyPM().process(field)
    assert e.value.key == "inputs"


# ---------------------------------------------------------------- halo catalog (no TF)
def _fake_snapshot(box_id, clump):
    rng = np.random.default_rng(box_id)
    L = 50.0
    pos = rng.uniform(0, L, (2000, 3))
    if clump:
        pos[:40] = np.mod([10.0, 20.0, 49.9] + rng.normal(0, 0.1, (40, 3)), L)
    vel = np.zeros_like(pos)
    vel[:40] = [100.0, 0.0, -50.0]
    return NBodySnapshot(delta=np.zeros((8, 8, 8)), box_size=L, redshift=0.5, box_id=box_id,
                         cosmology=Cosmology().to_dict(), positions=pos, velocities=vel,
                         particle_mass=1e12)


def test_fof_table_goes_through_output_catalog(tmp_path):
    fof = FoFHalos(linking_length=0.2, min_members=20)
    t0, t1 = fof.process(_fake_snapshot(0, True)), fof.process(_fake_snapshot(1, False))
    assert len(t0) == 1 and len(t1) == 0
    assert t0["n_particles"][0] == 40 and t0["mass"][0] == pytest.approx(4e13)
    assert t0["vx"][0] == pytest.approx(100.0) and t0["box_id"][0] == 0
    sink = CatalogOutput("halos.fits")
    sink.setup(_ctx(tmp_path, "cat"))
    sink.consume(0, t1)  # a box without haloes must not break the catalog
    sink.consume(1, t0)
    path, = sink.finalize()
    back = Table.read(path)
    assert len(back) == 1 and back["redshift"][0] == 0.5
    assert str(back["vz"].unit) == "km / s"
    # in memory: Msun/h as astropy littleh units; no conversion to Msun without h
    hub = Cosmology().h
    assert t0["mass"].unit == u.Msun / cu.littleh and t0["z"].unit == u.Mpc / cu.littleh
    with pytest.raises(u.UnitConversionError):
        t0["mass"].quantity.to(u.Msun)
    h0 = cu.with_H0(100 * hub * u.km / u.s / u.Mpc)
    assert t0["mass"].quantity.to_value(u.Msun, h0) == pytest.approx(4e13 / hub, rel=1e-12)
    # read back from FITS: plain Msun and Mpc, right by the factor h (was 4e13 'solMass')
    assert back["mass"].quantity.to_value(u.Msun) == pytest.approx(4e13 / hub, rel=1e-12)
    assert back["mass"].quantity.to_value(u.Msun, h0) == pytest.approx(
        t0["mass"].quantity.to_value(u.Msun, h0), rel=1e-12)
    z_h = t0["z"][0]
    assert back["z"].quantity.to_value(u.Mpc) == pytest.approx(z_h / hub, rel=1e-12)
    assert "h = " in back["mass"].description
    # particle mass and units note survive, in the primary header
    prim = fits.getheader(path, 0)
    assert prim["particle_mass_msun_h"] == 1e12 and prim["HUBBLE"] == pytest.approx(hub)
    assert "littleh" in prim["units_note"]


def test_catalog_without_h_refuses_littleh_columns(tmp_path):
    from astrogen.errors import CatalogError

    t = Table({"mass": [1e13] * (u.Msun / cu.littleh)})
    sink = CatalogOutput("halos.fits")
    sink.setup(_ctx(tmp_path, "cat"))
    with pytest.raises(CatalogError) as e:
        sink.consume(0, t)
    assert e.value.key == "mass" and "h" in str(e.value)


def test_field_output_accepts_plain_density_field(tmp_path):
    sink = FieldOutput("f.fits", quantity="delta", preview="f.png", preview_slab=2)
    sink.setup(_ctx(tmp_path, "f"))
    delta = np.random.default_rng(0).normal(size=(8, 8))
    sink.consume(0, DensityField(delta=delta, box_size=10.0, redshift=2.0, box_id=4))
    paths = sink.finalize()
    assert [p.suffix for p in paths] == [".fits", ".png"]
    with fits.open(paths[0]) as hl:
        assert hl[1].name == "BOX4" and hl[1].header["WCSAXES"] == 2
        assert hl[1].header["REDSHIFT"] == 2.0 and hl[1].header["CDELT1"] == 1.25
        # no h known: the WCS stays in Mpc/h and has no CUNIT (nor a Mpc one)
        assert "CUNIT1" not in hl[1].header and "CDELT1H" not in hl[1].header
        np.testing.assert_allclose(hl[1].data, delta.T, rtol=1e-6)


# ---------------------------------------------------------------- bad parameters
@pytest.mark.parametrize("cls,kw,key", [
    (InitialField, {**IC, "box_size": -64.0}, "box_size"),
    (InitialField, {**IC, "n_grid": 15}, "n_grid"),
    (InitialField, {**IC, "n_grid": 1024}, "n_grid"),
    (InitialField, {**IC, "ndim": 4}, "ndim"),
    (InitialField, {**IC, "Om0": 1.5}, "Om0"),
    (InitialField, {**IC, "sigma8": "high"}, "sigma8"),
    (InitialField, {**IC, "redshift": -1.0}, "redshift"),
    (InitialField, {**IC, "n_boxes": 0}, "n_boxes"),
    (InitialField, {**IC, "transfer": "bbks"}, "transfer"),
    (NBodyPM, {"n_steps": 0}, "n_steps"),
    (NBodyPM, {"z_init": 1.0, "redshift": 2.0}, "redshift"),
    (NBodyPM, {"a_init": 0.1, "z_init": 9.0}, "z_init"),
    (NBodyPM, {"a_init": 1.5}, "a_init"),
    (NBodyPM, {"force_resolution": 8}, "force_resolution"),
    (NBodyPM, {"gradient": "fd3"}, "gradient"),
    (NBodyPM, {"backend": "jax"}, "backend"),
    (FoFHalos, {"linking_length": 1.2}, "linking_length"),
    (FoFHalos, {"min_members": 1}, "min_members"),
    (FieldOutput, {"quantity": "rho"}, "quantity"),
    (FieldOutput, {"file_name": "../field.fits"}, "file_name"),
])
def test_bad_parameters_name_the_key(cls, kw, key):
    with pytest.raises(ConfigError) as e:
        cls(**kw)
    assert e.value.key == key


def test_bad_yaml_value_points_at_stage_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(_yaml(tmp_path / "out").replace("box_size: 64.0", "box_size: -64.0"))
    with pytest.raises(ConfigError, match=r"stages\[0\]\.box_size"):
        build_pipeline(load_config(path))
    assert not (tmp_path / "out").exists()
