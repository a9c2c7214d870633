"""FlowVAE training under tf.distribute: ``strategy: mirrored`` over 2 logical CPU devices is
the same run as ``strategy: default`` (to float rounding), including ``--resume``; bad
distribution settings are ConfigErrors naming their key.

The training runs happen in a subprocess: logical CPU devices must be configured before
TensorFlow initialises, which the pytest process may already have done.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from astrogen.errors import ConfigError
from astrogen.training.config import load_training_config
from astrogen.training.flowvae_trainer import check_distribution

TINY_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "flowvae_tiny.yaml"

# tiny run: 3 VAE + 2 flow steps; clipping and free bits on, so that the replicated
# clipping (all-reduce, then clip) and the global free-bits mask are exercised
SETTINGS = ["training.vae_steps=3", "training.flow_steps=2", "training.monitor_size=8",
            "training.log_every=1", "training.checkpoint_every=2", "training.clipnorm=100",
            "flowvae.free_bits=0.05"]

SCRIPT = textwrap.dedent("""
    import json, sys
    from astrogen.cli import main
    from astrogen.errors import ConfigError

    config, base, folder = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]

    def train(name, *extra):
        ov = base + [f"output={folder}/{name}/model.keras", f"run_dir={folder}/{name}/run",
                     *extra]
        assert main(["train", config, *ov]) == 0

    mirrored = ["training.strategy=mirrored", "training.logical_cpu_devices=2"]
    # interrupted after 2 VAE steps (checkpoint of mirrored variables), then resumed
    train("mirrored", *mirrored, "training.max_steps_this_run=2")
    train("mirrored", "--resume", *mirrored)
    train("default")   # same process: TensorFlow now runs with 2 logical CPUs

    from astrogen.training.checkpoint import latest_checkpoint, load_checkpoint
    from astrogen.training.config import load_training_config
    from astrogen.training.flowvae_trainer import setup_strategy

    out = {}
    for name in ("mirrored", "default"):
        run = f"{folder}/{name}/run"
        out[name] = {"log": [json.loads(x) for x in open(f"{run}/losses.jsonl")],
                     "result": json.load(open(f"{run}/result.json")),
                     "weights": [w.tolist() for w in load_checkpoint(
                         latest_checkpoint(f"{run}/checkpoints"))[1]["model"]]}
    # TensorFlow is initialised: another logical-device split is refused by name
    cfg = load_training_config(config, base + ["training.strategy=mirrored",
                                               "training.logical_cpu_devices=4"])
    try:
        setup_strategy(cfg["training"])
        out["late_error"] = None
    except ConfigError as exc:
        out["late_error"] = str(exc)
    print(json.dumps(out))
""")


def test_mirrored_training_matches_default(tiny_dataset, tmp_path):
    base = [f"dataset.path={tiny_dataset}", *SETTINGS]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(TINY_CONFIG), json.dumps(base),
                        str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    mir, ref = out["mirrored"], out["default"]
    assert mir["result"]["replicas"] == 2 and ref["result"]["replicas"] == 1
    assert mir["result"]["start_step"] == 2 and mir["result"]["complete"]
    assert (tmp_path / "mirrored" / "model.keras").is_file()  # saved from mirrored variables

    def losses(log, phase):
        return np.array([x["loss"] for x in log if x["phase"] == phase])

    for phase, n in (("vae", 3), ("flow", 2)):
        a, b = losses(ref["log"], phase), losses(mir["log"], phase)
        assert len(a) == len(b) == n and np.all(np.isfinite(b))
        # Same weights, same global batch and, by design, the same reparameterisation
        # noise per stamp (the replicas take their rows of the global draw): the first
        # step agrees to float rounding (measured: 7e-8 relative), later steps to the
        # rounding differences of the updates (all-reduce order)
        np.testing.assert_allclose(b[0], a[0], rtol=1e-6)
        np.testing.assert_allclose(b, a, rtol=1e-4)
    # monitored negative ELBO (fixed stamps and noise, evaluated outside the replicas)
    mon = [[x["loss"] for x in r["log"] if x["phase"] == "monitor"] for r in (ref, mir)]
    assert len(mon[0]) == len(mon[1]) == 2  # steps 0 and 3
    np.testing.assert_allclose(mon[1], mon[0], rtol=1e-4)
    for wa, wb in zip(ref["weights"], mir["weights"]):
        np.testing.assert_allclose(np.array(wb), np.array(wa), rtol=1e-3, atol=1e-5)
    assert out["late_error"] and "training.logical_cpu_devices" in out["late_error"]


def test_bad_distribution_settings_are_config_errors():
    cfg = str(TINY_CONFIG)
    with pytest.raises(ConfigError, match=r"training\.batch_size.*divisible.*replicas \(2\)"
                       r".*batch_size=7"):
        load_training_config(cfg, ["training.strategy=mirrored",
                                   "training.logical_cpu_devices=2", "training.batch_size=7"])
    with pytest.raises(ConfigError, match=r"training\.flow_batch_size.*divisible"):
        load_training_config(cfg, ["training.strategy=mirrored",
                                   "training.devices=['/cpu:0','/cpu:1']",
                                   "training.flow_batch_size=15"])
    with pytest.raises(ConfigError, match=r"training\.logical_cpu_devices.*mirrored"
                       r".*logical_cpu_devices=2"):
        load_training_config(cfg, ["training.logical_cpu_devices=2"])
    with pytest.raises(ConfigError, match=r"training\.devices.*mirrored"):
        load_training_config(cfg, ["training.devices=['/gpu:0']"])
    with pytest.raises(ConfigError, match=r"training\.strategy.*one of.*Did you mean "
                       r"'mirrored'.*mirored"):
        load_training_config(cfg, ["training.strategy=mirored"])
    with pytest.raises(ConfigError, match=r"training\.devices.*device names.*gpu0"):
        load_training_config(cfg, ["training.strategy=mirrored", "training.devices=['gpu0']"])
    with pytest.raises(ConfigError, match=r"training\.logical_cpu_devices.*integer"):
        load_training_config(cfg, ["training.strategy=mirrored",
                                   "training.logical_cpu_devices=two"])
    # replicas known only once the strategy exists (e.g. every GPU): checked by the trainer
    t = load_training_config(cfg, ["training.strategy=mirrored"])["training"]
    assert t["devices"] is None and t["logical_cpu_devices"] is None
    with pytest.raises(ConfigError, match=r"training\.batch_size.*replicas \(3\)"):
        check_distribution(t, replicas=3)
    check_distribution(t, replicas=4)  # 8 and 16 split in 4
