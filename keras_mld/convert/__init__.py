"""Convert official PyTorch weights into keras-mld models (no torch needed).

:func:`read_state_dict` reads ``.pth`` / ``.safetensors`` / ``.npz`` into
``{name: numpy.ndarray}`` (torch, when installed, with ``weights_only=True``; otherwise a
restricted reader that only rebuilds tensors). The converters build Keras layers or models
holding those weights:

- ``convert_query2label_state_dict`` / ``convert_ctran_state_dict``: the official Query2Label
  and C-Tran heads;
- :func:`convert_tresnet`: timm / official TResNet state dicts -> ``keras_mld.tresnet``;
- :func:`convert_ml_decoder_checkpoint`: an official ML-Decoder checkpoint -> a keras-mld
  model and its class names.
"""
from keras_mld.convert.ctran import convert_ctran_state_dict, load_ctran_state_dict  # noqa: F401
from keras_mld.convert.ml_decoder import convert_ml_decoder_checkpoint  # noqa: F401
from keras_mld.convert.query2label import (  # noqa: F401
    convert_query2label_state_dict, load_query2label_state_dict, query2label_options)
from keras_mld.convert.state_dict import read_state_dict, strip_prefix  # noqa: F401
from keras_mld.convert.tresnet import convert_tresnet, read_checkpoint  # noqa: F401
