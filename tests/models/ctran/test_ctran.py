"""CTranHead vs a numpy reference of the C-Tran equations written here (the official logits
themselves: tests/convert)."""
import keras
import numpy as np
import pytest

from keras_mld.layers import CTranHead
from tests.support.helpers import grad_wrt_variables, to_np
from tests.support.numpy_reference import np_dense, np_ln, np_mha  # noqa: F401

# every weight shape repeats across tests: on JAX each new shape costs an initializer compile
N, C = 5, 8
CFG = dict(num_classes=N, embed_dim=8, num_layers=2, num_heads=2)


# ----------------------------------------------------------------- numpy reference
def np_encoder_layer(x, layer):
    x = np_ln(x + np_mha(x, x, x, layer.self_attn), layer.norm1)
    f = np_dense(np.maximum(np_dense(x, layer.linear1), 0.0), layer.linear2)
    return np_ln(x + f, layer.norm2)


def np_ctran(x, head, known=None):
    x = x.astype(np.float64)
    b, d = x.shape[0], head.dim
    z = (x if head.input_proj is None else np_dense(x, head.input_proj)).reshape(b, -1, d)
    lab = np.repeat(to_np(head.label_embeddings)[None], b, axis=0)
    if known is not None:
        e_neg, e_pos = to_np(head.state_embeddings)
        lab = lab + (known == 0)[..., None] * e_neg + (known == 1)[..., None] * e_pos
    u = np_ln(np.concatenate([z, lab], axis=1), head.input_norm)
    for layer in head.encoder_layers:
        u = np_encoder_layer(u, layer)
    h = u[:, -head.num_classes:]
    return (h * to_np(head.class_kernel)).sum(-1) + to_np(head.class_bias)


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


def randomize(layer, scale=0.5):
    rng = np.random.default_rng(0)
    for v in layer.weights:
        v.assign(rng.normal(0.0, scale, v.shape).astype(v.dtype))


def make(x, **kwargs):
    head = CTranHead(**{**CFG, **kwargs})
    head.build(x.shape)
    randomize(head)
    return head


KNOWN = np.array([[-1, 0, 1, -1, 1], [1, 1, -1, 0, 0]], "float32")


# ----------------------------------------------------------------------- tests
def test_forward_matches_numpy_unknown_and_known():
    x = np.random.rand(2, 3, 2, C).astype("float32")
    head = make(x)
    fwd = compiled(head)
    out_none = to_np(fwd(x))
    assert out_none.shape == (2, N)
    np.testing.assert_allclose(out_none, np_ctran(x, head), atol=1e-5, rtol=1e-5)
    out_known = to_np(fwd(x, known_labels=KNOWN))
    np.testing.assert_allclose(out_known, np_ctran(x, head, KNOWN), atol=1e-5, rtol=1e-5)
    assert not np.allclose(out_known, out_none)
    # all unknown is exactly "no known labels" (unknown state embedding = 0)
    all_unknown = to_np(fwd(x, known_labels=-np.ones((2, N), "float32")))
    np.testing.assert_array_equal(all_unknown, out_none)
    # known states act only through the state embeddings: zero them and nothing changes
    head.state_embeddings.assign(np.zeros((2, 8), "float32"))
    np.testing.assert_allclose(to_np(fwd(x, known_labels=KNOWN)), out_none, atol=1e-6)


def test_token_input_matches_numpy():
    x = np.random.rand(2, 7, C).astype("float32")
    head = make(x)
    np.testing.assert_allclose(to_np(compiled(head)(x, known_labels=KNOWN)),
                               np_ctran(x, head, KNOWN), atol=1e-5, rtol=1e-5)


def test_without_input_projection_matches_numpy():
    """Official C-Tran: the features enter at the backbone width, no projection."""
    x = np.random.rand(2, 3, 2, C).astype("float32")
    head = make(x, embed_dim=None, input_proj=False)
    assert head.input_proj is None and head.dim == C
    np.testing.assert_allclose(to_np(compiled(head)(x, known_labels=KNOWN)),
                               np_ctran(x, head, KNOWN), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="input_proj"):
        CTranHead(**{**CFG, "embed_dim": 4, "num_heads": 2, "input_proj": False})(x)


