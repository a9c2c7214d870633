import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from astrogen.cli import main
from astrogen.pipeline import build_pipeline, load_config
from astrogen.pipeline.config import apply_overrides
from astrogen.pipeline.runner import WORK_DIR, run_pipeline
from astrogen.stages.galsim_stages import ParametricGalaxies
from astrogen.stages.output import CatalogOutput

FITS_FILES = ("stamps.fits", "truth_catalog.fits", "scene.fits")


def _data(out):
    res = {}
    for name in FITS_FILES:
        with fits.open(Path(out) / name) as hl:
            res[name] = [np.array(h.data) for h in hl if h.data is not None]
    return res


def _assert_same(a, b):
    for name in FITS_FILES:
        assert len(a[name]) == len(b[name])
        for x, y in zip(a[name], b[name]):
            assert x.tobytes() == y.tobytes(), name


def test_end_to_end_products(small_yaml):
    path, out = small_yaml()
    res = run_pipeline(build_pipeline(load_config(path)), progress=False)
    assert res.n_rows == 24 and res.n_chunks == 3
    for name in FITS_FILES + ("preview.png", "scene.png", "provenance.json"):
        assert (out / name).is_file(), name
    assert not (out / WORK_DIR).exists()
    # stamps: one per row, observed flux close to the catalog flux in electrons
    with fits.open(out / "stamps.fits") as hl:
        assert hl[0].data.shape == (24, 16, 16)
        assert hl[0].header["BUNIT"] == "electron" and hl[0].header["PIXSCALE"] == 0.2
        assert hl[0].header["AG_PIPE"] == "small" and hl[0].header["AG_SEED"] == 7
        assert any("stamp_size" in str(c) for c in hl[0].header["HISTORY"])
        np.testing.assert_array_equal(hl["ROWS"].data["row_id"], np.arange(24))
    truth = Table.read(out / "truth_catalog.fits")
    assert len(truth) == 24 and truth["hlr"].unit == "arcsec"
    # the scene field declared by catalog.positions, in the truth header (not in the rows)
    head = fits.getheader(out / "truth_catalog.fits", 0)
    assert (head["SCENE_NX"], head["SCENE_NY"], head["SCENE_RA"]) == (128, 128, 150.1)
    np.testing.assert_array_equal(truth["row_id"], np.arange(24))
    # scene: a TAN WCS that maps the catalog ra/dec to its x/y, and the noiseless truth holds
    # the total flux of the galaxies inside the image
    with fits.open(out / "scene.fits") as hl:
        w = WCS(hl[0].header)
        x, y = w.all_world2pix(truth["ra"], truth["dec"], 1)
        np.testing.assert_allclose(x, truth["x"], atol=1e-6)
        np.testing.assert_allclose(y, truth["y"], atol=1e-6)
        clean = hl["NOISELESS"].data
        assert clean.sum() == pytest.approx(truth["flux_lsst_i"].sum(), rel=0.1)
        assert hl[0].data.std() > clean.std() * 0.5  # noise added to the primary image
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["seed"] == 7 and set(prov["timing_s"]) >= {"catalog", "render", "scene"}


def test_same_seed_same_outputs_and_other_seed_differs(tmp_path, small_yaml):
    path, out = small_yaml()
    run_pipeline(build_pipeline(load_config(path)), progress=False)
    first = _data(out)
    for f in FITS_FILES:  # whole files are byte-identical: no time stamps in headers
        (tmp_path / f).write_bytes((out / f).read_bytes())
    run_pipeline(build_pipeline(load_config(path)), progress=False)
    _assert_same(first, _data(out))
    assert all((tmp_path / f).read_bytes() == (out / f).read_bytes() for f in FITS_FILES)
    run_pipeline(build_pipeline(apply_overrides(load_config(path), ["seed=8"])), progress=False)
    assert first["truth_catalog.fits"][0].tobytes() != _data(out)["truth_catalog.fits"][0].tobytes()


def test_chunk_size_does_not_change_results(tmp_path, small_yaml):
    path, out = small_yaml(chunk_size=8)
    run_pipeline(build_pipeline(load_config(path)), progress=False)
    a = _data(out)
    cfg = apply_overrides(load_config(path), ["stages.catalog.chunk_size=5"])
    run_pipeline(build_pipeline(cfg), progress=False)
    b = _data(out)
    for name in ("stamps.fits", "truth_catalog.fits"):
        for x, y in zip(a[name], b[name]):
            assert x.tobytes() == y.tobytes()
    # the scene sums galaxies in another order: equal to float32 rounding
    np.testing.assert_allclose(a["scene.fits"][1], b["scene.fits"][1], rtol=0, atol=1e-2)


