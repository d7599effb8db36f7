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
def mldecoder_head(features, num_classes, inputs, query_type="fixed", word_dim=None,
                   label_vectors=None, label_capacity=None, **kwargs):
    """ML-Decoder (Ridnik et al. 2023): group-decoding cross-attention head, linear in N.

    ``query_type="word"`` (zero-shot, ML-Decoder (Ridnik et al., arXiv:2111.12933) section 2.3.3) needs ``word_dim`` d_w: the
    queries come from label word vectors held as model state
    (:class:`~keras_mld.layers.ZSLMLDecoder` with ``label_capacity``, default
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
        return layers.MLDecoder(num_classes, name="ml_decoder", query_type=query_type,
                                **kwargs)(features)
    if isinstance(word_dim, bool) or not isinstance(word_dim, int) or word_dim < 1:
        raise ValueError("head 'mldecoder': query_type='word' needs word_dim, the size d_w of "
                         f"the label word vectors (an int >= 1), got {word_dim!r}")
    num_groups = kwargs.pop("num_groups", None)
    if num_groups is not None and "group_size" not in kwargs:
        kwargs["group_size"] = layers.zsl_group_size(num_classes, num_groups,
                                                     kwargs.get("embed_dim", 768))
    if label_capacity is None:
        label_capacity = max(1024, 4 * num_classes)
    head = layers.ZSLMLDecoder(word_dim, name="ml_decoder", label_capacity=label_capacity,
                               num_labels=num_classes, **kwargs)
    logits = head(features)
    if label_vectors is not None:
        head.set_label_vectors(label_vectors)
        if head.num_labels != num_classes:
            raise ValueError(f"label_vectors: expected {num_classes} rows (one per class), got "
                             f"{head.num_labels}")
    return logits


@register_head("query2label")
def query2label_head(features, num_classes, inputs, **kwargs):
    """Query2Label (Liu et al. 2021): transformer decoder with one query per class.

    Defaults are the official model's (:class:`~keras_mld.layers.TransformerDecoderHead`):
    no decoder self-attention, no input projection (hidden width = backbone channels).
    The ML-Decoder paper's "transformer-decoder" baseline (self-attention in every decoder
    layer, quadratic in N): ``keep_first_self_attn_dec=True, keep_other_self_attn_dec=True``
    (what ``keras-mld bench`` times); a narrower decoder: ``hidden_dim=...,
    keep_input_proj=True``.
    """
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


# --- graph heads (Prokofiev & Sovrasov (arXiv:2209.06585) 3.3; ML-GCN Chen et al.
# (arXiv:1904.03582)) -----------------------
# ``label_vectors``: label word vectors ``[num_classes, d_w]`` (keras_mld.zsl.label_vectors).
# ``label_graph``: the label correlation matrix ``Z [num_classes, num_classes]``,
# ``Z_ij = P(j | i)`` from the training labels (keras_mld.zsl.conditional_probability);
# not the labels themselves. ``tau`` (0.4) binarises it; ``p`` (0.2) re-weights it (ML-GCN).
# GraphAttentionReweight options take a ``gat_`` prefix (``gat_num_heads=4``) so that they
# never collide with the options of the head that follows (MLDecoder's ``num_heads``, ...).
_GAT_OPTIONS = ("hidden_dim", "num_layers", "num_heads", "attention_dropout", "negative_slope",
                "weight_activation", "kernel_initializer")


def _graph_constants(head, num_classes, label_vectors, label_graph):
    import numpy as np

    hint = ("label_vectors=keras_mld.zsl.label_vectors(class_names, "
            "keras_mld.zsl.load_word_vectors('glove-6b-50d'))")
    if label_vectors is None:
        raise ValueError(f"head {head!r}: label_vectors is required: word vectors "
                         f"[num_classes={num_classes}, d_w] of the class names, e.g. {hint}")
    if label_graph is None:
        raise ValueError(f"head {head!r}: label_graph is required: the label correlation matrix "
                         f"Z [{num_classes}, {num_classes}], e.g. "
                         "label_graph=keras_mld.zsl.conditional_probability(train_labels)")
    try:
        g = np.asarray(label_vectors, dtype="float32")
        z = np.asarray(label_graph, dtype="float32")
    except (TypeError, ValueError):
        raise ValueError(f"head {head!r}: label_vectors and label_graph must be float arrays") \
            from None
    if g.ndim != 2 or g.shape[0] != num_classes or g.shape[1] < 1:
        raise ValueError(f"head {head!r}: label_vectors must have shape [num_classes="
                         f"{num_classes}, d_w], got {g.shape}")
    if z.shape != (num_classes, num_classes):
        raise ValueError(f"head {head!r}: label_graph must be the correlation matrix Z of shape "
                         f"[{num_classes}, {num_classes}] (keras_mld.zsl.conditional_probability"
                         f"(train_labels)), got shape {z.shape}")
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(z))):
        raise ValueError(f"head {head!r}: label_vectors and label_graph must be finite")
    if z.min() < 0 or z.max() > 1:
        raise ValueError(f"head {head!r}: label_graph entries are probabilities P(j | i) in "
                         f"[0, 1], got range [{z.min()}, {z.max()}]")
    return g, z


def _reweight_layer(head, features, num_classes, kwargs):
    from keras_mld import zsl

    g, z = _graph_constants(head, num_classes, kwargs.pop("label_vectors", None),
                            kwargs.pop("label_graph", None))
    tau = kwargs.pop("tau", 0.4)
    options = {k: kwargs.pop("gat_" + k) for k in _GAT_OPTIONS if "gat_" + k in kwargs}
    return layers.GraphAttentionReweight(int(features.shape[-1]), label_vectors=g,
                                         adjacency=zsl.gat_adjacency(z, tau),
                                         name="graph_attention", **options)


@register_head("gat")
def gat_head(features, num_classes, inputs, **kwargs):
    """Graph-attention channel re-weighting, then GAP + GMP and Dense (metric-learning paper 3.3).

    Needs ``label_vectors`` ``[N, d_w]`` and ``label_graph`` ``Z [N, N]`` (see above);
    ``tau`` and the :class:`~keras_mld.layers.GraphAttentionReweight` options prefixed with
    ``gat_`` (``gat_hidden_dim``, ``gat_num_layers``, ``gat_num_heads``, ``gat_attention_dropout``,
    ``gat_negative_slope``, ``gat_weight_activation``, ``gat_kernel_initializer``); the rest goes to
    :class:`~keras_mld.layers.GlobalPoolHead` (``pooling`` defaults to ``"avg+max"``).
    """
    kwargs = dict(kwargs)
    reweighted = _reweight_layer("gat", features, num_classes, kwargs)(features)
    kwargs.setdefault("pooling", "avg+max")
    return layers.GlobalPoolHead(num_classes, name="gap_head", **kwargs)(reweighted)


@register_head("gat+mldecoder")
def gat_mldecoder_head(features, num_classes, inputs, **kwargs):
    """Graph-attention channel re-weighting, then ML-Decoder on the re-weighted features.

    Graph kwargs as for ``gat``; the rest goes to :class:`~keras_mld.layers.MLDecoder`.
    """
    kwargs = dict(kwargs)
    reweighted = _reweight_layer("gat+mldecoder", features, num_classes, kwargs)(features)
    return layers.MLDecoder(num_classes, name="ml_decoder", **kwargs)(reweighted)


@register_head("mlgcn")
def mlgcn_head(features, num_classes, inputs, label_vectors=None, label_graph=None, tau=0.4,
               p=0.2, **kwargs):
    """ML-GCN (Chen et al. 2019): GCN over label word vectors gives the classifiers, GMP features.

    Needs ``label_vectors`` ``[N, d_w]`` and ``label_graph`` ``Z [N, N]`` (see above);
    ``tau`` (0.4) and ``p`` (0.2) build the adjacency (:func:`keras_mld.zsl.mlgcn_adjacency`);
    the rest goes to :class:`~keras_mld.layers.MLGCNHead` (``hidden_dim``, ...).
    """
    from keras_mld import zsl

    g, z = _graph_constants("mlgcn", num_classes, label_vectors, label_graph)
    return layers.MLGCNHead(num_classes, label_vectors=g, adjacency=zsl.mlgcn_adjacency(z, tau, p),
                            name="mlgcn", **kwargs)(features)
