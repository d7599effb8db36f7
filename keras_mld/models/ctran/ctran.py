"""C-Tran head: transformer encoder over visual tokens and label/state embeddings."""
import keras
import numpy as np
from keras import ops

from keras_mld.layers.transformer import LN_EPS, TransformerEncoderLayer, flatten_tokens
from keras_mld.validation import (check_bool, check_divisible, check_int, check_rate,
                                  check_token_width)


@keras.saving.register_keras_serializable(package="keras_mld")
class CTranHead(keras.layers.Layer):
    """C-Tran classification head (Lanchantin, Wang, Ordonez, Qi, "General Multi-label
    Image Classification with Transformers", CVPR 2021, arXiv:2011.14027, section 3):
    logits ``[B, N]``, as the official code computes them (QData/C-Tran
    ``models/CTran.py``, ``models/transformer_layers.py``, ``models/utils.py``).

    With visual tokens ``z`` (``x [B,H,W,C]`` flattened row-major to ``[B, HW, C]``, or
    tokens ``[B, T, C]``; projected by ``Dense_D`` unless ``input_proj=False``), label
    embeddings ``l_n`` (``[N, D]``, trainable) and state embeddings ``s(k)`` for the known
    state ``k`` of label n:

        s(-1 unknown) = 0,  s(0 negative) = e_neg,  s(1 positive) = e_pos
        u = LayerNorm(concat(z, [l_n + s(k_n)]_n))                 [B, HW + N, D]
        u = EncoderLayer_L(... EncoderLayer_1(u))                   (post-norm, no pos. enc.)
        logit_n = W_n . u_{HW + n} + b_n                            (per-label linear readout)

    The unknown state. The official model (``--use_lmt``) adds ``known_label_lt[k]`` to
    the label embeddings, rows 0 unknown, 1 negative, 2 positive
    (``custom_replace(mask, 0, 1, 2)``). ``known_label_lt`` is built with ``padding_idx=0``
    (row 0 zeroed and never updated: its gradient is always zero), but ``weights_init``
    then re-draws every row from ``U(-1/sqrt(D), 1/sqrt(D))``, so the official unknown
    state is a fixed, non-zero vector ``u0``. Here the unknown state is the zero vector
    (so "all unknown" and ``known_labels=None`` are the same input) and an exact conversion
    folds ``u0`` in: ``l_n = label_lt_n + u0``, ``e_neg = known_label_lt[1] - u0``,
    ``e_pos = known_label_lt[2] - u0`` (:func:`keras_mld.convert.convert_ctran_state_dict`).
    The sums give the same logits for every state and the same gradients (``u0`` is a
    constant), so training follows the official one too. Without label-mask training
    (official default, no ``--use_lmt``) the official model adds no state at all: convert
    with zero state embeddings.

    Also as in the official code: no positional encoding (default ``pos_emb=False``; the
    official ``pos_emb=True`` path calls a tensor and does not run); the FFN width defaults
    to ``embed_dim`` (official ``d_model * 1``); the readout is the diagonal of one
    ``Linear(D, N)``, i.e. ``logit_n = W_n . h_n + b_n``. The official model runs at the
    backbone width (2048, no projection: ``input_proj=False`` with ``embed_dim`` None or
    C); by default the visual tokens are projected to ``embed_dim`` (512) by a Dense layer.

    ``call(features, known_labels=None)``: ``known_labels [B, N]`` with -1 unknown,
    0 known negative, 1 known positive (any other value counts as unknown); ``None`` =
    all unknown, the inference default. In a functional model pass it by keyword:
    ``CTranHead(80)(feature_map, known_labels=known_input)``. Train with label-mask
    training: :func:`keras_mld.data.label_mask.ctran_label_mask_dataset`.

    Args:
        num_classes: N >= 1.
        embed_dim: D (default 512), divisible by ``num_heads``; ``None`` = the input
            channels.
        num_layers: encoder layers (default 3, paper), >= 1.
        num_heads: attention heads (default 4, paper), >= 1.
        ff_dim: FFN width, ``None`` = ``embed_dim``.
        dropout: in [0, 1), default 0.1.
        input_proj: project the features to D with a Dense layer (default True); False: D
            must be the input channels (official).

    Examples:
        >>> import numpy as np
        >>> from keras_mld.layers import CTranHead
        >>> head = CTranHead(num_classes=4, embed_dim=8, num_layers=1, num_heads=2)
        >>> features = np.zeros((2, 3, 3, 6), "float32")  # [B, H, W, C]
        >>> tuple(head(features).shape)  # every label unknown (inference)
        (2, 4)
        >>> known = np.array([[-1, 0, 1, -1], [1, -1, -1, -1]], "float32")
        >>> tuple(head(features, known_labels=known).shape)  # some labels known
        (2, 4)
    """

    def __init__(self, num_classes, embed_dim=512, num_layers=3, num_heads=4, ff_dim=None,
                 dropout=0.1, input_proj=True, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.num_classes = check_int(name, "num_classes", num_classes, minimum=1)
        self.embed_dim = check_int(name, "embed_dim", embed_dim, minimum=1, allow_none=True)
        self.num_layers = check_int(name, "num_layers", num_layers, minimum=1)
        self.num_heads = check_int(name, "num_heads", num_heads, minimum=1)
        self.ff_dim = check_int(name, "ff_dim", ff_dim, minimum=1, allow_none=True)
        self.dropout = check_rate(name, "dropout", dropout)
        self.input_proj_enabled = check_bool(name, "input_proj", input_proj)
        if self.embed_dim is not None:
            check_divisible(name, "embed_dim", self.embed_dim, self.num_heads, "num_heads")

    def _check_input(self, input_shape):
        return check_token_width(type(self).__name__, "features", input_shape, self.embed_dim,
                                 "embed_dim", self.input_proj_enabled, "input_proj=True",
                                 self.num_heads)

    def _check_known(self, shape):
        n = self.num_classes
        if len(shape) != 2 or (shape[-1] is not None and shape[-1] != n):
            raise ValueError(f"{type(self).__name__}: known_labels must have shape "
                             f"[batch, num_classes={n}] with values in {{-1, 0, 1}}, got "
                             f"shape {tuple(shape)}")

    def build(self, input_shape):
        d, n = self._check_input(input_shape), self.num_classes
        self.dim = d
        self.input_proj = None
        if self.input_proj_enabled:
            self.input_proj = keras.layers.Dense(d, dtype=self.dtype_policy)
            self.input_proj.build(tuple(input_shape))
        seq_shape = (input_shape[0], None, d)
        self.input_norm = keras.layers.LayerNormalization(epsilon=LN_EPS,
                                                          dtype=self.dtype_policy)
        self.input_norm.build(seq_shape)
        self.encoder_layers = []
        for _ in range(self.num_layers):
            layer = TransformerEncoderLayer(d, self.num_heads, self.ff_dim or d, self.dropout,
                                            dtype=self.dtype_policy)
            layer.build(seq_shape)
            self.encoder_layers.append(layer)
        bound = 1.0 / float(np.sqrt(d))  # official weights_init: U(-1/sqrt(D), 1/sqrt(D))
        init = keras.initializers.RandomUniform(-bound, bound)
        self.label_embeddings = self.add_weight(name="label_embeddings", shape=(n, d),
                                                initializer=init)
        # rows: [known negative, known positive]; unknown is the zero vector (the official
        # fixed non-zero unknown row is folded into label_embeddings on conversion)
        self.state_embeddings = self.add_weight(name="state_embeddings", shape=(2, d),
                                                initializer=init)
        self.class_kernel = self.add_weight(name="class_kernel", shape=(n, d), initializer=init)
        self.class_bias = self.add_weight(name="class_bias", shape=(n,), initializer=init)
        self.built = True

    def call(self, features, known_labels=None, training=None):
        self._check_input(features.shape)
        x = features if self.input_proj is None else self.input_proj(features)
        tokens = flatten_tokens(ops.cast(x, self.compute_dtype))  # [B, T, D]
        dtype = tokens.dtype
        labels = ops.cast(self.label_embeddings, dtype)[None]  # [1, N, D]
        batch = ops.shape(tokens)[0]
        labels = ops.broadcast_to(labels, (batch, self.num_classes, self.dim))
        if known_labels is not None:
            self._check_known(known_labels.shape)
            known = ops.cast(known_labels, "float32")
            neg = ops.cast(ops.equal(known, 0.0), dtype)[..., None]
            pos = ops.cast(ops.equal(known, 1.0), dtype)[..., None]
            states = ops.cast(self.state_embeddings, dtype)
            labels = labels + neg * states[0] + pos * states[1]
        u = self.input_norm(ops.concatenate([tokens, labels], axis=1))
        for layer in self.encoder_layers:
            u = layer(u, training=training)
        h = u[:, -self.num_classes:, :]
        kernel = ops.cast(self.class_kernel, h.dtype)
        return ops.einsum("bnd,nd->bn", h, kernel) + ops.cast(self.class_bias, h.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, embed_dim=self.embed_dim,
                      num_layers=self.num_layers, num_heads=self.num_heads,
                      ff_dim=self.ff_dim, dropout=self.dropout,
                      input_proj=self.input_proj_enabled)
        return config
