"""Label-graph heads: graph-attention channel re-weighting (Prokofiev & Sovrasov,
arXiv:2209.06585) and ML-GCN (Chen et al., arXiv:1904.03582): their layers, the ``gat``,
``gat+mldecoder`` and ``mlgcn`` heads, and freezing their image-independent branch."""
from keras_mld.models.graph import heads  # noqa: F401  (registers the heads)
from keras_mld.models.graph.freeze import GRAPH_BRANCH_LAYERS, freeze_graph_branches  # noqa: F401
from keras_mld.models.graph.gcn import MLGCNHead  # noqa: F401
from keras_mld.models.graph.graph_attention import GraphAttention, GraphAttentionReweight  # noqa: F401
