"""DETR-style transformer encoder and decoder layers, shared by Query2Label and C-Tran.

Carion, Massa, Synnaeve, Usunier, Kirillov, Zagoruyko, "End-to-End Object Detection with
Transformers", arXiv:2005.12872 (section 3.2 and appendix A.3: positional terms added to the
attention queries and keys, post-norm by default), as Query2Label (Liu et al.,
arXiv:2107.10834; github.com/SlongLiu/query2labels ``lib/models/transformer.py``) and C-Tran
(Lanchantin et al., arXiv:2011.14027; github.com/QData/C-Tran
``models/transformer_layers.py``) use them.
"""
import keras
from keras import ops

from keras_mld.validation import check_bool, check_divisible, check_int, check_rate

LN_EPS = 1e-5  # PyTorch LayerNorm default, as in DETR / Query2Label / C-Tran


def flatten_tokens(x):
    """[B,H,W,C] -> [B,H*W,C] (row-major: h, then w); [B,T,C] unchanged."""
    if len(x.shape) == 3:
        return x
    shape = ops.shape(x)
    return ops.reshape(x, (-1, shape[1] * shape[2], x.shape[-1]))


def add_position(x, pos):
    return x if pos is None else x + pos


class TransformerBase(keras.layers.Layer):
    def __init__(self, hidden_dim, num_heads, ff_dim, dropout=0.1, pre_norm=False, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.hidden_dim = check_int(name, "hidden_dim", hidden_dim, minimum=1)
        self.num_heads = check_int(name, "num_heads", num_heads, minimum=1)
        self.ff_dim = check_int(name, "ff_dim", ff_dim, minimum=1)
        self.dropout = check_rate(name, "dropout", dropout)
        self.pre_norm = check_bool(name, "pre_norm", pre_norm)
        check_divisible(name, "hidden_dim", self.hidden_dim, self.num_heads, "num_heads")

    def _sub(self, cls, *args, **kwargs):
        return cls(*args, dtype=self.dtype_policy, **kwargs)

    def _mha(self, query_shape, value_shape):
        # torch.nn.MultiheadAttention: q/k/v/out projections with bias, scores / sqrt(D/heads),
        # dropout on the attention weights
        mha = self._sub(keras.layers.MultiHeadAttention, num_heads=self.num_heads,
                        key_dim=self.hidden_dim // self.num_heads, dropout=self.dropout)
        mha.build(query_shape, value_shape, value_shape)
        return mha

    def _norm(self, shape):
        norm = self._sub(keras.layers.LayerNormalization, epsilon=LN_EPS)
        norm.build(shape)
        return norm

    def _drop(self):
        return self._sub(keras.layers.Dropout, self.dropout)

    def _ffn(self, shape):
        self.linear1 = self._sub(keras.layers.Dense, self.ff_dim, activation="relu")
        self.linear1.build(shape)
        self.linear2 = self._sub(keras.layers.Dense, self.hidden_dim)
        self.linear2.build(tuple(shape[:-1]) + (self.ff_dim,))
        self.ffn_dropout = self._drop()

    def _ffn_call(self, x, training):
        return self.linear2(self.ffn_dropout(self.linear1(x), training=training))

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, num_heads=self.num_heads,
                      ff_dim=self.ff_dim, dropout=self.dropout, pre_norm=self.pre_norm)
        return config


@keras.saving.register_keras_serializable(package="keras_mld")
class TransformerEncoderLayer(TransformerBase):
    """DETR transformer encoder layer (official ``TransformerEncoderLayer`` of DETR,
    Query2Label and C-Tran; Vaswani et al., arXiv:1706.03762, with DETR's positional term).

    Post-norm (``pre_norm=False``, the default of all three official codes)::

        x = LN1(x + Dropout(MHA(q = x + pos, k = x + pos, v = x)))
        x = LN2(x + Dropout(W2 Dropout(ReLU(W1 x))))

    Pre-norm (``pre_norm=True``, DETR / Query2Label ``--pre_norm``)::

        y = LN1(x);  x = x + Dropout(MHA(q = y + pos, k = y + pos, v = y))
        y = LN2(x);  x = x + Dropout(W2 Dropout(ReLU(W1 y)))

    ``pos`` is optional (``None``: no positional term, as in C-Tran). Attention-weight
    dropout as in ``torch.nn.MultiheadAttention``. Input and output ``[B, T, hidden_dim]``.
    """

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.self_attn = self._mha(shape, shape)
        self.dropout1 = self._drop()
        self.norm1 = self._norm(shape)
        self._ffn(shape)
        self.dropout2 = self._drop()
        self.norm2 = self._norm(shape)
        self.built = True

    def call(self, x, pos=None, training=None):
        if self.pre_norm:
            y = self.norm1(x)
            qk = add_position(y, pos)
            x = x + self.dropout1(self.self_attn(query=qk, value=y, key=qk, training=training),
                                  training=training)
            y = self.norm2(x)
            return x + self.dropout2(self._ffn_call(y, training), training=training)
        qk = add_position(x, pos)
        a = self.self_attn(query=qk, value=x, key=qk, training=training)
        x = self.norm1(x + self.dropout1(a, training=training))
        f = self._ffn_call(x, training)
        return self.norm2(x + self.dropout2(f, training=training))


@keras.saving.register_keras_serializable(package="keras_mld")
class TransformerDecoderLayer(TransformerBase):
    """DETR transformer decoder layer with Query2Label's optional self-attention.

    ``call(tgt [B, N, D], memory [B, T, D], pos=None | [B, T, D], query_pos=None | [B, N, D])``;
    ``pos`` is added to the memory keys, ``query_pos`` (the class queries) to the
    self-attention query and key and to the cross-attention query, in every layer (DETR).
    Post-norm (default; official ``forward_post``)::

        [if self_attention]  q = tgt + query_pos
                             tgt = LN1(tgt + Dropout(MHA(q, q, v = tgt)))
        tgt = LN2(tgt + Dropout(MHA(q = tgt + query_pos, k = memory + pos, v = memory)))
        tgt = LN3(tgt + Dropout(W2 Dropout(ReLU(W1 tgt))))

    Pre-norm (``pre_norm=True``; official ``forward_pre``)::

        [if self_attention]  y = LN1(tgt);  q = y + query_pos
                             tgt = tgt + Dropout(MHA(q, q, v = y))
        y = LN2(tgt);  tgt = tgt + Dropout(MHA(y + query_pos, memory + pos, memory))
        y = LN3(tgt);  tgt = tgt + Dropout(W2 Dropout(ReLU(W1 y)))

    ``self_attention=False`` is the official Query2Label default (``rm_self_attn_dec_func``
    deletes ``self_attn``, ``dropout1`` and ``norm1``): no self-attention block and no
    ``norm1``. The official ``forward_pre`` does not check for the removed block, so the
    official code runs ``pre_norm`` only with self-attention kept; here ``pre_norm`` without
    self-attention skips the block.
    """

    def __init__(self, hidden_dim, num_heads, ff_dim, dropout=0.1, pre_norm=False,
                 self_attention=True, **kwargs):
        super().__init__(hidden_dim, num_heads, ff_dim, dropout=dropout, pre_norm=pre_norm,
                         **kwargs)
        self.self_attention = check_bool(type(self).__name__, "self_attention", self_attention)

    def build(self, tgt_shape, memory_shape=None):
        q_shape = tuple(tgt_shape)
        m_shape = q_shape if memory_shape is None else tuple(memory_shape)
        if self.self_attention:
            self.self_attn = self._mha(q_shape, q_shape)
            self.dropout1 = self._drop()
            self.norm1 = self._norm(q_shape)
        self.cross_attn = self._mha(q_shape, m_shape)
        self.dropout2 = self._drop()
        self.norm2 = self._norm(q_shape)
        self._ffn(q_shape)
        self.dropout3 = self._drop()
        self.norm3 = self._norm(q_shape)
        self.built = True

    def call(self, tgt, memory, pos=None, query_pos=None, training=None):
        keys = add_position(memory, pos)
        if self.pre_norm:
            if self.self_attention:
                y = self.norm1(tgt)
                q = add_position(y, query_pos)
                a = self.self_attn(query=q, value=y, key=q, training=training)
                tgt = tgt + self.dropout1(a, training=training)
            y = self.norm2(tgt)
            a = self.cross_attn(query=add_position(y, query_pos), value=memory, key=keys,
                                training=training)
            tgt = tgt + self.dropout2(a, training=training)
            y = self.norm3(tgt)
            return tgt + self.dropout3(self._ffn_call(y, training), training=training)
        if self.self_attention:
            q = add_position(tgt, query_pos)
            a = self.self_attn(query=q, value=tgt, key=q, training=training)
            tgt = self.norm1(tgt + self.dropout1(a, training=training))
        a = self.cross_attn(query=add_position(tgt, query_pos), value=memory, key=keys,
                            training=training)
        tgt = self.norm2(tgt + self.dropout2(a, training=training))
        f = self._ffn_call(tgt, training)
        return self.norm3(tgt + self.dropout3(f, training=training))

    def get_config(self):
        config = super().get_config()
        config.update(self_attention=self.self_attention)
        return config
