"""Every custom Keras layer of the package through one helper
(:func:`astrogen.testing.run_layer_test`: output shapes, ``get_config`` round trip with the
registered name, ``.keras`` save/load of a model holding the layer), and a check that no
registered layer is left out."""
import ast
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

keras = pytest.importorskip("keras")

from astrogen.models import flowvae_flow, flowvae_layers, layers_diffusion  # noqa: E402
from astrogen.models import layers_periodic, nbody_gan, prob_unet, unet  # noqa: E402
from astrogen.testing import run_layer_test  # noqa: E402

B = 2
# the N-body layers are registered on first use; their classes
PeriodicPad2D = type(nbody_gan.PeriodicPad2D(1))
TransformedResidual = type(nbody_gan.TransformedResidual())
#: (layer class, constructor arguments, input shape(s), expected output shape(s), options)
CASES = [
    (flowvae_layers.ResidualBlock, {"filters": 8}, (B, 8, 8, 4), (B, 8, 8, 8), {}),
    (flowvae_layers.GaussianPosterior, {"latent_dim": 3}, (B, 16), [(B, 3), (B, 3)], {}),
    (flowvae_layers.ReflectConv2D, {"filters": 3}, (B, 8, 8, 2), (B, 8, 8, 3), {}),
    (flowvae_layers.ResidualBlock, {"filters": 4, "padding": "reflect"}, (B, 8, 8, 4),
     (B, 8, 8, 4), {}),
    (flowvae_flow.MaskedDense, {"units": 4, "in_degrees": [1, 2, 3],
                                "out_degrees": [1, 1, 2, 3], "strict": True,
                                "activation": "elu"}, (B, 3), (B, 4), {}),
    (flowvae_flow.MADE, {"event_size": 3, "hidden_units": [8, 8], "conditional_size": 2},
     [(B, 3), (B, 2)], None, {}),
    (flowvae_flow.ConditionalMAF, {"event_size": 3, "condition_size": 2,
                                   "num_bijectors": 2, "hidden_units": [8, 8]},
     [(B, 3), (B, 2)], (B,), {"check_compute_output_shape": False}),
    (flowvae_flow.CouplingNet, {"in_size": 3, "out_size": 2, "hidden_units": [8, 8],
                                "conditional_size": 2}, [(B, 3), (B, 2)], [(B, 2), (B, 2)],
     {}),
    (flowvae_flow.ConditionalRealNVP, {"event_size": 5, "condition_size": 2,
                                       "num_bijectors": 3, "hidden_units": [8]},
     [(B, 5), (B, 2)], (B,), {"check_compute_output_shape": False}),
    (layers_diffusion.SinusoidalTimeEmbedding, {"dim": 8}, (B,), (B, 8),
     {"input_dtype": "int32", "input_range": (0, 1000)}),
    (layers_diffusion.ResidualBlock, {"out_channels": 8, "norm_groups": 4},
     [(B, 8, 8, 4), (B, 16)], (B, 8, 8, 8), {}),
    (layers_diffusion.AttentionBlock, {"num_heads": 2, "norm_groups": 4}, (B, 4, 4, 8),
     (B, 4, 4, 8), {}),
    (layers_diffusion.Downsample, {}, (B, 8, 8, 4), (B, 4, 4, 4), {}),
    (layers_diffusion.Upsample, {}, (B, 4, 4, 4), (B, 8, 8, 4), {}),
    (unet.ConvBlock, {"filters": 4, "seed": 1}, (B, 8, 8, 2), (B, 8, 8, 4), {}),
    (unet.UNetBackbone, {"depth": 2, "base_filters": 4, "seed": 1}, (B, 8, 8, 2),
     (B, 8, 8, 4), {}),
    (prob_unet.GaussianEncoder, {"latent_dim": 3, "depth": 2, "base_filters": 4, "seed": 1},
     (B, 8, 8, 2), [(B, 3), (B, 3)], {}),
    (prob_unet.FComb, {"n_outputs": 3, "n_layers": 2, "filters": 4, "seed": 1},
     [(B, 8, 8, 4), (B, 3)], (B, 8, 8, 3), {"call_as_list": True}),
    (PeriodicPad2D, {"pad": 1}, (B, 6, 6, 1), (B, 8, 8, 1), {}),
    (layers_periodic.PeriodicPad3D, {"pad": 2}, (B, 4, 4, 4, 3), (B, 8, 8, 8, 3), {}),
    (layers_periodic.PeriodicConv3D, {"filters": 5, "strides": 2}, (B, 6, 6, 6, 2),
     (B, 3, 3, 3, 5), {}),
    (TransformedResidual, {}, [(B, 6, 6, 1), (B, 6, 6, 1)], (B, 6, 6, 1),
     {"call_as_list": True, "input_range": (-0.9, 0.9)}),
]


@pytest.mark.parametrize("cls, kwargs, shape, expected, opts", CASES,
                         ids=[f"{c[0].__module__.rsplit('.', 1)[-1]}.{c[0].__name__}"
                              for c in CASES])
def test_layer(cls, kwargs, shape, expected, opts):
    run_layer_test(cls, kwargs, shape, expected, **opts)


def _registered_layers() -> set[str]:
    """``module.Class`` of every class decorated with register_keras_serializable whose
    base is a Keras *layer* (models are tested with their own save/load tests)."""
    out = set()
    root = Path(__file__).resolve().parents[2] / "astrogen" / "models"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    "register_keras_serializable" in ast.unparse(d)
                    for d in node.decorator_list) and any(
                    ast.unparse(b).endswith("Layer") for b in node.bases):
                out.add(f"{path.stem}.{node.name}")
    return out


def test_every_registered_layer_is_tested():
    tested = {f"{c[0].__module__.rsplit('.', 1)[-1]}.{c[0].__name__}" for c in CASES}
    registered = _registered_layers()
    assert len(registered) >= 15
    assert registered <= tested, sorted(registered - tested)
