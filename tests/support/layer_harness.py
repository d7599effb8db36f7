"""One test harness for every layer (in the shape of keras-hub's ``run_layer_test``).

:func:`run_layer_test` builds a layer from keyword arguments, calls it on the given inputs
and checks, on the backend of the process (TensorFlow, or JAX through the suite's JAX
subprocess):

* the output shape and dtype, finite values, and ``training=True`` gives the same shape;
* ``get_config`` is JSON-serialisable and ``from_config`` rebuilds a layer that, given the
  same weights, returns the same outputs;
* a model holding the layer saved as ``.keras`` and loaded with ``safe_mode=True`` returns
  identical outputs;
* under the ``mixed_float16`` policy the layer runs, keeps float32 variables, and stays
  within a float16 tolerance of the float32 result (same weights): ``5e-3`` of the output
  scale (absolute and relative), about 3x the largest error measured over all harness
  cases (1.6e-3: GraphAttention on TensorFlow, Query2LabelHead 1.5e-3 on JAX);
* compiled with ``jit_compile=True`` (XLA on TensorFlow, ``jax.jit`` on JAX) the model
  returns the eager outputs.
"""
import inspect
import json
import os
import tempfile

import keras
import numpy as np


def _to_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _as_list(inputs):
    return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]


def _outputs(y):
    return [_to_np(t) for t in (y if isinstance(y, (list, tuple)) else [y])]


def _takes_training(layer):
    return "training" in inspect.signature(layer.call).parameters


def _call(layer, inputs, training=False, **call_kwargs):
    kwargs = dict(call_kwargs)
    if _takes_training(layer):
        kwargs["training"] = training
    return layer(*_as_list(inputs), **kwargs)


def _model(layer, inputs, **call_kwargs):
    """A functional model around ``layer``; every input keeps its full (fixed) shape."""
    symbols = [keras.Input(batch_shape=np.shape(a), dtype=str(np.asarray(a).dtype))
               for a in _as_list(inputs)]
    return keras.Model(symbols, layer(*symbols, **call_kwargs))


def _same_weights(source, target, inputs, call_kwargs):
    _call(target, inputs, **call_kwargs)  # builds it
    target.set_weights(source.get_weights())


def _assert_close(actual, expected, atol, what):
    assert len(actual) == len(expected), what
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a.astype("float64"), e.astype("float64"), atol=atol,
                                   rtol=atol, err_msg=what)


def run_layer_test(layer_cls, init_kwargs, inputs, expected_output_shape,
                   expected_output_dtype="float32", call_kwargs=None, setup=None,
                   run_training=True, run_saving=True, run_mixed_precision=True, run_jit=True,
                   mixed_precision_atol=5e-3, jit_atol=1e-4):
    """Runs the checks listed in the module docstring; returns the eager outputs (numpy).

    ``inputs``: an array or a list of arrays (positional call arguments, each with its full
    shape). ``setup(layer)``: called after the layer is built (e.g. to set non-zero biases).
    """
    call_kwargs = dict(call_kwargs or {})
    name = layer_cls.__name__

    # ---- build and call
    layer = layer_cls(**init_kwargs)
    y = _call(layer, inputs, **call_kwargs)
    if setup is not None:
        setup(layer)
        y = _call(layer, inputs, **call_kwargs)
    outs = _outputs(y)
    shapes = expected_output_shape if isinstance(expected_output_shape, list) else [
        expected_output_shape]
    assert [tuple(o.shape) for o in outs] == [tuple(s) for s in shapes], name
    for o in outs:
        assert str(o.dtype) == expected_output_dtype, (name, o.dtype)
        assert np.all(np.isfinite(o)), name
    if run_training and _takes_training(layer):
        train_outs = _outputs(_call(layer, inputs, training=True, **call_kwargs))
        assert [o.shape for o in train_outs] == [o.shape for o in outs], name
        assert all(np.all(np.isfinite(o)) for o in train_outs), name

    # ---- get_config / from_config
    config = layer.get_config()
    json.dumps(keras.saving.serialize_keras_object(layer))  # JSON-safe config
    again = layer_cls.from_config(config)
    _same_weights(layer, again, inputs, call_kwargs)
    _assert_close(_outputs(_call(again, inputs, **call_kwargs)), outs, 1e-6,
                  f"{name}: from_config(get_config()) with the same weights")

    # ---- .keras round trip, safe_mode=True
    if run_saving:
        model = _model(layer, inputs, **call_kwargs)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "layer.keras")
            model.save(path)
            loaded = keras.models.load_model(path, safe_mode=True)
        _assert_close(_outputs(loaded(_as_list(inputs), training=False)),
                      _outputs(model(_as_list(inputs), training=False)), 1e-6,
                      f"{name}: .keras round trip")
        assert isinstance(loaded.layers[-1], layer_cls) or any(
            isinstance(sub, layer_cls) for sub in loaded.layers), name

    # ---- mixed precision (same weights, float16 compute)
    if run_mixed_precision:
        mixed = layer_cls.from_config({**config, "dtype": "mixed_float16"})
        _same_weights(layer, mixed, inputs, call_kwargs)
        assert all(v.dtype == "float32" for v in mixed.weights), name
        mixed_outs = _outputs(_call(mixed, inputs, **call_kwargs))
        scale = max(1.0, max(float(np.abs(o).max()) for o in outs))
        _assert_close([o.astype("float32") for o in mixed_outs], outs,
                      mixed_precision_atol * scale, f"{name}: mixed_float16")

    # ---- XLA / jax.jit
    if run_jit:
        model = _model(layer, inputs, **call_kwargs)
        model.compile(jit_compile=True)
        eager = _outputs(model(_as_list(inputs), training=False))
        compiled = model.predict_on_batch(_as_list(inputs))
        _assert_close(_outputs(compiled), eager, jit_atol, f"{name}: jit_compile=True")
    return outs
