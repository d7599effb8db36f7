"""Backbone registry: names -> offline-constructible Keras feature extractors.

Like timm's registry: ``list_backbones()`` names what ``create_backbone(name, ...)``
builds. Every entry constructs offline from explicit arguments (``weights=None``);
``weights="imagenet"`` downloads through ``keras.applications`` when a network
is there and fails with a clear message when it is not; ``weights=<path>`` loads
a weights file saved from the same architecture.
"""
import dataclasses
import os

import keras


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """How to construct one backbone and what its input convention is.

    ``normalization`` is the :class:`keras_mld.layers.ImageNormalization` mode that
    maps RGB [0, 255] to what the backbone expects ("none" where the Keras
    application rescales inside itself).
    """

    name: str
    constructor: object  # attribute name of keras.applications, or a callable(**kwargs)
    normalization: str
    kwargs: tuple = ()  # extra constructor arguments, as (key, value) pairs
    min_size: int = 32


_REGISTRY = {}


def register_backbone(spec):
    """Adds a :class:`BackboneSpec` to the registry (later entries replace earlier ones)."""
    if not isinstance(spec, BackboneSpec):
        raise ValueError(f"register_backbone: spec must be a BackboneSpec, got {type(spec).__name__}")
    _REGISTRY[spec.name] = spec
    return spec


_KEEP_PREPROCESSING = (("include_preprocessing", True),)
for _spec in (
    BackboneSpec("efficientnetv2_b0", "EfficientNetV2B0", "none", _KEEP_PREPROCESSING),
    BackboneSpec("efficientnetv2_b1", "EfficientNetV2B1", "none", _KEEP_PREPROCESSING),
    BackboneSpec("efficientnetv2_s", "EfficientNetV2S", "none", _KEEP_PREPROCESSING),
    BackboneSpec("efficientnetv2_m", "EfficientNetV2M", "none", _KEEP_PREPROCESSING),
    BackboneSpec("efficientnetv2_l", "EfficientNetV2L", "none", _KEEP_PREPROCESSING),
    BackboneSpec("resnet50", "ResNet50", "caffe"),
    BackboneSpec("resnet101", "ResNet101", "caffe"),
    BackboneSpec("mobilenetv3_large", "MobileNetV3Large", "none", _KEEP_PREPROCESSING),
    BackboneSpec("mobilenetv3_small", "MobileNetV3Small", "none", _KEEP_PREPROCESSING),
    BackboneSpec("convnext_tiny", "ConvNeXtTiny", "none", _KEEP_PREPROCESSING),
):
    register_backbone(_spec)


def small_convnet(include_top=False, input_shape=(64, 64, 3), weights=None,
                  widths=(24, 32, 64, 128), depths=(1, 1, 2, 2)):
    """A small VGG-style CNN for small images: a stride-2 stem, then conv-BN-ReLU stages
    separated by max-pooling; output stride 8 (64x64 in -> 8x8x128 features, ~36 MMACs).

    Trains from scratch in minutes on a CPU: the embedded demo's backbone. It has no
    pretrained weights (``weights="imagenet"`` is refused).
    """
    if weights == "imagenet":
        raise ValueError("weights: small_convnet has no ImageNet weights; use None or a path")
    del include_top  # never has a classifier
    x_in = keras.Input(shape=input_shape)
    x = x_in
    for stage, (width, depth) in enumerate(zip(widths, depths)):
        if stage > 1:
            x = keras.layers.MaxPooling2D(name=f"stage{stage}_pool")(x)
        for conv in range(depth):
            stride = 2 if stage == 0 else 1
            x = keras.layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False,
                                    name=f"stage{stage}_conv{conv}")(x)
            x = keras.layers.BatchNormalization(name=f"stage{stage}_bn{conv}")(x)
            x = keras.layers.ReLU(name=f"stage{stage}_relu{conv}")(x)
    return keras.Model(x_in, x, name="small_convnet")


register_backbone(BackboneSpec("small_convnet", small_convnet, "unit", min_size=8))

# TResNet (keras_mld/tresnet.py): input x / 255, no mean / std ("unit").
from keras_mld.tresnet import TRESNET_VARIANTS, tresnet  # noqa: E402

for _name, (_layers, _width, _v2) in TRESNET_VARIANTS.items():
    register_backbone(BackboneSpec(_name, tresnet, "unit", (("layers", _layers), ("width_factor", _width),
                                                            ("v2", _v2), ("name", _name)), min_size=32))


def list_backbones():
    """Sorted names accepted by :func:`create_backbone`."""
    return sorted(_REGISTRY)


def get_spec(name):
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"backbone: unknown name {name!r}; accepted names: {list_backbones()} "
                         "or any keras.Model whose output is [B,H,W,C] or [B,T,C].")
    return _REGISTRY[name]


def create_backbone(name, input_shape=(224, 224, 3), weights=None):
    """Builds the named backbone without its classifier (output ``[B, H', W', C]``).

    Args:
        name: a name from :func:`list_backbones`.
        input_shape: ``(H, W, 3)``; H and W at least the spec's ``min_size``.
        weights: ``None`` (random init, offline), ``"imagenet"`` (download) or a
            path to a weights file (``.weights.h5``) of the same architecture.
    """
    spec = get_spec(name)
    h, w = input_shape[0], input_shape[1]
    if (h is not None and h < spec.min_size) or (w is not None and w < spec.min_size):
        raise ValueError(f"input_shape: {name} needs H and W >= {spec.min_size}, got {tuple(input_shape)}")
    if not (weights is None or weights == "imagenet" or isinstance(weights, (str, os.PathLike))):
        raise ValueError(f"weights: expected None, 'imagenet' or a path to a weights file, got {weights!r}")
    path = None
    if weights is not None and weights != "imagenet":
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise ValueError(f"weights: no such weights file {path!r} (expected None, 'imagenet' or a path)")
    constructor = spec.constructor
    if isinstance(constructor, str):
        constructor = getattr(keras.applications, constructor)
    kwargs = dict(include_top=False, input_shape=tuple(input_shape),
                  weights="imagenet" if weights == "imagenet" else None, **dict(spec.kwargs))
    try:
        model = constructor(**kwargs)
    except Exception as err:  # keras raises a bare Exception("URL fetch failure ...") offline
        if weights == "imagenet" and _looks_like_download_error(err):
            raise RuntimeError(
                f"Could not download the ImageNet weights of {name!r} ({err}). keras-mld needs a "
                "network connection for weights='imagenet' (Keras caches the file under "
                "~/.keras/models afterwards). Offline, use weights=None or weights=<path to a "
                ".weights.h5 file of this backbone>.") from err
        raise
    if path is not None:
        model.load_weights(path)
    return model


def _looks_like_download_error(err):
    text = f"{type(err).__name__} {err}".lower()
    return any(k in text for k in ("url fetch", "urlopen", "urlerror", "connection", "resolve",
                                   "network", "http", "timed out", "name or service"))
