"""Keras applications as backbones: EfficientNetV2, ResNet, MobileNetV3, ConvNeXt.

Each constructs offline from explicit arguments (``weights=None``); ``weights="imagenet"``
downloads through ``keras.applications`` when a network is there and fails with a clear
message when it is not (a weights file is loaded by :func:`keras_mld.models.builder.create_backbone`).
The applications that rescale their input themselves keep ``include_preprocessing`` and
take RGB [0, 255] (normalisation ``"none"``); ResNet takes Caffe's BGR mean subtraction.
"""
import functools

import keras

from keras_mld.registry import BackboneSpec, register_backbone

# name -> (keras.applications attribute, normalisation, extra constructor arguments)
APPLICATIONS = {
    "efficientnetv2_b0": ("EfficientNetV2B0", "none", {"include_preprocessing": True}),
    "efficientnetv2_b1": ("EfficientNetV2B1", "none", {"include_preprocessing": True}),
    "efficientnetv2_s": ("EfficientNetV2S", "none", {"include_preprocessing": True}),
    "efficientnetv2_m": ("EfficientNetV2M", "none", {"include_preprocessing": True}),
    "efficientnetv2_l": ("EfficientNetV2L", "none", {"include_preprocessing": True}),
    "resnet50": ("ResNet50", "caffe", {}),
    "resnet101": ("ResNet101", "caffe", {}),
    "mobilenetv3_large": ("MobileNetV3Large", "none", {"include_preprocessing": True}),
    "mobilenetv3_small": ("MobileNetV3Small", "none", {"include_preprocessing": True}),
    "convnext_tiny": ("ConvNeXtTiny", "none", {"include_preprocessing": True}),
}


def create_application(attribute, input_shape, weights=None, **kwargs):
    """``keras.applications.<attribute>`` without its classifier; ``weights`` None or
    ``"imagenet"`` (downloaded; a clear error offline)."""
    constructor = getattr(keras.applications, attribute)
    try:
        return constructor(include_top=False, input_shape=tuple(input_shape), weights=weights,
                           **kwargs)
    except Exception as err:  # keras raises a bare Exception("URL fetch failure ...") offline
        if weights == "imagenet" and _looks_like_download_error(err):
            raise RuntimeError(
                f"Could not download the ImageNet weights of {attribute} ({err}). keras-mld "
                "needs a network connection for weights='imagenet' (Keras caches the file "
                "under ~/.keras/models afterwards). Offline, use weights=None or "
                "weights=<path to a .weights.h5 file of this backbone>.") from err
        raise


def _looks_like_download_error(err):
    text = f"{type(err).__name__} {err}".lower()
    return any(k in text for k in ("url fetch", "urlopen", "urlerror", "connection", "resolve",
                                   "network", "http", "timed out", "name or service"))


for _name, (_attribute, _normalization, _kwargs) in APPLICATIONS.items():
    register_backbone(BackboneSpec(
        _name, functools.partial(create_application, _attribute, **_kwargs), _normalization,
        min_size=32, weights=("imagenet",)))
