"""Group fully-connected layer of ML-Decoder (Ridnik et al., arXiv:2111.12933,
section 2.3.2, eq. 6)."""
import math

import keras
from keras import ops

from keras_mld.layers.cosine import DEFAULT_EPSILON, l2_normalize
from keras_mld.validation import check_bool, check_int


def group_size(num_classes, num_groups):
    """``g = ceil(N / K)``: classes per group (duplicate factor of the official code)."""
    return -(-int(num_classes) // int(num_groups))


@keras.saving.register_keras_serializable(package="keras_mld")
class GroupDense(keras.layers.Layer):
    """Group fully-connected projection of ML-Decoder (arXiv:2111.12933, eq. 6).

    Input: decoder outputs ``t [B, K, D]`` (one token per group query).

    Non-shared (default): ``g = ceil(N / K)``, kernel ``W [K, D, g]``, bias ``b [N]``,

        ``logit[n] = sum_d t[k, d] W[k, d, j] + b[n]``,  ``k = n // g``, ``j = n % g``.

    Computed as ONE contraction ``einsum("bkd,kdg->bkg")`` (no ``[B, K, D, g]``
    intermediate), flattened row-major to ``[B, K*g]`` and cut to the first N
    columns. Output ``[B, N]``. Requires ``K <= N``; when ``K*g - N >= g`` (e.g.
    N=10, K=6) the trailing queries feed no logit, exactly as in the official code.

    Shared (``shared=True``, the zero-shot variant, ML-Decoder section 2.3.3): one vector
    ``w [D]`` and one scalar bias for every query, ``logit[b, k] = t[b, k] . w + bias``.
    Output ``[B, K]`` (one logit per query; K may vary between calls, so
    ``num_classes`` is informative only and may be ``None``).

    ``cosine=True`` (for the AAM loss, Prokofiev & Sovrasov (arXiv:2209.06585) section 3.4): both
    arguments of every dot
    product are L2-normalised over D (``t[b,k,:]`` and ``W[k,:,j]``, or ``w``), so
    the output is a cosine in [-1, 1]; no bias is created in that case
    (``use_bias`` is ignored).

    Default kernel initialiser (``kernel_initializer=None``): the official
    ``xavier_normal_`` on ``[K, D, g]`` with PyTorch's fans (fan_in = D*g,
    fan_out = K*g), i.e. ``N(0, 2 / (D*g + K*g))``; for K = N it equals a Glorot
    normal Dense. Shared variant: Glorot uniform on ``[D, 1]``. Bias: zeros.

    Mixed precision: the contraction runs in ``compute_dtype``, so logits are
    float16 under ``mixed_float16`` (the losses cast to float32); cosine outputs
    are normalised in float32 first.

    Examples:
        >>> import numpy as np
        >>> from keras_mld.layers import GroupDense
        >>> tuple(GroupDense(num_classes=6)(np.ones((2, 3, 4), "float32")).shape)  # K=3 -> g=2
        (2, 6)
    """

    def __init__(self, num_classes, shared=False, cosine=False, use_bias=True,
                 kernel_initializer=None, bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, epsilon=DEFAULT_EPSILON, **kwargs):
        super().__init__(**kwargs)
        shared = check_bool("GroupDense", "shared", shared)
        cosine = check_bool("GroupDense", "cosine", cosine)
        use_bias = check_bool("GroupDense", "use_bias", use_bias)
        num_classes = check_int("GroupDense", "num_classes (None only when shared=True)",
                                num_classes, minimum=1, allow_none=shared)
        self.num_classes = num_classes
        self.shared = shared
        self.cosine = cosine
        self.use_bias = use_bias
        self.epsilon = float(epsilon)
        self.kernel_initializer = (None if kernel_initializer is None
                                   else keras.initializers.get(kernel_initializer))
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.num_groups = None
        self.group_size = None

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                "GroupDense: inputs must have rank 3 ([batch, num_groups, embed_dim]), "
                f"got shape {tuple(input_shape)}")
        k, d = input_shape[1], input_shape[2]
        if d is None:
            raise ValueError(f"GroupDense: inputs last dimension (embed_dim) must be known, "
                             f"got shape {tuple(input_shape)}")
        has_bias = self.use_bias and not self.cosine
        if self.shared:
            init = self.kernel_initializer or keras.initializers.GlorotUniform()
            self.kernel = self.add_weight(name="kernel", shape=(d,), initializer=init,
                                          regularizer=self.kernel_regularizer)
            self.bias = (self.add_weight(name="bias", shape=(), initializer=self.bias_initializer,
                                         regularizer=self.bias_regularizer)
                         if has_bias else None)
            return
        if k is None or k > self.num_classes:
            raise ValueError(
                f"GroupDense: inputs.shape[1] (the number of groups K) must be known and "
                f"<= num_classes={self.num_classes}, got shape {tuple(input_shape)}")
        g = group_size(self.num_classes, k)
        self.num_groups, self.group_size = k, g
        init = self.kernel_initializer
        if init is None:
            init = keras.initializers.RandomNormal(stddev=math.sqrt(2.0 / (d * g + k * g)))
        self.kernel = self.add_weight(name="kernel", shape=(k, d, g), initializer=init,
                                      regularizer=self.kernel_regularizer)
        self.bias = (self.add_weight(name="bias", shape=(self.num_classes,),
                                     initializer=self.bias_initializer,
                                     regularizer=self.bias_regularizer)
                     if has_bias else None)

    @property
    def matrix_variables(self):
        """Variables kept 1-D here that are matrices in the official layout: the shared
        kernel ``w [D]`` is ML-Decoder's ``duplicate_pooling [D, 1]``, which the official
        ``add_weight_decay`` decays (it spares 1-D parameters only);
        :func:`keras_mld.training.weight_decay.weight_decay_exclusions` decays it too."""
        return [self.kernel] if self.shared and self.built else []

    def call(self, inputs):
        dtype = self.compute_dtype
        if self.cosine:
            t = ops.cast(l2_normalize(inputs, axis=-1, epsilon=self.epsilon), dtype)
            # normalise over D: axis 0 of the shared w [D], axis 1 of W [K, D, g]
            w_axis = 0 if self.shared else 1
            w = ops.cast(l2_normalize(self.kernel, axis=w_axis, epsilon=self.epsilon), dtype)
        else:
            t = ops.cast(inputs, dtype)
            w = ops.cast(self.kernel, dtype)
        if self.shared:
            out = ops.einsum("bkd,d->bk", t, w)
        else:
            out = ops.einsum("bkd,kdg->bkg", t, w)
            out = ops.reshape(out, (-1, self.num_groups * self.group_size))
            if self.num_groups * self.group_size != self.num_classes:
                out = out[:, : self.num_classes]
        if self.bias is not None:
            out = out + ops.cast(self.bias, dtype)
        return out

    def compute_output_shape(self, input_shape):
        if self.shared:
            return (input_shape[0], input_shape[1])
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "shared": self.shared,
            "cosine": self.cosine,
            "use_bias": self.use_bias,
            "kernel_initializer": (None if self.kernel_initializer is None
                                   else keras.initializers.serialize(self.kernel_initializer)),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "epsilon": self.epsilon,
        }
