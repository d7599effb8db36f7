"""TResNet backbones in Keras (keras.ops only; TensorFlow and JAX).

Ridnik, Lawen, Noy, Ben Baruch, Sharir, Friedman, "TResNet: High Performance
GPU-Dedicated Architecture", arXiv:2003.13630 (WACV 2021), section 2 ("TResNet Design"),
its refinements:

* SpaceToDepth stem: a block-4 space-to-depth rearrangement, then one 3x3
  convolution (``SpaceToDepth``);
* anti-alias downsampling: every stride-2 3x3 convolution is a stride-1
  convolution followed by a fixed 3x3 binomial blur with stride 2 (``BlurPool2D``;
  the filter is a constant, not a weight);
* in-place activated batch norm (Inplace-ABN): batch norm + leaky ReLU (slope 1e-2 in
  the stem, 1e-3 in the blocks; the residual branch ends without activation);
* block selection and SE layers: BasicBlock in stages 1-2, Bottleneck in stages 3-4
  (``v2=True``: Bottleneck everywhere), squeeze-and-excitation in stages 1-3; a stride-2
  shortcut is 2x2 average pooling (``ceil_mode``) followed by a 1x1 convolution.

Input: RGB scaled to [0, 1] (x / 255, no mean / std), as in the official code.
Layer names follow timm's parameter names with ``.`` replaced by ``_``
(``body_layer3_0_conv2_bn`` holds ``body.layer3.0.conv2.bn.*``), which is what
:mod:`keras_mld.models.tresnet.convert` relies on.

Variants (``TRESNET_VARIANTS``): ``tresnet_m``, ``tresnet_l`` and ``tresnet_xl`` as the
official ML-Decoder repository defines them (Alibaba-MIIL/ML_Decoder,
``src_files/models/tresnet/tresnet.py``: its L and XL use Bottleneck blocks in every
stage, i.e. timm's ``v2`` layout; its ``tresnet_l`` is timm's ``tresnet_v2_l``), and
timm's own definitions ``tresnet_v2_l``, ``tresnet_l_timm`` ([4, 5, 18, 3], width 1.2)
and ``tresnet_xl_timm`` ([4, 5, 24, 3], width 1.3).
"""
import numpy as np

import keras
from keras import ops

from keras_mld.validation import check_choice, check_int, check_number

STEM_SLOPE = 1e-2
BLOCK_SLOPE = 1e-3
BN_EPSILON = 1e-5  # PyTorch's BatchNorm2d / InPlaceABN default

# name -> (layers, width_factor, v2)
TRESNET_VARIANTS = {
    "tresnet_m": ((3, 4, 11, 3), 1.0, False),
    "tresnet_l": ((3, 4, 23, 3), 1.0, True),     # official ML-Decoder TResnetL == timm tresnet_v2_l
    "tresnet_xl": ((3, 8, 34, 5), 1.0, True),    # official ML-Decoder TResnetXL
    "tresnet_v2_l": ((3, 4, 23, 3), 1.0, True),  # timm
    "tresnet_l_timm": ((4, 5, 18, 3), 1.2, False),   # timm tresnet_l
    "tresnet_xl_timm": ((4, 5, 24, 3), 1.3, False),  # timm tresnet_xl
}


