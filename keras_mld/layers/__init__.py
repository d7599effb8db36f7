"""Keras layers (``keras.ops`` only: they run on the TensorFlow and JAX backends).

The shared building blocks live here (``cosine``, ``group_dense``, ``pooling``,
``positional``, ``preprocessing``, ``transformer``). Each architecture's own layers live in
its folder under :mod:`keras_mld.models`; they are listed here too (imported on first use),
so that every layer is ``keras_mld.layers.<Name>``.
"""
import importlib

from keras_mld.layers.cosine import CosineDense  # noqa: F401
from keras_mld.layers.group_dense import GroupDense  # noqa: F401
from keras_mld.layers.pooling import GlobalPoolHead  # noqa: F401
from keras_mld.layers.positional import SinePositionalEncoding2D  # noqa: F401
from keras_mld.layers.preprocessing import ImageNormalization  # noqa: F401
from keras_mld.layers.transformer import (  # noqa: F401
    TransformerDecoderLayer, TransformerEncoderLayer)

_ARCHITECTURE_LAYERS = {
    "keras_mld.models.ctran.ctran": ("CTranHead",),
    "keras_mld.models.graph.gcn": ("MLGCNHead",),
    "keras_mld.models.graph.graph_attention": ("GraphAttention", "GraphAttentionReweight"),
    "keras_mld.models.ml_decoder.ml_decoder": ("MLDecoder", "MLDecoderLayer"),
    "keras_mld.models.ml_decoder.queries": (
        "QUERY_TYPES", "FixedQueries", "LearnableQueries", "Queries", "make_queries",
        "register_query_type"),
    "keras_mld.models.ml_decoder.query_augmentation": (
        "QueryNoise", "RandomQueries", "RandomQueryLoss"),
    "keras_mld.models.ml_decoder.zero_shot": ("WordQueries", "ZSLMLDecoder", "zsl_group_size"),
    "keras_mld.models.query2label.query2label": ("Query2LabelHead", "TransformerDecoderHead"),
}
_WHERE = {name: module for module, names in _ARCHITECTURE_LAYERS.items() for name in names}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'keras_mld.layers' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_WHERE))


__all__ = ["CosineDense", "GroupDense", "GlobalPoolHead", "SinePositionalEncoding2D",
           "ImageNormalization", "TransformerDecoderLayer", "TransformerEncoderLayer",
           *_WHERE]
