"""make_augmenter: pure function of (image, seed), exact flips, sane ranges."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mld.data import augment
from keras_mld.data.augment import make_augmenter

pytestmark = pytest.mark.tf_only


def _image(size=16, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (size, size, 3)).astype(np.float32)


def test_light_is_exact_flip_decided_by_the_seed():
    image = _image()
    apply = make_augmenter("light", (16, 16))
    flipped = 0
    for k in range(12):
        seed = tf.constant([k, 5], tf.int64)
        out = apply(image, seed).numpy()
        np.testing.assert_array_equal(out, apply(image, seed).numpy())
        if np.array_equal(out, image[:, ::-1]):
            flipped += 1
        else:
            np.testing.assert_array_equal(out, image)
    assert 0 < flipped < 12


def test_randaugment_is_a_function_of_image_and_seed():
    image = _image(24)
    apply = make_augmenter("randaugment", (24, 24))
    outs = [apply(image, tf.constant([k, 1], tf.int64)).numpy() for k in range(4)]
    again = apply(image, tf.constant([0, 1], tf.int64)).numpy()
    np.testing.assert_array_equal(outs[0], again)
    assert all(o.shape == (24, 24, 3) and o.dtype == np.float32 for o in outs)
    assert all(0.0 <= o.min() and o.max() <= 255.0 for o in outs)
    assert len({o.tobytes() for o in outs}) == 4
    assert make_augmenter("randaugment", (24, 24)) is apply  # traced once, shared


def test_symmetric_randaugment_ranges():
    ra = augment._SeededRandAugment(value_range=(0, 255), num_ops=2, factor=0.5,
                                    dtype="float32")
    assert ra.random_rotation.factor == (-0.075, 0.075)  # +-27 degrees
    assert ra.random_shear.x_factor == (-0.27, 0.27)
    assert (ra.random_translation.height_lower, ra.random_translation.height_upper) \
        == (-0.27, 0.27)
    assert ra.random_contrast.factor == (0.5, 0.5)  # contrast x0.5 .. x1.5
    assert isinstance(ra.equalization, augment._TFEqualization)


def test_tf_equalization_matches_keras_layer():
    image = np.random.default_rng(0).integers(0, 200, (2, 16, 16, 3)).astype(np.float32)
    ours = augment._TFEqualization(value_range=(0, 255), dtype="float32")(image)
    ref = keras.layers.Equalization(value_range=(0, 255), dtype="float32")(image)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), atol=1e-4)


def test_bad_argument():
    with pytest.raises(ValueError, match="augment"):
        make_augmenter("strong", (8, 8))