@keras.saving.register_keras_serializable(package="keras_mld")
class SpaceToDepth(keras.layers.Layer):
    """SpaceToDepth stem of TResNet (Ridnik et al., "TResNet: High Performance
    GPU-Dedicated Architecture", arXiv:2003.13630, section 2, "SpaceToDepth stem").

    ``[B, H, W, C] -> [B, H/b, W/b, b*b*C]`` with output channel
    ``(i * b + j) * C + c`` holding ``x[h*b + i, w*b + j, c]`` (the channel order of
    the official PyTorch code and of ``tf.nn.space_to_depth``). H and W must be
    multiples of ``block_size`` (default 4).
    """

    def __init__(self, block_size=4, **kwargs):
        super().__init__(**kwargs)
        self.block_size = check_int("SpaceToDepth", "block_size", block_size, minimum=1)

    def _check(self, shape):
        if len(shape) != 4 or shape[-1] is None:
            raise ValueError(f"SpaceToDepth: inputs must be [batch, height, width, channels] with "
                             f"known channels, got shape {tuple(shape)}")
        for axis in (1, 2):
            if shape[axis] is not None and shape[axis] % self.block_size:
                raise ValueError(f"SpaceToDepth: height and width must be multiples of "
                                 f"block_size={self.block_size}, got shape {tuple(shape)}")

    def call(self, x):
        self._check(x.shape)
        b, c = self.block_size, x.shape[-1]
        shape = ops.shape(x)
        h, w = shape[1] // b, shape[2] // b
        x = ops.reshape(x, (-1, h, b, w, b, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, h, w, b * b * c))

    def compute_output_shape(self, input_shape):
        self._check(input_shape)
        b = self.block_size
        h, w = (None if s is None else s // b for s in input_shape[1:3])
        return (input_shape[0], h, w, input_shape[-1] * b * b)

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


@keras.saving.register_keras_serializable(package="keras_mld")
class BlurPool2D(keras.layers.Layer):
    """Anti-aliased stride-2 downsampling of TResNet (Ridnik et al., "TResNet: High
    Performance GPU-Dedicated Architecture", arXiv:2003.13630, section 2, "Anti-Alias
    Downsampling", after
    Zhang, "Making Convolutional Networks Shift-Invariant Again", arXiv:1904.11486).

    Reflect-pads H and W by 1, then convolves every channel with the fixed
    binomial filter ``[1, 2, 1]^T [1, 2, 1] / 16`` at stride 2:
    ``[B, H, W, C] -> [B, floor((H - 1) / 2) + 1, ..., C]``. The filter is a constant
    computed from the configuration, not a weight (nothing to train or load).
    """

    def __init__(self, filt_size=3, stride=2, **kwargs):
        super().__init__(**kwargs)
        # 3 is the TResNet filter, the only one implemented
        self.filt_size = check_choice("BlurPool2D", "filt_size",
                                      check_int("BlurPool2D", "filt_size", filt_size), (3,))
        self.stride = check_int("BlurPool2D", "stride", stride, minimum=1)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(f"BlurPool2D: inputs must be [batch, height, width, channels] with "
                             f"known channels, got shape {tuple(input_shape)}")
        a = np.array([1.0, 2.0, 1.0])
        filt = np.outer(a, a) / np.sum(np.outer(a, a))
        self._filter = np.tile(filt[:, :, None, None], (1, 1, input_shape[-1], 1)).astype("float32")

    def call(self, x):
        x = ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        kernel = ops.cast(ops.convert_to_tensor(self._filter), x.dtype)
        return ops.depthwise_conv(x, kernel, strides=self.stride, padding="valid")

    def compute_output_shape(self, input_shape):
        def out(s):
            return None if s is None else (s + 2 - 3) // self.stride + 1
        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "filt_size": self.filt_size, "stride": self.stride}


def _conv_bn(x, filters, kernel_size, prefix, slope=None):
    """Conv (stride 1, 'same', no bias) + BN (+ leaky ReLU with ``slope``): InPlaceABN."""
    x = keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=False,
                            name=f"{prefix}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=f"{prefix}_bn")(x)
    if slope is not None:
        x = keras.layers.LeakyReLU(negative_slope=slope, name=f"{prefix}_act")(x)
    return x


def _se(x, channels, reduced, prefix):
    """Squeeze-and-excitation (TResNet section 2, "SE layers"): GAP -> 1x1 -> ReLU -> 1x1 -> sigmoid."""
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}_pool")(x)
    s = keras.layers.Conv2D(reduced, 1, name=f"{prefix}_fc1")(s)
    s = keras.layers.ReLU(name=f"{prefix}_relu")(s)
    s = keras.layers.Conv2D(channels, 1, activation="sigmoid", name=f"{prefix}_fc2")(s)
    return keras.layers.Multiply(name=f"{prefix}_scale")([x, s])


