import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_flowvae_file(tmp_path_factory):
    """An untrained 32x32 FlowVAE with a condition normalisation and training range, saved.

    Enough to test the wiring (shapes, seeds, chunking, ranges, files); model quality is
    measured by benchmarks/flowvae_benchmark.py, not here.
    """
    import keras

    from astrogen.models.flowvae import FlowVAE

    keras.utils.set_random_seed(3)
    model = FlowVAE(stamp_size=32, latent_dim=4, channels=[8, 8, 16, 16], flux_scale=0.05,
                    flow_num_bijectors=2, flow_hidden_units=[16, 16],
                    condition_names=["mag", "hlr", "z"])
    rng = np.random.default_rng(0)
    cond = np.column_stack([rng.uniform(18, 25, 200), rng.uniform(0.1, 1.0, 200),
                            rng.uniform(0.1, 2.0, 200)])
    model.adapt_conditions(cond)
    path = tmp_path_factory.mktemp("flowvae") / "tiny.keras"
    model.save(path)
    return path
