"""ZSLMLDecoder (zero-shot ML-Decoder, arXiv:2111.12933 section 2.3.3 and appendix B)
against a numpy reference written from the paper, with the label set changing between calls."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mld
from keras_mld.layers import MLDecoder, ZSLMLDecoder, zsl_group_size
from tests.support.helpers import grad_wrt_variables, to_np
from tests.support.numpy_reference import decoder_layer_weights
from tests.support.tiny import tiny_backbone

EPS = 1e-5
DW = 6  # word_dim


# ---------------------------------------------------------------- numpy reference
# (arXiv:2111.12933 2.3.3)
def _ln(x, gamma, beta):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * gamma + beta


def _softmax(s):
    p = np.exp(s - s.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def _mha(t, e, w):
    q = np.einsum("bkd,dhc->bkhc", t, w["wq"]) + w["bq"]
    k = np.einsum("btd,dhc->bthc", e, w["wk"]) + w["bk"]
    v = np.einsum("btd,dhc->bthc", e, w["wv"]) + w["bv"]
    p = _softmax(np.einsum("bkhc,bthc->bhkt", q, k) / np.sqrt(q.shape[-1]))
    return np.einsum("bkhc,hcd->bkd", np.einsum("bhkt,bthc->bkhc", p, v), w["wo"]) + w["bo"]


def _decode(t, e, layers):
    """ML-Decoder eqs. 7-8 (arXiv:2111.12933) in inference mode: no self-attention, post-norm."""
    for lw in layers:
        t = _ln(t + t, lw["g1"], lw["b1"])
        t = _ln(t + _mha(t, e, lw), lw["g2"], lw["b2"])
        f = np.maximum(t @ lw["w1"] + lw["c1"], 0) @ lw["w2"] + lw["c2"]
        t = _ln(t + f, lw["g3"], lw["b3"])
    return t


def reference(x, vectors, w, group_size):
    """Logits ``[B, M]``. Full: q_n = ReLU(A V_n + a), logit_n = t_n . w + b. Group (labels
    in order, groups of g, the last one zero-padded): q_k = concat_j A V_{k,j},
    logit(k, j) = t_k . (B V_{k,j}) + b."""
    x = x.astype(np.float64).reshape(x.shape[0], -1, x.shape[-1])
    v = vectors.astype(np.float64)
    m = len(v)
    e = np.maximum(x @ w["embed_w"] + w["embed_b"], 0.0)
    out = np.zeros((x.shape[0], m))
    if group_size == 1:
        q = np.maximum(v @ w["a"] + w["a_b"], 0.0)  # A stored as Dense kernel A^T [d_w, D]
        t = _decode(np.broadcast_to(q, (x.shape[0],) + q.shape), e, w["layers"])
        for n in range(m):
            out[:, n] = t[:, n, :] @ w["w"] + w["b"]
        return out
    g = group_size
    num_groups = -(-m // g)
    padded = np.zeros((num_groups * g, v.shape[1]))
    padded[:m] = v
    q = np.stack([np.concatenate([padded[k * g + j] @ w["a"] for j in range(g)])
                  for k in range(num_groups)])
    t = _decode(np.broadcast_to(q, (x.shape[0],) + q.shape), e, w["layers"])
    for n in range(m):
        k = n // g
        out[:, n] = t[:, k, :] @ (w["bmat"] @ v[n]) + w["b"]  # B [D, d_w] = kernel^T
    return out


def weights_of(layer):
    f = lambda v: to_np(v).astype(np.float64)  # noqa: E731
    w = {"embed_w": f(layer.embed.kernel), "embed_b": f(layer.embed.bias),
         "a": f(layer.word_queries.projection.kernel)}
    if layer.group_size == 1:
        w.update(a_b=f(layer.word_queries.projection.bias), w=f(layer.group_dense.kernel),
                 b=f(layer.group_dense.bias))
    else:
        w.update(bmat=f(layer.label_projection.kernel).T, b=f(layer.bias))
    w["layers"] = [decoder_layer_weights(dl) for dl in layer.decoder_layers]
    return w


def small(group_size=1, **kwargs):
    kw = {"embed_dim": 8, "num_heads": 2, "ff_dim": 16, "dropout": 0.1, **kwargs}
    return ZSLMLDecoder(DW, group_size=group_size, **kw)


def randomise(layer):
    """Non-trivial LayerNorm / bias values so that every weight matters in the reference."""
    rng = np.random.default_rng(11)
    for v in layer.weights:
        if v.path.endswith(("gamma", "beta", "bias")):
            v.assign((rng.normal(size=v.shape) * 0.3 + (1.0 if v.path.endswith("gamma") else 0.0))
                     .astype("float32"))


def vecs(m, seed):
    return np.random.default_rng(seed).normal(size=(m, DW)).astype("float32")


X = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype("float32")


# ---------------------------------------------------------------- forward vs numpy
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("group_size", [1, 2, 4])
def test_forward_matches_numpy_with_changing_label_counts(group_size, num_layers):
    layer = small(group_size, num_layers=num_layers)
    for i, m in enumerate((5, 9, 1, 8)):  # same layer, label sets of different sizes
        v = vecs(m, i)
        y = to_np(layer(X, v, training=False))
        if i == 0:
            randomise(layer)
            y = to_np(layer(X, v, training=False))
        assert y.shape == (2, m)
        np.testing.assert_allclose(y, reference(X, v, weights_of(layer), group_size),
                                   atol=1e-5, rtol=0)
    tokens = X.reshape(2, 12, 5)  # [B, T, C] inputs are used as they are
    np.testing.assert_allclose(to_np(layer(tokens, v)), to_np(layer(X, v)), atol=1e-6)
    assert layer.decoding == ("full" if group_size == 1 else "group")


def test_weight_shapes():
    full, group = small(1), small(4)
    for layer in (full, group):
        layer(X, vecs(3, 0))
    assert full.word_queries.projection.kernel.shape == (DW, 8)
    assert full.group_dense.kernel.shape == (8,) and full.group_dense.bias.shape == ()
    assert group.word_queries.projection.kernel.shape == (DW, 2)  # A^T: [d_w, D / g]
    assert group.word_queries.projection.bias is None
    assert group.label_projection.kernel.shape == (DW, 8) and group.bias.shape == ()


# ---------------------------------------------------------------- label-set independence
def test_full_decoding_label_order_and_independence():
    layer = small(1)
    v = vecs(7, 3)
    y = to_np(layer(X, v))
    perm = np.random.default_rng(4).permutation(7)
    np.testing.assert_allclose(to_np(layer(X, v[perm])), y[:, perm], atol=1e-6, rtol=0)
    # each label alone, or among other (new) labels, scores the same
    for n in range(7):
        np.testing.assert_allclose(to_np(layer(X, v[n:n + 1]))[:, 0], y[:, n], atol=1e-6)
    mixed = np.concatenate([vecs(4, 5), v[2:5], vecs(2, 6)])
    np.testing.assert_allclose(to_np(layer(X, mixed))[:, 4:7], y[:, 2:5], atol=1e-6)


def test_group_decoding_groups_are_independent():
    layer = small(2)
    v = vecs(6, 7)
    y = to_np(layer(X, v))
    w = v.copy()
    w[5] += 1.0  # changes group 2 only
    z = to_np(layer(X, w))
    np.testing.assert_allclose(z[:, :4], y[:, :4], atol=1e-6)
    assert np.abs(z[:, 4:] - y[:, 4:]).max() > 1e-4
    # whole groups permuted -> their scores permuted
    order = np.array([4, 5, 0, 1, 2, 3])
    np.testing.assert_allclose(to_np(layer(X, v[order])), y[:, order], atol=1e-6)


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("group_size", [1, 2])
def test_gradients_reach_every_trainable_weight(group_size):
    layer = small(group_size, num_layers=2)
    v = vecs(5, 8)
    layer(X, v)
    randomise(layer)
    variables = layer.trainable_weights
    assert len(variables) == 2 + (2 if group_size == 1 else 1) + 2 * 18 + 2
    grads = grad_wrt_variables(lambda: keras.ops.sum(keras.ops.sin(layer(X, v))), variables)
    for var, g in zip(variables, grads):
        assert g is not None and np.all(np.isfinite(g)) and np.any(g != 0), var.path


# ---------------------------------------------------------------- arguments
@pytest.mark.parametrize("kwargs,name", [
    ({"word_dim": 0}, "word_dim"),
    ({"group_size": 0}, "group_size"),
    ({"group_size": 3}, "group_size"),  # 8 % 3
    ({"num_heads": 3}, "num_heads"),
    ({"dropout": 1.0}, "dropout"),
    ({"query_noise": -0.1}, "query_noise"),
    ({"random_queries": -1}, "random_queries"),
    ({"random_query_loss": "binary_crossentropy"}, "random_query_loss"),
])
def test_bad_arguments(kwargs, name):
    kw = {"word_dim": DW, "embed_dim": 8, "num_heads": 2, **kwargs}
    with pytest.raises(ValueError, match=name):
        ZSLMLDecoder(**kw)


def test_bad_label_vectors_and_group_size_helper():
    layer = small()
    with pytest.raises(ValueError, match=r"label_vectors must have shape \[num_labels, word_dim=6"):
        layer(X, np.zeros((1, 4, DW), "float32"))
    with pytest.raises(ValueError, match="word_dim=6"):
        layer(X, np.zeros((4, DW + 1), "float32"))
    assert zsl_group_size(800, 100, 768) == 8 and zsl_group_size(5, 100, 8) == 1
    with pytest.raises(ValueError, match="embed_dim=8 must be divisible by g"):
        zsl_group_size(5, 2, 8)
    with pytest.raises(ValueError, match="ZSLMLDecoder"):
        MLDecoder(10, query_type="word")


# ---------------------------------------------------------------- serialisation, precision
@pytest.mark.parametrize("group_size", [1, 2])
def test_keras_round_trip_safe_mode(tmp_path, group_size):
    feats = keras.Input((3, 4, 5), name="features")
    labels = keras.Input((DW,), name="label_vectors")
    layer = small(group_size, query_noise=0.2, random_queries=3, seed=5,
                  random_query_loss=keras_mld.losses.AsymmetricLoss(gamma_neg=2.0))
    model = keras.Model({"features": feats, "label_vectors": labels}, layer(feats, labels))
    randomise(layer)
    path = str(tmp_path / "zsl.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    inner = loaded.get_layer(layer.name)
    assert inner.get_config() == layer.get_config()
    assert inner.random_loss.loss.gamma_neg == 2.0
    for m in (5, 9):
        feeds = {"features": X, "label_vectors": vecs(m, m)}
        np.testing.assert_array_equal(to_np(loaded(feeds)), to_np(model(feeds)))


def test_mixed_float16_forward_finite():
    layer = small(2, dtype="mixed_float16", random_queries=2, query_noise=0.1)
    for training in (False, True):
        y = layer(X, vecs(5, 1), training=training)
        assert keras.backend.standardize_dtype(y.dtype) == "float16" and y.shape == (2, 5)
        assert np.all(np.isfinite(to_np(y)))


# ---------------------------------------------------------------- keras_mld.build + fit
def test_build_word_model_fit_on_seen_predict_unseen():
    """The label set is model state: fit/evaluate/predict take images only (numpy and
    tf.data), M != batch size, and set_labels switches label sets without a re-build."""
    seen = vecs(5, 21)
    model = keras_mld.build(tiny_backbone(), head="mldecoder", class_names=list("abcde"),
                            input_shape=(16, 16, 3), query_type="word", word_dim=DW,
                            embed_dim=8, num_heads=2, ff_dim=16, num_groups=3,
                            random_queries=2, query_noise=0.1, label_vectors=seen)
    assert [t.name for t in model.inputs] == ["images"]
    head = model.get_layer("ml_decoder")
    assert head.group_size == 2  # ceil(5 / 3)
    np.testing.assert_array_equal(model.label_vectors, seen)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (6, 16, 16, 3)).astype("float32")
    y = (rng.uniform(size=(6, 5)) > 0.5).astype("float32")
    model.compile(optimizer="adam", loss=keras_mld.losses.AsymmetricLoss(),
                  metrics=[keras.metrics.BinaryAccuracy()])
    history = model.fit(images, y, batch_size=4, epochs=1, verbose=0)  # numpy, M=5, B=4
    assert np.isfinite(history.history["loss"][0])
    ds = tf.data.Dataset.from_tensor_slices((images, y)).batch(3)
    assert np.isfinite(model.fit(ds, epochs=1, verbose=0).history["loss"][0])
    unseen = vecs(9, 22)  # a new label set, no re-building
    before = [w.copy() for w in model.get_weights()]
    model.set_labels([f"u{i}" for i in range(9)], unseen)
    changed = [i for i, (a, b) in enumerate(zip(before, model.get_weights()))
               if not np.array_equal(a, b)]
    assert len(changed) == 1  # only the label_set state changed
    out = model.predict(images, batch_size=4, verbose=0)
    assert out.shape == (6, 9) and model.class_names[0] == "u0"
    direct = to_np(head(model.backbone(model.preprocessor(images)), label_vectors=unseen))
    np.testing.assert_allclose(out, direct, rtol=1e-5, atol=1e-5)
    y9 = (rng.uniform(size=(6, 9)) > 0.5).astype("float32")
    evaluated = model.evaluate(images, y9, batch_size=4, verbose=0, return_dict=True)
    assert np.isfinite(evaluated["loss"]) and 0 <= evaluated["binary_accuracy"] <= 1
    model.set_labels(list("abcde"), seen)  # back to the seen labels: the same function
    np.testing.assert_allclose(model.predict(images, verbose=0), to_np(
        head(model.backbone(model.preprocessor(images)), label_vectors=seen)), rtol=1e-5,
        atol=1e-5)
    with pytest.raises(ValueError, match="label_vectors"):
        model.set_labels(["a", "b"], vecs(3, 0))
    with pytest.raises(ValueError, match="class_names"):
        model.set_labels(["a", "a"], vecs(2, 0))


def test_word_model_label_state_round_trips(tmp_path):
    model = keras_mld.build(tiny_backbone(), head="mldecoder", class_names=list("abc"),
                            input_shape=(16, 16, 3), query_type="word", word_dim=DW,
                            embed_dim=8, num_heads=2, ff_dim=16, label_vectors=vecs(3, 1))
    model.set_labels(["x", "y", "z", "w"], vecs(4, 2), thresholds=[0.1, 0.2, 0.3, 0.4])
    model.save(tmp_path / "z.keras")
    loaded = keras.models.load_model(tmp_path / "z.keras", safe_mode=True)
    assert loaded.class_names == ["x", "y", "z", "w"]
    assert loaded.thresholds == [0.1, 0.2, 0.3, 0.4]
    np.testing.assert_array_equal(loaded.label_vectors, vecs(4, 2))
    x = np.random.default_rng(1).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(to_np(loaded(x)), to_np(model(x)))


def test_build_word_defaults_to_full_decoding_and_needs_word_dim():
    model = keras_mld.build(tiny_backbone(), head="mldecoder", num_classes=5,
                            input_shape=(16, 16, 3), query_type="word", word_dim=DW,
                            embed_dim=8, num_heads=2, ff_dim=16)
    assert model.get_layer("ml_decoder").decoding == "full"
    model.set_labels(["p", "q", "r"], vecs(3, 0))
    out = model(np.zeros((2, 16, 16, 3), "float32"))
    assert out.shape == (2, 3)
    with pytest.raises(ValueError, match="word_dim"):
        keras_mld.build(tiny_backbone(), head="mldecoder", num_classes=5,
                        input_shape=(16, 16, 3), query_type="word")
