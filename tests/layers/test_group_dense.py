"""GroupDense (ML-Decoder, arXiv:2111.12933, eq. 6) against per-class python loops."""
import keras
import numpy as np
import pytest

from keras_mld.layers import GroupDense
from tests.support.helpers import grad_wrt_variables, to_np

B, D = 2, 8


def loop_reference(t, kernel, bias, num_classes, cosine=False):
    """Eq. 6: g = ceil(N/K); logit[n] = sum_d t[k,d] W[k,d,j] + b[n], k = n // g, j = n % g."""
    t, kernel = t.astype(np.float64), kernel.astype(np.float64)
    g = kernel.shape[2]
    assert g == -(-num_classes // kernel.shape[0])
    out = np.zeros((t.shape[0], num_classes))
    for b in range(t.shape[0]):
        for n in range(num_classes):
            k, j = n // g, n % g
            v, w = t[b, k], kernel[k, :, j]
            if cosine:
                out[b, n] = v @ w / (np.linalg.norm(v) * np.linalg.norm(w))
            else:
                out[b, n] = sum(v[d] * w[d] for d in range(len(v))) + bias[n]
    return out


def make(num_classes, num_groups, seed=0, **kw):
    layer = GroupDense(num_classes, **kw)
    layer.build((None, num_groups, D))
    rng = np.random.default_rng(seed)
    for v in layer.weights:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    return layer


@pytest.mark.parametrize("num_classes,num_groups",
                         [(12, 4), (10, 4), (11, 4), (4, 4), (5, 1), (10, 6)])
def test_values_against_per_class_loop(num_classes, num_groups):
    layer = make(num_classes, num_groups)
    g = -(-num_classes // num_groups)
    assert layer.kernel.shape == (num_groups, D, g) and layer.bias.shape == (num_classes,)
    t = np.random.default_rng(1).normal(size=(B, num_groups, D)).astype("float32")
    y = to_np(layer(t))
    assert y.shape == (B, num_classes)
    ref = loop_reference(t, to_np(layer.kernel), to_np(layer.bias), num_classes)
    np.testing.assert_allclose(y, ref, atol=1e-5, rtol=1e-5)


def test_class_to_group_mapping():
    """Class n reads query n // g and kernel column n % g (row-major flatten of [K, g])."""
    num_classes, num_groups = 10, 4  # g = 3
    layer = GroupDense(num_classes)
    layer.build((None, num_groups, D))
    kernel = np.zeros((num_groups, D, 3), "float32")
    for k in range(num_groups):
        kernel[k, k, :] = 1.0 + np.arange(3)  # query k, feature k, column j -> j + 1
    layer.kernel.assign(kernel)
    t = np.zeros((1, num_groups, D), "float32")
    t[0, np.arange(num_groups), np.arange(num_groups)] = 10.0 ** np.arange(num_groups)
    y = to_np(layer(t))[0]
    expected = [10.0 ** (n // 3) * (n % 3 + 1) for n in range(num_classes)]
    np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_open_images_size_builds_and_runs():
    layer = GroupDense(9600)
    t = np.random.default_rng(2).normal(size=(1, 100, D)).astype("float32")
    y = to_np(layer(t))
    assert layer.kernel.shape == (100, D, 96) and y.shape == (1, 9600)
    kernel, bias = to_np(layer.kernel), to_np(layer.bias)
    for n in (0, 95, 96, 4321, 9599):
        np.testing.assert_allclose(y[0, n], t[0, n // 96] @ kernel[n // 96, :, n % 96] + bias[n],
                                   atol=1e-5, rtol=1e-5)


def test_default_initialiser_matches_official_xavier_normal():
    layer = GroupDense(9600)
    layer.build((None, 100, 64))
    std = np.sqrt(2.0 / (64 * 96 + 100 * 96))  # PyTorch fans of [K, D, g]
    assert abs(to_np(layer.kernel).std() / std - 1) < 0.02
    assert np.all(to_np(layer.bias) == 0)


def test_shared_variant_values():
    layer = make(None, 5, shared=True)
    assert layer.kernel.shape == (D,) and tuple(layer.bias.shape) == ()
    t = np.random.default_rng(3).normal(size=(B, 5, D)).astype("float32")
    y = to_np(layer(t))
    assert y.shape == (B, 5)
    w, b = to_np(layer.kernel).astype(np.float64), float(to_np(layer.bias))
    ref = np.array([[t[i, k].astype(np.float64) @ w + b for k in range(5)] for i in range(B)])
    np.testing.assert_allclose(y, ref, atol=1e-5, rtol=1e-5)
    # the number of queries (labels) may change between calls
    assert to_np(layer(t[:, :3])).shape == (B, 3)


def test_cosine_values_and_range():
    layer = make(10, 4, cosine=True)
    assert layer.bias is None
    t = np.random.default_rng(4).normal(size=(B, 4, D)).astype("float32")
    y = to_np(layer(t))
    np.testing.assert_allclose(y, loop_reference(t, to_np(layer.kernel), None, 10, cosine=True),
                               atol=1e-5)
    assert np.all(np.abs(y) <= 1 + 1e-6)
    # eps-safe: a zero query gives cosine 0, not NaN
    t[0, 0] = 0.0
    y = to_np(layer(t))
    assert np.all(np.isfinite(y)) and np.all(y[0, :3] == 0)


def test_shared_cosine_values():
    layer = make(None, 3, shared=True, cosine=True)
    t = np.random.default_rng(5).normal(size=(B, 3, D)).astype("float32")
    w = to_np(layer.kernel)
    ref = np.einsum("bkd,d->bk", t / np.linalg.norm(t, axis=-1, keepdims=True),
                    w / np.linalg.norm(w))
    np.testing.assert_allclose(to_np(layer(t)), ref, atol=1e-5)


@pytest.mark.parametrize("kwargs", [{"shared": False}, {"shared": True}, {"cosine": True}])
def test_gradients_reach_every_weight(kwargs):
    layer = make(None if kwargs.get("shared") else 10, 4, **kwargs)
    t = np.random.default_rng(6).normal(size=(B, 4, D)).astype("float32")
    variables = layer.trainable_weights
    grads = grad_wrt_variables(lambda: keras.ops.sum(keras.ops.sin(layer(t))), variables)
    for v, g in zip(variables, grads):
        assert g is not None and np.all(np.isfinite(g)) and np.any(g != 0), v.path


@pytest.mark.parametrize("kwargs,name", [
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": None}, "num_classes"),
    ({"num_classes": 4, "cosine": 1}, "cosine"),
])
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GroupDense(**kwargs)


def test_bad_input_shapes():
    with pytest.raises(ValueError, match="rank 3"):
        GroupDense(4)(np.zeros((2, 8), "float32"))
    with pytest.raises(ValueError, match="num_classes"):
        GroupDense(4)(np.zeros((2, 5, 8), "float32"))  # K = 5 > N = 4


def test_keras_round_trip_safe_mode(tmp_path):
    inp = keras.Input((4, D))
    model = keras.Model(inp, GroupDense(10, kernel_initializer="he_normal")(inp))
    t = np.random.default_rng(7).normal(size=(B, 4, D)).astype("float32")
    y = to_np(model(t))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_array_equal(to_np(loaded(t)), y)
    assert loaded.layers[1].get_config() == model.layers[1].get_config()
    assert model.layers[1].compute_output_shape((None, 4, D)) == (None, 10)


def test_mixed_float16_finite():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = GroupDense(10)
        y = layer(np.random.default_rng(8).normal(size=(B, 4, D)).astype("float32"))
        assert layer.kernel.dtype == "float32"
        assert keras.backend.standardize_dtype(y.dtype) == "float16"
        assert np.all(np.isfinite(to_np(y)))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_jit_compile_predict():
    inp = keras.Input((4, D))
    model = keras.Model(inp, GroupDense(10)(inp))
    model.compile(loss="mse", jit_compile=True)
    t = np.random.default_rng(9).normal(size=(B, 4, D)).astype("float32")
    np.testing.assert_allclose(model.predict(t, verbose=0), to_np(model(t)), atol=1e-5)
