"""What the losses of this package share (``keras.ops`` only): argument checks, float32
computation, the ignore mask of ``y_true == -1``, and numerically safe powers and logs of the
focusing terms (see the conventions in :mod:`keras_mld.losses.asl`)."""
import math

import keras
from keras import ops

from keras_mld.validation import check_number

TINY = 1e-30  # floor of a power's base inside log(); below it the power is ~0 anyway


def check_gamma(owner, name, value):
    return check_number(owner, name, value, low=0.0, accepted="a finite number >= 0")


def check_eps(owner, value):
    return check_number(owner, "eps", value, low=0.0, high=1.0, high_open=True,
                         accepted="a number in [0, 1)")


def float32(x):
    x = ops.convert_to_tensor(x)
    return x if x.dtype == "float32" else ops.cast(x, "float32")


def split_ignore(y_true):
    """``(y, valid)``: labels with ignored (-1) entries set to 0, and a float 0/1 mask."""
    y_true = float32(y_true)
    valid = ops.not_equal(y_true, -1.0)
    return ops.where(valid, y_true, 0.0), ops.cast(valid, "float32")


def pow_from_log(log_base, gamma):
    """``base ** gamma`` from ``log(base)`` (smooth, exact; 1 when gamma == 0)."""
    if gamma == 0.0:
        return None
    return ops.exp(gamma * log_base)


def safe_pow(base, gamma):
    """``base ** gamma`` for base >= 0 with finite gradients also at base == 0."""
    if gamma == 0.0:
        return None
    positive = ops.greater(base, 0.0)
    value = ops.exp(gamma * ops.log(ops.maximum(base, TINY)))
    return ops.where(positive, value, 0.0)


def clamped_log(log_value, eps):
    """``log(max(v, eps))`` computed as ``max(log v, log eps)`` (identical math)."""
    if eps > 0.0:
        return ops.maximum(log_value, math.log(eps))
    return log_value


def weighted(term, weight, stop):
    if weight is None:
        return term
    if stop:
        weight = ops.stop_gradient(weight)
    return term * weight


class Float32Loss(keras.losses.Loss):
    """Base: loss dtype fixed to float32, config with the common Keras arguments."""

    def __init__(self, reduction="sum_over_batch_size", name=None):
        super().__init__(name=name, reduction=reduction, dtype="float32")
