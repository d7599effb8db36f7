"""Zero-shot ML-Decoder: word queries that are an input (Ridnik et al., "ML-Decoder: Scalable and
Versatile Classification Head" (arXiv:2111.12933),
section 2.3.3 and appendix B)."""
import keras
from keras import ops

from keras_mld.layers.group_dense import GroupDense, group_size as _ceil_div
from keras_mld.models.ml_decoder.ml_decoder import MLDecoderLayer
from keras_mld.models.ml_decoder.query_augmentation import QueryNoise, RandomQueries, RandomQueryLoss
from keras_mld.validation import check_int, check_rate


def zsl_group_size(num_classes, num_groups, embed_dim):
    """Group size ``g = ceil(N / min(K, N))`` of ZSL group decoding, fixed from the number of
    training labels N and groups K (the label count M may change later: a call then uses
    ``ceil(M / g)`` groups). ``embed_dim`` must be divisible by g (``A`` is ``[D/g, d_w]``)."""
    num_classes = check_int("ZSLMLDecoder", "num_classes", num_classes, minimum=1)
    num_groups = check_int("ZSLMLDecoder", "num_groups", num_groups, minimum=1)
    g = _ceil_div(num_classes, min(num_groups, num_classes))
    if embed_dim % g:
        raise ValueError(
            f"ZSLMLDecoder: num_groups={num_groups} with num_classes={num_classes} gives "
            f"group_size g = ceil({num_classes} / {min(num_groups, num_classes)}) = {g}, but "
            f"embed_dim={embed_dim} must be divisible by g (a group query concatenates g "
            f"projections of size embed_dim / g); choose num_groups or embed_dim accordingly")
    return g


def pad_to_groups(vectors, group_size):
    """``[M, d] -> [ceil(M / g) * g, d]``: zero rows appended (label order is kept)."""
    if group_size == 1:
        return vectors
    pad = (-ops.shape(vectors)[0]) % group_size
    zeros = ops.zeros((pad, vectors.shape[-1]), dtype=vectors.dtype)
    return ops.concatenate([vectors, zeros], axis=0)


def _check_vectors(owner, shape, word_dim):
    if len(shape) != 2 or (shape[-1] is not None and word_dim is not None
                           and shape[-1] != word_dim):
        raise ValueError(f"{owner}: label_vectors must have shape [num_labels, word_dim="
                         f"{word_dim}] (one row per label, no batch axis), got {tuple(shape)}")


@keras.saving.register_keras_serializable(package="keras_mld")
class WordQueries(keras.layers.Layer):
    """Queries from label word vectors ``V [M, d_w]`` (arXiv:2111.12933, section 2.3.3). Batch
    independent.

    - ``group_size == 1`` (full decoding): ``q_n = ReLU(V_n A^T + a)``, ``A [D, d_w]``:
      ``[M, D]``, one query per label.
    - ``group_size == g > 1`` (group decoding, appendix B eq. 10): labels in the given
      order form ``K = ceil(M / g)`` groups (the last one zero-padded); the group query is
      ``q_k = concat_j A V_{k,j}`` with ``A [D/g, d_w]`` shared and no bias or activation:
      ``[K, D]``. Stored as a bias-free Dense, kernel ``A^T [d_w, D/g]``.
    """

    def __init__(self, embed_dim, group_size=1, **kwargs):
        super().__init__(**kwargs)
        embed_dim = check_int("WordQueries", "embed_dim", embed_dim, minimum=1)
        group_size = check_int("WordQueries", "group_size", group_size, minimum=1)
        if embed_dim % group_size:
            raise ValueError(f"WordQueries: embed_dim ({embed_dim}) must be divisible by "
                             f"group_size ({group_size})")
        self.embed_dim, self.group_size = embed_dim, group_size
        sub = {"dtype": self.dtype_policy}
        if group_size == 1:
            self.projection = keras.layers.Dense(embed_dim, activation="relu", name="projection",
                                                 **sub)
        else:
            self.projection = keras.layers.Dense(embed_dim // group_size, use_bias=False,
                                                 name="projection", **sub)

    def build(self, label_vectors_shape):
        _check_vectors("WordQueries", label_vectors_shape, None)
        self.projection.build(tuple(label_vectors_shape))

    def call(self, label_vectors):
        v = ops.cast(label_vectors, self.compute_dtype)
        if self.group_size == 1:
            return self.projection(v)
        p = self.projection(pad_to_groups(v, self.group_size))  # [K*g, D/g]
        return ops.reshape(p, (-1, self.embed_dim))  # row k = concat_j p[k*g + j]

    def compute_output_shape(self, label_vectors_shape):
        m = label_vectors_shape[0]
        k = m if (m is None or self.group_size == 1) else _ceil_div(m, self.group_size)
        return (k, self.embed_dim)

    def get_config(self):
        return {**super().get_config(), "embed_dim": self.embed_dim,
                "group_size": self.group_size}


