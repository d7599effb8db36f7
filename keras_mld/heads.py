"""Head registry: names -> functions that put a classification head on features.

A head factory is ``factory(features, num_classes, inputs, **head_kwargs) -> logits``
where ``features`` is the backbone's symbolic output (``[B,H,W,C]`` or ``[B,T,C]``),
``inputs`` is a dict of the model's symbolic inputs to which a factory may add
extra inputs (C-Tran's ``known_labels``), and ``logits`` is ``[B, num_classes]``.
:func:`register_head` adds one; the graph-based heads (``gat``, ``gat+mldecoder``,
``mlgcn``) register themselves here the same way.
"""
import keras

from keras_mld import layers

_HEADS = {}
_DOCS = {}


def register_head(name, doc=""):
    """Decorator registering a head factory under ``name`` (used by :func:`keras_mld.build`)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_head: name must be a non-empty string, got {name!r}")

    def decorator(factory):
        _HEADS[name] = factory
        _DOCS[name] = doc or (factory.__doc__ or "").strip().splitlines()[0]
        return factory

    return decorator


def list_heads():
    return sorted(_HEADS)


def describe_heads():
    return {name: _DOCS[name] for name in list_heads()}


def get_head(name):
    if not isinstance(name, str) or name not in _HEADS:
        raise ValueError(f"head: unknown name {name!r}; accepted names: {list_heads()}")
    return _HEADS[name]


@register_head("gap")
def gap_head(features, num_classes, inputs, **kwargs):
    """Global average pooling then Dense: the usual baseline head."""
    return layers.GlobalPoolHead(num_classes, name="gap_head", **kwargs)(features)


@register_head("mldecoder")
def mldecoder_head(features, num_classes, inputs, **kwargs):
    """ML-Decoder (Ridnik et al. 2023): group-decoding cross-attention head, linear in N."""
    return layers.MLDecoder(num_classes, name="ml_decoder", **kwargs)(features)


@register_head("query2label")
def query2label_head(features, num_classes, inputs, **kwargs):
    """Query2Label (Liu et al. 2021): transformer decoder with one query per class."""
    return layers.TransformerDecoderHead(num_classes, name="query2label", **kwargs)(features)


@register_head("ctran")
def ctran_head(features, num_classes, inputs, known_labels_input=False, **kwargs):
    """C-Tran (Lanchantin et al. 2021): label-mask transformer encoder over image and label tokens.

    ``known_labels_input=True`` adds a second model input ``known_labels`` ``[B, N]`` in
    {-1 unknown, 0 negative, 1 positive} (partial labels at inference, label-mask training).
    """
    head = layers.CTranHead(num_classes, name="ctran", **kwargs)
    if not known_labels_input:
        return head(features)
    known = keras.Input(shape=(num_classes,), name="known_labels", dtype="float32")
    inputs["known_labels"] = known
    return head(features, known_labels=known)