def test_label_order_equivariance():
    """Label token n carries label_embeddings[n] and known_labels[:, n] and feeds logit n:
    permuting labels everywhere permutes the logits."""
    x = np.random.rand(2, 7, C).astype("float32")
    head = make(x)
    fwd = compiled(head)
    out = to_np(fwd(x, known_labels=KNOWN))
    perm = np.array([3, 0, 4, 2, 1])
    for v in (head.label_embeddings, head.class_kernel, head.class_bias):
        v.assign(to_np(v)[perm])
    out_perm = to_np(fwd(x, known_labels=KNOWN[:, perm]))
    np.testing.assert_allclose(out_perm, out[:, perm], atol=1e-5)


def test_gradients_reach_every_trainable_weight():
    x = np.random.rand(2, 3, 2, C).astype("float32")
    head = make(x)
    fwd = compiled(head)
    grads = grad_wrt_variables(
        lambda: keras.ops.sum(keras.ops.square(fwd(x, known_labels=KNOWN))),
        head.trainable_variables)
    assert len(grads) == len(head.trainable_variables) > 0
    for v, g in zip(head.trainable_variables, grads):
        assert g is not None, v.path
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, v.path


def test_two_input_functional_model_keras_round_trip(tmp_path):
    images = keras.Input((None, None, C))
    known = keras.Input((N,))
    head = CTranHead(**CFG)
    model = keras.Model([images, known], head(images, known_labels=known))
    randomize(head)
    x = np.random.rand(2, 2, 3, C).astype("float32")
    path = str(tmp_path / "ctran.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    out = to_np(compiled(model)([x, KNOWN]))
    np.testing.assert_array_equal(to_np(compiled(loaded)([x, KNOWN])), out)
    np.testing.assert_allclose(out, np_ctran(x, head, KNOWN), atol=1e-5, rtol=1e-5)
    cfg = loaded.layers[-1].get_config()
    assert {k: cfg[k] for k in CFG} == CFG and cfg["ff_dim"] is None
    assert cfg["input_proj"] is True
    assert keras.saving.get_registered_name(CTranHead) == "keras_mld>CTranHead"


def test_jit_compile_matches_numpy():
    images = keras.Input((3, 2, C))
    known = keras.Input((N,))
    head = CTranHead(**CFG)
    model = keras.Model([images, known], head(images, known_labels=known))
    randomize(head)
    model.compile(jit_compile=True)
    x = np.random.rand(2, 3, 2, C).astype("float32")
    np.testing.assert_allclose(model.predict_on_batch([x, KNOWN]), np_ctran(x, head, KNOWN),
                               atol=1e-5, rtol=1e-5)


def test_mixed_float16_forward_finite():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        x = np.random.rand(2, 3, 2, C).astype("float32")
        head = CTranHead(**CFG)
        head.build(x.shape)
        out = compiled(head)(x, known_labels=KNOWN)
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        assert head.label_embeddings.dtype == "float32"
        assert np.all(np.isfinite(to_np(out)))
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("kwargs,arg", [
    (dict(num_classes=0), "num_classes"),
    (dict(embed_dim=10, num_heads=4), "divisible by num_heads"),
    (dict(num_layers=0), "num_layers"),
    (dict(ff_dim=0), "ff_dim"),
    (dict(dropout=-0.1), "dropout"),
    (dict(input_proj=1), "input_proj"),
])
def test_bad_args(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        CTranHead(**{**CFG, **kwargs})


def test_bad_inputs():
    head = CTranHead(**CFG)
    with pytest.raises(ValueError, match="rank 4"):
        head(np.zeros((2, C), "float32"))
    x = np.zeros((2, 7, C), "float32")
    with pytest.raises(ValueError, match="known_labels"):
        head(x, known_labels=np.zeros((2, N + 1), "float32"))
    with pytest.raises(ValueError, match="known_labels"):
        head(x, known_labels=np.zeros((N,), "float32"))
