"""Query2Label head (:class:`Query2LabelHead`).

Query2Label: Liu, Zhang, Yang, Su, Zhu, "Query2Label: A Simple Transformer Way to
Multi-Label Classification", arXiv:2107.10834 (section 3, eqs. 1-3 and the per-class
linear of section 3.2), as its official code computes it (github.com/SlongLiu/query2labels,
``lib/models/query2label.py``, ``lib/models/transformer.py``, ``lib/models/position_encoding.py``;
the transformer is DETR's, Carion et al., arXiv:2005.12872).
"""
import keras
import numpy as np
from keras import ops

from keras_mld.layers.positional import SinePositionalEncoding2D
from keras_mld.layers.transformer import (LN_EPS, TransformerDecoderLayer,
                                          TransformerEncoderLayer, flatten_tokens)
from keras_mld.validation import (check_bool, check_divisible, check_int, check_number,
                                  check_rate, check_token_width)


@keras.saving.register_keras_serializable(package="keras_mld")
class Query2LabelHead(keras.layers.Layer):
    """Query2Label head: logits ``[B, N]`` (Liu et al., "Query2Label: A Simple Transformer
    Way to Multi-Label Classification", arXiv:2107.10834), computed as the official code
    (SlongLiu/query2labels ``lib/models/query2label.py`` and ``lib/models/transformer.py``).

    With features ``x [B, H, W, C]`` (flattened row-major, ``h`` then ``w``, to ``HW``
    tokens) and N learnable class queries ``Q [N, D]`` (official ``query_embed``):

    1. ``F = x`` (default, ``keep_input_proj=False``: the official ``input_proj`` is replaced
       by ``nn.Identity`` and D = C) or ``F = Dense_D(x)`` (``keep_input_proj=True``: the
       official 1x1 ``Conv2d``; the paper's "linear projection layer", section 3.1).
    2. ``pos`` = the official sine encoding (:class:`SinePositionalEncoding2D`: D/2 channels
       for the row, D/2 for the column, positions normalised to ``(0, 2*pi)`` by the map's
       height and width; the official code builds it once for the training map size,
       ``img_size // 32`` squared, and cannot run other sizes; here the encoding follows the
       size of every input). Token input ``[B, T, C]`` has no 2-D layout: no positional
       term (the tokens carry their own, e.g. a ViT's).
    3. ``num_encoder_layers`` :class:`TransformerEncoderLayer` over ``F`` (``pos`` added to
       queries and keys). With ``pre_norm`` a final LayerNorm follows the encoder (official
       ``encoder_norm``); 0 layers: no encoder and no final norm (official).
    4. Decoder (DETR): ``tgt_0 = 0 [B, N, D]``; ``num_decoder_layers``
       :class:`TransformerDecoderLayer` with ``query_pos = Q`` re-added in every layer to
       the self-attention query and key and the cross-attention query, memory keys
       ``F + pos``, values ``F``; then a LayerNorm (official ``decoder.norm``, used with
       both post- and pre-norm). The paper's eqs. (self-attn / cross-attn / FFN, section 3.1)
       write the queries as the decoder input ``Q_0``; the official code, followed here,
       starts from zeros and adds ``Q`` as a positional term to every layer.
    5. Group-wise linear (official ``GroupWiseLinear``; paper section 3.2):
       ``logit_n = W_n . h_n + b_n``.

    Variants (options, with the official command-line flags):

    * ``keep_first_self_attn_dec=False``, ``keep_other_self_attn_dec=False`` (official
      defaults; ``--keep_first_self_attn_dec``, ``--keep_other_self_attn_dec``): the official
      model removes the decoder self-attention (and its LayerNorm) from the first and from
      the other layers. Without self-attention the head is linear in N.
    * Both ``True``: self-attention over the N queries in every decoder layer, the
      paper's eq. "self-attn" and the "transformer-decoder" head of the ML-Decoder paper
      (Ridnik et al., arXiv:2111.12933, section 2.2, Fig. 3): quadratic in N, the baseline
      that shows why ML-Decoder exists.
    * ``pre_norm`` (``--pre_norm``): pre-norm encoder and decoder layers (see the layers);
      the official code runs it only with both ``keep_*_self_attn_dec`` on.
    * ``keep_input_proj`` (``--keep_input_proj``): see 1.

    Defaults are the official ones: ``hidden_dim`` = C (official 2048 = ResNet-101 channels),
    ``num_heads=4``, ``num_encoder_layers=1``, ``num_decoder_layers=2``, ``dropout=0.1``;
    except ``ff_dim = 4 * hidden_dim`` (official: 8192 at any width, 4 x its 2048).

    Args:
        num_classes: N >= 1.
        hidden_dim: D; ``None`` = the input channels C. Must equal C unless
            ``keep_input_proj``; divisible by ``num_heads``, and by 4 for spatial input.
        num_heads: attention heads (default 4), >= 1.
        num_encoder_layers: transformer encoder layers (default 1), >= 0.
        num_decoder_layers: transformer decoder layers (default 2), >= 1.
        ff_dim: FFN width, ``None`` = ``4 * hidden_dim``.
        dropout: in [0, 1) (default 0.1).
        temperature: of the sine positional encoding (default 10000), > 0.
        keep_input_proj: a Dense projection of the features to ``hidden_dim`` (see 1;
            default False, official).
        keep_first_self_attn_dec: self-attention in the first decoder layer (default False,
            official).
        keep_other_self_attn_dec: self-attention in the other decoder layers (default False,
            official).
        pre_norm: pre-norm encoder and decoder layers (default False: post-norm, official).

    Examples:
        >>> import numpy as np
        >>> from keras_mld.layers import Query2LabelHead
        >>> head = Query2LabelHead(num_classes=5, num_heads=2, ff_dim=16)
        >>> tuple(head(np.zeros((2, 3, 4, 8), "float32")).shape)  # features [B, H, W, C=D]
        (2, 5)
        >>> q2l = Query2LabelHead(num_classes=5, hidden_dim=8, num_heads=2, ff_dim=16,
        ...                       keep_input_proj=True, keep_first_self_attn_dec=True,
        ...                       keep_other_self_attn_dec=True, pre_norm=True)
        >>> tuple(q2l(np.zeros((2, 3, 3, 6), "float32")).shape)  # C=6 projected to D=8
        (2, 5)
    """

    def __init__(self, num_classes, hidden_dim=None, num_heads=4, num_encoder_layers=1,
                 num_decoder_layers=2, ff_dim=None, dropout=0.1, temperature=10000.0,
                 keep_input_proj=False, keep_first_self_attn_dec=False,
                 keep_other_self_attn_dec=False, pre_norm=False, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.num_classes = check_int(name, "num_classes", num_classes, minimum=1)
        self.hidden_dim = check_int(name, "hidden_dim", hidden_dim, minimum=1, allow_none=True)
        self.num_heads = check_int(name, "num_heads", num_heads, minimum=1)
        self.num_encoder_layers = check_int(name, "num_encoder_layers", num_encoder_layers,
                                            minimum=0)
        self.num_decoder_layers = check_int(name, "num_decoder_layers", num_decoder_layers,
                                            minimum=1)
        self.ff_dim = check_int(name, "ff_dim", ff_dim, minimum=1, allow_none=True)
        self.dropout = check_rate(name, "dropout", dropout)
        self.temperature = check_number(name, "temperature", temperature, low=0.0,
                                        low_open=True)
        self.keep_input_proj = check_bool(name, "keep_input_proj", keep_input_proj)
        self.keep_first_self_attn_dec = check_bool(name, "keep_first_self_attn_dec",
                                                   keep_first_self_attn_dec)
        self.keep_other_self_attn_dec = check_bool(name, "keep_other_self_attn_dec",
                                                   keep_other_self_attn_dec)
        self.pre_norm = check_bool(name, "pre_norm", pre_norm)
        if self.hidden_dim is not None:
            check_divisible(name, "hidden_dim", self.hidden_dim, self.num_heads, "num_heads")

    def _dim(self, input_shape):
        name = type(self).__name__
        d = check_token_width(name, "inputs", input_shape, self.hidden_dim, "hidden_dim",
                              self.keep_input_proj,
                              "keep_input_proj=True (a Dense projection to hidden_dim)",
                              self.num_heads)
        if len(input_shape) == 4 and d % 4:
            raise ValueError(f"{name}: hidden_dim must be a multiple of 4 for spatial "
                             f"[B,H,W,C] input (sine positional encoding), got {d}")
        return int(d)

    def self_attention_in(self, index):
        """Whether decoder layer ``index`` keeps its self-attention (official flags)."""
        return self.keep_first_self_attn_dec if index == 0 else self.keep_other_self_attn_dec

    def build(self, input_shape):
        d = self._dim(input_shape)
        n = self.num_classes
        self.dim = d
        kw = dict(hidden_dim=d, num_heads=self.num_heads, ff_dim=self.ff_dim or 4 * d,
                  dropout=self.dropout, pre_norm=self.pre_norm, dtype=self.dtype_policy)
        self.input_proj = None
        if self.keep_input_proj:
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
            layer = TransformerEncoderLayer(**kw)
            layer.build(mem_shape)
            self.encoder_layers.append(layer)
        self.encoder_norm = None
        if self.pre_norm and self.num_encoder_layers:
            self.encoder_norm = keras.layers.LayerNormalization(epsilon=LN_EPS,
                                                                dtype=self.dtype_policy)
            self.encoder_norm.build(mem_shape)
        self.decoder_layers = []
        for i in range(self.num_decoder_layers):
            layer = TransformerDecoderLayer(**kw, self_attention=self.self_attention_in(i))
            layer.build(q_shape, mem_shape)
            self.decoder_layers.append(layer)
        self.decoder_norm = keras.layers.LayerNormalization(epsilon=LN_EPS,
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
        self._dim(inputs.shape)
        x = inputs if self.input_proj is None else self.input_proj(inputs)
        x = ops.cast(x, self.compute_dtype)
        pos = None
        if self.pos_encoding is not None:
            pos = flatten_tokens(self.pos_encoding(x))
        memory = flatten_tokens(x)
        for layer in self.encoder_layers:
            memory = layer(memory, pos=pos, training=training)
        if self.encoder_norm is not None:
            memory = self.encoder_norm(memory)
        queries = ops.cast(self.queries, memory.dtype)
        batch_shape = (ops.shape(memory)[0],) + tuple(queries.shape)
        query_pos = ops.broadcast_to(queries[None], batch_shape)
        tgt = ops.zeros_like(query_pos)
        for layer in self.decoder_layers:
            tgt = layer(tgt, memory, pos=pos, query_pos=query_pos, training=training)
        h = self.decoder_norm(tgt)
        kernel = ops.cast(self.class_kernel, h.dtype)
        return ops.einsum("bnd,nd->bn", h, kernel) + ops.cast(self.class_bias, h.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, hidden_dim=self.hidden_dim,
                      num_heads=self.num_heads, num_encoder_layers=self.num_encoder_layers,
                      num_decoder_layers=self.num_decoder_layers, ff_dim=self.ff_dim,
                      dropout=self.dropout, temperature=self.temperature,
                      keep_input_proj=self.keep_input_proj,
                      keep_first_self_attn_dec=self.keep_first_self_attn_dec,
                      keep_other_self_attn_dec=self.keep_other_self_attn_dec,
                      pre_norm=self.pre_norm)
        return config


@keras.saving.register_keras_serializable(package="keras_mld")
class TransformerDecoderHead(Query2LabelHead):
    """:class:`Query2LabelHead` under its keras-mld 0.1 name, kept so that files saved then
    load: they name this class, and Keras files their weights under the class's snake-case
    name. New code and new files use :class:`Query2LabelHead`."""
