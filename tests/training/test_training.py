"""Training from YAML (astrogen.training): config checks, tiny FlowVAE run, exact resume."""
import json
from pathlib import Path

import numpy as np
import pytest

from astrogen.errors import ConfigError, ResumeError, UnknownKeyError
from astrogen.training import load_training_config, run_training

TINY_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "flowvae_tiny.yaml"


def _weights(path):
    from astrogen.models.flowvae import load_flowvae

    return [np.asarray(w) for w in load_flowvae(path).weights]


@pytest.fixture(scope="module")
def full_run(tiny_dataset, tmp_path_factory):
    """configs/flowvae_tiny.yaml run uninterrupted (20 VAE + 10 flow steps)."""
    out = tmp_path_factory.mktemp("full")
    result = run_training(str(TINY_CONFIG), overrides=[
        f"dataset.path={tiny_dataset}", f"output={out / 'model.keras'}",
        f"run_dir={out / 'run'}"])
    return result


def test_unknown_keys_raise_with_suggestion(tmp_path):
    text = TINY_CONFIG.read_text().replace("  vae_steps: 20", "  vae_stpes: 20")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    line = text.splitlines().index("  vae_stpes: 20") + 1
    with pytest.raises(UnknownKeyError) as err:
        run_training(str(bad))
    msg = str(err.value)
    assert f"training.vae_stpes (line {line})" in msg and "Did you mean 'vae_steps'?" in msg
    assert isinstance(err.value, KeyError)
    with pytest.raises(UnknownKeyError, match=r"flowvae\.latent_dimm.*'latent_dim'"):
        load_training_config(str(TINY_CONFIG), ["flowvae.latent_dimm=4"])
    with pytest.raises(UnknownKeyError, match=r"dataset\.stamp_sise.*'stamp_size'"):
        load_training_config(str(TINY_CONFIG), ["dataset.stamp_sise=32"])
    with pytest.raises(UnknownKeyError, match=r"traning.*Did you mean 'training'"):
        load_training_config(str(TINY_CONFIG), ["traning.batch_size=4"])
    with pytest.raises(ConfigError, match=r"training\.batch_size.*integer"):
        load_training_config(str(TINY_CONFIG), ["training.batch_size=abc"])
    with pytest.raises(ConfigError, match="multiple of"):
        load_training_config(str(TINY_CONFIG), ["dataset.stamp_size=40"])
    with pytest.raises(ConfigError, match="not found"):
        run_training(str(tmp_path / "missing.yaml"))
    cfg = load_training_config(str(TINY_CONFIG), ["training.vae_steps=3"])
    assert cfg["training"]["vae_steps"] == 3 and cfg["training"]["noise_model"] == "power"


def test_tiny_training_runs_and_loss_decreases(full_run):
    from astrogen.models.flowvae import load_flowvae

    r = full_run
    assert r["complete"] and r["steps_done"] == 30
    model = load_flowvae(r["output"])
    assert model.stamp_size == 32 and model.condition_names == ["mag", "hlr", "z"]
    assert model.flux_scale == r["flux_scale"] > 0
    # negative ELBO on fixed training stamps, before vs after the VAE phase
    assert r["monitor"]["first"]["step"] == 0 and r["monitor"]["last"]["step"] == 20
    assert r["monitor"]["last"]["loss"] < r["monitor"]["first"]["loss"]
    # flow: -mean log p(z|c) on all training latents vs the initial (identity) flow
    with np.load(f"{r['run_dir']}/latents.npz") as z:
        lat, cond = z["z"], z["conditions"]
    initial = np.mean(0.5 * np.sum(lat ** 2, axis=1) + 0.5 * lat.shape[1] * np.log(2 * np.pi))
    final = -float(np.mean(model.log_prob(lat, cond)))
    assert final < initial
    log = [json.loads(x) for x in open(f"{r['run_dir']}/losses.jsonl")]
    steps = [x["step"] for x in log if x["phase"] in ("vae", "flow")]
    assert steps == list(range(1, 31))
    assert all(np.isfinite(x["loss"]) for x in log)
    img = model.generate(cond[:2], np.array([1, 2], dtype=np.uint64))
    assert img.shape == (2, 32, 32) and np.all(np.isfinite(img))
    assert json.loads(open(f"{r['run_dir']}/result.json").read())["steps_done"] == 30


