"""Query2Label (Liu et al., "Query2Label: A Simple Transformer Way to Multi-Label
Classification", arXiv:2107.10834): its head layer (``query2label``), the ``query2label``
head (``head``), the official-weights converter (``convert``) and its recipe presets
(``presets``)."""
from keras_mld.models.query2label import head, presets  # noqa: F401  (registers them)
from keras_mld.models.query2label.convert import (  # noqa: F401
    convert_query2label_state_dict, load_query2label_state_dict, query2label_options)
from keras_mld.models.query2label.head import TRANSFORMER_DECODER_BASELINE  # noqa: F401
from keras_mld.models.query2label.query2label import (  # noqa: F401
    Query2LabelHead, TransformerDecoderHead)
