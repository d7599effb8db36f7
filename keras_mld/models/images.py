"""Images for :meth:`keras_mld.ImageClassifier.predict_labels`: file paths, encoded bytes or
arrays, decoded with the training pipeline's own bounded decoder
(:func:`keras_mld.data.image.decode_and_resize`) and batched lazily."""
import os

import keras
import numpy as np

from keras_mld.validation import check_int


def _is_image_source(item):
    return isinstance(item, (str, bytes, os.PathLike))


_DECODERS = {}


def _decoder(size, max_image_pixels):
    """The bounded decoder for ``size`` as a (cached) ``tf.function`` (run eagerly, the
    header reader's ops would run one by one); ``max_image_pixels=None`` for a GIF, whose
    size :func:`keras_mld.data.image.gif_shape` has already checked in Python."""
    key = (size, max_image_pixels)
    if key not in _DECODERS:
        import tensorflow as tf

        from keras_mld.data.image import assert_image_size, decode_and_resize

        def decode(data):
            if size is not None:
                return decode_and_resize(data, size, max_image_pixels)
            check = assert_image_size(data, max_image_pixels)
            with tf.control_dependencies([] if check is None else [check]):
                image = tf.io.decode_image(data, channels=3, expand_animations=False)
            return tf.cast(image, tf.float32)

        _DECODERS[key] = tf.function(decode, input_signature=[tf.TensorSpec([], tf.string)])
    return _DECODERS[key]


def _reason(message):
    """The op's own words from a graph-mode error (without TensorFlow's trace lines)."""
    lines = [line.strip() for line in message.splitlines()]
    kept = [line for line in lines if line and not line.startswith(
        ("Graph execution error", "Detected at node", "File ", "[[", "{{"))]
    return kept[-1] if kept else message.strip()


def _load_one(item, preprocessor, max_bytes=None):
    """One image (path, bytes or ``[H, W, 3]`` array) -> float32 ``[h, w, 3]`` numpy; a file
    or bytes over ``max_bytes`` is refused before it is read."""
    size = preprocessor.image_size
    if _is_image_source(item):
        import tensorflow as tf

        if isinstance(item, bytes):
            data, nbytes, name = item, len(item), f"{len(item)} bytes"
        else:
            path = os.fspath(item)
            if not os.path.isfile(path):
                raise ValueError(f"images: no such file {path!r}")
            data, nbytes, name = None, os.path.getsize(path), repr(path)
        if max_bytes is not None and nbytes > max_bytes:
            raise ValueError(f"images: cannot use {name}: {nbytes} bytes, more than "
                             f"max_request_bytes={max_bytes}")
        from keras_mld.data.image import DEFAULT_MAX_IMAGE_PIXELS, gif_shape

        if data is None:
            data = tf.io.read_file(path).numpy()
        limit = DEFAULT_MAX_IMAGE_PIXELS
        if data[:4] == b"GIF8":  # its header walk, in Python: linear, ~0.03 s per MiB
            height, width = gif_shape(data)
            if height * width > limit:
                shown = item if not isinstance(item, bytes) else f"{len(item)} bytes"
                raise ValueError(f"images: cannot use {shown}: not a JPEG/PNG/GIF/BMP/WebP "
                                 f"image of at most the allowed pixels (image of {height} x "
                                 f"{width} pixels (height x width, from its header) exceeds "
                                 f"max_image_pixels={limit})")
            limit = None
        try:  # bounded: an image over max_image_pixels is refused from its header
            image = _decoder(size, limit)(data)
        except tf.errors.InvalidArgumentError as err:
            name = item if not isinstance(item, bytes) else f"{len(item)} bytes"
            raise ValueError(f"images: cannot use {name}: not a JPEG/PNG/GIF/BMP/WebP image of "
                             f"at most the allowed pixels ({_reason(err.message)})") from None
        return image.numpy()
    x = np.asarray(keras.ops.convert_to_numpy(item) if not isinstance(item, np.ndarray)
                   else item)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"images: expected arrays [H, W, 3] (RGB), got shape {x.shape}")
    return np.asarray(keras.ops.convert_to_numpy(preprocessor.resize(x[None])))[0]


def image_batches(images, preprocessor, batch_size, max_request_bytes=None):
    """``images`` in any accepted form -> an iterator of float32 batches ``[b, h, w, 3]``.

    Files and bytes are decoded one batch at a time (bounded memory for a long list); one
    over ``max_request_bytes`` (None: no limit) is refused before it is read."""
    batch_size = check_int("predict_labels", "batch_size", batch_size, minimum=1)
    if max_request_bytes is not None:
        max_request_bytes = check_int("predict_labels", "max_request_bytes", max_request_bytes,
                                      minimum=1)
    if _is_image_source(images) or (hasattr(images, "shape") and len(images.shape) == 3):
        images = [images]
    if hasattr(images, "shape"):  # a batch [B, H, W, 3]: resized inside the model
        if len(images.shape) != 4 or images.shape[-1] != 3:
            raise ValueError("images: expected a batch [B, H, W, 3], a list of files, bytes or "
                             f"[H, W, 3] arrays; got shape {tuple(images.shape)}")
        x = np.asarray(keras.ops.convert_to_numpy(images))
        return (x[i:i + batch_size] for i in range(0, len(x), batch_size))
    if not isinstance(images, (list, tuple)):
        raise ValueError("images: expected a batch [B, H, W, 3], or a list of image files, "
                         f"encoded bytes or [H, W, 3] arrays; got {type(images).__name__}")
    if preprocessor.image_size is None:  # sizes may differ: one image per batch
        return (_load_one(item, preprocessor, max_request_bytes)[None] for item in images)
    return (np.stack([_load_one(item, preprocessor, max_request_bytes)
                      for item in images[i:i + batch_size]])
            for i in range(0, len(images), batch_size))
