"""MLDecoder against a numpy reference written from ML-Decoder (Ridnik et al., arXiv:2111.12933)
section 2.3.2."""
import warnings

import keras
import numpy as np
import pytest

from keras_mld.layers import MLDecoder
from tests.support.helpers import grad_wrt_variables, to_np
from tests.support.numpy_reference import decoder_layer_weights

EPS = 1e-5  # LayerNorm epsilon (PyTorch default, used by the official code)


# ---------------------------------------------------------------- numpy reference
# (arXiv:2111.12933, eqs. 7-9)
def _ln(x, gamma, beta):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * gamma + beta


def _softmax(s):
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    return p / p.sum(-1, keepdims=True)


def _mha(t, e, w):
    """Multi-head attention, query=t [B,K,D], key=value=e [B,T,D]; Keras' weight layout:
    q/k/v kernels [D, H, dh] and biases [H, dh], output kernel [H, dh, D] and bias [D]."""
    q = np.einsum("bkd,dhc->bkhc", t, w["wq"]) + w["bq"]
    k = np.einsum("btd,dhc->bthc", e, w["wk"]) + w["bk"]
    v = np.einsum("btd,dhc->bthc", e, w["wv"]) + w["bv"]
    s = np.einsum("bkhc,bthc->bhkt", q, k) / np.sqrt(q.shape[-1])
    o = np.einsum("bhkt,bthc->bkhc", _softmax(s), v)
    return np.einsum("bkhc,hcd->bkd", o, w["wo"]) + w["bo"]


