"""The graph heads: ``gat`` and ``gat+mldecoder`` (graph-attention channel re-weighting,
Prokofiev & Sovrasov, "Combining Metric Learning and Attention Heads For Accurate and Efficient
Multilabel Image Classification", arXiv:2209.06585, section 3.3) and ``mlgcn`` (Chen, Wei,
Wang, Guo, "Multi-Label Image Recognition with Graph Convolutional Networks",
arXiv:1904.03582).
"""
import numpy as np

from keras_mld.layers.pooling import GlobalPoolHead
from keras_mld.models.graph.gcn import MLGCNHead
from keras_mld.models.graph.graph_attention import GraphAttentionReweight
from keras_mld.models.ml_decoder.ml_decoder import MLDecoder
from keras_mld.registry import register_head
from keras_mld.zsl.label_graph import gat_adjacency, mlgcn_adjacency

# ``label_vectors``: label word vectors ``[num_classes, d_w]`` (keras_mld.zsl.label_vectors).
# ``label_graph``: the label correlation matrix ``Z [num_classes, num_classes]``,
# ``Z_ij = P(j | i)`` from the training labels (keras_mld.zsl.conditional_probability);
# not the labels themselves. ``tau`` (0.4) binarises it; ``p`` (0.2) re-weights it (ML-GCN).
# GraphAttentionReweight options take a ``gat_`` prefix (``gat_num_heads=4``) so that they
# never collide with the options of the head that follows (MLDecoder's ``num_heads``, ...).
_GAT_OPTIONS = ("hidden_dim", "num_layers", "num_heads", "attention_dropout", "negative_slope",
                "weight_activation", "kernel_initializer")


def _graph_constants(head, num_classes, label_vectors, label_graph):
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
    g, z = _graph_constants(head, num_classes, kwargs.pop("label_vectors", None),
                            kwargs.pop("label_graph", None))
    tau = kwargs.pop("tau", 0.4)
    options = {k: kwargs.pop("gat_" + k) for k in _GAT_OPTIONS if "gat_" + k in kwargs}
    return GraphAttentionReweight(int(features.shape[-1]), label_vectors=g,
                                         adjacency=gat_adjacency(z, tau),
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
    return GlobalPoolHead(num_classes, name="gap_head", **kwargs)(reweighted)


@register_head("gat+mldecoder")
def gat_mldecoder_head(features, num_classes, inputs, **kwargs):
    """Graph-attention channel re-weighting, then ML-Decoder on the re-weighted features.

    Graph kwargs as for ``gat``; the rest goes to :class:`~keras_mld.layers.MLDecoder`.
    """
    kwargs = dict(kwargs)
    reweighted = _reweight_layer("gat+mldecoder", features, num_classes, kwargs)(features)
    return MLDecoder(num_classes, name="ml_decoder", **kwargs)(reweighted)


@register_head("mlgcn")
def mlgcn_head(features, num_classes, inputs, label_vectors=None, label_graph=None, tau=0.4,
               p=0.2, **kwargs):
    """ML-GCN (Chen et al. 2019): GCN over label word vectors gives the classifiers, GMP features.

    Needs ``label_vectors`` ``[N, d_w]`` and ``label_graph`` ``Z [N, N]`` (see above);
    ``tau`` (0.4) and ``p`` (0.2) build the adjacency (:func:`keras_mld.zsl.mlgcn_adjacency`);
    the rest goes to :class:`~keras_mld.layers.MLGCNHead` (``hidden_dim``, ...).
    """
    g, z = _graph_constants("mlgcn", num_classes, label_vectors, label_graph)
    return MLGCNHead(num_classes, label_vectors=g, adjacency=mlgcn_adjacency(z, tau, p),
                            name="mlgcn", **kwargs)(features)
