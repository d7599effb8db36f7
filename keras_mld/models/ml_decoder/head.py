"""The ``mldecoder`` head (Ridnik et al., "ML-Decoder: Scalable and Versatile Classification
Head", arXiv:2111.12933): :class:`~keras_mld.layers.MLDecoder` on the backbone's features,
or :class:`~keras_mld.layers.ZSLMLDecoder` for word queries (zero-shot)."""
from keras_mld.models.ml_decoder.ml_decoder import MLDecoder
from keras_mld.models.ml_decoder.zero_shot import ZSLMLDecoder, zsl_group_size
from keras_mld.registry import register_head


@register_head("mldecoder")
def mldecoder_head(features, num_classes, inputs, query_type="fixed", word_dim=None,
                   label_vectors=None, label_capacity=None, **kwargs):
    """ML-Decoder (Ridnik et al. 2023): group-decoding cross-attention head, linear in N.

    ``query_type="word"`` (zero-shot, ML-Decoder (Ridnik et al., arXiv:2111.12933) section
    2.3.3) needs ``word_dim`` d_w: the queries come from label word vectors held as model
    state (:class:`~keras_mld.layers.ZSLMLDecoder` with ``label_capacity``, default
    ``max(1024, 4 * num_classes)`` labels): ``label_vectors`` ``[num_classes, d_w]`` (the
    class names' vectors, ``keras_mld.zsl.label_vectors``) is the initial label set (zeros
    until ``ImageClassifier.set_labels`` when not given); logits ``[B, M]`` for the M
    current labels. Fixed queries: ``num_groups`` defaults to ``min(100, num_classes)``
    (the paper's K = 100). Word queries: full decoding unless ``group_size`` or
    ``num_groups`` is given
    (``num_groups`` K with the ``num_classes`` N training labels gives
    ``group_size = ceil(N / K)``).
    """
    if query_type != "word":
        if label_vectors is not None or label_capacity is not None:
            raise ValueError("head 'mldecoder': label_vectors and label_capacity are for "
                             "query_type='word' (zero-shot)")
        # the paper's K = 100 groups, or full decoding below 100 classes (said, not warned:
        # the user asked for no particular K)
        kwargs.setdefault("num_groups", min(100, num_classes))
        return MLDecoder(num_classes, name="ml_decoder", query_type=query_type,
                         **kwargs)(features)
    if isinstance(word_dim, bool) or not isinstance(word_dim, int) or word_dim < 1:
        raise ValueError("head 'mldecoder': query_type='word' needs word_dim, the size d_w of "
                         f"the label word vectors (an int >= 1), got {word_dim!r}")
    num_groups = kwargs.pop("num_groups", None)
    if num_groups is not None and "group_size" not in kwargs:
        kwargs["group_size"] = zsl_group_size(num_classes, num_groups,
                                              kwargs.get("embed_dim", 768))
    if label_capacity is None:
        label_capacity = max(1024, 4 * num_classes)
    head = ZSLMLDecoder(word_dim, name="ml_decoder", label_capacity=label_capacity,
                        num_labels=num_classes, **kwargs)
    logits = head(features)
    if label_vectors is not None:
        head.set_label_vectors(label_vectors)
        if head.num_labels != num_classes:
            raise ValueError(f"label_vectors: expected {num_classes} rows (one per class), got "
                             f"{head.num_labels}")
    return logits
