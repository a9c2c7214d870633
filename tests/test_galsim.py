"""The GalSim plug-in (astrogen.galsim): real `galsim` executable, seeds, bands."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import galsim  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from astropy.io import fits  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "galsim" / "flowvae_two_bands.yaml"


def _tiny_model(path):
    import keras

    from astrogen.models.flowvae import FlowVAE

    keras.utils.set_random_seed(3)
    m = FlowVAE(stamp_size=32, latent_dim=4, channels=[8, 8, 16, 16], flux_scale=0.05,
                flow_num_bijectors=2, flow_hidden_units=[16, 16],
                condition_names=["mag", "hlr", "z"])
    rng = np.random.default_rng(0)
    m.adapt_conditions(np.column_stack([rng.uniform(18, 25, 99), rng.uniform(0.1, 1, 99),
                                        rng.uniform(0.1, 2, 99)]))
    m.save(path)
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return _tiny_model(tmp_path_factory.mktemp("gsplug") / "tiny.keras")


def _run_galsim(model_file, out_dir, *extra, env=None, timeout=240, stderr=None):
    exe = shutil.which("galsim") or pytest.fail("the galsim executable is not on PATH")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"} if env is None else env
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    res = subprocess.run([exe, str(EXAMPLE), f"input.flowvae.model={model_file}",
                          f"output.dir={out_dir}", *extra], capture_output=True, text=True,
                         timeout=timeout, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    if stderr is not None:
        stderr.append(res.stderr)
    return {b: fits.getdata(out_dir / f"flowvae_{b}.fits") for b in ("lsst_i", "euclid_vis")}


def _bytes(out_dir):
    return {b: (out_dir / f"flowvae_{b}.fits").read_bytes() for b in ("lsst_i", "euclid_vis")}


def test_galsim_executable_in_parallel_gives_the_same_bytes(model_file, tmp_path):
    """output.nproc=2 and image.nproc=2 used to hang (TensorFlow run in the parent, then
    used in forked workers); both now finish and write the bytes of nproc=1."""
    _run_galsim(model_file, tmp_path / "one")
    _run_galsim(model_file, tmp_path / "files", "output.nproc=2", timeout=180)
    _run_galsim(model_file, tmp_path / "stamps", "image.nproc=2", timeout=180)
    one = _bytes(tmp_path / "one")
    assert _bytes(tmp_path / "files") == one
    assert _bytes(tmp_path / "stamps") == one


def test_loading_the_model_prints_nothing_on_stderr(model_file, tmp_path):
    """No TensorFlow / CUDA start-up noise, even with TF_CPP_MIN_LOG_LEVEL unset."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    err = []
    _run_galsim(model_file, tmp_path, env=env, stderr=err)
    noise = [line for line in err[0].splitlines()
             if any(w in line.lower() for w in ("cuda", "tensorflow", "cudnn", "cufft",
                                                 "cublas", "absl", "oneDNN".lower(), "xla"))]
    assert noise == [], noise


def _process(model_file, out_dir, batch_size, calls=None):
    config = galsim.config.ReadConfig(str(EXAMPLE))[0]
    config["input"]["flowvae"]["model"] = str(model_file)
    config["input"]["flowvae"]["batch_size"] = batch_size
    config["output"]["dir"] = str(out_dir)
    galsim.config.Process(config)
    return _bytes(out_dir)


def test_batched_plugin_gives_the_bytes_of_one_object_per_call(model_file, tmp_path,
                                                               monkeypatch):
    """All 16 galaxies of an image in one network call, seeded per object from GalSim's
    per-object rng: same latents, same conditions, same bytes as one object per call."""
    import astrogen.galsim as plugin

    calls = []
    original = plugin.FlowVAEInput.light_profiles

    def spy(self, conditions, noise):
        calls.append((np.asarray(conditions, float).copy(), np.asarray(noise).copy()))
        return original(self, conditions, noise)

    monkeypatch.setattr(plugin.FlowVAEInput, "light_profiles", spy)
    single = _process(model_file, tmp_path / "single", 1)
    per_object = list(calls)
    calls.clear()
    batched = _process(model_file, tmp_path / "batched", 16)
    assert len(per_object) == 32 and all(len(c[0]) == 1 for c in per_object)
    assert [len(c[0]) for c in calls] == [16, 16]  # one call per image (file)
    for f in range(2):  # same conditions and latents, object by object
        np.testing.assert_array_equal(np.concatenate([c[0] for c in per_object[16 * f:16 * f + 16]]),
                                      calls[f][0])
        np.testing.assert_array_equal(np.concatenate([c[1] for c in per_object[16 * f:16 * f + 16]]),
                                      calls[f][1])
    assert batched == single
    calls.clear()
    blocks = _process(model_file, tmp_path / "blocks", 5)  # blocks of 5, 5, 5, 1 per image
    assert [len(c[0]) for c in calls] == [5, 5, 5, 1] * 2
    assert blocks == single


