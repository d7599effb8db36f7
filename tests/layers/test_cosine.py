"""CosineDense (Prokofiev & Sovrasov (arXiv:2209.06585) section 3.4) against numpy."""
import keras
import numpy as np
import pytest

from keras_mld.layers import CosineDense
from tests.support.helpers import grad_wrt_variables, to_np


def reference(v, w):
    """cos_n = normalize(v) . normalize(W_n); W is [C, units], W_n its n-th column."""
    v, w = v.astype(np.float64), w.astype(np.float64)
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0))


def test_values_against_numpy():
    layer = CosineDense(6)
    v = np.random.default_rng(0).normal(size=(3, 5)).astype("float32") * 7
    y = to_np(layer(v))
    assert y.shape == (3, 6) and len(layer.weights) == 1  # no bias
    np.testing.assert_allclose(y, reference(v, to_np(layer.kernel)), atol=1e-5)
    assert np.all(np.abs(y) <= 1 + 1e-6)


def test_rank3_input_and_extremes():
    layer = CosineDense(3)
    layer.build((None, 4))
    layer.kernel.assign(np.eye(4, 3, dtype="float32") * [2.0, 3.0, 4.0])
    v = np.array([[[5.0, 0, 0, 0], [0, -1.0, 0, 0]]], "float32")  # [1, 2, 4]
    y = to_np(layer(v))
    np.testing.assert_allclose(y, [[[1, 0, 0], [0, -1, 0]]], atol=1e-6)


def test_zero_vector_is_safe():
    layer = CosineDense(3)
    v = np.zeros((2, 4), "float32")
    y = to_np(layer(v))
    assert np.all(y == 0)
    grads = grad_wrt_variables(lambda: keras.ops.sum(layer(v)), layer.trainable_weights)
    assert np.all(np.isfinite(grads[0]))


def test_gradients():
    layer = CosineDense(3)
    layer.build((None, 4))
    v = np.random.default_rng(1).normal(size=(2, 4)).astype("float32")
    (g,) = grad_wrt_variables(lambda: keras.ops.sum(keras.ops.sin(3 * layer(v))),
                              layer.trainable_weights)
    assert g is not None and np.all(np.isfinite(g)) and np.any(g != 0)


@pytest.mark.parametrize("kwargs,name", [({"units": 0}, "units"), ({"units": 2.5}, "units"),
                                         ({"units": 2, "epsilon": 0.0}, "epsilon")])
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        CosineDense(**kwargs)


def test_keras_round_trip_safe_mode(tmp_path):
    inp = keras.Input((5,))
    model = keras.Model(inp, CosineDense(4, kernel_initializer="he_normal")(inp))
    v = np.random.default_rng(2).normal(size=(3, 5)).astype("float32")
    y = to_np(model(v))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_array_equal(to_np(loaded(v)), y)
    assert loaded.layers[1].get_config() == model.layers[1].get_config()
    assert model.layers[1].compute_output_shape((None, 7, 5)) == (None, 7, 4)


def test_mixed_float16_finite():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = CosineDense(4)
        y = layer(np.random.default_rng(3).normal(size=(2, 5)).astype("float32") * 1e3)
        assert keras.backend.standardize_dtype(y.dtype) == "float16"
        assert np.all(np.isfinite(to_np(y))) and np.all(np.abs(to_np(y)) <= 1.001)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_jit_compile_predict():
    inp = keras.Input((5,))
    model = keras.Model(inp, CosineDense(4)(inp))
    model.compile(loss="mse", jit_compile=True)
    v = np.random.default_rng(4).normal(size=(3, 5)).astype("float32")
    np.testing.assert_allclose(model.predict(v, verbose=0), to_np(model(v)), atol=1e-6)
