"""keras-mld: multi-label image classification heads and losses for Keras 3.

Public API::

    import keras_mld
    model = keras_mld.build("efficientnetv2_s", head="mldecoder")  # an ImageClassifier
    keras_mld.list_models(), keras_mld.list_presets()
    keras_mld.ImageClassifier.from_preset("mldecoder_coco")
    keras_mld.layers.MLDecoder, keras_mld.losses.AsymmetricLoss, keras_mld.metrics...

``import keras_mld`` itself is cheap: it imports neither Keras nor TensorFlow (so that
``keras-mld --help`` answers at once). The first use of any attribute (``keras_mld.build``,
``keras_mld.layers``, ...) imports Keras and registers every layer, loss and schedule with
Keras' serialization, so that ``keras.models.load_model(..., safe_mode=True)`` finds them.
TensorFlow-only parts (``data``, ``training``, ``export``) are imported on first use, so that
``keras_mld.layers`` / ``keras_mld.losses`` work on the JAX backend without TensorFlow.

Examples:
    >>> import keras_mld
    >>> model = keras_mld.build("small_convnet", head="mldecoder", num_classes=5,
    ...                         input_shape=(32, 32, 3), weights=None,
    ...                         num_groups=5, embed_dim=16, num_heads=2, ff_dim=32)
    >>> model.output_shape
    (None, 5)
"""
import importlib

__version__ = "0.1.0"

_CORE = ("layers", "losses", "metrics", "builders", "heads", "backbones", "models")
_LAZY = ("data", "training", "export", "zsl", "workflows", "graph_branches", "convert",
         "tresnet")
_LIGHT = ("cli", "recipes", "validation")  # no Keras needed: imported without the core
_FROM_BUILDERS = ("build", "list_models", "register_head")
_FROM_MODELS = ("ImageClassifier", "ImageClassifierPreprocessor", "list_presets")
_state = {"loaded": False, "loading": False}


def _import_core():
    """Imports Keras, the layers, losses, metrics and builders (registering them); idempotent.

    While it runs, ``from keras_mld import x`` inside the package imports ``x`` plainly."""
    if _state["loaded"] or _state["loading"]:
        return
    _state["loading"] = True
    try:
        for name in _CORE:
            importlib.import_module(f"keras_mld.{name}")
        import keras

        if keras.backend.backend() == "tensorflow":
            # registers the OneCycle schedule that compiled models saved by `fit` refer to
            importlib.import_module("keras_mld.training.schedules")
        _state["loaded"] = True
    finally:
        _state["loading"] = False


def __getattr__(name):
    if name in _FROM_BUILDERS:
        _import_core()
        return getattr(importlib.import_module("keras_mld.builders"), name)
    if name in _FROM_MODELS:
        _import_core()
        return getattr(importlib.import_module("keras_mld.models"), name)
    if name in _LIGHT:
        return importlib.import_module(f"keras_mld.{name}")
    if name in _CORE or name in _LAZY:
        _import_core()
        return importlib.import_module(f"keras_mld.{name}")
    raise AttributeError(f"module 'keras_mld' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_CORE) | set(_LAZY) | set(_LIGHT) | set(_FROM_BUILDERS)
                  | set(_FROM_MODELS))


__all__ = ["build", "list_models", "list_presets", "register_head", "ImageClassifier",
           "ImageClassifierPreprocessor", "layers", "losses", "metrics",
           "data", "training", "export", "zsl", "__version__"]