def test_galsim_executable_draws_the_example_and_is_reproducible(model_file, tmp_path):
    a = _run_galsim(model_file, tmp_path / "a")
    assert a["lsst_i"].shape == (128, 128) and a["euclid_vis"].shape == (256, 256)
    for img in a.values():
        assert np.isfinite(img).all() and img.std() > 0
    b = _run_galsim(model_file, tmp_path / "b")
    for band in a:
        np.testing.assert_array_equal(a[band], b[band])
    c = _run_galsim(model_file, tmp_path / "c", "image.random_seed.1.str=1 + obj_num")
    assert not np.array_equal(a["euclid_vis"], c["euclid_vis"])


def test_same_galaxy_same_latents_in_every_band(model_file, tmp_path, monkeypatch):
    import astrogen.galsim as plugin

    calls = []
    original = plugin.FlowVAEInput.light_profiles

    def spy(self, conditions, noise):
        for c, u in zip(conditions, noise):
            calls.append((np.asarray(c, float).copy(), np.asarray(u).copy()))
        return original(self, conditions, noise)

    monkeypatch.setattr(plugin.FlowVAEInput, "light_profiles", spy)
    config = galsim.config.ReadConfig(str(EXAMPLE))[0]
    config["input"]["flowvae"]["model"] = str(model_file)
    config["output"]["dir"] = str(tmp_path)
    del config["image"]["noise"]
    galsim.config.Process(config)
    assert len(calls) == 32
    # Flux conservation: each file holds the 16 galaxies' fluxes 10**(-0.4 (mag - zp)).
    for band, zp, first in (("lsst_i", 28.0, 0), ("euclid_vis", 25.5, 16)):
        want = sum(10 ** (-0.4 * (c[0][0] - zp)) for c in calls[first:first + 16])
        got = fits.getdata(tmp_path / f"flowvae_{band}.fits").sum(dtype=np.float64)
        assert got == pytest.approx(want, rel=0.03)
    for k in range(16):
        np.testing.assert_array_equal(calls[k][0], calls[16 + k][0])
        np.testing.assert_array_equal(calls[k][1], calls[16 + k][1])
    assert not np.array_equal(calls[0][1], calls[1][1])  # different galaxies differ


def test_flowvae_galaxy_flux_and_profile(model_file):
    import astrogen.galsim  # noqa: F401  (registers the types)

    base = {"input": {"flowvae": {"model": str(model_file)}},
            "gal": {"type": "FlowVAEGalaxy", "mag": 21.0, "hlr": 0.3, "z": 0.5},
            "image": {"random_seed": 5}, "rng": galsim.BaseDeviate(5), "obj_num": 0}
    galsim.config.ProcessInput(base)
    gal, _ = galsim.config.BuildGSObject(base, "gal")
    assert isinstance(gal, galsim.InterpolatedImage)
    assert gal.flux > 0
    base["gal"] = {"type": "FlowVAEGalaxy", "mag": 21.0, "hlr": 0.3, "z": 0.5, "flux": 1234.5}
    base["rng"] = galsim.BaseDeviate(5)
    gal2, _ = galsim.config.BuildGSObject(base, "gal")
    assert gal2.flux == pytest.approx(1234.5)
    img = gal2.drawImage(nx=64, ny=64, scale=0.03, method="no_pixel")
    assert img.array.sum() == pytest.approx(1234.5, rel=0.02)


def test_missing_condition_is_a_galsim_config_error(model_file):
    import astrogen.galsim  # noqa: F401

    base = {"input": {"flowvae": {"model": str(model_file)}},
            "gal": {"type": "FlowVAEGalaxy", "mag": 21.0, "hlr": 0.3},
            "rng": galsim.BaseDeviate(5), "obj_num": 0}
    galsim.config.ProcessInput(base)
    with pytest.raises(galsim.GalSimConfigError, match="z"):
        galsim.config.BuildGSObject(base, "gal")


def test_plugin_imports_in_a_fresh_interpreter():
    res = subprocess.run([sys.executable, "-c", "import astrogen.galsim, galsim.config as c; "
                          "print('FlowVAEGalaxy' in c.valid_gsobject_types, "
                          "'flowvae' in c.valid_input_types)"],
                         capture_output=True, text=True, timeout=120)
    assert res.stdout.split() == ["True", "True"], res.stderr[-1000:]


def test_parallel_galsim_after_tensorflow_ran_in_the_parent_fails_clearly(model_file, tmp_path):
    """TensorFlow used in the parent, then GalSim forks workers: a clear error, not a hang."""
    script = f"""
import logging, numpy as np, galsim
import astrogen.galsim as plugin
logging.basicConfig(level=logging.INFO)
inp = plugin.FlowVAEInput({str(model_file)!r})
inp.light_profile([21.0, 0.3, 0.5], np.zeros(inp.latent_dim))   # TensorFlow runs here
config = galsim.config.ReadConfig({str(EXAMPLE)!r})[0]
config["input"]["flowvae"]["model"] = {str(model_file)!r}
config["output"]["dir"] = {str(tmp_path)!r}
config["output"]["nproc"] = 2
galsim.config.Process(config, logger=logging.getLogger("galsim"))
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=180, env=env)
    # GalSim logs a failed file and goes on: the error is reported, nothing is written
    assert "TensorFlow had already run" in res.stdout + res.stderr, res.stderr[-2000:]
    assert not list(tmp_path.glob("*.fits"))
