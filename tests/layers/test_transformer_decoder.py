"""TransformerDecoderHead (Query2Label) vs a numpy reference written here from SPEC 4."""
import math

import keras
import numpy as np
import pytest

from keras_mld.layers import TransformerDecoderHead
from tests.helpers import grad_wrt_variables, to_np
from tests.numpy_reference import np_dense, np_ln, np_mha  # noqa: F401

# every weight shape repeats across tests: on JAX each new shape costs an initializer compile
CFG = dict(num_classes=5, hidden_dim=8, num_heads=2, ff_dim=8)
C = 8  # input channels


# ----------------------------------------------------------------- numpy reference
def np_sine(h, w, c, temperature=10000.0, scale=2 * math.pi, eps=1e-6):
    f = c // 2
    y = np.arange(1, h + 1)[:, None] * np.ones((1, w))
    x = np.ones((h, 1)) * np.arange(1, w + 1)[None, :]
    y, x = y / (h + eps) * scale, x / (w + eps) * scale
    dim_t = temperature ** (2 * (np.arange(f) // 2) / f)

    def enc(p):
        a = p[:, :, None] / dim_t
        return np.stack([np.sin(a[..., 0::2]), np.cos(a[..., 1::2])], axis=3).reshape(h, w, f)

    return np.concatenate([enc(y), enc(x)], axis=-1)


def np_ffn(x, layer):
    return np_dense(np.maximum(np_dense(x, layer.ff1), 0.0), layer.ff2)


def np_encoder_layer(x, pos, layer):
    qk = x if pos is None else x + pos
    x = np_ln(x + np_mha(qk, qk, x, layer.attn), layer.norm1)
    return np_ln(x + np_ffn(x, layer), layer.norm2)


def np_decoder_layer(t, mem, pos, layer):
    t = np_ln(t + np_mha(t, t, t, layer.self_attn), layer.norm1)
    keys = mem if pos is None else mem + pos
    t = np_ln(t + np_mha(t, keys, mem, layer.cross_attn), layer.norm2)
    return np_ln(t + np_ffn(t, layer), layer.norm3)


def np_q2l(x, head):
    x = x.astype(np.float64)
    f = np_dense(x, head.input_proj)
    b, d = x.shape[0], head.hidden_dim
    pos = None
    if x.ndim == 4:
        pos = np.broadcast_to(np_sine(x.shape[1], x.shape[2], d).reshape(1, -1, d),
                              (b, x.shape[1] * x.shape[2], d))
        f = f.reshape(b, -1, d)
    for layer in head.encoder_layers:
        f = np_encoder_layer(f, pos, layer)
    t = np.broadcast_to(to_np(head.queries)[None], (b, head.num_classes, d))
    for layer in head.decoder_layers:
        t = np_decoder_layer(t, f, pos, layer)
    t = np_ln(t, head.decoder_norm)
    return (t * to_np(head.class_kernel)).sum(-1) + to_np(head.class_bias)


def randomize(layer, scale=0.5):
    rng = np.random.default_rng(0)
    for v in layer.weights:
        v.assign(rng.normal(0.0, scale, v.shape).astype(v.dtype))


def compiled(layer, training=False):
    """``layer(x, **kw)``; on JAX one jitted ``stateless_call`` (eager JAX compiles every
    op separately, which takes minutes on a small shared CPU)."""
    if keras.backend.backend() != "jax":
        return lambda *a, **kw: layer(*a, training=training, **kw)
    import jax

    fn = jax.jit(lambda tv, ntv, a, kw: layer.stateless_call(tv, ntv, *a, training=training,
                                                             **kw)[0])
    return lambda *a, **kw: fn([v.value for v in layer.trainable_variables],
                               [v.value for v in layer.non_trainable_variables], a, kw)


def make(x, **kwargs):
    head = TransformerDecoderHead(**{**CFG, **kwargs})
    head.build(x.shape)
    randomize(head)
    return head


# ----------------------------------------------------------------------- tests
@pytest.mark.parametrize("enc", [1, 0])
def test_spatial_forward_matches_numpy(enc):
    x = np.random.rand(2, 3, 4, C).astype("float32")
    head = make(x, num_encoder_layers=enc, num_decoder_layers=2)
    assert len(head.encoder_layers) == enc and len(head.decoder_layers) == 2
    out = to_np(compiled(head)(x))
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out, np_q2l(x, head), atol=1e-5, rtol=1e-5)


def test_token_forward_matches_numpy_without_positional_encoding():
    x = np.random.rand(2, 7, C).astype("float32")
    head = make(x, num_encoder_layers=1)
    assert head.pos_encoding is None
    np.testing.assert_allclose(to_np(compiled(head)(x)), np_q2l(x, head), atol=1e-5,
                               rtol=1e-5)


def test_gradients_reach_every_trainable_weight():
    x = np.random.rand(2, 2, 3, C).astype("float32")
    head = make(x, num_encoder_layers=1)
    forward = compiled(head)
    grads = grad_wrt_variables(lambda: keras.ops.sum(keras.ops.square(forward(x))),
                               head.trainable_variables)
    assert len(grads) == len(head.trainable_variables) > 0
    for v, g in zip(head.trainable_variables, grads):
        assert g is not None, v.path
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, v.path


@pytest.mark.tf_only  # JAX: compiling ~20 threefry dropout masks takes ~10 s; Keras's own concern
def test_dropout_active_in_training():
    x = np.random.rand(2, 2, 2, C).astype("float32")
    head = make(x, dropout=0.5)  # inference-mode outputs are checked in the tests above
    assert not np.allclose(to_np(compiled(head, training=True)(x)), np_q2l(x, head))


def test_keras_round_trip_safe_mode(tmp_path):
    inp = keras.Input((None, None, C))
    head = TransformerDecoderHead(**CFG)
    model = keras.Model(inp, head(inp))
    randomize(head)
    x = np.random.rand(2, 3, 2, C).astype("float32")
    path = str(tmp_path / "q2l.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(to_np(compiled(loaded)(x)), to_np(compiled(model)(x)))
    cfg = loaded.layers[-1].get_config()
    assert {k: cfg[k] for k in CFG} == CFG and cfg["num_encoder_layers"] == 1
    assert keras.saving.get_registered_name(TransformerDecoderHead) == (
        "keras_mld>TransformerDecoderHead")


def test_jit_compile_matches_numpy():
    x = np.random.rand(2, 2, 3, C).astype("float32")
    inp = keras.Input((2, 3, C))
    head = TransformerDecoderHead(**CFG)
    model = keras.Model(inp, head(inp))
    randomize(head)
    model.compile(jit_compile=True)
    np.testing.assert_allclose(model.predict_on_batch(x), np_q2l(x, head), atol=1e-5,
                               rtol=1e-5)


def test_mixed_float16_forward_finite():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        x = np.random.rand(2, 3, 3, C).astype("float32")
        head = TransformerDecoderHead(**CFG)
        head.build(x.shape)
        out = compiled(head)(x)
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        assert head.queries.dtype == "float32"
        assert np.all(np.isfinite(to_np(out)))
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("kwargs,arg", [
    (dict(num_classes=0), "num_classes"),
    (dict(hidden_dim=10, num_heads=4), "divisible by num_heads"),
    (dict(num_encoder_layers=-1), "num_encoder_layers"),
    (dict(num_decoder_layers=0), "num_decoder_layers"),
    (dict(ff_dim=0), "ff_dim"),
    (dict(dropout=1.0), "dropout"),
])
def test_bad_args(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        TransformerDecoderHead(**{**CFG, **kwargs})


def test_bad_inputs():
    with pytest.raises(ValueError, match="rank 4"):
        TransformerDecoderHead(**CFG)(np.zeros((2, 6), "float32"))
    with pytest.raises(ValueError, match="multiple of 4"):
        TransformerDecoderHead(**{**CFG, "hidden_dim": 6, "num_heads": 3})(
            np.zeros((1, 2, 2, 6), "float32"))
