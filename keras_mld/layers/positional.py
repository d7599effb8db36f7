"""Sine 2-D positional encoding (DETR, used by Query2Label)."""
import math

import keras
import numpy as np
from keras import ops

from keras_mld.validation import check_bool, check_divisible, check_int, check_number


@keras.saving.register_keras_serializable(package="keras_mld")
class SinePositionalEncoding2D(keras.layers.Layer):
    """Fixed sine/cosine 2-D positional encoding of a feature map.

    The "sine" position embedding of DETR (Carion et al., "End-to-End Object Detection
    with Transformers", arXiv:2005.12872, and its official ``PositionEmbeddingSine``),
    which Query2Label (Liu et al., arXiv:2107.10834; official
    ``lib/models/position_encoding.py``) adds to the queries and keys of its encoder and to
    the keys of its cross-attention. With ``F = num_channels / 2`` channels per axis, no
    padding mask, and 1-based row index ``y`` and column index ``x`` of an ``H x W`` map:

        y' = y / (H + eps) * scale,   x' = x / (W + eps) * scale   (normalize=True)
        a_k(p) = p / temperature ** (2k / F),   k = 0 .. F/2 - 1   (float32, as official)
        pe_y = [sin a_0(y'), cos a_0(y'), sin a_1(y'), cos a_1(y'), ...]   (F values)
        pe_x = the same for x'
        pe[y, x] = concat(pe_y, pe_x)          (the first half encodes y, the second x)

    Defaults are DETR's: ``normalize=True``, ``scale=2*pi``, ``temperature=10000``,
    ``eps=1e-6``; Query2Label builds it with ``normalize=True`` (its ``build_position_encoding``)
    and normalises by the height and width of its fixed training map, ``img_size // 32``,
    which is the map it runs on (it cannot run any other size); here ``H`` and ``W`` are
    those of each input. With ``normalize=False`` the raw indices 1..H, 1..W are used and
    ``scale`` is ignored.

    Input: a feature map ``[B, H, W, C]`` (only its shape is read). Output:
    ``[B, H, W, num_channels]`` (``num_channels`` defaults to ``C``), in the layer's
    compute dtype. ``num_channels`` must be a multiple of 4 (sin/cos pairs per axis).
    The layer has no weights.
    """

    def __init__(self, num_channels=None, temperature=10000.0, normalize=True,
                 scale=2.0 * math.pi, eps=1e-6, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        # sin/cos pairs per axis, half the channels per axis: a multiple of 4
        self.num_channels = check_int(name, "num_channels", num_channels, minimum=4,
                                      allow_none=True)
        if self.num_channels is not None:
            check_divisible(name, "num_channels", self.num_channels, 4)
        self.temperature = check_number(name, "temperature", temperature, low=0.0,
                                        low_open=True)
        self.normalize = check_bool(name, "normalize", normalize)
        self.scale = check_number(name, "scale", scale, low=0.0, low_open=True)
        self.eps = check_number(name, "eps", eps, low=0.0)

    def _channels(self, input_shape):
        name = type(self).__name__
        if len(input_shape) != 4:
            raise ValueError(f"{name}: inputs must have rank 4 [batch, height, width, channels], "
                             f"got shape {tuple(input_shape)}")
        channels = self.num_channels if self.num_channels is not None else input_shape[-1]
        if channels is None or channels < 4 or channels % 4:
            raise ValueError(f"{name}: the encoding width (num_channels, or the input channels "
                             f"when num_channels is None) must be a positive multiple of 4, "
                             f"got {channels!r}")
        return int(channels)

    def build(self, input_shape):
        self._channels(input_shape)
        self.built = True

    def _axis_encoding(self, length, half):
        # length: int or scalar tensor; returns [length, half] float32
        pos = ops.cast(ops.arange(1, length + 1), "float32")
        if self.normalize:
            pos = pos / (ops.cast(length, "float32") + self.eps) * self.scale
        # the official dim_t, float32: temperature ** (2 * (i // 2) / F) at the even i = 2k
        k = np.arange(half // 2, dtype=np.float32)
        dim_t = np.float32(self.temperature) ** (np.float32(2.0) * k / np.float32(half))
        angles = pos[:, None] / ops.convert_to_tensor(dim_t.astype(np.float32))[None, :]
        enc = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)  # [L, half/2, 2]
        return ops.reshape(enc, (-1, half))

    def call(self, inputs):
        channels = self._channels(inputs.shape)
        half = channels // 2
        shape = ops.shape(inputs)
        height, width = shape[1], shape[2]
        pe_y = self._axis_encoding(height, half)  # [H, half]
        pe_x = self._axis_encoding(width, half)  # [W, half]
        pe_y = ops.broadcast_to(pe_y[:, None, :], (height, width, half))
        pe_x = ops.broadcast_to(pe_x[None, :, :], (height, width, half))
        pe = ops.concatenate([pe_y, pe_x], axis=-1)[None]
        pe = ops.broadcast_to(pe, (shape[0], height, width, channels))
        return ops.cast(pe, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:3]) + (self._channels(input_shape),)

    def get_config(self):
        config = super().get_config()
        config.update(num_channels=self.num_channels, temperature=self.temperature,
                      normalize=self.normalize, scale=self.scale, eps=self.eps)
        return config
