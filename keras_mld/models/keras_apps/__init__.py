"""Backbones from Keras itself: the Keras applications and the demo's ``small_convnet``
(registered by name when imported)."""
from keras_mld.models.keras_apps import backbones, small_convnet  # noqa: F401