def test_resume_gives_identical_weights(full_run, tiny_overrides):
    ov = tiny_overrides("resumed")
    a = run_training(str(TINY_CONFIG), overrides=ov + ["training.max_steps_this_run=13"])
    assert a["steps_done"] == 13 and not a["complete"]
    run_dir = a["run_dir"]
    with pytest.raises(ResumeError, match="--resume"):
        run_training(str(TINY_CONFIG), overrides=ov)
    with pytest.raises(ResumeError, match="vae_learning_rate"):
        run_training(str(TINY_CONFIG), resume=True,
                     overrides=ov + ["training.vae_learning_rate=0.01"])
    # a log line written after the last checkpoint (as after a crash) is dropped on resume
    with open(f"{run_dir}/losses.jsonl", "a") as fh:
        fh.write(json.dumps({"step": 99, "phase": "vae", "loss": 0.0}) + "\n")
    b = run_training(str(TINY_CONFIG), resume=True,
                     overrides=ov + ["training.max_steps_this_run=9"])  # crosses into the flow
    assert b["start_step"] == 13 and b["steps_done"] == 22
    c = run_training(str(TINY_CONFIG), resume=True, overrides=ov)
    assert c["start_step"] == 22 and c["complete"]
    # bit-identical to the uninterrupted run (CPU, same machine)
    for x, y in zip(_weights(full_run["output"]), _weights(c["output"])):
        np.testing.assert_array_equal(x, y)
    log = [json.loads(x) for x in open(f"{run_dir}/losses.jsonl")]
    full = [json.loads(x) for x in open(f"{full_run['run_dir']}/losses.jsonl")]
    key = [(x["step"], x["phase"], x["loss"]) for x in log]
    assert key == [(x["step"], x["phase"], x["loss"]) for x in full]
    # resuming a finished run only rewrites the model
    d = run_training(str(TINY_CONFIG), resume=True, overrides=ov)
    assert d["complete"] and d["start_step"] == 30


def test_temper_bright_stamps_caps_the_peak_snr():
    import numpy as np

    from astrogen.training.flowvae_trainer import temper_bright_stamps

    obs = np.zeros((3, 8, 8), np.float32)
    obs[:, 4, 4] = [1.0, 10.0, 1000.0]
    sigma = np.array([1.0, 1.0, 2.0], np.float32)
    power = np.ones((3, 8, 5), np.float32)
    out = temper_bright_stamps({"observed": obs, "noise_sigma": sigma, "noise_power": power}, 50.0)
    # peak S/N 1, 10 unchanged; 500 -> 50: variance x 100
    np.testing.assert_allclose(out["noise_sigma"].numpy(), [1.0, 1.0, 20.0], rtol=1e-6)
    np.testing.assert_allclose(out["noise_power"].numpy()[:, 0, 0], [1.0, 1.0, 100.0], rtol=1e-5)
    peak_snr = obs.max(axis=(1, 2)) / out["noise_sigma"].numpy()
    assert peak_snr.max() <= 50.0 + 1e-4


def test_flow_only_run_fits_a_coupling_flow_on_a_trained_vae(full_run, tiny_overrides):
    """training.init_vae_from + vae_steps 0: the trained encoder/decoder are kept, the
    latents are the same, and the configured (coupling) flow is fitted by likelihood."""
    from astrogen.models.flowvae import load_flowvae
    from astrogen.models.flowvae_flow import ConditionalRealNVP

    flow_only = ["training.vae_steps=0", f"training.init_vae_from={full_run['output']}",
                 "flowvae.flow_type=coupling", "flowvae.flow_num_bijectors=4"]
    with pytest.raises(ConfigError, match="vae_steps: 0"):
        load_training_config(str(TINY_CONFIG), tiny_overrides("bad") + flow_only[1:])
    with pytest.raises(ConfigError, match="init_vae_from"):
        run_training(str(TINY_CONFIG), overrides=tiny_overrides("arch") + flow_only
                     + ["flowvae.latent_dim=4"])
    r = run_training(str(TINY_CONFIG), overrides=tiny_overrides("flow") + flow_only)
    assert r["complete"] and r["steps_done"] == 10
    vae, new = load_flowvae(full_run["output"]), load_flowvae(r["output"])
    assert new.flow_type == "coupling" and isinstance(new.flow, ConditionalRealNVP)
    for a, b in zip(vae.encoder.weights + vae.decoder.weights,
                    new.encoder.weights + new.decoder.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with np.load(f"{full_run['run_dir']}/latents.npz") as z0, \
            np.load(f"{r['run_dir']}/latents.npz") as z1:
        np.testing.assert_allclose(z1["z"], z0["z"], rtol=1e-5, atol=1e-5)
        lat, cond = z1["z"], z1["conditions"]
    initial = np.mean(0.5 * np.sum(lat ** 2, axis=1) + 0.5 * lat.shape[1] * np.log(2 * np.pi))
    assert -float(np.mean(new.log_prob(lat, cond))) < initial
