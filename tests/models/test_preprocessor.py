"""ImageClassifierPreprocessor on every backend: the resize equals the training pipeline's
(``keras_mld.data.image.resize``: tf.image.resize bilinear, no antialias, clipped), also on
JAX where ``keras.ops.image.resize`` does it inside the model."""
import numpy as np
import tensorflow as tf

from keras_mld.models import ImageClassifierPreprocessor
from tests.support.helpers import to_np


def test_resize_and_normalisation_match_the_training_function_on_this_backend():
    x = np.random.default_rng(0).uniform(0, 255, (2, 24, 30, 3)).astype("uint8")
    layer = ImageClassifierPreprocessor((20, 17), "symmetric")
    reference = tf.clip_by_value(tf.image.resize(tf.cast(x, tf.float32), (20, 17),
                                                 method="bilinear", antialias=False), 0, 255)
    np.testing.assert_allclose(to_np(layer.resize(x)), reference.numpy(), atol=1e-4)
    np.testing.assert_allclose(to_np(layer(x)), reference.numpy() / 127.5 - 1.0, atol=1e-6)
    assert tuple(layer.compute_output_shape((None, None, None, 3))) == (None, 20, 17, 3)
