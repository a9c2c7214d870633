"""Multi-replica training with tf.distribute.MirroredStrategy over 2 logical CPU devices gives
the same losses and weights as the default strategy (in a subprocess: the logical devices
must be configured before TensorFlow starts)."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent("""
    import json, sys
    from astrogen.tf_quiet import import_tensorflow_quietly
    tf = import_tensorflow_quietly()
    import keras
    import numpy as np
    from astrogen.pipeline.tf_distribute import logical_cpu_devices, make_strategy, train

    devices = logical_cpu_devices(2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]], "float32") + 0.1).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32, drop_remainder=True).repeat()

    def build():
        keras.utils.set_random_seed(1)
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
                                 keras.layers.Dense(1)])

    def per_example(model, batch):
        xb, yb = batch
        return tf.reduce_mean((model(xb, training=True) - yb) ** 2, axis=-1)

    out = {"devices": devices}
    for kind in ("default", "mirrored"):
        strategy = make_strategy(kind, devices if kind == "mirrored" else None)
        losses, model = train(strategy, build, per_example, data, steps=40, learning_rate=0.03)
        out[kind] = {"replicas": strategy.num_replicas_in_sync, "losses": losses,
                     "weights": [w.tolist() for w in model.get_weights()]}
    print(json.dumps(out))
""")


def test_mirrored_strategy_matches_default_strategy():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(out["devices"]) == 2
    assert out["default"]["replicas"] == 1 and out["mirrored"]["replicas"] == 2
    a, b = np.array(out["default"]["losses"]), np.array(out["mirrored"]["losses"])
    assert a[-1] < 0.25 * a[0]  # it does learn
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)  # measured: 1e-6 apart
    for wa, wb in zip(out["default"]["weights"], out["mirrored"]["weights"]):
        np.testing.assert_allclose(np.array(wb), np.array(wa), rtol=1e-4, atol=1e-5)


def test_unknown_strategy_is_a_config_error():
    from astrogen.errors import ConfigError
    from astrogen.pipeline.tf_distribute import make_strategy

    with pytest.raises(ConfigError, match="strategy: must be one of"):
        make_strategy("mirored")
