"""ML-Decoder (Ridnik et al., "ML-Decoder: Scalable and Versatile Classification Head",
arXiv:2111.12933): its layers (``ml_decoder``, ``queries``, zero-shot ``zero_shot`` and
``query_augmentation``), the ``mldecoder`` head (``head``), the official-checkpoint converter
(``convert``), its recipe presets (``presets``) and the official checkpoints as presets
(``official``)."""
from keras_mld.models.ml_decoder import head, official, presets  # noqa: F401  (registers them)
from keras_mld.models.ml_decoder.convert import (  # noqa: F401
    convert_ml_decoder_checkpoint, infer_head_config, load_ml_decoder_weights)
from keras_mld.models.ml_decoder.ml_decoder import MLDecoder, MLDecoderLayer  # noqa: F401
from keras_mld.models.ml_decoder.zero_shot import ZSLMLDecoder  # noqa: F401
