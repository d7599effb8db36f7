"""keras-mld: multi-label image classification heads and losses for Keras 3.

Public API::

    import keras_mld
    model = keras_mld.build("efficientnetv2_s", head="mldecoder")  # an ImageClassifier
    keras_mld.list_models(), keras_mld.list_presets()
    keras_mld.ImageClassifier.from_preset("mldecoder_coco")
    keras_mld.layers.MLDecoder, keras_mld.losses.AsymmetricLoss, keras_mld.metrics...

TensorFlow-only parts (``data``, ``training``, ``export``) are imported lazily so
that ``keras_mld.layers`` / ``keras_mld.losses`` work on the JAX backend without
TensorFlow.
"""
import importlib

import keras as _keras

from keras_mld import layers, losses, metrics  # noqa: F401
from keras_mld.builders import build, list_models, register_head  # noqa: F401
from keras_mld.models import ImageClassifier, ImageClassifierPreprocessor  # noqa: F401

__version__ = "0.1.0"

if _keras.backend.backend() == "tensorflow":
    # registers the OneCycle schedule that compiled models saved by `fit` refer to, so that
    # `keras.models.load_model` works after a plain `import keras_mld`
    from keras_mld.training import schedules as _schedules  # noqa: F401

_LAZY = ("data", "training", "export", "zsl", "backbones", "builders", "cli", "models",
         "recipes")


def list_presets():
    """Names :meth:`ImageClassifier.from_preset` accepts besides a preset folder."""
    from keras_mld.models.presets import list_presets as _list

    return _list()


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"keras_mld.{name}")
    raise AttributeError(f"module 'keras_mld' has no attribute {name!r}")


__all__ = ["build", "list_models", "list_presets", "register_head", "ImageClassifier",
           "ImageClassifierPreprocessor", "layers", "losses", "metrics",
           "data", "training", "export", "zsl", "__version__"]