@keras.saving.register_keras_serializable(package="keras_mld")
class ZSLMLDecoder(keras.layers.Layer):
    """ML-Decoder with word queries for (generalised) zero-shot learning (Ridnik et al.,
    "ML-Decoder", arXiv:2111.12933, section 2.3.3 and appendix B). The queries are an input,
    not a weight: ``call(features, label_vectors)`` with ``features [B, H, W, C]`` or
    ``[B, T, C]`` and ``label_vectors V [M, d_w]`` (one row per label, no batch axis;
    ``keras_mld.zsl.label_vectors``) returns logits ``[B, M]`` in the order of V. M may
    change from call to call (train on the seen labels, predict unseen or seen + unseen).

    1. tokens ``e = ReLU(Dense_D(x))`` as in :class:`MLDecoder`.
    2. queries from V (:class:`WordQueries`): full decoding (``group_size=1``)
       ``q_n = ReLU(Dense_{d_w->D}(V_n))``; group decoding (``group_size=g``)
       ``q_k = concat_j A V_{k,j}``, labels grouped in the given order (for the paper's
       random partition shuffle the label set once yourself), M not divisible by g:
       the last group is padded with zero vectors whose logits are dropped.
    3. ``num_layers`` x :class:`MLDecoderLayer` (cross-attention only: each query is
       decoded independently of the others; LayerNorm and the feed-forward act per query).
    4. logits: full: ``t_n . w + b`` with the shared projection (``GroupDense(shared=True)``),
       so a label's score depends on its own vector only, not on the other labels nor their
       order; group: ``logit(k, j) = t_k . (B V_{k,j}) + b`` with ``B [D, d_w]`` shared
       (a bias-free Dense, kernel ``B^T [d_w, D]``) and a scalar ``b``.

    Query augmentations (training only, :mod:`keras_mld.models.ml_decoder.query_augmentation`):
    ``query_noise=s`` adds ``N(0, s^2)`` to V every batch; ``random_queries=R`` appends R
    random queries matching V's per-dimension statistics, scores them, adds their loss
    against target 1 (``random_query_loss``, default ``mean_batch(sum_r -log sigmoid)``)
    to the model's losses and returns only the M real logits (metrics never see them).

    The label set as state (``label_capacity``): Keras' data rules want every model input to
    have the batch axis first, which a label set ``[M, d_w]`` has not. A model therefore
    keeps its current label set in a non-trainable variable ``label_set``
    ``[label_capacity, d_w]`` (the first ``num_labels`` rows are used) set by
    :meth:`set_label_vectors` (``ImageClassifier.set_labels``), and ``call(features)``
    without ``label_vectors`` scores those labels. ``num_labels`` is a Python int, so the
    output ``[B, M]`` has a static shape (XLA / JAX ``jit`` trace once per label count; the
    model's compiled functions are re-traced after a change). ``fit``/``evaluate``/``predict``
    then take images only (numpy or ``tf.data``) and targets ``[B, M]``; switching between
    seen, unseen and seen + unseen labels is one call, no re-build; the label set is saved
    with the weights. The alternative, a batched input ``[B, M, d_w]``, would copy the label
    set into every sample (``B * M * d_w`` floats per batch, and as much per dataset element)
    and let the label sets of a batch differ, which the decoder does not allow. Explicit
    ``label_vectors`` (the export's signatures) still take precedence over the state.

    Args:
        word_dim: ``d_w`` (300 for the paper's GloVe; 50 for ``glove-6b-50d``).
        group_size: 1 = full decoding (the paper's ZSL default); ``g >= 2`` = group decoding
            with g labels per query (``embed_dim % g == 0``); see :func:`zsl_group_size`.
        embed_dim, num_heads, ff_dim, num_layers, dropout, layer_norm_epsilon: as
            :class:`MLDecoder`.
        query_noise: ``s >= 0`` (0 = off). random_queries: ``R >= 0`` (0 = off).
        random_query_loss: None or a Keras loss for the random queries' logits.
        seed: int or None: seeds of the augmentations (noise ``seed``, random ``seed + 1``).
        label_capacity: None (labels only as the ``label_vectors`` argument) or the largest
            label set the state holds (``label_capacity * d_w`` floats).
        num_labels: rows of the state in use (``0 <= num_labels <= label_capacity``).

    Examples:
        >>> import numpy as np
        >>> from keras_mld.layers import ZSLMLDecoder
        >>> head = ZSLMLDecoder(word_dim=6, embed_dim=8, num_heads=2, ff_dim=16)
        >>> features = np.zeros((2, 3, 3, 5), "float32")
        >>> tuple(head(features, np.ones((7, 6), "float32")).shape)  # 7 labels now ...
        (2, 7)
        >>> tuple(head(features, np.ones((3, 6), "float32")).shape)  # ... 3 labels later
        (2, 3)
    """

    def __init__(self, word_dim, group_size=1, embed_dim=768, num_heads=8, ff_dim=2048,
                 num_layers=1, dropout=0.1, query_noise=0.0, random_queries=0,
                 random_query_loss=None, seed=None, layer_norm_epsilon=1e-5,
                 label_capacity=None, num_labels=0, **kwargs):
        super().__init__(**kwargs)
        owner = "ZSLMLDecoder"
        if label_capacity is not None:
            label_capacity = check_int(owner, "label_capacity", label_capacity, minimum=1)
        num_labels = check_int(owner, "num_labels", num_labels, minimum=0)
        if num_labels > (label_capacity or 0):
            raise ValueError(f"ZSLMLDecoder: num_labels ({num_labels}) must be <= "
                             f"label_capacity ({label_capacity})")
        self.label_capacity, self.num_labels = label_capacity, int(num_labels)
        word_dim, group_size, embed_dim, num_heads, ff_dim, num_layers = (
            check_int(owner, name, value, minimum=1) for name, value in (
                ("word_dim", word_dim), ("group_size", group_size), ("embed_dim", embed_dim),
                ("num_heads", num_heads), ("ff_dim", ff_dim), ("num_layers", num_layers)))
        random_queries = check_int(owner, "random_queries", random_queries, minimum=0)
        dropout = check_rate(owner, "dropout", dropout)
        if embed_dim % num_heads:
            raise ValueError(f"ZSLMLDecoder: embed_dim ({embed_dim}) must be divisible by "
                             f"num_heads ({num_heads})")
        if embed_dim % group_size:
            raise ValueError(f"ZSLMLDecoder: embed_dim ({embed_dim}) must be divisible by "
                             f"group_size ({group_size}): A is [embed_dim / group_size, word_dim]")
        self.word_dim, self.group_size = word_dim, group_size
        self.embed_dim, self.num_heads, self.ff_dim = embed_dim, num_heads, ff_dim
        self.num_layers, self.dropout = num_layers, float(dropout)
        self.random_queries, self.seed = random_queries, seed
        self.layer_norm_epsilon = float(layer_norm_epsilon)

        sub = {"dtype": self.dtype_policy}
        if not isinstance(query_noise, (int, float)) or isinstance(query_noise, bool) or \
                not 0 <= query_noise < float("inf"):
            raise ValueError(f"ZSLMLDecoder: query_noise must be a finite float >= 0, "
                             f"got {query_noise!r}")
        self.query_noise = float(query_noise)
        self.noise = self.random = self.random_loss = None
        if query_noise > 0:
            self.noise = QueryNoise(query_noise, seed=seed, name="query_noise", **sub)
        if random_queries:
            self.random = RandomQueries(random_queries, seed=None if seed is None else seed + 1,
                                        name="random_queries", **sub)
            self.random_loss = RandomQueryLoss(random_queries, loss=random_query_loss,
                                               name="random_query_loss", **sub)
        elif random_query_loss is not None:
            raise ValueError("ZSLMLDecoder: random_query_loss needs random_queries >= 1")
        self.embed = keras.layers.Dense(embed_dim, activation="relu", name="embed", **sub)
        self.word_queries = WordQueries(embed_dim, group_size, name="word_queries", **sub)
        self.decoder_layers = [
            MLDecoderLayer(embed_dim, num_heads, ff_dim, dropout, layer_norm_epsilon,
                           name=f"decoder_layer_{i}", **sub)
            for i in range(num_layers)
        ]
        if group_size == 1:
            self.group_dense = GroupDense(None, shared=True, name="group_dense", **sub)
        else:
            self.label_projection = keras.layers.Dense(embed_dim, use_bias=False,
                                                       name="label_projection", **sub)

    @property
    def decoding(self):
        return "full" if self.group_size == 1 else "group"

    def _check_features(self, shape):
        if len(shape) not in (3, 4) or shape[-1] is None:
            raise ValueError(
                "ZSLMLDecoder: inputs must have rank 4 ([batch, height, width, channels]) or "
                f"rank 3 ([batch, tokens, channels]) with known channels, got shape {tuple(shape)}")

    def build(self, inputs_shape, label_vectors_shape=None):
        self._check_features(inputs_shape)
        if label_vectors_shape is not None:
            _check_vectors("ZSLMLDecoder", label_vectors_shape, self.word_dim)
        if self.label_capacity is not None:
            self.label_set = self.add_weight(name="label_set", trainable=False,
                                             shape=(self.label_capacity, self.word_dim),
                                             initializer="zeros", dtype="float32")
        tokens = 1
        for s in inputs_shape[1:-1]:
            tokens = None if (s is None or tokens is None) else tokens * s
        self.embed.build((inputs_shape[0], tokens, inputs_shape[-1]))
        e_shape = (inputs_shape[0], tokens, self.embed_dim)
        q_shape = (inputs_shape[0], None, self.embed_dim)
        v_shape = (None, self.word_dim)
        self.word_queries.build(v_shape)
        for layer in self.decoder_layers:
            layer.build(q_shape, e_shape)
        if self.group_size == 1:
            self.group_dense.build(q_shape)
        else:
            self.label_projection.build(v_shape)
            self.bias = self.add_weight(name="bias", shape=(), initializer="zeros")

    def set_label_vectors(self, vectors):
        """Stores the label set ``vectors [M, d_w]`` (``M <= label_capacity``) as the state."""
        import numpy as np

        if self.label_capacity is None:
            raise ValueError("ZSLMLDecoder: this layer has no label state (label_capacity=None)")
        try:
            v = np.asarray(vectors, dtype="float32")
        except (TypeError, ValueError):
            raise ValueError("label_vectors: expected a float array [M, word_dim]") from None
        if v.ndim != 2 or v.shape[1] != self.word_dim or not 1 <= v.shape[0] <= self.label_capacity:
            raise ValueError(f"label_vectors: expected shape [M, word_dim={self.word_dim}] with "
                             f"1 <= M <= label_capacity={self.label_capacity}, got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError("label_vectors: expected finite values")
        full = np.zeros((self.label_capacity, self.word_dim), "float32")
        full[: len(v)] = v
        self.label_set.assign(full)
        self.num_labels = int(len(v))

    def call(self, inputs, label_vectors=None, training=None):
        self._check_features(inputs.shape)
        if label_vectors is None:
            if self.label_capacity is None:
                raise ValueError("ZSLMLDecoder: pass label_vectors [M, d_w] (this layer keeps "
                                 "no label set: label_capacity=None)")
            label_vectors = self.label_set[: self.num_labels]
        _check_vectors("ZSLMLDecoder", label_vectors.shape, self.word_dim)
        dtype = self.compute_dtype
        x = ops.cast(inputs, dtype)
        if len(x.shape) == 4:
            shape = ops.shape(x)
            x = ops.reshape(x, (-1, shape[1] * shape[2], x.shape[-1]))
        v = ops.cast(label_vectors, dtype)
        if self.noise is not None:
            v = self.noise(v, training=training)
        if self.random is not None:
            v = self.random(v, training=training)  # [M + R, d_w] in training
        e = self.embed(x)
        q = self.word_queries(v)  # [K, D]
        batch = ops.shape(e)[0]
        t = ops.broadcast_to(q[None], (batch, ops.shape(q)[0], self.embed_dim))
        for layer in self.decoder_layers:
            t = layer(t, e, training=training)
        if self.group_size == 1:
            logits = self.group_dense(t)  # [B, M]
        else:
            w = self.label_projection(pad_to_groups(v, self.group_size))  # [K*g, D] = B V
            w = ops.reshape(w, (-1, self.group_size, self.embed_dim))
            out = ops.einsum("bkd,kgd->bkg", t, w)
            out = ops.reshape(out, (batch, -1))[:, : ops.shape(v)[0]]
            logits = out + ops.cast(self.bias, dtype)
        if self.random_loss is not None:
            logits = self.random_loss(logits, training=training)  # drops the R random columns
        return logits

    def compute_output_shape(self, inputs_shape, label_vectors_shape=None):
        if label_vectors_shape is None:
            return (inputs_shape[0], self.num_labels)
        return (inputs_shape[0], label_vectors_shape[0])

    def get_config(self):
        loss = None
        if self.random_loss is not None and self.random_loss.loss is not None:
            loss = keras.saving.serialize_keras_object(self.random_loss.loss)
        return {
            **super().get_config(),
            "word_dim": self.word_dim,
            "group_size": self.group_size,
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "num_layers": self.num_layers,
            "dropout": self.dropout,
            "query_noise": self.query_noise,
            "random_queries": self.random_queries,
            "random_query_loss": loss,
            "seed": self.seed,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "label_capacity": self.label_capacity,
            "num_labels": self.num_labels,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("random_query_loss") is not None:
            config["random_query_loss"] = keras.saving.deserialize_keras_object(
                config["random_query_loss"])
        return cls(**config)
