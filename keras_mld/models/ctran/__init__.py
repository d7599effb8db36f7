"""C-Tran (Lanchantin et al., "General Multi-label Image Classification with Transformers",
arXiv:2011.14027): its head layer (``ctran``), the ``ctran`` head (``head``) and the
official-weights converter (``convert``) and its recipe presets (``presets``). Label-mask
training data: :func:`keras_mld.data.ctran_label_mask_dataset`."""
from keras_mld.models.ctran import head, presets  # noqa: F401  (registers them)
from keras_mld.models.ctran.convert import (  # noqa: F401
    convert_ctran_state_dict, load_ctran_state_dict)
from keras_mld.models.ctran.ctran import CTranHead  # noqa: F401
