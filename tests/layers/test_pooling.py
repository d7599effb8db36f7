"""GlobalPoolHead (the GAP baseline) against numpy."""
import keras
import numpy as np
import pytest

from keras_mld.layers import CosineDense, GlobalPoolHead
from tests.support.helpers import grad_wrt_variables, to_np


def reference(x, kernel, bias, pooling="avg", cosine=False):
    x = x.astype(np.float64)
    axes = tuple(range(1, x.ndim - 1))
    v = x.mean(axis=axes)
    if pooling == "avg+max":
        v = v + x.max(axis=axes)
    if cosine:
        v = v / np.linalg.norm(v, axis=-1, keepdims=True)
        return v @ (kernel / np.linalg.norm(kernel, axis=0))
    return v @ kernel + bias


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 6, 5)])
@pytest.mark.parametrize("pooling", ["avg", "avg+max"])
def test_values_against_numpy(shape, pooling):
    layer = GlobalPoolHead(7, pooling=pooling, dropout=0.3)
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    layer.build(x.shape)
    layer.classifier.bias.assign(np.random.default_rng(1).normal(size=7).astype("float32"))
    y = to_np(layer(x, training=False))
    assert y.shape == (2, 7)
    ref = reference(x, to_np(layer.classifier.kernel), to_np(layer.classifier.bias), pooling)
    np.testing.assert_allclose(y, ref, atol=1e-5, rtol=1e-5)


def test_cosine_values():
    layer = GlobalPoolHead(7, pooling="avg+max", cosine=True)
    x = np.random.default_rng(2).normal(size=(2, 3, 4, 5)).astype("float32")
    y = to_np(layer(x))
    assert isinstance(layer.classifier, CosineDense)
    np.testing.assert_allclose(y, reference(x, to_np(layer.classifier.kernel), None,
                                            "avg+max", cosine=True), atol=1e-5)
    assert np.all(np.abs(y) <= 1 + 1e-6)


def test_dropout_only_in_training():
    layer = GlobalPoolHead(7, dropout=0.5)
    x = np.random.default_rng(3).normal(size=(2, 6, 5)).astype("float32")
    assert not np.allclose(to_np(layer(x, training=True)), to_np(layer(x, training=False)))


def test_gradients():
    layer = GlobalPoolHead(7, pooling="avg+max")
    x = np.random.default_rng(4).normal(size=(2, 6, 5)).astype("float32")
    layer.build(x.shape)
    grads = grad_wrt_variables(lambda: keras.ops.sum(keras.ops.sin(layer(x))),
                               layer.trainable_weights)
    assert len(grads) == 2
    for g in grads:
        assert g is not None and np.all(np.isfinite(g)) and np.any(g != 0)


@pytest.mark.parametrize("kwargs,name", [
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": 3, "pooling": "max"}, "pooling"),
    ({"num_classes": 3, "dropout": 1.0}, "dropout"),
])
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GlobalPoolHead(**kwargs)


def test_bad_input_rank():
    with pytest.raises(ValueError, match="inputs.*rank"):
        GlobalPoolHead(3)(np.zeros((2, 5), "float32"))


@pytest.mark.parametrize("cosine", [False, True])
def test_keras_round_trip_safe_mode(tmp_path, cosine):
    inp = keras.Input((3, 4, 5))
    model = keras.Model(inp, GlobalPoolHead(7, pooling="avg+max", cosine=cosine)(inp))
    x = np.random.default_rng(5).normal(size=(2, 3, 4, 5)).astype("float32")
    y = to_np(model(x))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_array_equal(to_np(loaded(x)), y)
    assert loaded.layers[1].get_config() == model.layers[1].get_config()
    assert model.layers[1].compute_output_shape((None, 3, 4, 5)) == (None, 7)


def test_mixed_float16_finite():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = GlobalPoolHead(7, pooling="avg+max")
        y = layer(np.random.default_rng(6).normal(size=(2, 3, 4, 5)).astype("float32") * 100)
        assert np.all(np.isfinite(to_np(y)))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_jit_compile_predict():
    inp = keras.Input((6, 5))
    model = keras.Model(inp, GlobalPoolHead(7)(inp))
    model.compile(loss="mse", jit_compile=True)
    x = np.random.default_rng(7).normal(size=(2, 6, 5)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), to_np(model(x)), atol=1e-5)
