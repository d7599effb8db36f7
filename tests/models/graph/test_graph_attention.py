"""GraphAttentionReweight (Prokofiev & Sovrasov (arXiv:2209.06585) 3.3, Fig. 1) against a numpy
graph-attention reference (Velickovic et al. 2018) written here, with the layer's weights."""
import json

import keras
import numpy as np
import pytest

from keras_mld.models.graph import freeze_graph_branches
from keras_mld.layers import GraphAttention, GraphAttentionReweight
from tests.support.helpers import grad_wrt_variables, to_np

N, D_W, C = 5, 6, 8
# node i attends to j iff ADJ[i, j] > 0 (plus self loops); node 4 is isolated
ADJ = np.array([[0, 1, 1, 0, 0],
                [1, 0, 0, 0, 0],
                [0, 1, 0, 1, 0],
                [0, 0, 1, 0, 0],
                [0, 0, 0, 0, 0]], "float32")


def _vectors(seed=0):
    return np.random.default_rng(seed).normal(size=(N, D_W)).astype("float32")


def _features(shape=(2, 3, 4, C), seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def ref_gat_layer(h, kernel, a_self, a_neigh, adj, slope, concat):
    """Velickovic eq. 1-6 with explicit [W h_i || W h_j] concatenation, per head."""
    heads = []
    n = h.shape[0]
    for k in range(kernel.shape[0]):
        z = h @ kernel[k]
        a = np.concatenate([a_self[k], a_neigh[k]])
        e = np.full((n, n), -np.inf)
        for i in range(n):
            for j in range(n):
                if adj[i, j] > 0 or i == j:
                    s = a @ np.concatenate([z[i], z[j]])
                    e[i, j] = s if s > 0 else slope * s
        alpha = np.exp(e - e.max(axis=1, keepdims=True))
        alpha /= alpha.sum(axis=1, keepdims=True)
        heads.append(alpha @ z)
    return np.concatenate(heads, axis=1) if concat else np.mean(heads, axis=0)


def ref_reweight(layer, g, adj, f):
    h = g.astype(np.float64)
    for i, sub in enumerate(layer.gat_layers):
        if i:
            h = np.where(h > 0, h, np.expm1(h))  # ELU
        h = ref_gat_layer(h, to_np(sub.kernel).astype(np.float64),
                          to_np(sub.attention_self).astype(np.float64),
                          to_np(sub.attention_neighbour).astype(np.float64), adj,
                          sub.negative_slope, sub.concat_heads)
    w = h.max(axis=0)
    if layer.weight_activation == "sigmoid":
        w = 1 / (1 + np.exp(-w))
    return f * w, h


def _layer(**kwargs):
    kwargs.setdefault("attention_dropout", 0.0)
    return GraphAttentionReweight(C, label_vectors=_vectors(), adjacency=ADJ, **kwargs)


@pytest.mark.parametrize("kwargs", [
    {},
    {"num_layers": 3, "num_heads": 2, "hidden_dim": 6, "negative_slope": 0.1},
    {"num_layers": 1, "num_heads": 3, "weight_activation": "none"},
])
@pytest.mark.parametrize("shape", [(2, 3, 4, C), (2, 7, C)])
def test_values_against_numpy(kwargs, shape):
    layer = _layer(**kwargs)
    f = _features(shape)
    y = to_np(layer(f, training=False))
    ref, h = ref_reweight(layer, _vectors(), ADJ, f)
    assert y.shape == shape
    np.testing.assert_allclose(to_np(layer.node_features()), h, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


def test_single_graph_attention_layer_masks_non_neighbours():
    layer = GraphAttention(4, num_heads=2, concat_heads=True)
    h = _vectors(3)
    out = to_np(layer(h, ADJ + np.eye(N, dtype="float32")))
    ref = ref_gat_layer(h.astype(np.float64), to_np(layer.kernel), to_np(layer.attention_self),
                        to_np(layer.attention_neighbour), ADJ, 0.2, True)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    # the isolated node 4 only sees itself: changing another node's input leaves it alone
    h2 = h.copy()
    h2[0] += 5.0
    out2 = to_np(layer(h2, ADJ + np.eye(N, dtype="float32")))
    np.testing.assert_allclose(out2[4], out[4], rtol=1e-6)
    np.testing.assert_allclose(out2[3], out[3], rtol=1e-6)  # 3 attends to 2 and 3 only
    assert not np.allclose(out2[1], out[1])                  # 1 attends to 0


def test_frozen_equals_unfrozen_and_is_a_constant_multiply():
    layer = _layer()
    f = _features()
    before = to_np(layer(f, training=False))
    w = to_np(layer.channel_weights())
    layer.freeze()
    assert layer.frozen and layer.get_config()["frozen"] is True
    np.testing.assert_allclose(to_np(layer.frozen_weights), w, rtol=1e-6)
    np.testing.assert_allclose(to_np(layer(f, training=False)), before, rtol=1e-6)
    assert layer.trainable_weights == []
    # the branch is no longer used: changing its weights changes nothing
    sub = layer.gat_layers[0]
    sub.kernel.assign(to_np(sub.kernel) + 1.0)
    np.testing.assert_allclose(to_np(layer(f, training=False)), before, rtol=1e-6)
    layer.unfreeze()
    assert not np.allclose(to_np(layer(f, training=False)), before)
    assert len(layer.trainable_weights) == 6


def test_gradients_reach_all_trainable_weights():
    layer = _layer()
    f = _features()
    layer.build(f.shape)
    variables = layer.trainable_weights
    assert len(variables) == 6  # 2 layers x (kernel, a_self, a_neighbour)
    grads = grad_wrt_variables(lambda: keras.ops.sum(keras.ops.sin(layer(f, training=False))),
                               variables)
    for v, g in zip(variables, grads):
        assert g is not None and np.all(np.isfinite(g)) and np.any(g != 0), v.path
    assert all(not v.trainable for v in (layer.label_vectors, layer.adjacency,
                                         layer.frozen_weights))


def test_attention_dropout_only_in_training():
    layer = _layer(attention_dropout=0.5)
    f = _features()
    a = to_np(layer(f, training=False))
    np.testing.assert_array_equal(a, to_np(layer(f, training=False)))
    assert not np.allclose(to_np(layer(f, training=True)), a)


def _model(layer, shape=(3, 4, C)):
    inp = keras.Input(shape)
    return keras.Model(inp, layer(inp))


@pytest.mark.parametrize("frozen", [False, True])
def test_keras_round_trip_safe_mode(tmp_path, frozen):
    layer = _layer(num_heads=2)
    model = _model(layer)
    if frozen:
        freeze_graph_branches(model)
    f = _features()
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(to_np(model(f, training=False)), to_np(loaded(f, training=False)))
    lay = loaded.layers[-1]
    assert isinstance(lay, GraphAttentionReweight) and lay.frozen is frozen
    np.testing.assert_array_equal(to_np(lay.label_vectors), _vectors())
    np.testing.assert_array_equal(to_np(lay.adjacency), ADJ)
    if not frozen:
        lay.freeze()
        np.testing.assert_allclose(to_np(loaded(f, training=False)),
                                   to_np(model(f, training=False)), rtol=1e-6)


def test_config_holds_no_arrays():
    layer = _layer()
    config = layer.get_config()
    assert config["num_labels"] == N and config["word_dim"] == D_W
    assert "label_vectors" not in config and "adjacency" not in config
    json.dumps(config)
    clone = GraphAttentionReweight.from_config(config)
    f = _features()
    clone.build(f.shape)
    layer.build(f.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_np(clone(f)), to_np(layer(f)), rtol=1e-6)


def test_mixed_float16_finite():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = _layer()
        f = _features() * 100
        y = layer(f)
        assert keras.backend.standardize_dtype(y.dtype) == "float16"
        assert np.all(np.isfinite(to_np(y)))
        assert keras.backend.standardize_dtype(layer.label_vectors.dtype) == "float32"
        layer.freeze()
        assert np.all(np.isfinite(to_np(layer(f))))
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("kwargs, match", [
    (dict(channels=0), "channels"),
    (dict(num_layers=0), "num_layers"),
    (dict(num_heads=3, hidden_dim=8), "divisible"),
    (dict(weight_activation="relu"), "weight_activation"),
    (dict(adjacency=np.zeros((4, 4), "float32")), "adjacency"),
    (dict(adjacency=-np.ones((N, N), "float32")), "non-negative"),
    (dict(label_vectors=np.zeros((N,), "float32")), "label_vectors"),
    (dict(label_vectors=np.full((N, D_W), np.nan, "float32")), "non-finite"),
    (dict(adjacency=None), "both"),
    (dict(frozen="yes"), "frozen"),
])
def test_bad_arguments(kwargs, match):
    args = dict(channels=C, label_vectors=_vectors(), adjacency=ADJ)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        GraphAttentionReweight(**args)


def test_wrong_feature_channels():
    with pytest.raises(ValueError, match="features"):
        _layer()(_features((2, 3, 4, C + 1)))
    with pytest.raises(ValueError, match="freeze"):
        _layer().freeze()
