"""MLGCNHead (ML-GCN, Chen et al. (arXiv:1904.03582)) against numpy."""
import json

import keras
import numpy as np
import pytest

from keras_mld.models.graph import freeze_graph_branches
from keras_mld.layers import MLGCNHead
from tests.support.helpers import grad_wrt_variables, to_np

N, D_W, C = 4, 6, 8
# a normalised ML-GCN propagation matrix (any [N, N] matrix is used as given)
A_HAT = np.array([[1 / 1.1, 0.1 / 1.1, 0.1 / np.sqrt(1.32), 0],
                  [0.1 / 1.1, 1 / 1.1, 0.1 / np.sqrt(1.32), 0],
                  [0, 0, 1 / 1.2, 0],
                  [0, 0, 0, 1]], "float32")


def _vectors(seed=0):
    return np.random.default_rng(seed).normal(size=(N, D_W)).astype("float32")


def _features(shape=(2, 3, 4, C), seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def reference(f, g, a, w1, w2, slope=0.2):
    h = a @ (g @ w1)
    h = np.where(h > 0, h, slope * h)            # LeakyReLU(0.2) after the first GCN layer
    classifiers = a @ (h @ w2)                    # [N, C]
    v = f.max(axis=tuple(range(1, f.ndim - 1)))  # global max pooling
    return v @ classifiers.T, classifiers


def _layer(**kwargs):
    return MLGCNHead(N, label_vectors=_vectors(), adjacency=A_HAT, **kwargs)


@pytest.mark.parametrize("shape", [(2, 3, 4, C), (2, 5, C)])
@pytest.mark.parametrize("hidden_dim", [None, 3])
def test_values_against_numpy(shape, hidden_dim):
    layer = _layer(hidden_dim=hidden_dim)
    f = _features(shape)
    y = to_np(layer(f))
    assert y.shape == (2, N)
    assert tuple(layer.kernel1.shape) == (D_W, hidden_dim or C // 2)
    ref, cls = reference(f.astype(np.float64), _vectors().astype(np.float64),
                         A_HAT.astype(np.float64), to_np(layer.kernel1), to_np(layer.kernel2))
    np.testing.assert_allclose(to_np(layer.classifiers()), cls, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


def test_default_initialisation_is_mlgcn_uniform():
    layer = _layer()
    layer.build((2, 3, 4, C))
    assert np.abs(to_np(layer.kernel1)).max() <= 1 / np.sqrt(C // 2)
    assert np.abs(to_np(layer.kernel2)).max() <= 1 / np.sqrt(C)


def test_frozen_equals_unfrozen():
    layer = _layer()
    f = _features()
    before = to_np(layer(f))
    layer.freeze()
    assert layer.get_config()["frozen"] is True and layer.trainable_weights == []
    np.testing.assert_allclose(to_np(layer(f)), before, rtol=1e-6)
    layer.kernel1.assign(to_np(layer.kernel1) + 1.0)
    np.testing.assert_allclose(to_np(layer(f)), before, rtol=1e-6)
    layer.unfreeze()
    assert len(layer.trainable_weights) == 2
    assert not np.allclose(to_np(layer(f)), before)


def test_gradients_reach_all_trainable_weights():
    layer = _layer()
    f = _features()
    layer.build(f.shape)
    grads = grad_wrt_variables(lambda: keras.ops.sum(keras.ops.sin(layer(f))),
                               layer.trainable_weights)
    assert len(grads) == 2
    for g in grads:
        assert g is not None and np.all(np.isfinite(g)) and np.any(g != 0)


@pytest.mark.parametrize("frozen", [False, True])
def test_keras_round_trip_safe_mode(tmp_path, frozen):
    inp = keras.Input((3, 4, C))
    model = keras.Model(inp, _layer()(inp))
    if frozen:
        assert len(freeze_graph_branches(model)) == 1
    f = _features()
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_array_equal(to_np(model(f)), to_np(loaded(f)))
    assert loaded.layers[-1].frozen is frozen


def test_config_holds_no_arrays():
    config = _layer().get_config()
    assert "label_vectors" not in config and "adjacency" not in config
    assert config["word_dim"] == D_W
    json.dumps(config)


def test_mixed_float16_finite():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = _layer()
        y = layer(_features() * 10)
        assert keras.backend.standardize_dtype(y.dtype) == "float16"
        assert np.all(np.isfinite(to_np(y)))
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_classes=0), "num_classes"),
    (dict(adjacency=np.eye(3, dtype="float32")), "adjacency"),
    (dict(label_vectors=np.zeros((3, D_W), "float32")), "label_vectors"),
    (dict(adjacency=None), "both"),
    (dict(hidden_dim=0), "hidden_dim"),
    (dict(negative_slope=-1), "negative_slope"),
])
def test_bad_arguments(kwargs, match):
    args = dict(num_classes=N, label_vectors=_vectors(), adjacency=A_HAT)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        MLGCNHead(**args)
