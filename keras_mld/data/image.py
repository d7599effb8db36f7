"""The one image decode + resize used by training, evaluation and exported models.

Keeping a single definition guarantees that a served model sees exactly what the
model saw in training ("resize as in training", see docs/serving.md).
"""
import tensorflow as tf

RESIZE_METHOD = "bilinear"


def resize(image, image_size):
    """``image`` uint8/float ``[H, W, 3]`` or ``[B, H, W, 3]`` -> float32 in [0, 255] at ``image_size``."""
    image = tf.image.resize(tf.cast(image, tf.float32), image_size, method=RESIZE_METHOD,
                            antialias=False)
    return tf.clip_by_value(image, 0.0, 255.0)


def decode_and_resize(image_bytes, image_size):
    """Encoded JPEG/PNG/GIF/BMP bytes (scalar string) -> float32 ``[H, W, 3]`` in [0, 255].

    Grey-scale and RGBA images are converted to RGB. Invalid bytes raise
    ``tf.errors.InvalidArgumentError`` from ``tf.io.decode_image``.
    """
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return resize(image, image_size)
