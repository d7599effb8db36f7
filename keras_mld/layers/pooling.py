"""Global-pooling classification head, the GAP baseline (global average pooling + a linear
classifier, the baseline head of ML-Decoder, arXiv:2111.12933, section 2.1)."""
import keras
from keras import ops

from keras_mld.layers.cosine import CosineDense
from keras_mld.validation import check_bool, check_choice, check_int, check_rate

POOLINGS = ("avg", "avg+max")


@keras.saving.register_keras_serializable(package="keras_mld")
class GlobalPoolHead(keras.layers.Layer):
    """Global pooling then a linear classifier: the usual GAP head (the GAP
    baseline of ML-Decoder's Table 1, arXiv:2111.12933).

        ``v = GAP(x)``  (``pooling="avg"``), or
        ``v = GAP(x) + GMP(x)``  (``pooling="avg+max"``: the graph-attention head of
        Prokofiev & Sovrasov (arXiv:2209.06585) section 3.3),
        ``logits = Dense_N(Dropout(v))``, or ``cos = CosineDense_N(Dropout(v))`` with
        ``cosine=True`` (cosines in [-1, 1], no bias, for the AAM loss).

    Pooling is over all spatial positions of ``[B, H, W, C]`` or all tokens of
    ``[B, T, C]``; it is computed in float32. Output ``[B, num_classes]`` in
    ``compute_dtype`` (float16 under ``mixed_float16``; cast for the loss, as the
    losses do, or build the head with ``dtype="float32"``).

    Examples:
        >>> import numpy as np
        >>> from keras_mld.layers import GlobalPoolHead
        >>> tuple(GlobalPoolHead(4)(np.ones((2, 3, 3, 5), "float32")).shape)
        (2, 4)
    """

    def __init__(self, num_classes, pooling="avg", dropout=0.0, cosine=False, use_bias=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        num_classes = check_int("GlobalPoolHead", "num_classes", num_classes, minimum=1)
        pooling = check_choice("GlobalPoolHead", "pooling", pooling, POOLINGS)
        dropout = check_rate("GlobalPoolHead", "dropout", dropout)
        cosine = check_bool("GlobalPoolHead", "cosine", cosine)
        self.num_classes, self.pooling, self.dropout = num_classes, pooling, float(dropout)
        self.cosine, self.use_bias = cosine, use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        sub = {"dtype": self.dtype_policy}
        self.drop = keras.layers.Dropout(self.dropout, name="dropout", **sub)
        if cosine:
            self.classifier = CosineDense(num_classes, kernel_initializer=kernel_initializer,
                                          name="classifier", **sub)
        else:
            self.classifier = keras.layers.Dense(num_classes, use_bias=use_bias,
                                                 kernel_initializer=kernel_initializer,
                                                 name="classifier", **sub)

    def _check_rank(self, shape):
        if len(shape) not in (3, 4) or shape[-1] is None:
            raise ValueError(
                "GlobalPoolHead: inputs must have rank 4 ([batch, height, width, channels]) or "
                f"rank 3 ([batch, tokens, channels]) with known channels, got shape {tuple(shape)}")

    def build(self, input_shape):
        self._check_rank(input_shape)
        self.classifier.build((input_shape[0], input_shape[-1]))

    def call(self, inputs, training=None):
        self._check_rank(inputs.shape)
        x = ops.cast(inputs, "float32")
        axes = tuple(range(1, len(x.shape) - 1))
        v = ops.mean(x, axis=axes)
        if self.pooling == "avg+max":
            v = v + ops.max(x, axis=axes)
        v = self.drop(ops.cast(v, self.compute_dtype), training=training)
        return self.classifier(v)

    def compute_output_shape(self, input_shape):
        self._check_rank(input_shape)
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "pooling": self.pooling,
            "dropout": self.dropout,
            "cosine": self.cosine,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
