"""Zero-shot and label-graph helpers: word vectors for label names, label co-occurrence graphs.

``load_word_vectors`` / ``label_vectors`` (ML-Decoder (Ridnik et al., arXiv:2111.12933) section
2.3.3) give the label word vectors
``[N, d_w]`` used by zero-shot ML-Decoder and the graph heads; ``conditional_probability``
and friends (Chen et al. (arXiv:1904.03582); Prokofiev & Sovrasov (arXiv:2209.06585) section 3.3)
give the label correlation matrix ``Z`` and the ML-GCN / GAT
adjacencies. numpy only (no Keras backend needed).
"""
from keras_mld.zsl.label_graph import (  # noqa: F401
    binarize, conditional_probability, cooccurrence, gat_adjacency, label_counts,
    mlgcn_adjacency, normalize_adjacency, reweight)
from keras_mld.zsl.word_vectors import (  # noqa: F401
    OOV_MODES, OutOfVocabularyError, WordVectors, label_vectors, load_word_vectors, split_label)
