"""Test helpers for astrogen's custom Keras layers (and for plug-in authors' layers).

:func:`run_layer_test` is the one check every custom layer goes through, in the manner of
Keras's own ``run_layer_test``: output shape (against ``expected_output_shape`` and the
layer's ``compute_output_shape``), ``get_config`` round trip (JSON-able, ``from_config``
and registered-name serialization give back the same class and configuration), and a
``.keras`` save/load of a functional model holding the layer, whose outputs must be
identical after loading.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["run_layer_test"]


def _flat(x) -> list[np.ndarray]:
    if isinstance(x, dict):
        return [np.asarray(x[k]) for k in sorted(x)]
    if isinstance(x, (list, tuple)):
        return [a for v in x for a in _flat(v)]
    return [np.asarray(x)]


def _shapes(x) -> list[tuple]:
    return [tuple(a.shape) for a in _flat(x)]


def run_layer_test(layer_cls, init_kwargs: dict, input_shape, expected_output_shape=None,
                   input_dtype="float32", input_range=(-1.0, 1.0), call_as_list=False,
                   call_kwargs: dict | None = None, check_compute_output_shape=True,
                   save_load=True, seed: int = 0):
    """Check a custom Keras layer; returns the layer built by the test.

    Parameters
    ----------
    layer_cls : type
        The layer class (registered with ``keras.saving.register_keras_serializable``).
    init_kwargs : dict
        Constructor arguments.
    input_shape : tuple or list of tuples
        Shape of the input, batch first; a list of shapes for a layer with several inputs.
    expected_output_shape : tuple or list of tuples, optional
        Shape(s) of the output(s), batch first (dict outputs in sorted key order).
    input_dtype : str or list of str
        ``"int32"`` inputs are drawn in ``[0, input_range[1])``.
    call_as_list : bool
        Several inputs are passed as one list (``layer([a, b])``) instead of positionally.
    call_kwargs : dict, optional
        Extra keyword arguments of ``call``.
    check_compute_output_shape : bool
        Compare with ``layer.compute_output_shape`` too (if the layer defines one).
    save_load : bool
        Save and load a functional model holding the layer.

    Raises
    ------
    AssertionError
        On the first property that does not hold.
    """
    import keras

    multi = isinstance(input_shape, list)
    shapes = input_shape if multi else [input_shape]
    dtypes = input_dtype if isinstance(input_dtype, list) else [input_dtype] * len(shapes)
    rng = np.random.default_rng(seed)
    lo, hi = input_range
    inputs = [rng.integers(0, int(hi), size=s).astype(d) if d.startswith("int")
              else rng.uniform(lo, hi, size=s).astype(d) for s, d in zip(shapes, dtypes)]
    call_kwargs = dict(call_kwargs or {})

    def call(layer, xs):
        if not multi:
            return layer(xs[0], **call_kwargs)
        return layer(list(xs), **call_kwargs) if call_as_list else layer(*xs, **call_kwargs)

    keras.utils.set_random_seed(seed)
    layer = layer_cls(**init_kwargs)
    out = call(layer, inputs)
    got = _shapes(out)
    if expected_output_shape is not None:
        want = expected_output_shape if isinstance(expected_output_shape, list) \
            else [expected_output_shape]
        assert got == [tuple(s) for s in want], (layer_cls.__name__, got, want)
    assert all(np.all(np.isfinite(a)) for a in _flat(out) if a.dtype.kind == "f"), \
        f"{layer_cls.__name__}: non-finite output"
    own = type(layer).compute_output_shape is not keras.layers.Layer.compute_output_shape
    if check_compute_output_shape and own:
        cos = (layer.compute_output_shape(shapes) if call_as_list
               else layer.compute_output_shape(*shapes))
        cos = cos if isinstance(cos, (list, dict)) or (
            isinstance(cos, tuple) and cos and isinstance(cos[0], tuple)) else [cos]
        cos = [cos[k] for k in sorted(cos)] if isinstance(cos, dict) else list(cos)
        assert [tuple(s) for s in cos] == got, (layer_cls.__name__, cos, got)

    # ---- configuration round trip
    config = layer.get_config()
    assert json.loads(json.dumps(config)) == config, f"{layer_cls.__name__}: not JSON-able"
    assert layer_cls.from_config(config).get_config() == config
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is layer_cls, (layer_cls, type(clone))  # the registered name is ours
    assert clone.get_config() == config
    call(clone, inputs)
    clone.set_weights(layer.get_weights())
    for a, b in zip(_flat(call(clone, inputs)), _flat(out)):
        np.testing.assert_array_equal(a, b)

    # ---- save and load inside a model
    if save_load:
        sym = [keras.Input(shape=s[1:], batch_size=s[0], dtype=d) for s, d in zip(shapes, dtypes)]
        model = keras.Model(sym if multi else sym[0], call(layer, sym))
        ref = model.predict(inputs if multi else inputs[0], verbose=0)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "layer.keras"
            model.save(path)
            loaded = keras.saving.load_model(path, compile=False)
        assert any(type(x) is layer_cls for x in loaded.layers), \
            f"{layer_cls.__name__} not found in the loaded model"
        for a, b in zip(_flat(loaded.predict(inputs if multi else inputs[0], verbose=0)),
                        _flat(ref)):
            np.testing.assert_array_equal(a, b)
    return layer
