"""``freeze_layers``: Query2Label's frozen stem / first stage and ``FrozenBatchNorm2d``
(SlongLiu/query2labels ``lib/models/backbone.py``) on a Keras model."""
import keras
import numpy as np
import pytest

from keras_mld.training.freeze import freeze_layers


def _model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(3, 3, padding="same", name="conv1_conv")(inp)
    h = keras.layers.BatchNormalization(name="conv1_bn")(h)
    h = keras.layers.Conv2D(3, 3, padding="same", name="conv3_conv")(h)
    h = keras.layers.BatchNormalization(name="conv3_bn")(h)
    return keras.Model(inp, keras.layers.GlobalAveragePooling2D()(h))


def test_frozen_batchnorm_normalises_with_its_statistics_and_updates_nothing():
    model = _model()
    bn = model.get_layer("conv3_bn")
    bn.moving_mean.assign(np.array([0.5, -1.0, 2.0], "float32"))
    bn.moving_variance.assign(np.array([4.0, 0.25, 1.0], "float32"))
    frozen = freeze_layers(model, ["conv1_"], batchnorm=True)
    assert frozen == ["conv1_conv", "conv1_bn", "conv3_bn"]
    assert [v.path for v in model.trainable_variables] == ["conv3_conv/kernel",
                                                            "conv3_conv/bias"]
    x = np.random.RandomState(0).randn(4, 6, 6, 2).astype("float32")
    feats = keras.Model(model.input, model.get_layer("conv3_conv").output)(x)
    f = keras.ops.convert_to_numpy(feats)
    expected = ((f - [0.5, -1.0, 2.0]) / np.sqrt(np.array([4.0, 0.25, 1.0]) + 1e-3)).mean((1, 2))
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.non_trainable_variables]
    out = model(x, training=True)  # training mode: still the moving statistics
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, rtol=1e-5,
                               atol=1e-6)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(x, np.zeros((4, 3)), epochs=1, verbose=0)
    for v, b in zip(model.non_trainable_variables, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), b, err_msg=v.path)


def test_freeze_layers_errors():
    model = _model()
    with pytest.raises(ValueError, match="'conv9_'"):
        freeze_layers(model, ["conv9_"])
    for bad in ("conv1_", [""], [3]):
        with pytest.raises(ValueError, match="prefixes"):
            freeze_layers(model, bad)
    with pytest.raises(ValueError, match="batchnorm"):
        freeze_layers(model, [], batchnorm="yes")
    with pytest.raises(ValueError, match="keras.Model"):
        freeze_layers(keras.layers.Dense(2), [])
