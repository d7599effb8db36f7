"""In-model image normalisation: RGB pixels in [0, 255] -> what a backbone expects.

``NORMALIZATION_MODES`` here are the modes every other module accepts (``build``, the
image preprocessor).
"""
import keras
from keras import ops

from keras_mld.validation import check_choice

NORMALIZATION_MODES = ("none", "unit", "symmetric", "torch", "caffe")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="keras_mld")
class ImageNormalization(keras.layers.Layer):
    """Normalises RGB pixels in [0, 255] inside the model, so that served models
    take raw pixels (the public API: the backbone's own normalisation lives inside the model).

    Not a paper equation; the standard per-backbone input conventions:

    - ``none``: identity (backbones that rescale themselves, e.g. Keras'
      EfficientNetV2 / MobileNetV3 / ConvNeXt with ``include_preprocessing``).
    - ``unit``: ``x / 255`` (ML-Decoder's official recipe: inputs in [0, 1]).
    - ``symmetric``: ``x / 127.5 - 1``.
    - ``torch``: ``(x / 255 - mean) / std`` with the ImageNet mean/std.
    - ``caffe``: RGB -> BGR, then subtract the ImageNet BGR mean (Keras ResNet).

    A Keras ``Rescaling``/``Normalization`` pair could do the affine modes, but
    not the channel flip of ``caffe``; one small layer keeps one config key.
    """

    def __init__(self, mode="unit", **kwargs):
        super().__init__(**kwargs)
        mode = check_choice("ImageNormalization", "mode", mode, NORMALIZATION_MODES)
        self.mode = mode

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        if self.mode == "none":
            return x
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "symmetric":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_IMAGENET_MEAN, dtype=self.compute_dtype)
            std = ops.convert_to_tensor(_IMAGENET_STD, dtype=self.compute_dtype)
            return (x / 255.0 - mean) / std
        mean = ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=self.compute_dtype)
        return ops.flip(x, axis=-1) - mean

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
