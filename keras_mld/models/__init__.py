"""Models: the :class:`ImageClassifier` task and one folder per architecture.

- the task: ``image_classifier`` (:class:`ImageClassifier`), ``preprocessor``, ``images``
  (image inputs of ``predict_labels``), ``presets`` (folders and named presets),
  ``builder`` (:func:`build`, :func:`list_models`), ``coco`` (the default class names);
- the architectures, each with its layers or backbone, head, converter and presets, which
  register themselves in :mod:`keras_mld.registry` when imported here: ``keras_apps``,
  ``tresnet``, ``gap``, ``ml_decoder``, ``query2label``, ``ctran``, ``graph``.
"""
from keras_mld.models.builder import build, create_backbone, list_models  # noqa: F401
from keras_mld.models.coco import COCO_CLASS_NAMES  # noqa: F401
from keras_mld.models.image_classifier import ImageClassifier  # noqa: F401
from keras_mld.models.preprocessor import ImageClassifierPreprocessor  # noqa: F401
from keras_mld.models.presets import list_presets  # noqa: F401
from keras_mld.models import (  # noqa: F401  (each registers its backbones, heads, presets)
    ctran, gap, graph, keras_apps, ml_decoder, query2label, tresnet)

__all__ = ["ImageClassifier", "ImageClassifierPreprocessor", "COCO_CLASS_NAMES", "build",
           "create_backbone", "list_models", "list_presets"]
