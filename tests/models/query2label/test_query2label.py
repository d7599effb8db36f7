"""Query2LabelHead (Query2Label) vs a numpy reference of the DETR / official Query2Label
equations written here (the official logits themselves: tests/convert)."""
import math

import keras
import numpy as np
import pytest

from keras_mld.layers import Query2LabelHead
from tests.support.helpers import grad_wrt_variables, to_np
from tests.support.numpy_reference import np_dense, np_ln, np_mha  # noqa: F401

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
    return np_dense(np.maximum(np_dense(x, layer.linear1), 0.0), layer.linear2)


def np_encoder_layer(x, pos, layer):
    """DETR encoder layer (post- or pre-norm), written from the equations."""
    pos = 0.0 if pos is None else pos
    if layer.pre_norm:
        y = np_ln(x, layer.norm1)
        x = x + np_mha(y + pos, y + pos, y, layer.self_attn)
        return x + np_ffn(np_ln(x, layer.norm2), layer)
    x = np_ln(x + np_mha(x + pos, x + pos, x, layer.self_attn), layer.norm1)
    return np_ln(x + np_ffn(x, layer), layer.norm2)


def np_decoder_layer(t, mem, pos, qpos, layer):
    """DETR decoder layer: query_pos re-added to the self-attn q, k and the cross-attn q."""
    keys = mem if pos is None else mem + pos
    if layer.pre_norm:
        if layer.self_attention:
            y = np_ln(t, layer.norm1)
            t = t + np_mha(y + qpos, y + qpos, y, layer.self_attn)
        y = np_ln(t, layer.norm2)
        t = t + np_mha(y + qpos, keys, mem, layer.cross_attn)
        return t + np_ffn(np_ln(t, layer.norm3), layer)
    if layer.self_attention:
        t = np_ln(t + np_mha(t + qpos, t + qpos, t, layer.self_attn), layer.norm1)
    t = np_ln(t + np_mha(t + qpos, keys, mem, layer.cross_attn), layer.norm2)
    return np_ln(t + np_ffn(t, layer), layer.norm3)


def np_q2l(x, head):
    x = x.astype(np.float64)
    f = x if head.input_proj is None else np_dense(x, head.input_proj)
    b, d = x.shape[0], head.dim
    pos = None
    if x.ndim == 4:
        pos = np.broadcast_to(np_sine(x.shape[1], x.shape[2], d).reshape(1, -1, d),
                              (b, x.shape[1] * x.shape[2], d))
        f = f.reshape(b, -1, d)
    for layer in head.encoder_layers:
        f = np_encoder_layer(f, pos, layer)
    if head.encoder_norm is not None:
        f = np_ln(f, head.encoder_norm)
    qpos = np.broadcast_to(to_np(head.queries)[None], (b, head.num_classes, d))
    t = np.zeros_like(qpos)  # DETR: the decoder input starts at zero
    for layer in head.decoder_layers:
        t = np_decoder_layer(t, f, pos, qpos, layer)
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
    head = Query2LabelHead(**{**CFG, **kwargs})
    head.build(x.shape)
    randomize(head)
    return head


# ----------------------------------------------------------------------- tests
VARIANTS = {
    "official_default": dict(),
    "self_attn_every_layer": dict(keep_first_self_attn_dec=True, keep_other_self_attn_dec=True),
    "first_self_attn_only": dict(keep_first_self_attn_dec=True),
    "pre_norm": dict(pre_norm=True, keep_first_self_attn_dec=True,
                     keep_other_self_attn_dec=True),
    "pre_norm_no_self_attn": dict(pre_norm=True),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_spatial_forward_matches_numpy(variant):
    x = np.random.rand(2, 3, 4, C).astype("float32")
    head = make(x, num_decoder_layers=2, **VARIANTS[variant])
    opts = VARIANTS[variant]
    assert [dl.self_attention for dl in head.decoder_layers] == [
        opts.get("keep_first_self_attn_dec", False), opts.get("keep_other_self_attn_dec", False)]
    for dl in head.decoder_layers:  # a removed self-attention leaves no LayerNorm behind
        assert hasattr(dl, "norm1") == dl.self_attention == hasattr(dl, "self_attn")
    assert (head.encoder_norm is not None) == opts.get("pre_norm", False)
    out = to_np(compiled(head)(x))
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out, np_q2l(x, head), atol=1e-5, rtol=1e-5)


