"""The ``ctran`` head (Lanchantin et al., "General Multi-label Image Classification with
Transformers", arXiv:2011.14027): :class:`~keras_mld.layers.CTranHead`."""
import keras

from keras_mld.metadata import KNOWN_LABELS_INPUT
from keras_mld.models.ctran.ctran import CTranHead
from keras_mld.registry import register_head


@register_head("ctran")
def ctran_head(features, num_classes, inputs, known_labels_input=False, **kwargs):
    """C-Tran (Lanchantin et al. 2021): label-mask transformer encoder over image and label tokens.

    ``known_labels_input=True`` adds a second model input ``known_labels`` ``[B, N]`` in
    {-1 unknown, 0 negative, 1 positive} (partial labels at inference, label-mask training).
    """
    head = CTranHead(num_classes, name="ctran", **kwargs)
    if not known_labels_input:
        return head(features)
    known = keras.Input(shape=(num_classes,), name=KNOWN_LABELS_INPUT, dtype="float32")
    inputs[KNOWN_LABELS_INPUT] = known
    return head(features, known_labels=known)
