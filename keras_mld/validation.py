"""Argument validation shared by every layer, loss and data loader.

Pure Python and numpy (no ``keras.ops``, no TensorFlow): importable on any Keras backend and
before one is chosen. Each ``check_*`` returns the value as a plain Python object (``int``,
``float``, ``bool``; so that ``get_config`` stays JSON-serializable) or raises ``ValueError``
naming the owner (layer, loss or function), the argument, what is accepted and what was given.
numpy scalars are accepted alike everywhere (``np.int64(3)`` is an int, ``np.float32(0.5)`` a
number); ``bool`` is never taken for a number.

Examples:
    >>> import numpy as np
    >>> from keras_mld.validation import check_int, check_number
    >>> check_int("MLDecoder", "num_groups", np.int64(4), minimum=1)
    4
    >>> check_number("AsymmetricLoss", "clip", 0.05, low=0.0, high=1.0, high_open=True)
    0.05
    >>> check_int("MLDecoder", "num_groups", 0, minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: MLDecoder: num_groups must be an int >= 1, got 0
"""
import math
import numbers

import numpy as np

__all__ = ["check_int", "check_number", "check_rate", "check_bool", "check_choice",
           "check_seed", "check_str", "check_float_array", "check_divisible"]


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _range_text(low, high, low_open=False, high_open=False):
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def _fail(owner, name, accepted, value, allow_none):
    if allow_none:
        accepted = f"None or {accepted}"
    raise ValueError(f"{owner}: {name} must be {accepted}, got {value!r}")


def check_int(owner, name, value, minimum=None, maximum=None, allow_none=False):
    """``int(value)`` for a Python or numpy integer in ``[minimum, maximum]`` (bounds optional)."""
    if value is None and allow_none:
        return None
    ok = _is_int(value)
    if ok:
        ok = (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        _fail(owner, name, f"an int {_range_text(minimum, maximum)}".rstrip(), value, allow_none)
    return int(value)


def check_number(owner, name, value, low=None, high=None, low_open=False, high_open=False,
                 allow_none=False, accepted=None):
    """``float(value)`` for a finite real number (int or float, Python or numpy) in range."""
    if value is None and allow_none:
        return None
    try:
        ok = _is_real(value) and math.isfinite(float(value))
    except OverflowError:  # an int too large for a float
        ok = False
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        text = accepted or f"a finite number {_range_text(low, high, low_open, high_open)}"
        _fail(owner, name, text.rstrip(), value, allow_none)
    return float(value)


def check_rate(owner, name, value):
    """A dropout-like rate: a number in [0, 1)."""
    return check_number(owner, name, value, low=0.0, high=1.0, high_open=True,
                        accepted="a number in [0, 1)")


def check_bool(owner, name, value):
    """``value`` if it is ``True`` or ``False`` (``numpy.bool_`` accepted, ints are not)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"{owner}: {name} must be True or False, got {value!r}")


def check_choice(owner, name, value, choices):
    """``value`` if it is one of ``choices``."""
    try:
        ok = value in choices
    except TypeError:  # unhashable value against a set
        ok = False
    if not ok:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{owner}: {name} must be one of {listed}, got {value!r}")
    return value


def check_seed(owner, value, name="seed"):
    """``None`` or an int (numpy integers accepted)."""
    return check_int(owner, name, value, allow_none=True)


def check_divisible(owner, name, value, divisor, divisor_name=None):
    """``value`` if it is a multiple of ``divisor`` (both already checked ints), e.g. an
    attention width against its number of heads (``divisor_name="num_heads"``) or a
    constant (``divisor_name=None``)."""
    if value % divisor:
        if divisor_name is None:
            raise ValueError(f"{owner}: {name} must be a multiple of {divisor}, got {value!r}")
        raise ValueError(f"{owner}: {name} must be divisible by {divisor_name}, got "
                         f"{name}={value}, {divisor_name}={divisor}")
    return value


def check_token_width(owner, input_name, input_shape, width, width_name, projected,
                      projection_hint, num_heads):
    """The attention width of a transformer head over ``input_shape`` (``[B, H, W, C]`` or
    ``[B, T, C]``, ``C`` known): ``width``, or ``C`` when ``width`` is None; it must equal
    ``C`` unless the head projects its input (``projected``; ``projection_hint`` says how to
    ask for it) and be divisible by ``num_heads``."""
    if len(input_shape) not in (3, 4):
        raise ValueError(f"{owner}: {input_name} must have rank 4 [batch, height, width, "
                         f"channels] or rank 3 [batch, tokens, channels], got shape "
                         f"{tuple(input_shape)}")
    c = input_shape[-1]
    if c is None:
        raise ValueError(f"{owner}: the channel dimension of {input_name} must be known, got "
                         f"shape {tuple(input_shape)}")
    d = c if width is None else width
    if not projected and d != c:
        raise ValueError(f"{owner}: {width_name}={d} differs from the channels of "
                         f"{input_name} ({c}): pass {projection_hint} or {width_name}=None")
    check_divisible(owner, f"{width_name} (None: the channels of {input_name})", d, num_heads,
                    "num_heads")
    return int(d)


def check_float_array(owner, name, value, ndim):
    """A finite, non-empty float32 numpy array of rank ``ndim`` (from anything array-like:
    lists, numpy arrays, TensorFlow or JAX tensors)."""
    try:
        a = np.asarray(value, dtype="float32")
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: {name} must be a float array, got {type(value).__name__}") \
            from None
    if a.ndim != ndim or 0 in a.shape:
        raise ValueError(f"{owner}: {name} must be a non-empty rank-{ndim} array, got shape "
                         f"{a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{owner}: {name} has non-finite entries")
    return a


def check_str(owner, name, value, allow_none=False):
    """A non-empty string."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        _fail(owner, name, "a non-empty string", value, allow_none)
    return value
