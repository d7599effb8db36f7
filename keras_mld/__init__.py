"""keras-mld: multi-label image classification heads and losses for Keras 3.

Public API::

    import keras_mld
    model = keras_mld.build("efficientnetv2_s", head="mldecoder")  # an ImageClassifier
    keras_mld.list_models(), keras_mld.list_presets()
    keras_mld.ImageClassifier.from_preset("mldecoder_coco")
    keras_mld.build("tresnet_m", weights="miil_in21k")  # timm's weights, via the Hub
    keras_mld.ImageClassifier.from_preset("hf://owner/repo"), keras_mld.upload_preset(...)
    keras_mld.layers.MLDecoder, keras_mld.losses.AsymmetricLoss, keras_mld.metrics...

``import keras_mld`` itself is cheap: it imports neither Keras nor TensorFlow (so that
``keras-mld --help`` answers at once). The first use of any attribute (``keras_mld.build``,
``keras_mld.layers``, ...) imports Keras, every architecture folder of
:mod:`keras_mld.models` (which registers its backbones, heads and presets), the losses and
metrics, so that every layer, loss and metric is registered with Keras' serialization and
``keras.models.load_model(..., safe_mode=True)`` finds them. TensorFlow-only parts
(``data``, ``training``, ``export``) are imported on first use, so that
``keras_mld.layers`` / ``keras_mld.losses`` work on the JAX backend without TensorFlow.

Nothing inside the package imports through this module: it is the users' door only.

Examples:
    >>> import keras_mld
    >>> model = keras_mld.build("small_convnet", head="mldecoder", num_classes=5,
    ...                         input_shape=(32, 32, 3), weights=None,
    ...                         num_groups=5, embed_dim=16, num_heads=2, ff_dim=32)
    >>> model.output_shape
    (None, 5)
"""
import importlib

from keras_mld.version import __version__  # noqa: F401

# attribute -> the module that defines it
_ATTRIBUTES = {
    "build": "keras_mld.models.builder", "list_models": "keras_mld.models.builder",
    "ImageClassifier": "keras_mld.models.image_classifier",
    "ImageClassifierPreprocessor": "keras_mld.models.preprocessor",
    "list_presets": "keras_mld.models.presets", "upload_preset": "keras_mld.models.presets",
    "register_head": "keras_mld.registry",
}
# sub-packages and modules reachable as keras_mld.<name> ("tresnet": the TResNet folder)
_MODULES = {name: f"keras_mld.{name}" for name in (
    "layers", "losses", "metrics", "models", "registry", "metadata", "data", "training",
    "export", "zsl", "convert", "checkpoints", "recipes", "validation", "atomic")}
_MODULES["tresnet"] = "keras_mld.models.tresnet"
_LIGHT = ("recipes", "validation", "atomic", "registry", "metadata")  # need no Keras
# registering everything with Keras: the models (every architecture folder), losses, metrics
_REGISTER = ("keras_mld.models", "keras_mld.losses", "keras_mld.metrics")


def _register_all():
    for module in _REGISTER:
        importlib.import_module(module)
    import keras

    if keras.backend.backend() == "tensorflow":
        # the OneCycle schedule that compiled models saved by `fit` refer to
        importlib.import_module("keras_mld.training.schedules")


def __getattr__(name):
    if name in _LIGHT:
        return importlib.import_module(_MODULES[name])
    if name in _ATTRIBUTES:
        _register_all()
        return getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    if name in _MODULES:
        _register_all()
        return importlib.import_module(_MODULES[name])
    raise AttributeError(f"module 'keras_mld' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_ATTRIBUTES) | set(_MODULES))


__all__ = ["build", "list_models", "list_presets", "upload_preset", "register_head",
           "ImageClassifier",
           "ImageClassifierPreprocessor", "layers", "losses", "metrics",
           "data", "training", "export", "zsl", "convert", "__version__"]
