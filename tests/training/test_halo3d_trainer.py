"""The 3-D halo network's trainer (``model: halo_vnet``) on a tiny protohalo data set: the
YAML is checked, the run writes the model with its metadata, and an interrupted run resumed
from its checkpoint ends with the same weights as an uninterrupted one."""
import os
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from astrogen.errors import ConfigError  # noqa: E402
from astrogen.training import load_training_config, run_training  # noqa: E402


def _yaml(tmp_path, name, extra=""):
    p = tmp_path / f"{name}.yaml"
    p.write_text(textwrap.dedent(f"""\
        model: halo_vnet
        seed: 1
        output: {tmp_path / name / 'v.keras'}
        run_dir: {tmp_path / name / 'run'}
        dataset:
          path: {tmp_path / 'data'}
          n_boxes: 2
          n_grid: 16
          box_size: 16.0
          n_steps: 3
          z_init: 4.0
          min_members: 8
          mask_min_particles: 10
          sigma8: 1.2
        halo_vnet:
          channels: [2, 4]
        training:
          steps: 4
          batch_size: 2
          checkpoint_every: 2
          log_every: 1
        """) + extra)
    return p


def test_tiny_run_and_exact_resume(tmp_path, capsys):
    from astrogen.models.halo_vnet import load_halo_vnet

    full = run_training(str(_yaml(tmp_path, "full")))
    assert full["steps_done"] == 4 and full["n_boxes"] == 2
    model = load_halo_vnet(tmp_path / "full" / "v.keras")
    assert model.meta["mask_min_particles"] == 10 and model.meta["box_size"] == 16.0
    assert model.input_scale == pytest.approx(full["input_scale"])
    part = _yaml(tmp_path, "part")
    first = run_training(str(part), overrides=["training.max_steps_this_run=2"])
    assert first["steps_done"] == 2 and not first["complete"]
    capsys.readouterr()
    second = run_training(str(part), resume=True)
    assert "(step 2)" in capsys.readouterr().out
    assert second["steps_done"] == 4 and second["complete"]
    resumed = load_halo_vnet(tmp_path / "part" / "v.keras")
    for a, b in zip(model.network.get_weights(), resumed.network.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="halo_vnet.channels"):
        load_training_config(str(_yaml(tmp_path, "bad").read_text()
                                 .replace("channels: [2, 4]", "channels: [2, 4, 4, 4, 4, 4]")))
    with pytest.raises(ConfigError, match="training.size_weight"):
        load_training_config(_yaml(tmp_path, "bad2").read_text()
                             .replace("log_every: 1", "log_every: 1\n  size_weight: -1"))
