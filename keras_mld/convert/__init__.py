"""Converters from PyTorch checkpoints to keras-mld models.

``keras_mld.convert.tresnet``: timm / official TResNet state dicts -> ``keras_mld.tresnet``;
``keras_mld.convert.ml_decoder``: official ML-Decoder checkpoints -> a keras-mld model and
its class names (:func:`convert_ml_decoder_checkpoint`).
"""
from keras_mld.convert.ml_decoder import convert_ml_decoder_checkpoint  # noqa: F401
from keras_mld.convert.tresnet import convert_tresnet, read_checkpoint  # noqa: F401
