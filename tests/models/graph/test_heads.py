"""The graph heads ``gat``, ``gat+mldecoder``, ``mlgcn`` (Prokofiev & Sovrasov (arXiv:2209.06585)
section 3.3; Chen et al. (arXiv:1904.03582)) through
``keras_mld.build``: XLA training, ``.keras`` round trip, freezing for export, bad kwargs."""
import keras
import numpy as np
import pytest

import keras_mld
from keras_mld import zsl
from keras_mld.models.graph import freeze_graph_branches
from tests.support.helpers import to_np
from tests.support.tiny import SMALL_HEAD_KWARGS, tiny_backbone

N = 5
GRAPH_HEADS = {
    "gat": {},
    "gat+mldecoder": dict(SMALL_HEAD_KWARGS["mldecoder"], gat_num_heads=2),
    "mlgcn": {"hidden_dim": 8},
}


def _labels(batch=24, seed=1):
    y = (np.random.default_rng(seed).uniform(size=(batch, N)) < 0.4).astype("float32")
    y[:, 0] = 1.0
    y[::2, 1] = 1.0
    return y


def _graph_kwargs():
    return {"label_vectors": np.random.default_rng(0).normal(size=(N, 7)).astype("float32"),
            "label_graph": zsl.conditional_probability(_labels())}


def _images(batch=4, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, 32, 32, 3)).astype("float32")


def _build(head, **extra):
    return keras_mld.build(tiny_backbone(), head=head, num_classes=N, input_shape=(32, 32, 3),
                           **GRAPH_HEADS[head], **_graph_kwargs(), **extra)


def test_heads_are_registered():
    heads = keras_mld.list_models()["heads"]
    for head in GRAPH_HEADS:
        assert head in heads


@pytest.mark.parametrize("head", list(GRAPH_HEADS))
def test_trains_with_xla(head):
    model = _build(head)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras_mld.losses.AsymmetricLoss(),
                  jit_compile=True)
    x, y = _images(), _labels(4)
    losses = [model.train_on_batch(x, y, return_dict=True)["loss"] for _ in range(2)]
    losses.append(model.evaluate(x, y, verbose=0, return_dict=True)["loss"])
    assert all(np.isfinite(losses)) and losses[2] != losses[0]
    assert model(x, training=False).shape == (4, N)


@pytest.mark.parametrize("head", list(GRAPH_HEADS))
def test_keras_round_trip_safe_mode_and_freezing(head, tmp_path):
    model = _build(head)
    x = _images()
    expected = to_np(model(x, training=False))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_array_equal(to_np(loaded(x, training=False)), expected)
    frozen = freeze_graph_branches(loaded)
    assert len(frozen) == 1 and frozen[0].frozen
    np.testing.assert_allclose(to_np(loaded(x, training=False)), expected, rtol=1e-5, atol=1e-6)
    loaded.save(tmp_path / "frozen.keras")
    again = keras.models.load_model(tmp_path / "frozen.keras", safe_mode=True)
    assert freeze_graph_branches(again) == []  # already frozen (from the config)
    np.testing.assert_array_equal(to_np(again(x, training=False)),
                                  to_np(loaded(x, training=False)))
    frozen[0].unfreeze()
    assert not frozen[0].frozen and frozen[0].trainable_weights


def test_gat_head_structure_and_options():
    model = _build("gat", gat_num_layers=3, gat_weight_activation="none", dropout=0.1)
    gat = model.get_layer("graph_attention")
    assert gat.num_layers == 3 and gat.weight_activation == "none" and gat.channels == 16
    assert model.get_layer("gap_head").pooling == "avg+max"
    assert model.get_layer("gap_head").dropout == 0.1
    # the adjacency is the tau-binarised, transposed Z with self loops
    np.testing.assert_array_equal(to_np(gat.adjacency),
                                  zsl.gat_adjacency(_graph_kwargs()["label_graph"], 0.4))
    mld = _build("gat+mldecoder").get_layer("ml_decoder")
    assert mld.num_heads == SMALL_HEAD_KWARGS["mldecoder"]["num_heads"]


def test_mlgcn_adjacency_from_z():
    layer = _build("mlgcn", tau=0.3, p=0.25).get_layer("mlgcn")
    np.testing.assert_allclose(to_np(layer.adjacency),
                               zsl.mlgcn_adjacency(_graph_kwargs()["label_graph"], 0.3, 0.25))


@pytest.mark.parametrize("head", list(GRAPH_HEADS))
@pytest.mark.parametrize("change, match", [
    ({"label_vectors": None}, "label_vectors is required"),
    ({"label_graph": None}, "label_graph is required"),
    ({"label_vectors": np.zeros((N + 1, 7), "float32")}, "label_vectors must have shape"),
    ({"label_graph": np.zeros((24, N), "float32")}, "label_graph must be"),
    ({"label_graph": np.full((N, N), 2.0, "float32")}, r"\[0, 1\]"),
])
def test_missing_or_wrong_graph_kwargs(head, change, match):
    kwargs = {**GRAPH_HEADS[head], **_graph_kwargs(), **change}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    with pytest.raises(ValueError, match=match):
        keras_mld.build(tiny_backbone(), head=head, num_classes=N, input_shape=(32, 32, 3),
                        **kwargs)


@pytest.mark.tf_only
@pytest.mark.parametrize("head, branch_op", [("gat", "Softmax"), ("mlgcn", "LeakyRelu")])
def test_frozen_export_graph_has_no_graph_branch_ops(head, branch_op):
    import tensorflow as tf

    model = _build(head)

    def op_types():
        fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
            tf.TensorSpec((None, 32, 32, 3), tf.float32))
        types = {op.type for op in fn.graph.get_operations()}
        for f in fn.graph._functions.values():  # noqa: SLF001  (nested function bodies)
            types |= {node.op for node in f.definition.node_def}
        return types

    assert branch_op in op_types()
    freeze_graph_branches(model)
    assert branch_op not in op_types()
