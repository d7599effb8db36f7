"""The image preprocessor of :class:`keras_mld.ImageClassifier`: resize, then normalise.

Not a paper equation. Resizing uses :func:`keras_mld.data.image.resize`, the very function of
the training pipeline (:func:`keras_mld.data.make_dataset`) and of the exported
``predict_images`` signatures, so that a model sees the same pixels whichever way an image
reaches it. Normalisation is the backbone's (:class:`keras_mld.layers.ImageNormalization`).
"""
import keras
from keras import ops

from keras_mld.layers.preprocessing import NORMALIZATION_MODES, ImageNormalization

# = keras_mld.data.image.RESIZE_METHOD (a test checks it), not imported: that module needs
# TensorFlow, which the JAX path must not
RESIZE_METHOD = "bilinear"


def _check_size(image_size):
    if image_size is None:
        return None
    try:
        size = tuple(int(s) for s in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size: expected None or (height, width) positive ints, got "
                         f"{image_size!r}") from None
    if len(size) != 2 or min(size) < 1 or any(isinstance(s, bool) for s in image_size):
        raise ValueError(f"image_size: expected None or (height, width) positive ints, got "
                         f"{image_size!r}")
    return size


@keras.saving.register_keras_serializable(package="keras_mld")
class ImageClassifierPreprocessor(keras.layers.Layer):
    """RGB images, uint8 or float in [0, 255], of any size -> the backbone's input.

    ``call(images [B, H, W, 3])``: cast to float32, resize to ``image_size`` with
    :func:`keras_mld.data.image.resize` (bilinear, no antialiasing, clipped to [0, 255]; skipped
    when the batch already has that size, where it would be the identity), then apply the
    ``normalization`` mode. ``image_size=None`` keeps the input size (backbones that take any
    size). On the JAX backend, where TensorFlow ops cannot run inside the model,
    ``keras.ops.image.resize`` with the same method does the resize.

    Args:
        image_size: ``(height, width)`` the backbone takes, or None.
        normalization: an :class:`~keras_mld.layers.ImageNormalization` mode.
    """

    def __init__(self, image_size=None, normalization="unit", **kwargs):
        super().__init__(**kwargs)
        if normalization not in NORMALIZATION_MODES:
            raise ValueError(f"normalization: expected one of {NORMALIZATION_MODES}, got "
                             f"{normalization!r}")
        self.image_size = _check_size(image_size)
        self.normalization_mode = normalization
        self.normalization = ImageNormalization(normalization, name="normalization")

    def resize(self, images):
        """Cast and resize only (pixels stay in [0, 255])."""
        x = ops.cast(images, "float32")
        if self.image_size is None or tuple(x.shape[1:3]) == self.image_size:
            return x
        if keras.backend.backend() == "tensorflow":
            from keras_mld.data.image import resize

            return resize(x, self.image_size)
        x = ops.image.resize(x, self.image_size, interpolation=RESIZE_METHOD, antialias=False)
        return ops.clip(x, 0.0, 255.0)

    def build(self, input_shape):
        self.normalization.build(self.compute_output_shape(input_shape))
        self.built = True

    def call(self, images):
        return self.normalization(self.resize(images))

    def compute_output_shape(self, input_shape):
        if self.image_size is None:
            return tuple(input_shape)
        return (input_shape[0], *self.image_size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size,
                "normalization": self.normalization_mode}
