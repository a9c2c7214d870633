"""Latent flows of the FlowVAE (astrogen.models.flowvae_flow): the one-pass coupling flow
(ConditionalRealNVP) against its definition: bijective, log-det equal to a finite-difference
Jacobian, a normalised 2-D density, one network pass per bijector when sampling, maximum
likelihood training inside a FlowVAE and a .keras round trip."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow_probability")

from astrogen.errors import ConfigError  # noqa: E402
from astrogen.models.flowvae import FlowVAE, load_flowvae, train_flow_step  # noqa: E402
from astrogen.models.flowvae_flow import (ConditionalMAF, ConditionalRealNVP,  # noqa: E402
                                          CouplingNet, build_flow)


@pytest.fixture(autouse=True)
def _seeded_keras():
    """Every test builds its flows from seeded hidden-layer weights (reproducible, also
    under pytest-xdist where other tests draw from the same global generators first)."""
    keras.utils.set_random_seed(20261202)


def _randomize(flow, scale=0.3, seed=0):
    """Random weights in the (zero-initialised) output layers: a non-trivial flow."""
    rng = np.random.default_rng(seed)
    for net in flow.networks:
        for v in (net.output_layer.kernel, net.output_layer.bias):
            v.assign(rng.normal(0, scale, v.shape).astype("float32"))


def test_coupling_flow_is_invertible_with_exact_log_det():
    flow = ConditionalRealNVP(5, 2, num_bijectors=4, hidden_units=(16,))
    _randomize(flow, seed=1)
    rng = np.random.default_rng(2)
    z = rng.normal(size=(6, 5)).astype("float32")
    cond = rng.normal(size=(6, 2)).astype("float32")
    u = flow.inverse(z, cond).numpy()
    assert np.abs(u - z).max() > 0.1  # not the identity
    np.testing.assert_allclose(flow.forward(u, cond).numpy(), z, atol=1e-5)
    # log |det dz/du| against central finite differences, in float64 arithmetic of the
    # float32 map (step 1e-2: truncation error ~1e-5, rounding ~1e-5)
    h = 1e-2
    for b in range(3):
        jac = np.zeros((5, 5))
        for j in range(5):
            e = np.zeros((1, 5), "float32")
            e[0, j] = h
            up = flow.forward(u[b:b + 1] + e, cond[b:b + 1]).numpy().astype(np.float64)
            dn = flow.forward(u[b:b + 1] - e, cond[b:b + 1]).numpy().astype(np.float64)
            jac[:, j] = (up - dn)[0] / (2 * h)
        fldj = float(flow.forward_log_det_jacobian(u[b:b + 1], cond[b:b + 1]).numpy()[0])
        assert abs(fldj - np.linalg.slogdet(jac)[1]) < 2e-3
        assert abs(fldj) > 0.05  # a volume change worth checking
    ildj = flow.inverse_log_det_jacobian(z, cond).numpy()
    np.testing.assert_allclose(ildj, -flow.forward_log_det_jacobian(u, cond).numpy(),
                               atol=1e-4)


def test_coupling_density_is_normalised_in_2d():
    """The density integrated over a box equals the fraction of the flow's own samples that
    fall in it (the hidden layers' random initialisation can put a few % of the mass beyond
    any fixed box, so the box's mass is measured, not assumed to be 1)."""
    keras.utils.set_random_seed(6)  # a draw that puts ~3 % of the mass outside the box
    flow = ConditionalRealNVP(2, 1, num_bijectors=4, hidden_units=(16,), permutation="reverse")
    _randomize(flow, scale=0.25, seed=3)
    cond = np.full((1, 1), -0.4, dtype="float32")
    half = 15.0
    g = np.linspace(-half, half, 301)
    step = g[1] - g[0]
    zz = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(-1, 2).astype("float32")
    logp = flow.log_prob(zz, np.repeat(cond, len(zz), axis=0)).numpy()
    integral = np.exp(logp).sum() * step ** 2  # cells centred on the grid: box half + step/2
    n = 20000
    z = flow.sample(np.repeat(cond, n, axis=0), seed=11).numpy()
    inside = np.mean(np.all(np.abs(z) <= half + step / 2, axis=1))
    assert abs(integral - inside) < 4 * np.sqrt(inside * (1 - inside) / n) + 1e-3
    assert integral > 0.9
    gaussian = -0.5 * np.sum(zz ** 2, axis=1) - np.log(2 * np.pi)
    near = np.sum(zz ** 2, axis=1) < 4
    assert np.abs(logp - gaussian)[near].max() > 0.1  # not the base density


def test_coupling_samples_in_one_pass_per_bijector():
    calls = {"n": 0}

    class Counting(ConditionalRealNVP):
        def _shift_and_log_scale(self, *args, **kwargs):
            calls["n"] += 1
            return super()._shift_and_log_scale(*args, **kwargs)

    flow = Counting(8, 3, num_bijectors=4, hidden_units=(8,))
    cond = np.zeros((5, 3), "float32")
    z = flow.sample(cond, seed=4)
    assert z.shape == (5, 8) and calls["n"] == 4
    # the MAF of the same size needs event_size passes per bijector to sample
    maf = ConditionalMAF(8, 3, num_bijectors=4, hidden_units=(8,))
    seen = {"n": 0}
    for made in maf.mades:
        original = made.call

        def counted(*args, _original=original, **kwargs):
            seen["n"] += 1
            return _original(*args, **kwargs)
        made.call = counted
    maf.sample(cond, seed=4)
    assert seen["n"] >= 4 * 8


def test_coupling_arguments_are_checked():
    with pytest.raises(ConfigError, match="event_size"):
        ConditionalRealNVP(1, 2)
    with pytest.raises(ConfigError, match="hidden_units"):
        CouplingNet(2, 2, hidden_units=())
    with pytest.raises(ConfigError, match="flow_type"):
        build_flow("glow", 4, 0)
    with pytest.raises(ConfigError, match="flow_type"):
        FlowVAE(stamp_size=16, latent_dim=4, channels=(4, 4), flow_type="iaf")


def test_flowvae_coupling_flow_trains_by_likelihood_and_round_trips(tmp_path):
    keras.utils.set_random_seed(5)
    m = FlowVAE(stamp_size=16, latent_dim=4, channels=(4, 4), flow_type="coupling",
                flow_num_bijectors=4, flow_hidden_units=(32,))
    assert isinstance(m.flow, ConditionalRealNVP)
    rng = np.random.default_rng(6)
    cond = np.stack([rng.uniform(20, 26, 512), rng.uniform(0.1, 1.0, 512),
                     rng.uniform(0.1, 2.0, 512)], axis=1).astype("float32")
    m.adapt_conditions(cond)
    c = (cond - cond.mean(0)) / cond.std(0)
    # latents that depend on the conditions, non-Gaussian (a tanh of a linear map)
    z = (np.tanh(c @ rng.normal(size=(3, 4))) * 2 + 0.2 * rng.normal(size=(512, 4)))
    z = z.astype("float32")
    opt = keras.optimizers.Adam(1e-2)
    losses = [train_flow_step(m, opt, z[i % 2 * 256:(i % 2 + 1) * 256],
                              cond[i % 2 * 256:(i % 2 + 1) * 256])["loss"] for i in range(60)]
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 2.0  # nats per latent vector
    path = tmp_path / "coupling.keras"
    m.save(path)
    loaded = load_flowvae(path)
    assert loaded.flow_type == "coupling" and isinstance(loaded.flow, ConditionalRealNVP)
    np.testing.assert_allclose(loaded.log_prob(z[:8], cond[:8]).numpy(),
                               m.log_prob(z[:8], cond[:8]).numpy(), rtol=1e-5, atol=1e-5)
    seeds = np.arange(8, dtype=np.uint64) + 11
    np.testing.assert_allclose(loaded.generate(cond[:8], seeds), m.generate(cond[:8], seeds),
                               rtol=1e-5, atol=1e-6)