def test_resume_after_interrupt_is_identical(small_yaml, monkeypatch):
    path, out = small_yaml(n_objects=40, chunk_size=8)
    run_pipeline(build_pipeline(load_config(path)), progress=False)
    reference = _data(out)

    original = CatalogOutput.consume
    calls = {"n": 0}

    def interrupting(self, index, data):
        calls["n"] += 1
        if index == 3:
            raise KeyboardInterrupt
        return original(self, index, data)

    monkeypatch.setattr(CatalogOutput, "consume", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(build_pipeline(load_config(path)), progress=False)
    ledger = json.loads((out / WORK_DIR / "ledger.json").read_text())
    assert ledger["done"] == 3
    monkeypatch.setattr(CatalogOutput, "consume", original)
    res = run_pipeline(build_pipeline(load_config(path)), resume=True, progress=False)
    assert res.resumed_from == 3
    _assert_same(reference, _data(out))


def test_resume_with_other_config_is_refused(small_yaml, monkeypatch, capsys):
    path, out = small_yaml(n_objects=16, chunk_size=8)
    monkeypatch.setattr(CatalogOutput, "consume",
                        lambda self, i, d: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(build_pipeline(load_config(path)), progress=False)
    assert main(["run", str(path), "seed=99", "--resume", "--no-progress"]) == 2
    assert "different configuration" in capsys.readouterr().err


def test_kill_9_then_resume(small_yaml):
    """A real kill -9 of the CLI mid-run; --resume completes with identical outputs."""
    path, out = small_yaml(n_objects=96, chunk_size=8)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "astrogen", "-v", "0", "run", str(path), "--no-progress"]
    subprocess.run(cmd, check=True, env=env)
    reference = _data(out)
    proc = subprocess.Popen(cmd, env=env)
    ledger = out / WORK_DIR / "ledger.json"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if 2 <= json.loads(ledger.read_text())["done"] < 12:
                break
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # no truncated file under a final name; resume completes identically
    subprocess.run(cmd + ["--resume"], check=True, env=env)
    _assert_same(reference, _data(out))
    assert not list(out.rglob("*.tmp-*"))


def test_config_equals_direct_construction(small_yaml):
    path, _ = small_yaml()
    p = build_pipeline(load_config(path))
    from_yaml = p.node("render").stage
    # the builder hands every stage downstream of catalog.positions its field
    direct = ParametricGalaxies(stamp_size=32).bind_field(p.node("positions").stage.output_field())
    assert vars(from_yaml) == vars(direct)
    t = p.node("catalog").stage
    t.setup(type("C", (), {"seed": 3})())
    rows = t.read_chunk(0)[:3]
    a, b = from_yaml.process(rows), direct.process(rows)
    np.testing.assert_array_equal(a.images, b.images)


def test_overrides(small_yaml):
    path, _ = small_yaml()
    cfg = apply_overrides(load_config(path), ["seed=3", "stages.render.stamp_size=48",
                                              "stages.observe.survey=euclid_vis"])
    p = build_pipeline(cfg)
    assert p.seed == 3 and p.node("render").stage.stamp_size == 48
    assert p.node("observe").stage.survey.name == "euclid_vis"


def test_cli_validate_and_stages(small_yaml, capsys):
    path, out = small_yaml()
    assert main(["validate", str(path)]) == 0
    assert "is valid" in capsys.readouterr().out and not out.exists()
    assert main(["stages"]) == 0
    text = capsys.readouterr().out
    for name in ("catalog.cosmos", "galsim.parametric", "observe", "scene", "output.stamps"):
        assert name in text
    assert "pixel_scale = 0.03  [arcsec/pixel]" in text


def test_cli_is_quick_and_does_not_import_tensorflow():
    """``astrogen stages`` loads no TensorFlow and takes well under the time of importing it
    (a peer timed in the same run: the machine may be loaded)."""
    code = ("import sys, time; t=time.time(); from astrogen.cli import main; "
            "main(['stages']); print(time.time()-t, 'tensorflow' in sys.modules, file=sys.stderr)")
    peer = ("import time; t=time.time(); import tensorflow; import sys; "
            "print(time.time()-t, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, tf_loaded = r.stderr.split()[-2:]
    tf = subprocess.run([sys.executable, "-c", peer], capture_output=True, text=True,
                        check=True)
    assert tf_loaded == "False"
    assert float(seconds) < 0.6 * float(tf.stderr.split()[-1])


def test_tensorflow_start_up_noise_is_silenced(tmp_path):
    code = ("from astrogen.tf_quiet import import_tensorflow_quietly; "
            "tf = import_tensorflow_quietly(); print(tf.__version__)")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       check=True)
    assert r.stdout.strip().startswith("2.")
    assert r.stderr == ""


def test_cli_overrides_may_follow_options(small_yaml, capsys):
    path, out = small_yaml()
    # key=value after an option is an override, as before it
    assert main(["validate", str(path), "stages.render.stamp_size=-4"]) == 2
    before = capsys.readouterr().err
    assert main(["run", str(path), "--no-progress", "stages.render.stamp_size=-4"]) == 2
    after = capsys.readouterr().err
    assert "stamp_size" in before and after.splitlines()[-1] == before.splitlines()[-1]
    assert not out.exists()
    with pytest.raises(SystemExit):  # anything else is still refused
        main(["run", str(path), "--no-progress", "--no-such-option"])
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_long_card_values_keep_their_comment_without_truncation():
    import warnings

    from astropy.io import fits

    from astrogen.io.fits_out import set_card

    h = fits.Header()
    set_card(h, "PSF", "x" * 60, "GalSim PSF")
    set_card(h, "BAND", "i", "band")
    assert h["PSF"] == "x" * 60 and "PSF: GalSim PSF" in str(h["COMMENT"])
    assert h.comments["BAND"] == "band"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h.tostring()  # no "Card is too long" VerifyWarning
