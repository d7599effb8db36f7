"""Learning-rate range test (Prokofiev & Sovrasov (arXiv:2209.06585) section 3.5): increasing lrs,
per-step losses, model restored."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mld.training import lr_range_test

pytestmark = pytest.mark.tf_only


def _setup():
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    h = keras.layers.BatchNormalization()(keras.layers.Dense(8, activation="relu")(inp))
    model = keras.Model(inp, keras.layers.Dense(2)(h))
    rs = np.random.RandomState(0)
    x = rs.randn(64, 4).astype("float32")
    y = (x @ rs.randn(4, 2)).astype("float32")
    return model, tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def test_increasing_lrs_and_weights_restored():
    model, ds = _setup()
    model.compile(keras.optimizers.Adam(1e-3), loss="mse")
    before = [v.numpy().copy() for v in model.variables]  # incl. BatchNorm statistics
    lrs, losses, lr = lr_range_test(model, ds, min_lr=1e-5, max_lr=1.0, num_steps=30)
    assert len(lrs) == len(losses) >= 10
    assert np.all(np.diff(lrs) > 0)
    np.testing.assert_allclose(lrs, 1e-5 * (1e5) ** (np.arange(len(lrs)) / 29), rtol=1e-12)
    assert np.all(np.isfinite(losses[:10]))
    assert losses[: len(losses) // 2].min() < losses[0]  # training happened
    assert 1e-5 <= lr <= 1.0 and lr in lrs
    for v, b in zip(model.variables, before):
        np.testing.assert_array_equal(v.numpy(), b)
    assert not model.optimizer.built  # the model's own optimizer was not used


def test_uncompiled_needs_loss_and_bad_args():
    model, ds = _setup()
    with pytest.raises(ValueError, match="loss"):
        lr_range_test(model, ds)
    lrs, losses, _ = lr_range_test(model, ds, min_lr=1e-4, max_lr=1e-2, num_steps=5,
                                   loss="mse", optimizer="sgd")
    assert len(lrs) == 5
    with pytest.raises(ValueError, match="min_lr"):
        lr_range_test(model, ds, min_lr=1.0, max_lr=0.1, loss="mse")
    with pytest.raises(ValueError, match="num_steps"):
        lr_range_test(model, ds, num_steps=1, loss="mse")
