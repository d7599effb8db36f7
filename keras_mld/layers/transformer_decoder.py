"""Query2Label transformer-decoder head (SPEC section 4) and its post-norm blocks."""
import keras
import numpy as np
from keras import ops

from keras_mld.layers.positional import SinePositionalEncoding2D

_LN_EPS = 1e-5  # PyTorch LayerNorm default, as in DETR / Query2Label / C-Tran


def _check_int(cls_name, arg, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{cls_name}: {arg} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_rate(cls_name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{cls_name}: dropout must be a float in [0, 1), got {value!r}")
    return float(value)


def _check_heads(cls_name, dim_arg, dim, num_heads):
    if dim % num_heads:
        raise ValueError(f"{cls_name}: {dim_arg} must be divisible by num_heads, got "
                         f"{dim_arg}={dim}, num_heads={num_heads}")


def _flatten_tokens(x):
    """[B,H,W,C] -> [B,H*W,C] (row-major: h, then w); [B,T,C] unchanged."""
    if len(x.shape) == 3:
        return x
    shape = ops.shape(x)
    return ops.reshape(x, (-1, shape[1] * shape[2], x.shape[-1]))


class _PostNormBase(keras.layers.Layer):
    def __init__(self, hidden_dim, num_heads, ff_dim, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.hidden_dim = _check_int(name, "hidden_dim", hidden_dim, 1)
        self.num_heads = _check_int(name, "num_heads", num_heads, 1)
        self.ff_dim = _check_int(name, "ff_dim", ff_dim, 1)
        self.dropout = _check_rate(name, dropout)
        _check_heads(name, "hidden_dim", self.hidden_dim, self.num_heads)

    def _sub(self, cls, *args, **kwargs):
        return cls(*args, dtype=self.dtype_policy, **kwargs)

    def _mha(self, query_shape, value_shape):
        mha = self._sub(keras.layers.MultiHeadAttention, num_heads=self.num_heads,
                        key_dim=self.hidden_dim // self.num_heads, dropout=self.dropout)
        mha.build(query_shape, value_shape, value_shape)
        return mha

    def _norm(self, shape):
        norm = self._sub(keras.layers.LayerNormalization, epsilon=_LN_EPS)
        norm.build(shape)
        return norm

    def _ffn(self, shape):
        self.ff1 = self._sub(keras.layers.Dense, self.ff_dim, activation="relu")
        self.ff1.build(shape)
        self.ff2 = self._sub(keras.layers.Dense, self.hidden_dim)
        self.ff2.build(tuple(shape[:-1]) + (self.ff_dim,))
        self.ff_dropout = self._sub(keras.layers.Dropout, self.dropout)

    def _ffn_call(self, x, training):
        return self.ff2(self.ff_dropout(self.ff1(x), training=training))

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, num_heads=self.num_heads,
                      ff_dim=self.ff_dim, dropout=self.dropout)
        return config


@keras.saving.register_keras_serializable(package="keras_mld")
class PostNormEncoderLayer(_PostNormBase):
    """Transformer encoder layer, post-norm (DETR / Query2Label / C-Tran official order).

    ``q = k = x + pos``, ``v = x``;
    ``x = LN(x + Dropout(MHA(q, k, v)))``; ``x = LN(x + Dropout(W2 Dropout(ReLU(W1 x))))``.
    ``pos`` is optional (``None``: no positional term, as in C-Tran). Attention-weight
    dropout as in ``torch.nn.MultiheadAttention``. Input and output ``[B, T, hidden_dim]``.
    """

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.attn = self._mha(shape, shape)
        self.attn_dropout = self._sub(keras.layers.Dropout, self.dropout)
        self.norm1 = self._norm(shape)
        self._ffn(shape)
        self.ffn_out_dropout = self._sub(keras.layers.Dropout, self.dropout)
        self.norm2 = self._norm(shape)
        self.built = True

    def call(self, x, pos=None, training=None):
        qk = x if pos is None else x + pos
        a = self.attn(query=qk, value=x, key=qk, training=training)
        x = self.norm1(x + self.attn_dropout(a, training=training))
        f = self._ffn_call(x, training)
        return self.norm2(x + self.ffn_out_dropout(f, training=training))


@keras.saving.register_keras_serializable(package="keras_mld")
class PostNormDecoderLayer(_PostNormBase):
    """Transformer decoder layer, post-norm (Query2Label eqs. self-attn / cross-attn / FFN).

    ``t = LN(t + Dropout(MHA(t, t, t)))``   (self-attention over the class queries);
    ``t = LN(t + Dropout(MHA(query=t, key=memory + pos, value=memory)))``;
    ``t = LN(t + Dropout(W2 Dropout(ReLU(W1 t))))``.
    ``call(queries [B, N, D], memory [B, T, D], pos=None or [B, T, D])``.
    """

    def build(self, queries_shape, memory_shape=None):
        q_shape = tuple(queries_shape)
        m_shape = q_shape if memory_shape is None else tuple(memory_shape)
        self.self_attn = self._mha(q_shape, q_shape)
        self.self_attn_dropout = self._sub(keras.layers.Dropout, self.dropout)
        self.norm1 = self._norm(q_shape)
        self.cross_attn = self._mha(q_shape, m_shape)
        self.cross_attn_dropout = self._sub(keras.layers.Dropout, self.dropout)
        self.norm2 = self._norm(q_shape)
        self._ffn(q_shape)
        self.ffn_out_dropout = self._sub(keras.layers.Dropout, self.dropout)
        self.norm3 = self._norm(q_shape)
        self.built = True

    def call(self, queries, memory, pos=None, training=None):
        t = queries
        a = self.self_attn(query=t, value=t, key=t, training=training)
        t = self.norm1(t + self.self_attn_dropout(a, training=training))
        keys = memory if pos is None else memory + pos
        a = self.cross_attn(query=t, value=memory, key=keys, training=training)
        t = self.norm2(t + self.cross_attn_dropout(a, training=training))
        f = self._ffn_call(t, training)
        return self.norm3(t + self.ffn_out_dropout(f, training=training))


@keras.saving.register_keras_serializable(package="keras_mld")
class TransformerDecoderHead(keras.layers.Layer):
    """Query2Label head (Liu et al., 2021, "Query2Label"; SPEC section 4): logits ``[B, N]``.

    1. ``F = Dense_D(x)`` (the official 1x1 ``input_proj``), x ``[B,H,W,C]`` flattened
       row-major to ``[B, HW, D]``; ``pos`` = :class:`SinePositionalEncoding2D` (DETR sine,
       normalised, 2*pi, temperature 10000; half the channels for y, half for x).
       Token input ``[B, T, C]`` has no 2-D layout: no positional encoding is added
       (the tokens are assumed to carry their own, e.g. a ViT's).
    2. ``num_encoder_layers`` (default 1, 0 allowed) post-norm encoder layers over ``F``,
       with ``pos`` added to queries and keys (DETR).
    3. ``Q_0`` = N learnable class queries ``[N, D]`` (one per class); ``num_decoder_layers``
       (default 2) post-norm decoder layers: self-attention over the queries, then
       cross-attention to ``F`` (keys ``F + pos``, values ``F``), then FFN (the paper's
       self-attn / cross-attn / FFN equations); a final LayerNorm (DETR's decoder norm).
    4. Per-class linear (official ``GroupWiseLinear``): ``logit_n = W_n . h_n + b_n``.

    The queries enter as the decoder input ``Q_0`` (paper). The official code instead starts
    from zeros and re-adds the queries to every layer's attention queries (DETR
    ``query_pos``), and by default drops the decoder self-attention; SPEC asks for it.
    Self-attention over N queries makes the head quadratic in N: it is the baseline that
    shows why ML-Decoder exists.

    Defaults: ``hidden_dim=256, num_heads=8, ff_dim=1024`` (DETR's width and head count, a
    4x FFN as in the official Q2L 2048/8192), which keeps the O(N^2 D) head cheap next to a
    backbone; the official runs D = backbone channels (2048), 4 heads. ``dropout=0.1``.

    Args:
        num_classes: N >= 1. hidden_dim: D, divisible by ``num_heads`` (and by 4 for
        spatial input, for the sine encoding). num_encoder_layers >= 0.
        num_decoder_layers >= 1. ff_dim: FFN width. dropout: in [0, 1).
        temperature: of the sine encoding.
    """

    def __init__(self, num_classes, hidden_dim=256, num_heads=8, num_encoder_layers=1,
                 num_decoder_layers=2, ff_dim=1024, dropout=0.1, temperature=10000.0,
                 **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.num_classes = _check_int(name, "num_classes", num_classes, 1)
        self.hidden_dim = _check_int(name, "hidden_dim", hidden_dim, 1)
        self.num_heads = _check_int(name, "num_heads", num_heads, 1)
        self.num_encoder_layers = _check_int(name, "num_encoder_layers", num_encoder_layers, 0)
        self.num_decoder_layers = _check_int(name, "num_decoder_layers", num_decoder_layers, 1)
        self.ff_dim = _check_int(name, "ff_dim", ff_dim, 1)
        self.dropout = _check_rate(name, dropout)
        if not temperature > 0:
            raise ValueError(f"{name}: temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)
        _check_heads(name, "hidden_dim", self.hidden_dim, self.num_heads)

    def _check_input(self, input_shape):
        name = type(self).__name__
        if len(input_shape) not in (3, 4):
            raise ValueError(f"{name}: inputs must have rank 4 [batch, height, width, channels] "
                             f"or rank 3 [batch, tokens, channels], got shape "
                             f"{tuple(input_shape)}")
        if input_shape[-1] is None:
            raise ValueError(f"{name}: the channel dimension of inputs must be known, got "
                             f"shape {tuple(input_shape)}")
        if len(input_shape) == 4 and self.hidden_dim % 4:
            raise ValueError(f"{name}: hidden_dim must be a multiple of 4 for spatial "
                             f"[B,H,W,C] input (sine positional encoding), got {self.hidden_dim}")

    def build(self, input_shape):
        self._check_input(input_shape)
        d, n = self.hidden_dim, self.num_classes
        kw = dict(hidden_dim=d, num_heads=self.num_heads, ff_dim=self.ff_dim,
                  dropout=self.dropout, dtype=self.dtype_policy)
        self.input_proj = keras.layers.Dense(d, dtype=self.dtype_policy)
        self.input_proj.build(tuple(input_shape))
        self.pos_encoding = None
        if len(input_shape) == 4:
            self.pos_encoding = SinePositionalEncoding2D(d, temperature=self.temperature,
                                                         dtype=self.dtype_policy)
            self.pos_encoding.build(tuple(input_shape[:3]) + (d,))
        mem_shape = (input_shape[0], None, d)
        q_shape = (input_shape[0], n, d)
        self.encoder_layers = []
        for _ in range(self.num_encoder_layers):
            layer = PostNormEncoderLayer(**kw)
            layer.build(mem_shape)
            self.encoder_layers.append(layer)
        self.decoder_layers = []
        for _ in range(self.num_decoder_layers):
            layer = PostNormDecoderLayer(**kw)
            layer.build(q_shape, mem_shape)
            self.decoder_layers.append(layer)
        self.decoder_norm = keras.layers.LayerNormalization(epsilon=_LN_EPS,
                                                            dtype=self.dtype_policy)
        self.decoder_norm.build(q_shape)
        self.queries = self.add_weight(
            name="queries", shape=(n, d),
            initializer=keras.initializers.RandomNormal(stddev=1.0))  # nn.Embedding default
        bound = 1.0 / float(np.sqrt(d))  # official GroupWiseLinear init
        init = keras.initializers.RandomUniform(-bound, bound)
        self.class_kernel = self.add_weight(name="class_kernel", shape=(n, d), initializer=init)
        self.class_bias = self.add_weight(name="class_bias", shape=(n,), initializer=init)
        self.built = True

    def call(self, inputs, training=None):
        self._check_input(inputs.shape)
        x = self.input_proj(inputs)
        pos = None
        if self.pos_encoding is not None:
            pos = _flatten_tokens(self.pos_encoding(x))
        memory = _flatten_tokens(x)
        for layer in self.encoder_layers:
            memory = layer(memory, pos=pos, training=training)
        queries = ops.cast(self.queries, memory.dtype)
        t = ops.broadcast_to(queries[None], (ops.shape(memory)[0],) + tuple(queries.shape))
        for layer in self.decoder_layers:
            t = layer(t, memory, pos=pos, training=training)
        t = self.decoder_norm(t)
        kernel = ops.cast(self.class_kernel, t.dtype)
        return ops.einsum("bnd,nd->bn", t, kernel) + ops.cast(self.class_bias, t.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, hidden_dim=self.hidden_dim,
                      num_heads=self.num_heads, num_encoder_layers=self.num_encoder_layers,
                      num_decoder_layers=self.num_decoder_layers, ff_dim=self.ff_dim,
                      dropout=self.dropout, temperature=self.temperature)
        return config
