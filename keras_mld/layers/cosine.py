"""Cosine classifier for the AAM loss of Prokofiev & Sovrasov (arXiv:2209.06585), eq. 1."""
import keras
from keras import ops

from keras_mld.validation import check_int, check_number

DEFAULT_EPSILON = 1e-12


def l2_normalize(x, axis=-1, epsilon=DEFAULT_EPSILON):
    """``x / max(||x||_2, epsilon)`` along ``axis``, computed in float32.

    eps-safe: a zero vector maps to zero (no NaN, finite gradient), as PyTorch's
    ``F.normalize``. The result is float32; callers cast to their compute dtype.
    """
    x = ops.cast(x, "float32")
    sq = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(sq, epsilon * epsilon))


@keras.saving.register_keras_serializable(package="keras_mld")
class CosineDense(keras.layers.Layer):
    """Cosine-similarity classifier for the asymmetric angular margin (AAM) loss.

    Implements the cosine classifier of Prokofiev & Sovrasov (arXiv:2209.06585)
    (section 3.4: eq. 1 works on ``cos(theta_j)``): for an input feature ``v [..., C]`` and one
    weight vector ``W_n [C]`` per output unit,

        ``cos_n = normalize(v) . normalize(W_n)``,  in [-1, 1].

    There is no bias (it would leave [-1, 1]); the AAM loss applies its own scale
    ``s`` and margin ``m``. Normalisation is ``x / max(||x||, epsilon)`` (a zero
    vector gives cosine 0, never NaN).

    Args:
        units: number of outputs (classes), int >= 1.
        kernel_initializer, kernel_regularizer, kernel_constraint: for ``W [C, units]``.
        epsilon: floor of the norms.

    Input ``[..., C]``; output ``[..., units]``. Mixed precision: norms are computed
    in float32 and the output is in ``compute_dtype`` (float16 under
    ``mixed_float16``; cosines are bounded, so float16 is safe).

    Examples:
        >>> import numpy as np, keras
        >>> from keras_mld.layers import CosineDense
        >>> cos = keras.ops.convert_to_numpy(CosineDense(3)(np.random.rand(2, 5).astype("float32")))
        >>> cos.shape, bool(np.all(np.abs(cos) <= 1 + 1e-6))
        ((2, 3), True)
    """

    def __init__(self, units, kernel_initializer="glorot_uniform", kernel_regularizer=None,
                 kernel_constraint=None, epsilon=DEFAULT_EPSILON, **kwargs):
        super().__init__(**kwargs)
        units = check_int("CosineDense", "units", units, minimum=1)
        epsilon = check_number("CosineDense", "epsilon", epsilon, low=0.0, low_open=True)
        self.units = units
        self.epsilon = float(epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(
                "CosineDense: inputs must have rank >= 2 with a known last dimension, "
                f"got shape {tuple(input_shape)}")
        self.kernel = self.add_weight(
            name="kernel", shape=(input_shape[-1], self.units),
            initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint)

    def call(self, inputs):
        v = l2_normalize(inputs, axis=-1, epsilon=self.epsilon)
        w = l2_normalize(self.kernel, axis=0, epsilon=self.epsilon)
        return ops.cast(ops.matmul(v, w), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "epsilon": self.epsilon,
        }
