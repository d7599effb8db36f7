"""Convert official PyTorch weights into keras-mld heads (no torch needed).

:func:`read_state_dict` reads ``.pth`` / ``.safetensors`` / ``.npz`` into
``{name: numpy.ndarray}``; the ``convert_*_state_dict`` functions build a Keras head
holding those weights.
"""
from keras_mld.convert.ctran import convert_ctran_state_dict, load_ctran_state_dict  # noqa: F401
from keras_mld.convert.query2label import (  # noqa: F401
    convert_query2label_state_dict, load_query2label_state_dict, query2label_options)
from keras_mld.convert.state_dict import read_state_dict, strip_prefix  # noqa: F401
