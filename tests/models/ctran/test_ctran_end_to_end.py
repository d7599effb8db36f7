"""C-Tran end to end (Lanchantin et al., arXiv:2011.14027, section 3.2 label-mask
training): a built ``ctran`` classifier with partially known labels computes what its
``CTranHead`` computes on the backbone features, and label-mask training
(``ctran_label_mask_dataset`` + ``fit``) puts no gradient on the revealed labels."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mld.data.label_mask import ctran_label_mask_dataset
from keras_mld.losses import AsymmetricLoss
from keras_mld.models.builder import build
from tests.support.tiny import SMALL_HEAD_KWARGS, tiny_backbone

pytestmark = pytest.mark.tf_only  # tf.data label masks


def _model():
    keras.utils.set_random_seed(0)
    return build(tiny_backbone(), head="ctran", num_classes=5, input_shape=(32, 32, 3),
                 known_labels_input=True, **SMALL_HEAD_KWARGS["ctran"])


def _data(n=8):
    rs = np.random.RandomState(0)
    x = rs.uniform(0, 255, (n, 32, 32, 3)).astype("float32")
    y = (rs.rand(n, 5) < 0.4).astype("float32")
    return x, y


def test_partially_known_labels_are_the_heads_computation():
    model = _model()
    x, y = _data(4)
    states = np.where(np.random.RandomState(1).rand(4, 5) < 0.5, y, -1.0).astype("float32")
    out = keras.ops.convert_to_numpy(model({"images": x, "known_labels": states},
                                           training=False))
    features = model.get_layer("tiny_backbone")(model.get_layer("preprocessor")(x))
    head = model.get_layer("head").get_layer("ctran")
    ref = keras.ops.convert_to_numpy(head(features, known_labels=states, training=False))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    unknown = keras.ops.convert_to_numpy(
        model({"images": x, "known_labels": -np.ones_like(states)}, training=False))
    assert np.abs(out - unknown).max() > 1e-4  # the revealed states change the logits


def test_label_mask_training_step_ignores_revealed_labels(tmp_path):
    model = _model()
    x, y = _data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    masked = ctran_label_mask_dataset(ds, seed=0, rerandomize_each_iteration=False)
    (images, states), targets = next(iter(masked))
    states, targets = states.numpy(), targets.numpy()
    revealed = states >= 0
    assert revealed.any() and (~revealed).any()
    np.testing.assert_array_equal(targets[revealed], -1.0)  # revealed: no target
    np.testing.assert_array_equal(targets[~revealed], y[~revealed])
    loss = AsymmetricLoss(gamma_neg=2.0, clip=0.0)
    logits = tf.Variable(model({"images": images, "known_labels": tf.constant(states)},
                               training=False))
    with tf.GradientTape() as tape:
        value = loss(targets, logits)
    grad = tape.gradient(value, logits).numpy()
    assert np.all(grad[revealed] == 0.0) and np.abs(grad[~revealed]).max() > 0
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss, metrics=[])
    remapped = masked.map(lambda inp, t: ({"images": inp[0], "known_labels": inp[1]}, t))
    hist = model.fit(remapped, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    moved = [np.abs(v.numpy() - b).max() for v, b in zip(model.trainable_variables, before)]
    assert max(moved) > 0
