"""Tasks: :class:`ImageClassifier` (backbone + head + preprocessor, class names, thresholds),
its preprocessor and presets."""
from keras_mld.models.coco import COCO_CLASS_NAMES  # noqa: F401
from keras_mld.models.image_classifier import ImageClassifier  # noqa: F401
from keras_mld.models.preprocessor import ImageClassifierPreprocessor  # noqa: F401
from keras_mld.models.presets import list_presets  # noqa: F401

__all__ = ["ImageClassifier", "ImageClassifierPreprocessor", "COCO_CLASS_NAMES", "list_presets"]
