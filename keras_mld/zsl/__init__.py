"""Zero-shot and label-graph helpers: word vectors for label names, label co-occurrence graphs.

``load_word_vectors`` / ``label_vectors`` (SPEC section 3) give the label word vectors
``[N, d_w]`` used by zero-shot ML-Decoder and the graph heads; ``conditional_probability``
and friends (SPEC section 4) give the label correlation matrix ``Z`` and the ML-GCN / GAT
adjacencies. numpy only (no Keras backend needed).
"""
from keras_mld.zsl.label_graph import (  # noqa: F401
    binarize, conditional_probability, cooccurrence, gat_adjacency, label_counts,
    mlgcn_adjacency, normalize_adjacency, reweight)
from keras_mld.zsl.word_vectors import (  # noqa: F401
    OOV_MODES, OutOfVocabularyError, WordVectors, label_vectors, load_word_vectors, split_label)
