"""Graph-attention channel re-weighting: Prokofiev & Sovrasov, "Combining Metric Learning and
Attention Heads For Accurate and Efficient Multilabel Image Classification" (arXiv:2209.06585),
section 3.3, Fig. 1; graph attention of
Velickovic et al., "Graph Attention Networks" (arXiv:1710.10903)."""
import keras
from keras import ops

from keras_mld.validation import check_float_array, check_int

WEIGHT_ACTIVATIONS = ("sigmoid", "none")


def _gat_initializer():
    # pyGAT / OpenVINO: xavier_uniform with gain 1.414 = glorot_uniform scaled by 2 in variance
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_avg", distribution="uniform")


@keras.saving.register_keras_serializable(package="keras_mld")
class GraphAttention(keras.layers.Layer):
    """One graph-attention layer (Velickovic et al., ICLR 2018, eqs. 1-6), dense form.

    For each head k: ``z = h W_k``; ``e_ij = LeakyReLU(a_k^T [z_i || z_j])`` (slope
    ``negative_slope``, 0.2 in the paper) for the neighbours j of i (``adjacency[i, j] > 0``),
    ``alpha_ij = softmax_j(e_ij)`` (attention dropout in training), ``h'_i = sum_j alpha_ij z_j``.
    Heads are concatenated (``concat_heads=True``: ``[N, num_heads * units]``) or averaged
    (output layer: ``[N, units]``). No non-linearity: the caller applies ELU between layers.

    ``call(h [N, F], adjacency [N, N])``: j is a neighbour of i iff ``adjacency[i, j] > 0``;
    every row needs at least one neighbour (add self loops). Attention logits and the softmax
    are computed in float32.
    """

    def __init__(self, units, num_heads=1, concat_heads=True, attention_dropout=0.0,
                 negative_slope=0.2, kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        units = check_int("GraphAttention", "units", units, minimum=1)
        num_heads = check_int("GraphAttention", "num_heads", num_heads, minimum=1)
        if not isinstance(attention_dropout, (int, float)) or isinstance(attention_dropout, bool) \
                or not 0 <= attention_dropout < 1:
            raise ValueError("GraphAttention: attention_dropout must be a float in [0, 1), got "
                             f"{attention_dropout!r}")
        if not isinstance(negative_slope, (int, float)) or isinstance(negative_slope, bool) \
                or negative_slope < 0:
            raise ValueError(f"GraphAttention: negative_slope must be a float >= 0, got "
                             f"{negative_slope!r}")
        self.units, self.num_heads, self.concat_heads = units, num_heads, bool(concat_heads)
        self.attention_dropout = float(attention_dropout)
        self.negative_slope = float(negative_slope)
        self.kernel_initializer = keras.initializers.get(kernel_initializer or _gat_initializer())
        self.drop = keras.layers.Dropout(self.attention_dropout, name="attention_dropout",
                                         dtype=self.dtype_policy)

    def build(self, h_shape, adjacency_shape=None):
        features = h_shape[-1]
        if features is None:
            raise ValueError(f"GraphAttention: the feature dimension must be known, got shape "
                             f"{tuple(h_shape)}")
        h, u = self.num_heads, self.units
        self.kernel = self.add_weight(shape=(h, features, u), name="kernel",
                                      initializer=self.kernel_initializer)
        self.attention_self = self.add_weight(shape=(h, u), name="attention_self",
                                              initializer=self.kernel_initializer)
        self.attention_neighbour = self.add_weight(shape=(h, u), name="attention_neighbour",
                                                   initializer=self.kernel_initializer)

    def call(self, h, adjacency, training=None):
        z = ops.einsum("nf,kfu->knu", ops.cast(h, self.compute_dtype), self.kernel)  # [K, N, U]
        s = ops.einsum("knu,ku->kn", z, self.attention_self)
        t = ops.einsum("knu,ku->kn", z, self.attention_neighbour)
        e = ops.cast(s[:, :, None] + t[:, None, :], "float32")  # e_ij = a1.z_i + a2.z_j
        e = ops.leaky_relu(e, negative_slope=self.negative_slope)
        e = ops.where(ops.cast(adjacency, "float32")[None] > 0, e, ops.full_like(e, -1e9))
        alpha = ops.softmax(e, axis=-1)
        alpha = ops.cast(self.drop(alpha, training=training), self.compute_dtype)
        out = ops.einsum("kij,kju->kiu", alpha, z)  # [K, N, U]
        if self.concat_heads:
            n = ops.shape(out)[1]
            return ops.reshape(ops.transpose(out, (1, 0, 2)), (n, self.num_heads * self.units))
        return ops.mean(out, axis=0)

    def compute_output_shape(self, h_shape, adjacency_shape=None):
        dim = self.units * self.num_heads if self.concat_heads else self.units
        return (h_shape[0], dim)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "num_heads": self.num_heads,
            "concat_heads": self.concat_heads,
            "attention_dropout": self.attention_dropout,
            "negative_slope": self.negative_slope,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@keras.saving.register_keras_serializable(package="keras_mld")
class GraphAttentionReweight(keras.layers.Layer):
    """Channel re-weighting of backbone features by a graph-attention branch over labels
    (Prokofiev & Sovrasov (arXiv:2209.06585) section 3.3, Fig. 1).

    Constants: label word vectors ``G [N, d_w]`` (``label_vectors``, e.g. GloVe via
    :func:`keras_mld.zsl.label_vectors`) and the label graph ``adjacency [N, N]``: row i
    attends to j iff ``adjacency[i, j] > 0``; self loops are always added. Build it from the
    correlation matrix ``Z`` with :func:`keras_mld.zsl.gat_adjacency` (ML-GCN binarisation
    at tau = 0.4; edges in ML-GCN's direction, as OpenVINO's implementation).

        ``h = GAT_L(ELU(... ELU(GAT_1(G))))`` -> ``[N, C]`` (C = ``channels``, hidden layers
        ``hidden_dim`` wide, ``num_heads`` heads concatenated; last layer heads averaged);
        ``w = act(max_n h_n)`` -> ``[C]``; ``call(f) = w * f`` channel-wise.

    ``act`` (``weight_activation``) is ``"sigmoid"`` (official OpenVINO code, keeps
    ``w`` in (0, 1)) or ``"none"`` (the bare ``w = max_n h_n`` of the paper's text).
    ``features``: ``[B, H, W, C]`` or ``[B, T, C]``; output: same shape, ``compute_dtype``.
    The branch is computed in float32 (mixed-precision safe).

    **Constant at inference.** The branch does not depend on the image:
    :meth:`channel_weights` returns ``w``; :meth:`freeze` stores it in the non-trainable
    variable ``frozen_weights`` and sets ``frozen=True`` (in the config), after which ``call``
    is one multiply (exported graphs hold no graph-attention ops) and the branch's weights
    are non-trainable; :meth:`unfreeze` undoes it. Freeze after training and before
    compiling / exporting (:func:`keras_mld.models.graph.freeze_graph_branches` does
    every such layer of a model).

    **Serialisation.** ``G`` and the adjacency are non-trainable float32 weights: they
    travel in the weights (``.keras``, checkpoints), not in ``get_config``, which holds only
    ``num_labels`` and ``word_dim``. A layer made by ``from_config`` holds zeros until its
    weights are loaded (``load_model`` does this; otherwise ``set_weights``).

    Examples:
        >>> import numpy as np
        >>> from keras_mld.layers import GraphAttentionReweight
        >>> reweight = GraphAttentionReweight(channels=8, label_vectors=np.eye(4, 6),
        ...                                   adjacency=np.ones((4, 4)), hidden_dim=4)
        >>> tuple(reweight(np.ones((2, 3, 3, 8), "float32")).shape)  # same shape, re-weighted
        (2, 3, 3, 8)
    """

    def __init__(self, channels, label_vectors=None, adjacency=None, hidden_dim=None,
                 num_layers=2, num_heads=1, attention_dropout=0.1, negative_slope=0.2,
                 weight_activation="sigmoid", kernel_initializer=None, frozen=False,
                 num_labels=None, word_dim=None, **kwargs):
        super().__init__(**kwargs)
        owner = "GraphAttentionReweight"
        channels = check_int(owner, "channels", channels, minimum=1)
        num_layers = check_int(owner, "num_layers", num_layers, minimum=1)
        num_heads = check_int(owner, "num_heads", num_heads, minimum=1)
        hidden_dim = channels if hidden_dim is None else hidden_dim
        hidden_dim = check_int(owner, "hidden_dim", hidden_dim, minimum=1)
        if num_layers > 1 and hidden_dim % num_heads:
            raise ValueError(f"{owner}: hidden_dim ({hidden_dim}) must be divisible by num_heads "
                             f"({num_heads})")
        if weight_activation not in WEIGHT_ACTIVATIONS:
            raise ValueError(f"{owner}: weight_activation must be one of {WEIGHT_ACTIVATIONS}, "
                             f"got {weight_activation!r}")
        if not isinstance(frozen, bool):
            raise ValueError(f"{owner}: frozen must be True or False, got {frozen!r}")
        self._init_vectors = self._init_adjacency = None
        if label_vectors is not None:
            self._init_vectors = check_float_array(owner, "label_vectors", label_vectors, 2)
            num_labels, word_dim = self._check_shape(owner, num_labels, word_dim,
                                                     self._init_vectors.shape)
        if adjacency is not None:
            self._init_adjacency = check_float_array(owner, "adjacency", adjacency, 2)
            if (self._init_adjacency < 0).any():
                raise ValueError(f"{owner}: adjacency must be non-negative (edges where > 0)")
            n = self._init_adjacency.shape[0]
            if self._init_adjacency.shape != (n, n) or (num_labels is not None and n != num_labels):
                raise ValueError(f"{owner}: adjacency must be [N, N] with N = {num_labels} labels, "
                                 f"got shape {self._init_adjacency.shape}")
            num_labels = n
        if (label_vectors is None) != (adjacency is None):
            raise ValueError(f"{owner}: give both label_vectors [N, d_w] and adjacency [N, N] "
                             "(or neither, with num_labels and word_dim, to load weights later)")
        num_labels = check_int(owner, "num_labels", num_labels, minimum=1)
        word_dim = check_int(owner, "word_dim", word_dim, minimum=1)
        self.channels, self.num_labels, self.word_dim = channels, num_labels, word_dim
        self.hidden_dim, self.num_layers, self.num_heads = hidden_dim, num_layers, num_heads
        self.attention_dropout = float(attention_dropout)
        self.negative_slope = float(negative_slope)
        self.weight_activation, self.frozen = weight_activation, frozen
        self.kernel_initializer = keras.initializers.get(kernel_initializer or _gat_initializer())
        self.gat_layers = []
        for i in range(num_layers):
            last = i == num_layers - 1
            self.gat_layers.append(GraphAttention(
                channels if last else hidden_dim // num_heads, num_heads=num_heads,
                concat_heads=not last, attention_dropout=attention_dropout,
                negative_slope=negative_slope, kernel_initializer=self.kernel_initializer,
                name=f"gat_{i}", dtype="float32"))
        self._set_branch_trainable(not frozen)

    @staticmethod
    def _check_shape(owner, num_labels, word_dim, shape):
        if (num_labels is not None and num_labels != shape[0]) or \
                (word_dim is not None and word_dim != shape[1]):
            raise ValueError(f"{owner}: label_vectors shape {shape} does not match num_labels="
                             f"{num_labels}, word_dim={word_dim}")
        return shape

    def _set_branch_trainable(self, trainable):
        for layer in self.gat_layers:
            layer.trainable = trainable

    def build(self, input_shape):
        if len(input_shape) not in (3, 4) or input_shape[-1] != self.channels:
            raise ValueError(f"GraphAttentionReweight: features must be [B, H, W, {self.channels}] "
                             f"or [B, T, {self.channels}], got shape {tuple(input_shape)}")
        n, d = self.num_labels, self.word_dim
        self.label_vectors = self.add_weight(shape=(n, d), name="label_vectors", dtype="float32",
                                             initializer="zeros", trainable=False)
        self.adjacency = self.add_weight(shape=(n, n), name="adjacency", dtype="float32",
                                         initializer="zeros", trainable=False)
        self.frozen_weights = self.add_weight(shape=(self.channels,), name="frozen_weights",
                                              dtype="float32", initializer="ones",
                                              trainable=False)
        if self._init_vectors is not None:
            self.label_vectors.assign(self._init_vectors)
            self.adjacency.assign(self._init_adjacency)
            self._init_vectors = self._init_adjacency = None
        dim = d
        for layer in self.gat_layers:
            layer.build((n, dim))
            dim = layer.compute_output_shape((n, dim))[-1]

    def node_features(self, training=False):
        """``h [N, C]``: the output of the graph-attention layers (float32)."""
        n = self.num_labels
        graph = ops.cast(self.adjacency, "float32") + ops.eye(n, dtype="float32")  # self loops
        h = ops.cast(self.label_vectors, "float32")
        for i, layer in enumerate(self.gat_layers):
            if i:
                h = ops.elu(h)
            h = layer(h, graph, training=training)
        return h

    def channel_weights(self, training=False):
        """``w [C]`` float32 from the branch (ignores ``frozen``; see :meth:`freeze`)."""
        w = ops.max(self.node_features(training=training), axis=0)
        return ops.sigmoid(w) if self.weight_activation == "sigmoid" else w

    def freeze(self):
        """Stores ``w`` in ``frozen_weights``; ``call`` then just multiplies (see class doc)."""
        if not self.built:
            raise ValueError("GraphAttentionReweight.freeze: build the layer first (call it once)")
        self.frozen_weights.assign(ops.convert_to_numpy(self.channel_weights(training=False)))
        self.frozen = True
        self._set_branch_trainable(False)
        return self

    def unfreeze(self):
        """Back to computing ``w`` from the (trainable) branch at every call."""
        self.frozen = False
        self._set_branch_trainable(True)
        return self

    def call(self, features, training=None):
        w = self.frozen_weights if self.frozen else self.channel_weights(training=training)
        x = ops.cast(features, self.compute_dtype)
        return x * ops.cast(w, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "num_labels": self.num_labels,
            "word_dim": self.word_dim,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "attention_dropout": self.attention_dropout,
            "negative_slope": self.negative_slope,
            "weight_activation": self.weight_activation,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "frozen": self.frozen,
        }

