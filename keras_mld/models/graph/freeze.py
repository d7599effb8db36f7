"""Model-level step for export and inference: freeze the image-independent graph branches.

The graph-attention re-weighting of Prokofiev & Sovrasov, "Combining Metric Learning and
Attention Heads For Accurate and Efficient Multilabel Image Classification" (arXiv:2209.06585,
section 3.2) and the ML-GCN classifier of Chen et al., "Multi-Label Image Recognition with
Graph Convolutional Networks" (arXiv:1904.03582, section 3.3) compute their output from the
label graph and the label vectors alone, not from the image. After training, each such layer
can hold that output as a constant (``layer.freeze()``); this module walks a whole model, so
that no layer module has to know about another.

Examples:
    >>> import numpy as np, keras
    >>> from keras_mld.layers import GraphAttentionReweight
    >>> from keras_mld.models.graph import freeze_graph_branches
    >>> reweight = GraphAttentionReweight(label_vectors=np.eye(3, 4), adjacency=np.ones((3, 3)),
    ...                                   channels=8, hidden_dim=4, num_heads=1)
    >>> x = keras.Input((2, 2, 8))
    >>> model = keras.Model(x, reweight(x))
    >>> [layer.name for layer in freeze_graph_branches(model)] == [reweight.name]
    True
"""
from keras_mld.models.graph.gcn import MLGCNHead
from keras_mld.models.graph.graph_attention import GraphAttentionReweight

GRAPH_BRANCH_LAYERS = (GraphAttentionReweight, MLGCNHead)


def freeze_graph_branches(model):
    """Freezes every image-independent graph branch of ``model`` (for export / inference).

    Calls ``freeze()`` on each :class:`~keras_mld.layers.GraphAttentionReweight` and
    :class:`~keras_mld.layers.MLGCNHead` in ``model`` (nested models included) that is not
    frozen yet, so that a graph traced afterwards holds a constant multiply (GAT) or a
    constant classifier matrix (ML-GCN) instead of the graph layers. Outputs are unchanged.
    Returns the layers it froze (call ``unfreeze()`` on them to resume training). Trace /
    compile the model after this call: an already traced function keeps the branch.
    """
    frozen = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, GRAPH_BRANCH_LAYERS) and not layer.frozen:
            frozen.append(layer.freeze())
    return frozen
