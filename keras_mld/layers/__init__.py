"""Keras layers (``keras.ops`` only: they run on the TensorFlow and JAX backends)."""
from keras_mld.layers.cosine import CosineDense  # noqa: F401
from keras_mld.layers.ctran import CTranHead  # noqa: F401
from keras_mld.layers.gcn import MLGCNHead  # noqa: F401
from keras_mld.layers.graph_attention import GraphAttention, GraphAttentionReweight  # noqa: F401
from keras_mld.layers.group_dense import GroupDense  # noqa: F401
from keras_mld.layers.ml_decoder import MLDecoder, MLDecoderLayer  # noqa: F401
from keras_mld.layers.pooling import GlobalPoolHead  # noqa: F401
from keras_mld.layers.positional import SinePositionalEncoding2D  # noqa: F401
from keras_mld.layers.preprocessing import ImageNormalization  # noqa: F401
from keras_mld.layers.queries import (  # noqa: F401
    QUERY_TYPES, FixedQueries, LearnableQueries, Queries, make_queries, register_query_type)
from keras_mld.layers.transformer_decoder import TransformerDecoderHead  # noqa: F401
from keras_mld.layers.query_augmentation import (  # noqa: F401
    QueryNoise, RandomQueries, RandomQueryLoss)
from keras_mld.layers.zsl_decoder import WordQueries, ZSLMLDecoder, zsl_group_size  # noqa: F401