def reference(x, w, num_classes, cosine=False):
    """ML-Decoder section 2.3.2, inference mode (dropout = identity). ``cosine``: normalise both
    arguments of the GroupDense dot products, no bias (Prokofiev & Sovrasov (arXiv:2209.06585)
    3.4)."""
    x = x.astype(np.float64)
    if x.ndim == 4:  # row-major: h, then w
        x = x.reshape(x.shape[0], x.shape[1] * x.shape[2], x.shape[3])
    e = np.maximum(x @ w["embed_w"] + w["embed_b"], 0.0)
    t = np.broadcast_to(w["queries"], (x.shape[0],) + w["queries"].shape)
    for lw in w["layers"]:
        t = _ln(t + t, lw["g1"], lw["b1"])
        t = _ln(t + _mha(t, e, lw), lw["g2"], lw["b2"])
        f = np.maximum(t @ lw["w1"] + lw["c1"], 0.0) @ lw["w2"] + lw["c2"]
        t = _ln(t + f, lw["g3"], lw["b3"])
    kernel, bias = w["gd_w"], w.get("gd_b")  # [K, D, g], [N]
    if cosine:
        t = t / np.linalg.norm(t, axis=-1, keepdims=True)
        kernel = kernel / np.linalg.norm(kernel, axis=1, keepdims=True)
        bias = np.zeros(num_classes)
    g = kernel.shape[2]
    out = np.zeros((x.shape[0], num_classes))
    for n in range(num_classes):  # class n -> query n // g, column n % g
        out[:, n] = t[:, n // g, :] @ kernel[n // g, :, n % g] + bias[n]
    return out


def weights_of(layer):
    f = lambda v: to_np(v).astype(np.float64)  # noqa: E731
    w = {"embed_w": f(layer.embed.kernel), "embed_b": f(layer.embed.bias),
         "queries": f(layer.queries.queries),
         "gd_w": f(layer.group_dense.kernel)}
    if layer.group_dense.bias is not None:
        w["gd_b"] = f(layer.group_dense.bias)
    w["layers"] = [decoder_layer_weights(dl) for dl in layer.decoder_layers]
    return w


def randomise(layer, scale=0.3):
    """Non-trivial values for every weight (biases and LN parameters included)."""
    rng = np.random.default_rng(0)
    for v in layer.weights:
        offset = 1.0 if "gamma" in v.path else 0.0
        v.assign(rng.normal(0.0, scale, v.shape).astype("float32") + offset)


def small(num_classes=10, num_groups=4, **kw):
    kw = {"embed_dim": 8, "num_heads": 2, "ff_dim": 8, **kw}
    return MLDecoder(num_classes, num_groups, **kw)


# ---------------------------------------------------------------- forward values
# one decoder shape (B=2, T=12, C=5, K=4, D=8) throughout: fewer JAX per-op compilations
@pytest.mark.parametrize("num_classes,num_groups,shape,num_layers", [
    (4, 4, (2, 3, 4, 5), 1),    # full decoding (K = N), spatial input
    (4, 4, (2, 12, 5), 1),      # full decoding, token input
    (12, 4, (2, 3, 4, 5), 1),   # group decoding, N divisible by K (g = 3)
    (10, 4, (2, 12, 5), 1),     # N not divisible by K (g = 3, last group has 1 class)
    (11, 4, (2, 3, 4, 5), 2),   # two decoder layers, N not divisible by K
])
def test_forward_matches_numpy(num_classes, num_groups, shape, num_layers):
    layer = small(num_classes, num_groups, num_layers=num_layers, query_type="learnable")
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    layer.build(x.shape)
    randomise(layer)
    y = to_np(layer(x, training=False))
    assert y.shape == (shape[0], num_classes)
    ref = reference(x, weights_of(layer), num_classes)
    np.testing.assert_allclose(y, ref, atol=1e-5, rtol=1e-5)


def test_spatial_equals_row_major_tokens():
    layer = small()
    x = np.random.default_rng(2).normal(size=(2, 3, 4, 5)).astype("float32")
    a = to_np(layer(x))
    b = to_np(layer(x.reshape(2, 12, 5)))
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_cosine_outputs_are_cosines():
    layer = small(10, 4, cosine=True)
    x = np.random.default_rng(3).normal(size=(2, 12, 5)).astype("float32")
    y = to_np(layer(x, training=False))
    assert layer.group_dense.bias is None
    np.testing.assert_allclose(y, reference(x, weights_of(layer), 10, cosine=True), atol=1e-5)
    assert np.all(np.abs(y) <= 1 + 1e-6)


# ---------------------------------------------------------------- queries and gradients
def test_fixed_queries_not_trainable_learnable_are():
    fixed, learn = small(), small(query_type="learnable")
    for layer in (fixed, learn):
        layer.build((None, 12, 5))
    def has(vs, v):
        return any(w is v for w in vs)

    assert not has(fixed.trainable_weights, fixed.queries.queries)
    assert has(fixed.non_trainable_weights, fixed.queries.queries)
    fixed.trainable = True
    assert not has(fixed.trainable_weights, fixed.queries.queries)
    assert has(learn.trainable_weights, learn.queries.queries)
    assert fixed.queries.queries.shape == (4, 8)


@pytest.mark.parametrize("query_type", ["fixed", "learnable"])
def test_gradients_reach_every_trainable_weight(query_type):
    layer = small(12, 4, query_type=query_type, num_layers=2)
    x = np.random.default_rng(5).normal(size=(2, 3, 4, 5)).astype("float32")
    layer.build(x.shape)
    variables = layer.trainable_weights
    assert len(variables) == 2 + 2 + 2 * 18 + (1 if query_type == "learnable" else 0)
    grads = grad_wrt_variables(lambda: keras.ops.sum(keras.ops.sin(layer(x, training=False))),
                               variables)
    for v, g in zip(variables, grads):
        assert g is not None, v.path
        assert np.all(np.isfinite(g)), v.path
        assert np.any(g != 0), v.path


# ---------------------------------------------------------------- arguments
@pytest.mark.parametrize("kwargs,name", [
    ({"num_classes": 0}, "num_classes"),
    ({"num_groups": 0}, "num_groups"),
    ({"embed_dim": 10, "num_heads": 4}, "num_heads"),
    ({"query_type": "words"}, "query_type"),
    ({"dropout": 1.5}, "dropout"),
    ({"num_layers": 0}, "num_layers"),
])
def test_bad_arguments(kwargs, name):
    kw = {"num_classes": 10, "num_groups": 4, "embed_dim": 8, "num_heads": 2, **kwargs}
    with pytest.raises(ValueError, match=name):
        MLDecoder(**kw)


@pytest.mark.parametrize("shape", [(2, 5), (2, 2, 2, 2, 5)])
def test_bad_input_rank(shape):
    with pytest.raises(ValueError, match="inputs.*rank"):
        small()(np.zeros(shape, "float32"))
    with pytest.raises(ValueError, match="inputs.*rank"):
        small()(keras.Input(shape[1:]))


def test_num_groups_clamped_with_warning():
    with pytest.warns(UserWarning, match="clamped"):
        layer = small(4, 100)
    assert layer.num_groups == 4 and layer.get_config()["num_groups"] == 4
    y = layer(np.ones((2, 12, 5), "float32"))
    assert y.shape == (2, 4) and layer.group_dense.kernel.shape == (4, 8, 1)


def test_unused_queries_warned():
    with pytest.warns(UserWarning, match="feed no logit"):
        small(10, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small(10, 4)


# ---------------------------------------------------------------- serialisation, precision, XLA
def test_keras_round_trip_safe_mode(tmp_path):
    inp = keras.Input((3, 4, 5))
    model = keras.Model(inp, small(10, 4, num_layers=2)(inp))
    x = np.random.default_rng(6).normal(size=(2, 3, 4, 5)).astype("float32")
    y = to_np(model(x, training=False))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_array_equal(to_np(loaded(x, training=False)), y)
    a, b = model.layers[1], loaded.layers[1]
    assert isinstance(b, MLDecoder) and b.get_config() == a.get_config()
    assert a.compute_output_shape((None, 7, 5)) == (None, 10)
    np.testing.assert_array_equal(to_np(b.queries.queries), to_np(a.queries.queries))
    assert not b.queries.queries.trainable


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_mixed_float16_forward_finite(mixed_float16):
    layer = small(10, 4)
    x = np.random.default_rng(7).normal(size=(2, 3, 4, 5)).astype("float32") * 10
    y = layer(x, training=False)
    assert layer.compute_dtype == "float16" and layer.queries.queries.dtype == "float32"
    assert np.all(np.isfinite(to_np(y)))


def _jit_model():
    inp = keras.Input((3, 4, 5))
    model = keras.Model(inp, small(10, 4)(inp))
    model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    return model, np.random.default_rng(8).normal(size=(2, 3, 4, 5)).astype("float32")


def test_jit_compile_predict():
    model, x = _jit_model()
    eager = to_np(model(x, training=False))
    np.testing.assert_allclose(model.predict(x, verbose=0), eager, atol=1e-5)


@pytest.mark.slow  # XLA compilation of a training step (~15 s on TF); JAX compiles dropout masks
def test_training_mode_dropout_and_jit_fit_step():
    model, x = _jit_model()
    layer = model.layers[1]
    assert not np.allclose(to_np(layer(x, training=True)), to_np(layer(x, training=False)))
    hist = model.fit(x, np.zeros((2, 10), "float32"), epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
