"""Convert official PyTorch weights into keras-mld models (no torch needed).

:func:`read_state_dict` reads ``.pth`` / ``.safetensors`` / ``.npz`` into
``{name: numpy.ndarray}`` (torch, when installed, with ``weights_only=True``; otherwise a
restricted reader that only rebuilds tensors; :mod:`keras_mld.checkpoints`). Each converter
lives in its architecture's folder (``keras_mld/models/<arch>/convert.py``) and is listed
here:

- :func:`convert_query2label_state_dict` / :func:`convert_ctran_state_dict`: the official
  Query2Label and C-Tran heads;
- :func:`convert_tresnet`: timm / official TResNet state dicts -> a Keras TResNet;
- :func:`convert_ml_decoder_checkpoint`: an official ML-Decoder checkpoint -> a keras-mld
  model and its class names.
"""
from keras_mld.checkpoints.reader import (  # noqa: F401
    read_checkpoint, read_pth, read_state_dict, strip_prefix)
from keras_mld.models.ctran.convert import (  # noqa: F401
    convert_ctran_state_dict, load_ctran_state_dict)
from keras_mld.models.ml_decoder.convert import convert_ml_decoder_checkpoint  # noqa: F401
from keras_mld.models.query2label.convert import (  # noqa: F401
    convert_query2label_state_dict, load_query2label_state_dict, query2label_options)
from keras_mld.models.tresnet.convert import convert_tresnet  # noqa: F401