def test_no_encoder_and_input_projection_match_numpy():
    x = np.random.rand(2, 3, 2, 12).astype("float32")
    head = make(x, num_encoder_layers=0, keep_input_proj=True)
    assert head.encoder_layers == [] and head.encoder_norm is None
    assert head.input_proj.kernel.shape == (12, 8)
    np.testing.assert_allclose(to_np(compiled(head)(x)), np_q2l(x, head), atol=1e-5,
                               rtol=1e-5)


def test_hidden_dim_defaults_to_the_input_channels_without_projection():
    head = Query2LabelHead(5, num_heads=2)
    head.build((None, 2, 2, C))
    assert head.input_proj is None and head.dim == C
    assert head.decoder_layers[0].linear1.kernel.shape == (C, 4 * C)  # ff_dim = 4 * hidden
    assert not head.decoder_layers[0].self_attention  # official default: no self-attention


def test_token_forward_matches_numpy_without_positional_encoding():
    x = np.random.rand(2, 7, C).astype("float32")
    head = make(x, num_encoder_layers=1, **VARIANTS["self_attn_every_layer"])
    assert head.pos_encoding is None
    np.testing.assert_allclose(to_np(compiled(head)(x)), np_q2l(x, head), atol=1e-5,
                               rtol=1e-5)


def test_gradients_reach_every_trainable_weight():
    x = np.random.rand(2, 2, 3, C).astype("float32")
    # self-attention in layer 2 only: in layer 1 its values would be tgt = 0 (DETR), so the
    # value kernel there gets no gradient, in the official model as here
    head = make(x, num_encoder_layers=1, keep_other_self_attn_dec=True)
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
    opts = dict(pre_norm=True, keep_first_self_attn_dec=True)
    head = Query2LabelHead(**CFG, **opts)
    model = keras.Model(inp, head(inp))
    randomize(head)
    x = np.random.rand(2, 3, 2, C).astype("float32")
    path = str(tmp_path / "q2l.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(to_np(compiled(loaded)(x)), to_np(compiled(model)(x)))
    cfg = loaded.layers[-1].get_config()
    assert {k: cfg[k] for k in CFG} == CFG and cfg["num_encoder_layers"] == 1
    assert {k: cfg[k] for k in opts} == opts and cfg["keep_other_self_attn_dec"] is False
    assert cfg["keep_input_proj"] is False
    assert keras.saving.get_registered_name(Query2LabelHead) == (
        "keras_mld>Query2LabelHead")


def test_jit_compile_matches_numpy():
    x = np.random.rand(2, 2, 3, C).astype("float32")
    inp = keras.Input((2, 3, C))
    head = Query2LabelHead(**CFG)
    model = keras.Model(inp, head(inp))
    randomize(head)
    model.compile(jit_compile=True)
    np.testing.assert_allclose(model.predict_on_batch(x), np_q2l(x, head), atol=1e-5,
                               rtol=1e-5)


def test_mixed_float16_forward_finite():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        x = np.random.rand(2, 3, 3, C).astype("float32")
        head = Query2LabelHead(**CFG)
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
    (dict(pre_norm=1), "pre_norm"),
    (dict(keep_input_proj="yes"), "keep_input_proj"),
    (dict(keep_first_self_attn_dec=None), "keep_first_self_attn_dec"),
    (dict(keep_other_self_attn_dec=0), "keep_other_self_attn_dec"),
])
def test_bad_args(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        Query2LabelHead(**{**CFG, **kwargs})


def test_bad_inputs():
    with pytest.raises(ValueError, match="rank 4"):
        Query2LabelHead(**CFG)(np.zeros((2, 6), "float32"))
    with pytest.raises(ValueError, match="multiple of 4"):
        Query2LabelHead(**{**CFG, "hidden_dim": 6, "num_heads": 3})(
            np.zeros((1, 2, 2, 6), "float32"))
    with pytest.raises(ValueError, match="keep_input_proj"):  # official: no projection
        Query2LabelHead(**CFG)(np.zeros((1, 2, 2, 12), "float32"))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        Query2LabelHead(5, num_heads=3)(np.zeros((1, 2, 2, 8), "float32"))