def _block(x, planes, stride, bottleneck, use_se, downsample, prefix):
    shortcut = x
    if downsample:
        if stride == 2:  # AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
            # "same" pads the odd edge and averages over the valid pixels only: ceil_mode
            shortcut = keras.layers.AveragePooling2D(2, 2, padding="same",
                                                     name=f"{prefix}_downsample_0_pool")(shortcut)
        out_ch = planes * (4 if bottleneck else 1)
        index = 1 if stride == 2 else 0  # the PyTorch Sequential index of the conv
        shortcut = _conv_bn(shortcut, out_ch, 1, f"{prefix}_downsample_{index}")
    if bottleneck:
        y = _conv_bn(x, planes, 1, f"{prefix}_conv1", BLOCK_SLOPE)
        y = _conv_bn(y, planes, 3, f"{prefix}_conv2", BLOCK_SLOPE)
        if stride == 2:
            y = BlurPool2D(name=f"{prefix}_conv2_aa")(y)
        if use_se:
            y = _se(y, planes, max(planes * 4 // 8, 64), f"{prefix}_se")
        y = _conv_bn(y, planes * 4, 1, f"{prefix}_conv3")
    else:
        y = _conv_bn(x, planes, 3, f"{prefix}_conv1", BLOCK_SLOPE)
        if stride == 2:
            y = BlurPool2D(name=f"{prefix}_conv1_aa")(y)
        y = _conv_bn(y, planes, 3, f"{prefix}_conv2")
        if use_se:
            y = _se(y, planes, max(planes // 4, 64), f"{prefix}_se")
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{prefix}_out")(y)


def _check_layers(layers):
    ok = (isinstance(layers, (list, tuple)) and len(layers) == 4
          and all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
                  for n in layers))
    if not ok:
        raise ValueError(f"layers: expected 4 ints >= 1 (blocks per stage), got {layers!r}")
    return tuple(int(n) for n in layers)


def tresnet(layers=(3, 4, 11, 3), width_factor=1.0, v2=False, include_top=False,
            input_shape=(224, 224, 3), weights=None, num_classes=1000, name="tresnet"):
    """Builds a TResNet (Ridnik et al., arXiv:2003.13630, section 2) as a functional model.

    Args:
        layers: blocks per stage (4 ints), e.g. ``(3, 4, 11, 3)`` for TResNet-M.
        width_factor: stem width ``int(64 * width_factor)``; stage widths are 1x, 2x, 4x, 8x.
        v2: timm's ``v2``: Bottleneck blocks in stages 1-2 too and widths rounded down to a
            multiple of 8 (the official ML-Decoder TResNet-L / XL layout).
        include_top: if True, global average pooling and a Dense ``head_fc`` with
            ``num_classes`` logits; otherwise the output is the ``[B, H/32, W/32, C]`` map.
        input_shape: ``(H, W, 3)`` with H, W multiples of 4 (RGB in [0, 1]).
        weights: ``None`` only (random init); converted timm / official weights are
            loaded by :mod:`keras_mld.models.tresnet.convert` (or from a ``.weights.h5`` by
            :func:`keras_mld.models.builder.create_backbone`).
    """
    if weights is not None:
        raise ValueError("weights: TResNet has no Keras download; use weights=None and "
                         "keras_mld.models.tresnet.convert.load_weights(model, state_dict) for "
                         f"timm / official PyTorch weights, got {weights!r}")
    layers = _check_layers(layers)
    width_factor = check_number("tresnet", "width_factor", width_factor, low=0, low_open=True)
    if not isinstance(v2, bool):
        raise ValueError(f"v2: expected True or False, got {v2!r}")
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[2] != 3 or any(s is not None and s % 4 for s in shape[:2]):
        raise ValueError(f"input_shape: expected (H, W, 3) with H and W multiples of 4, got {input_shape!r}")
    planes = int(64 * width_factor)
    if v2:
        planes = planes // 8 * 8
    if planes < 1:
        raise ValueError(f"width_factor: {width_factor} gives {planes} stem channels (need >= 1)")

    inputs = keras.Input(shape=shape, name="pixels")
    x = SpaceToDepth(4, name="body_s2d")(inputs)
    x = _conv_bn(x, planes, 3, "body_conv1", STEM_SLOPE)
    in_ch = planes
    for stage, n_blocks in enumerate(layers):
        bottleneck = v2 or stage >= 2
        stage_planes = planes * 2 ** stage
        stride = 1 if stage == 0 else 2
        out_ch = stage_planes * (4 if bottleneck else 1)
        for i in range(n_blocks):
            s = stride if i == 0 else 1
            downsample = i == 0 and (s != 1 or in_ch != out_ch)
            x = _block(x, stage_planes, s, bottleneck, stage < 3, downsample,
                       f"body_layer{stage + 1}_{i}")
            in_ch = out_ch
    if include_top:
        num_classes = check_int("tresnet", "num_classes", num_classes, minimum=1)
        x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
        x = keras.layers.Dense(num_classes, name="head_fc")(x)
    return keras.Model(inputs, x, name=name)


def tresnet_variant(variant, **kwargs):
    """Builds a named variant from ``TRESNET_VARIANTS`` (other arguments as :func:`tresnet`)."""
    if variant not in TRESNET_VARIANTS:
        raise ValueError(f"variant: expected one of {sorted(TRESNET_VARIANTS)}, got {variant!r}")
    layers, width, v2 = TRESNET_VARIANTS[variant]
    kwargs.setdefault("name", variant)
    return tresnet(layers=layers, width_factor=width, v2=v2, **kwargs)
