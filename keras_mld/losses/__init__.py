"""Losses on logits (``keras.ops`` only). ``y_true == -1`` marks an entry to ignore."""
from keras_mld.losses.aam import AAM_PRESETS, AAMLoss  # noqa: F401
from keras_mld.losses.asl import AsymmetricLoss, AsymmetricLossSingleLabel  # noqa: F401
