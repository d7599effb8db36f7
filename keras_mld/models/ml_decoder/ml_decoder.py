"""ML-Decoder classification head (Ridnik et al., "ML-Decoder: Scalable and Versatile
Classification Head" (arXiv:2111.12933),
WACV 2023, section 2.3)."""
import warnings

import keras
from keras import ops

from keras_mld.layers.group_dense import GroupDense, group_size
from keras_mld.models.ml_decoder.queries import QUERY_TYPES, make_queries
from keras_mld.validation import check_int, check_rate


@keras.saving.register_keras_serializable(package="keras_mld")
class MLDecoderLayer(keras.layers.Layer):
    """One ML-Decoder decoder layer: cross-attention only, no self-attention
    (arXiv:2111.12933 section 2.3.2, eqs. 7-8; official layer order, post-norm):

        ``t = LN(q + Dropout(q))``
        ``t = LN(t + Dropout(MHA(query=t, key=e, value=e)))``
        ``t = LN(t + Dropout(W2 Dropout(ReLU(W1 t))))``

    MHA is ``keras.layers.MultiHeadAttention(num_heads, key_dim=D // num_heads)``
    with dropout on the attention probabilities (as PyTorch's ``nn.MultiheadAttention``
    with ``dropout``); LayerNorm epsilon defaults to PyTorch's 1e-5.

    ``call(t, e)``: ``t [B, K, D]`` queries, ``e [B, T, D]`` tokens -> ``[B, K, D]``.
    """

    def __init__(self, embed_dim, num_heads=8, ff_dim=2048, dropout=0.1,
                 layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        embed_dim = check_int("MLDecoderLayer", "embed_dim", embed_dim, minimum=1)
        num_heads = check_int("MLDecoderLayer", "num_heads", num_heads, minimum=1)
        ff_dim = check_int("MLDecoderLayer", "ff_dim", ff_dim, minimum=1)
        dropout = check_rate("MLDecoderLayer", "dropout", dropout)
        if embed_dim % num_heads:
            raise ValueError(f"MLDecoderLayer: embed_dim ({embed_dim}) must be divisible by "
                             f"num_heads ({num_heads})")
        self.embed_dim, self.num_heads, self.ff_dim = embed_dim, num_heads, ff_dim
        self.dropout = float(dropout)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        sub = {"dtype": self.dtype_policy}
        ln = {"epsilon": layer_norm_epsilon, **sub}
        self.norm1 = keras.layers.LayerNormalization(name="norm1", **ln)
        self.norm2 = keras.layers.LayerNormalization(name="norm2", **ln)
        self.norm3 = keras.layers.LayerNormalization(name="norm3", **ln)
        self.attention = keras.layers.MultiHeadAttention(
            num_heads, key_dim=embed_dim // num_heads, dropout=dropout, name="attention", **sub)
        self.linear1 = keras.layers.Dense(ff_dim, activation="relu", name="linear1", **sub)
        self.linear2 = keras.layers.Dense(embed_dim, name="linear2", **sub)
        self.dropout1 = keras.layers.Dropout(dropout, name="dropout1", **sub)
        self.dropout2 = keras.layers.Dropout(dropout, name="dropout2", **sub)
        self.dropout3 = keras.layers.Dropout(dropout, name="dropout3", **sub)
        self.dropout_ff = keras.layers.Dropout(dropout, name="dropout_ff", **sub)

    def build(self, t_shape, e_shape):  # names match call(t, e): Keras builds it from a call
        for norm in (self.norm1, self.norm2, self.norm3):
            norm.build(t_shape)
        self.attention.build(t_shape, e_shape, e_shape)
        self.linear1.build(t_shape)
        self.linear2.build(tuple(t_shape[:-1]) + (self.ff_dim,))

    def call(self, t, e, training=None):
        t = self.norm1(t + self.dropout1(t, training=training))
        a = self.attention(query=t, value=e, key=e, training=training)
        t = self.norm2(t + self.dropout2(a, training=training))
        f = self.linear2(self.dropout_ff(self.linear1(t), training=training))
        return self.norm3(t + self.dropout3(f, training=training))

    def compute_output_shape(self, t_shape, e_shape):
        return tuple(t_shape)

    def get_config(self):
        return {**super().get_config(), "embed_dim": self.embed_dim,
                "num_heads": self.num_heads, "ff_dim": self.ff_dim, "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon}


@keras.saving.register_keras_serializable(package="keras_mld")
class MLDecoder(keras.layers.Layer):
    """ML-Decoder head (Ridnik et al., "ML-Decoder: Scalable and Versatile
    Classification Head", arXiv:2111.12933, section 2.3). Returns logits ``[B, N]``.

    1. tokens ``e = ReLU(Dense_D(reshape(x, [B, HW, C])))`` (row-major: h, then w);
       token inputs ``[B, T, C]`` are used as they are.
    2. queries ``q [K, D]`` (``queries.py``): ``fixed`` = drawn once from N(0, 1),
       a non-trainable weight; ``learnable`` = trainable.
    3. ``num_layers`` x ``MLDecoderLayer`` (cross-attention only, no self-attention).
    4. ``GroupDense`` (eq. 6): ``[B, K, D] -> [B, N]`` with ``g = ceil(N / K)``
       classes per query; K = N is full decoding.

    Args:
        num_classes: N >= 1.
        num_groups: K >= 1 (default 100); K > N is clamped to N with a
            ``warnings.warn`` (UserWarning). When ``K*g - N >= g`` (e.g. N=10, K=6)
            trailing queries feed no logit (as in the official code): a warning says so.
        embed_dim: D (default 768), divisible by ``num_heads``.
        num_heads, ff_dim, num_layers, dropout: decoder sizes (8, 2048, 1, 0.1);
            ``dropout`` is used for the four residual/FF dropouts and on the attention
            probabilities.
        query_type: one of ``queries.QUERY_TYPES`` (``"fixed"``, ``"learnable"``); word
            queries (zero-shot, section 2.3.3) are an input: :class:`ZSLMLDecoder`
            (``zero_shot.py``).
        cosine: if True, GroupDense L2-normalises both arguments of its dot products
            and returns cosines in [-1, 1] without bias (for ``AAMLoss``).
        layer_norm_epsilon: 1e-5 (PyTorch's default, used by the official code).

    Inputs ``[B, H, W, C]`` or ``[B, T, C]`` (C known). Mixed precision: runs in
    ``compute_dtype`` (LayerNorm and softmax statistics in float32 as Keras does);
    logits are float16 under ``mixed_float16`` -- cast them (the losses do) or build
    the head with ``dtype="float32"`` for float32 logits.

    Examples:
        >>> import numpy as np
        >>> from keras_mld.layers import MLDecoder
        >>> head = MLDecoder(num_classes=10, num_groups=5, embed_dim=16, num_heads=2, ff_dim=32)
        >>> tuple(head(np.zeros((2, 4, 4, 8), "float32")).shape)   # features [B, H, W, C]
        (2, 10)
    """

    def __init__(self, num_classes, num_groups=100, embed_dim=768, num_heads=8, ff_dim=2048,
                 num_layers=1, dropout=0.1, query_type="fixed", cosine=False,
                 layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        num_classes = check_int("MLDecoder", "num_classes", num_classes, minimum=1)
        num_groups = check_int("MLDecoder", "num_groups", num_groups, minimum=1)
        embed_dim = check_int("MLDecoder", "embed_dim", embed_dim, minimum=1)
        num_heads = check_int("MLDecoder", "num_heads", num_heads, minimum=1)
        ff_dim = check_int("MLDecoder", "ff_dim", ff_dim, minimum=1)
        num_layers = check_int("MLDecoder", "num_layers", num_layers, minimum=1)
        dropout = check_rate("MLDecoder", "dropout", dropout)
        if embed_dim % num_heads:
            raise ValueError(f"MLDecoder: embed_dim ({embed_dim}) must be divisible by "
                             f"num_heads ({num_heads})")
        if query_type == "word":
            raise ValueError(
                "MLDecoder: query_type='word' takes the label word vectors as a second input: "
                "use keras_mld.layers.ZSLMLDecoder(word_dim, ...) or keras_mld.build(..., "
                "head='mldecoder', query_type='word', word_dim=d_w)")
        if query_type not in QUERY_TYPES:
            raise ValueError(f"MLDecoder: query_type must be one of {sorted(QUERY_TYPES)}, "
                             f"got {query_type!r}")
        if not isinstance(cosine, bool):
            raise ValueError(f"MLDecoder: cosine must be True or False, got {cosine!r}")
        if num_groups > num_classes:
            warnings.warn(f"MLDecoder: num_groups={num_groups} > num_classes={num_classes}; "
                          f"clamped to num_groups={num_classes} (full decoding).", stacklevel=2)
            num_groups = num_classes
        g = group_size(num_classes, num_groups)
        unused = num_groups - group_size(num_classes, g)
        if unused > 0:
            warnings.warn(f"MLDecoder: num_groups={num_groups} with num_classes={num_classes} "
                          f"gives {g} classes per group; the last {unused} queries feed no "
                          f"logit (num_groups={-(-num_classes // g)} gives the same grouping).",
                          stacklevel=2)
        self.num_classes, self.num_groups = num_classes, num_groups
        self.embed_dim, self.num_heads, self.ff_dim = embed_dim, num_heads, ff_dim
        self.num_layers, self.dropout = num_layers, float(dropout)
        self.query_type, self.cosine = query_type, cosine
        self.layer_norm_epsilon = float(layer_norm_epsilon)

        sub = {"dtype": self.dtype_policy}
        self.embed = keras.layers.Dense(embed_dim, activation="relu", name="embed", **sub)
        self.queries = make_queries(query_type, num_groups, embed_dim, name="queries", **sub)
        self.decoder_layers = [
            MLDecoderLayer(embed_dim, num_heads, ff_dim, dropout, layer_norm_epsilon,
                           name=f"decoder_layer_{i}", **sub)
            for i in range(num_layers)
        ]
        self.group_dense = GroupDense(num_classes, cosine=cosine, name="group_dense", **sub)

    def _check_rank(self, shape):
        if len(shape) not in (3, 4) or shape[-1] is None:
            raise ValueError(
                "MLDecoder: inputs must have rank 4 ([batch, height, width, channels]) or "
                f"rank 3 ([batch, tokens, channels]) with known channels, got shape {tuple(shape)}")

    def build(self, input_shape):
        self._check_rank(input_shape)
        tokens = 1
        for s in input_shape[1:-1]:
            tokens = None if (s is None or tokens is None) else tokens * s
        self.embed.build((input_shape[0], tokens, input_shape[-1]))
        e_shape = (input_shape[0], tokens, self.embed_dim)
        q_shape = (input_shape[0], self.num_groups, self.embed_dim)
        self.queries.build(e_shape)
        for layer in self.decoder_layers:
            layer.build(q_shape, e_shape)
        self.group_dense.build(q_shape)

    def call(self, inputs, training=None):
        self._check_rank(inputs.shape)
        x = ops.cast(inputs, self.compute_dtype)
        if len(x.shape) == 4:
            shape = ops.shape(x)
            x = ops.reshape(x, (-1, shape[1] * shape[2], x.shape[-1]))
        e = self.embed(x)
        t = self.queries(e)
        for layer in self.decoder_layers:
            t = layer(t, e, training=training)
        return self.group_dense(t)

    def compute_output_shape(self, input_shape):
        self._check_rank(input_shape)
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "num_groups": self.num_groups,
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "num_layers": self.num_layers,
            "dropout": self.dropout,
            "query_type": self.query_type,
            "cosine": self.cosine,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }
