"""ML-GCN classification head (Chen et al., "Multi-Label Image Recognition with Graph
Convolutional Networks", CVPR 2019, arXiv:1904.03582, section 3)."""
import math

import keras
from keras import ops

from keras_mld.validation import check_float_array, check_int


@keras.saving.register_keras_serializable(package="keras_mld")
class MLGCNHead(keras.layers.Layer):
    """ML-GCN head: two GCN layers over label word vectors give per-class classifiers.

        ``H1 = LeakyReLU_0.2(A_hat G W1)``  (``[N, hidden_dim]``)
        ``W = A_hat H1 W2``  (``[N, C]``, one classifier per label)
        ``logits = GMP(f) W^T``  (``[B, N]``; GMP: global max pooling over positions/tokens)

    (ML-GCN eq. 2 and 4; official code: GCN layers without bias, initialised
    ``U(-1/sqrt(out), 1/sqrt(out))``, LeakyReLU(0.2) after the first layer only.)

    Constants: ``label_vectors`` ``G [N, d_w]`` and ``adjacency`` ``A_hat [N, N]``, the
    normalised propagation matrix used as given, ``H' = A_hat H W``; build it from the
    correlation matrix ``Z`` with :func:`keras_mld.zsl.mlgcn_adjacency` (binarised at
    tau = 0.4, re-weighted with p = 0.2, ``gen_adj`` normalisation). ``hidden_dim`` defaults
    to ``C // 2`` (ML-GCN: 1024 for ResNet-101's C = 2048).

    ``call(features [B, H, W, C] or [B, T, C])`` -> logits ``[B, N]`` in ``compute_dtype``;
    the GCN runs in float32. Like :class:`~keras_mld.layers.GraphAttentionReweight`, the
    classifiers do not depend on the image: :meth:`freeze` stores them in the non-trainable
    ``frozen_classifiers`` (``frozen=True`` in the config) so ``call`` is GMP + one matmul;
    :meth:`unfreeze` undoes it. Constants travel in the weights, not in ``get_config``.

    Examples:
        >>> import numpy as np
        >>> from keras_mld.layers import MLGCNHead
        >>> head = MLGCNHead(num_classes=4, label_vectors=np.eye(4, 6),
        ...                  adjacency=np.full((4, 4), 0.25), hidden_dim=5)
        >>> tuple(head(np.ones((2, 3, 3, 8), "float32")).shape)
        (2, 4)
    """

    def __init__(self, num_classes, label_vectors=None, adjacency=None, hidden_dim=None,
                 negative_slope=0.2, kernel_initializer=None, frozen=False, word_dim=None,
                 **kwargs):
        super().__init__(**kwargs)
        owner = "MLGCNHead"
        num_classes = check_int(owner, "num_classes", num_classes, minimum=1)
        if hidden_dim is not None:
            hidden_dim = check_int(owner, "hidden_dim", hidden_dim, minimum=1)
        if not isinstance(negative_slope, (int, float)) or isinstance(negative_slope, bool) \
                or negative_slope < 0:
            raise ValueError(f"{owner}: negative_slope must be a float >= 0, "
                             f"got {negative_slope!r}")
        if not isinstance(frozen, bool):
            raise ValueError(f"{owner}: frozen must be True or False, got {frozen!r}")
        if (label_vectors is None) != (adjacency is None):
            raise ValueError(f"{owner}: give both label_vectors [N, d_w] and adjacency [N, N] "
                             "(or neither, with word_dim, to load weights later)")
        self._init_vectors = self._init_adjacency = None
        if label_vectors is not None:
            g = check_float_array(owner, "label_vectors", label_vectors, 2)
            a = check_float_array(owner, "adjacency", adjacency, 2)
            if g.shape[0] != num_classes or (word_dim is not None and g.shape[1] != word_dim):
                raise ValueError(f"{owner}: label_vectors must be [num_classes={num_classes}, "
                                 f"d_w], got shape {g.shape}")
            if a.shape != (num_classes, num_classes):
                raise ValueError(f"{owner}: adjacency must be [{num_classes}, {num_classes}], got "
                                 f"shape {a.shape}")
            self._init_vectors, self._init_adjacency = g, a
            word_dim = g.shape[1]
        word_dim = check_int(owner, "word_dim", word_dim, minimum=1)
        self.num_classes, self.word_dim, self.hidden_dim = num_classes, word_dim, hidden_dim
        self.negative_slope, self.frozen = float(negative_slope), frozen
        self.kernel_initializer = (None if kernel_initializer is None
                                   else keras.initializers.get(kernel_initializer))

    def _initializer(self, units):
        if self.kernel_initializer is not None:
            return self.kernel_initializer
        bound = 1.0 / math.sqrt(units)
        return keras.initializers.RandomUniform(-bound, bound)

    def build(self, input_shape):
        if len(input_shape) not in (3, 4) or input_shape[-1] is None:
            raise ValueError("MLGCNHead: features must be [B, H, W, C] or [B, T, C] with known C, "
                             f"got shape {tuple(input_shape)}")
        n, d, c = self.num_classes, self.word_dim, int(input_shape[-1])
        hidden = self.hidden_dim or max(1, c // 2)
        self.channels = c
        self.label_vectors = self.add_weight(shape=(n, d), name="label_vectors", dtype="float32",
                                             initializer="zeros", trainable=False)
        self.adjacency = self.add_weight(shape=(n, n), name="adjacency", dtype="float32",
                                         initializer="zeros", trainable=False)
        # created trainable, then flagged: the saved variable order must not depend on `frozen`
        self.kernel1 = self.add_weight(shape=(d, hidden), name="kernel1", dtype="float32",
                                       initializer=self._initializer(hidden))
        self.kernel2 = self.add_weight(shape=(hidden, c), name="kernel2", dtype="float32",
                                       initializer=self._initializer(c))
        self.kernel1.trainable = self.kernel2.trainable = not self.frozen
        self.frozen_classifiers = self.add_weight(shape=(n, c), name="frozen_classifiers",
                                                  dtype="float32", initializer="zeros",
                                                  trainable=False)
        if self._init_vectors is not None:
            self.label_vectors.assign(self._init_vectors)
            self.adjacency.assign(self._init_adjacency)
            self._init_vectors = self._init_adjacency = None

    def classifiers(self):
        """Per-class classifiers ``[N, C]`` float32 from the GCN (ignores ``frozen``)."""
        a = ops.cast(self.adjacency, "float32")
        g = ops.cast(self.label_vectors, "float32")
        h = ops.matmul(a, ops.matmul(g, ops.cast(self.kernel1, "float32")))
        h = ops.leaky_relu(h, negative_slope=self.negative_slope)
        return ops.matmul(a, ops.matmul(h, ops.cast(self.kernel2, "float32")))

    def freeze(self):
        """Stores the classifiers in ``frozen_classifiers``; ``call`` then skips the GCN."""
        if not self.built:
            raise ValueError("MLGCNHead.freeze: build the layer first (call it once)")
        self.frozen_classifiers.assign(ops.convert_to_numpy(self.classifiers()))
        self.frozen = True
        self.kernel1.trainable = self.kernel2.trainable = False
        return self

    def unfreeze(self):
        """Back to computing the classifiers from the (trainable) GCN at every call."""
        self.frozen = False
        if self.built:
            self.kernel1.trainable = self.kernel2.trainable = True
        return self

    def call(self, features, training=None):
        x = ops.cast(features, self.compute_dtype)
        v = ops.max(x, axis=tuple(range(1, len(x.shape) - 1)))  # GMP -> [B, C]
        w = self.frozen_classifiers if self.frozen else self.classifiers()
        return ops.matmul(v, ops.transpose(ops.cast(w, self.compute_dtype)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "word_dim": self.word_dim,
            "hidden_dim": self.hidden_dim,
            "negative_slope": self.negative_slope,
            "kernel_initializer": (None if self.kernel_initializer is None
                                   else keras.initializers.serialize(self.kernel_initializer)),
            "frozen": self.frozen,
        }
