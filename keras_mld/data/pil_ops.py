"""The PIL image operations of the ``randaugment`` package, as TensorFlow ops on uint8 images.

The papers' training code (ML-Decoder, Ridnik et al., arXiv:2111.12933; ASL, Ben-Baruch et
al., arXiv:2009.14119; Query2Label, Liu et al., arXiv:2107.10834; deep-object-reid's AAM,
Prokofiev & Sovrasov, arXiv:2209.06585) augments with the PyPI package ``randaugment``
1.0.2, whose operations are Pillow's ``ImageOps`` / ``ImageEnhance`` / ``Image.transform``.
Each function here takes a uint8 ``[H, W, 3]`` tensor and explicit parameters and returns
what Pillow returns for the same image and parameters:

- pixel-wise (:func:`invert`, :func:`posterize`, :func:`solarize`, :func:`autocontrast`,
  :func:`equalize`, :func:`color`, :func:`contrast`, :func:`brightness`,
  :func:`sharpness`): bit-exact. The enhancers blend ``degenerate + f * (image -
  degenerate)`` in float32 and truncate, as Pillow's ``ImagingBlend``; grey is ITU-R 601
  in 16-bit fixed point (``(19595 R + 38470 G + 7471 B + 2**15) >> 16``); the SMOOTH filter
  of :func:`sharpness` sums the 3x3 kernel ``[1 1 1; 1 5 1; 1 1 1] / 13`` row by row in
  float32 with +0.5 rounding and keeps the one-pixel border, as ``ImagingFilter3x3``.
- geometric (:func:`affine_nearest` for translate, :func:`affine_nearest_fixed` for
  rotate, :func:`shear_x` /
  :func:`shear_y` bicubic): Pillow's inverse affine map evaluated at pixel centres
  (``x + 0.5``), samples outside ``[0, W) x [0, H)`` take the fill colour; nearest takes
  ``floor``, bicubic is Pillow's transform kernel (cubic convolution with ``a = -1`` in
  Pillow's own float64 Horner order, edge rows / columns clamped, result clipped and
  truncated). Pillow's nearest rotation runs in 16.16 fixed point, and so does ours.

Hand-written because neither ``tf.image`` nor Keras' layers reproduce these conventions
(Keras' RandAugment uses other ranges, bilinear sampling and a different grey). TensorFlow
only (tf.data): graph mode, any image size, no Python per image.
"""
import math

import numpy as np
import tensorflow as tf

_SMOOTH_EDGE = float(np.float32(1.0) / np.float32(13.0))  # Pillow: kernel / scale in float32
_SMOOTH_CENTRE = float(np.float32(5.0) / np.float32(13.0))


def invert(image):
    """``ImageOps.invert``: ``255 - x``."""
    return tf.constant(255, tf.uint8) - image


def posterize(image, bits):
    """``ImageOps.posterize(image, bits)``: keeps the ``bits`` high bits of each value."""
    shift = tf.cast(8 - tf.cast(bits, tf.int32), tf.uint8)
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image, threshold):
    """``ImageOps.solarize(image, threshold)``: values ``>= threshold`` become ``255 - x``
    (for an integer ``x``, ``x < t`` is ``x < ceil(t)``)."""
    below = tf.cast(image, tf.int32) < tf.cast(tf.math.ceil(tf.cast(threshold, tf.float64)),
                                               tf.int32)
    return tf.where(below, image, invert(image))


def _channel_histograms(image):
    """``[3, 256]`` int64 histograms, one per channel (one ``bincount`` of value + 256 c)."""
    values = tf.cast(tf.reshape(image, [-1, 3]), tf.int32) + tf.constant([0, 256, 512])
    counts = tf.math.bincount(tf.reshape(values, [-1]), minlength=768, maxlength=768,
                              dtype=tf.int64)
    return tf.reshape(counts, [3, 256])


def _apply_luts(image, luts):
    """Maps channel ``c`` of ``image`` through ``luts[c]`` (``[3, 256]`` ints, clipped to
    0..255 as ``Image.point`` does)."""
    luts = tf.reshape(tf.cast(tf.clip_by_value(luts, 0, 255), tf.uint8), [768])
    return tf.gather(luts, tf.cast(image, tf.int32) + tf.constant([0, 256, 512]))


def autocontrast(image):
    """``ImageOps.autocontrast(image)`` (no cutoff): each channel stretched to 0..255."""
    hist = _channel_histograms(image)
    present = hist > 0
    levels = tf.range(256, dtype=tf.int64)
    lo = tf.reduce_min(tf.where(present, levels, 256), axis=1, keepdims=True)
    hi = tf.reduce_max(tf.where(present, levels, -1), axis=1, keepdims=True)
    span = tf.cast(tf.maximum(hi - lo, 1), tf.float64)
    scale = 255.0 / span
    offset = -tf.cast(lo, tf.float64) * scale
    stretched = tf.cast(tf.cast(levels, tf.float64)[None] * scale + offset, tf.int64)  # int()
    stretched = tf.clip_by_value(stretched, 0, 255)
    luts = tf.where(hi <= lo, levels[None], stretched)
    return _apply_luts(image, luts)


def equalize(image):
    """``ImageOps.equalize(image)``: per-channel histogram equalisation, Pillow's LUT
    ``(step // 2 + pixels below level) // step`` with ``step = (N - count of the last
    present level) // 255``."""
    hist = _channel_histograms(image)
    levels = tf.range(256, dtype=tf.int64)
    last = tf.reduce_max(tf.where(hist > 0, levels, -1), axis=1)
    last_count = tf.gather(hist, last, batch_dims=1)
    step = (tf.reduce_sum(hist, axis=1) - last_count) // 255
    n_present = tf.reduce_sum(tf.cast(hist > 0, tf.int64), axis=1)
    below = tf.cumsum(hist, axis=1, exclusive=True)
    safe = tf.maximum(step, 1)[:, None]
    lut = (safe // 2 + below) // safe
    keep = ((n_present <= 1) | (step == 0))[:, None]
    return _apply_luts(image, tf.where(keep, levels[None], lut))


def grayscale(image):
    """``image.convert("L")``: ``(19595 R + 38470 G + 7471 B + 2**15) >> 16``, ``[H, W]``."""
    x = tf.cast(image, tf.int32)
    grey = x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 32768
    return tf.bitwise.right_shift(grey, 16)


def blend(degenerate, image, factor):
    """``Image.blend(degenerate, image, factor)``: ``degenerate + factor * (image -
    degenerate)`` in float32, clipped to 0..255 and truncated (Pillow's ``ImagingBlend``)."""
    d = tf.cast(degenerate, tf.int32)
    diff = tf.cast(tf.cast(image, tf.int32) - d, tf.float32)
    value = tf.cast(d, tf.float32) + tf.cast(factor, tf.float32) * diff
    return tf.cast(tf.clip_by_value(value, 0.0, 255.0), tf.uint8)


def color(image, factor):
    """``ImageEnhance.Color(image).enhance(factor)``: blend with the grey image."""
    grey = tf.repeat(grayscale(image)[..., None], 3, axis=-1)
    return blend(grey, image, factor)


def contrast(image, factor):
    """``ImageEnhance.Contrast(image).enhance(factor)``: blend with the constant
    ``int(mean grey + 0.5)``."""
    grey = tf.cast(grayscale(image), tf.float64)
    mean = tf.cast(tf.reduce_sum(grey) / tf.cast(tf.size(grey), tf.float64) + 0.5, tf.int32)
    return blend(tf.fill(tf.shape(image), mean), image, factor)


def brightness(image, factor):
    """``ImageEnhance.Brightness(image).enhance(factor)``: blend with black."""
    return blend(tf.zeros_like(image), image, factor)


def smooth(image):
    """``image.filter(ImageFilter.SMOOTH)``: the 3x3 kernel ``[1 1 1; 1 5 1; 1 1 1] / 13``
    on the interior (float32, rows summed below / centre / above, +0.5, truncated), the
    one-pixel border copied."""
    def filtered():
        x = tf.cast(image, tf.float32)
        e, c = tf.constant(_SMOOTH_EDGE, tf.float32), tf.constant(_SMOOTH_CENTRE, tf.float32)

        def row(r, centre):  # rows r, columns 1..W-2: (left * k0 + mid * k1) + right * k2
            return (r[:, :-2] * e + r[:, 1:-1] * centre) + r[:, 2:] * e

        total = tf.constant(0.5, tf.float32) + row(x[2:], e)
        total = total + row(x[1:-1], c)
        total = total + row(x[:-2], e)
        inner = tf.cast(tf.clip_by_value(total, 0.0, 255.0), tf.uint8)
        middle = tf.concat([image[1:-1, :1], inner, image[1:-1, -1:]], axis=1)
        return tf.reshape(tf.concat([image[:1], middle, image[-1:]], axis=0), tf.shape(image))

    small = (tf.shape(image)[0] < 3) | (tf.shape(image)[1] < 3)  # Pillow copies these
    return tf.cond(small, lambda: tf.identity(image), filtered)


def sharpness(image, factor):
    """``ImageEnhance.Sharpness(image).enhance(factor)``: blend with :func:`smooth`."""
    return blend(smooth(image), image, factor)


def _source_coords(shape, matrix):
    """Pillow's inverse affine map at pixel centres: ``(x_in, y_in)`` float64 ``[H, W]``."""
    m = [tf.cast(v, tf.float64) for v in matrix]
    ys = tf.cast(tf.range(shape[0]), tf.float64)[:, None] + 0.5
    xs = tf.cast(tf.range(shape[1]), tf.float64)[None, :] + 0.5
    return m[0] * xs + m[1] * ys + m[2], m[3] * xs + m[4] * ys + m[5]


def _inside(shape, xin, yin):
    w, h = tf.cast(shape[1], tf.float64), tf.cast(shape[0], tf.float64)
    return (xin >= 0.0) & (xin < w) & (yin >= 0.0) & (yin < h)


def affine_nearest(image, matrix, fill):
    """``image.transform(size, Image.AFFINE, matrix, Image.NEAREST, fillcolor=fill)``."""
    shape = tf.shape(image)
    xin, yin = _source_coords(shape, matrix)
    inside = _inside(shape, xin, yin)
    xi = tf.clip_by_value(tf.cast(tf.floor(xin), tf.int32), 0, shape[1] - 1)
    yi = tf.clip_by_value(tf.cast(tf.floor(yin), tf.int32), 0, shape[0] - 1)
    sampled = tf.gather(tf.reshape(image, [-1, 3]), yi * shape[1] + xi)
    return tf.where(inside[..., None], sampled, tf.cast(fill, tf.uint8))


def _cubic(v1, v2, v3, v4, d):
    """Pillow's ``BICUBIC`` macro (cubic convolution, ``a = -1``), its own Horner order:
    ``v2 + d (v3 - v1 + d (2 (v1 - v2) + v3 - v4 + d (-v1 + v2 - v3 + v4)))``."""
    p2 = -v1 + v3
    p3 = 2.0 * (v1 - v2) + v3 - v4
    p4 = -v1 + v2 - v3 + v4
    return v2 + d * (p2 + d * (p3 + d * p4))


def _finish(total, inside, fill):
    sampled = tf.cast(tf.clip_by_value(total, 0.0, 255.0), tf.uint8)  # clip, truncate
    return tf.where(inside[..., None], sampled, tf.cast(fill, tf.uint8))


def shear_x(image, shear, fill=128):
    """The package's ShearX: affine ``(1, shear, 0, 0, 1, 0)``, bicubic. Source rows fall
    on pixel centres (``dy = 0``, where Pillow's second pass returns its second row), so
    only the 4 taps along x are computed."""
    shape = tf.shape(image)
    xin, yin = _source_coords(shape, (1.0, shear, 0.0, 0.0, 1.0, 0.0))
    inside = _inside(shape, xin, yin)
    x0 = tf.floor(xin - 0.5)
    dx = (xin - 0.5 - x0)[..., None]
    x0 = tf.cast(x0, tf.int32) - 1
    taps = [tf.cast(tf.gather(image, tf.clip_by_value(x0 + i, 0, shape[1] - 1), axis=1,
                              batch_dims=1), tf.float64) for i in range(4)]
    return _finish(_cubic(*taps, dx), inside, fill)


def shear_y(image, shear, fill=128):
    """The package's ShearY: affine ``(1, 0, 0, shear, 1, 0)``, bicubic: ShearX of the
    transposed image (``dx = 0``: Pillow's first pass returns the column's own pixel)."""
    return tf.transpose(shear_x(tf.transpose(image, [1, 0, 2]), shear, fill), [1, 0, 2])


def translate_x(image, pixels, fill=128):
    """The package's TranslateX: affine ``(1, 0, pixels, 0, 1, 0)``, nearest."""
    return affine_nearest(image, (1.0, 0.0, pixels, 0.0, 1.0, 0.0), fill)


def translate_y(image, pixels, fill=128):
    """The package's TranslateY: affine ``(1, 0, 0, 0, 1, pixels)``, nearest."""
    return affine_nearest(image, (1.0, 0.0, 0.0, 0.0, 1.0, pixels), fill)


def affine_nearest_fixed(image, matrix, fill):
    """Pillow's nearest affine transform for a general matrix (``ImagingTransformAffine``
    on images under 32768 px): 16.16 fixed point, ``a_k -> floor(65536 a_k + 0.5)`` with
    the pixel-centre offsets folded into the translations, source pixel ``coordinate >>
    16``, outside pixels ``fill``."""
    m = [tf.cast(v, tf.float64) for v in matrix]

    def fix(v):
        return tf.cast(tf.floor(v * 65536.0 + 0.5), tf.int64)

    a0, a1, a3, a4 = fix(m[0]), fix(m[1]), fix(m[3]), fix(m[4])
    a2 = fix(m[2] + m[0] * 0.5 + m[1] * 0.5)
    a5 = fix(m[5] + m[3] * 0.5 + m[4] * 0.5)
    shape = tf.shape(image)
    ys = tf.range(tf.cast(shape[0], tf.int64))[:, None]
    xs = tf.range(tf.cast(shape[1], tf.int64))[None, :]
    xi = tf.math.floordiv(a2 + ys * a1 + xs * a0, 65536)
    yi = tf.math.floordiv(a5 + ys * a4 + xs * a3, 65536)
    h, w = tf.cast(shape[0], tf.int64), tf.cast(shape[1], tf.int64)
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    index = tf.clip_by_value(yi, 0, h - 1) * w + tf.clip_by_value(xi, 0, w - 1)
    sampled = tf.gather(tf.reshape(image, [-1, 3]), index)
    return tf.where(inside[..., None], sampled, tf.cast(fill, tf.uint8))


def rotate(image, degrees, fill=128):
    """``image.rotate(degrees)`` (counter-clockwise about the centre, nearest), outside
    pixels ``fill`` (the package composites the RGBA rotation over grey 128). Pillow's
    matrix (cos / sin rounded to 15 decimals) through :func:`affine_nearest_fixed`."""
    angle = -tf.cast(degrees, tf.float64) * (math.pi / 180.0)
    cos = tf.round(tf.cos(angle) * 1e15) / 1e15
    sin = tf.round(tf.sin(angle) * 1e15) / 1e15
    shape = tf.shape(image)
    cx, cy = tf.cast(shape[1], tf.float64) / 2.0, tf.cast(shape[0], tf.float64) / 2.0
    tx = cos * -cx + sin * -cy + cx
    ty = -sin * -cx + cos * -cy + cy
    return affine_nearest_fixed(image, (cos, sin, tx, -sin, cos, ty), fill)


def fill_box(image, x0, y0, x1, y1, colour):
    """Fills columns ``[x0, x1)`` and rows ``[y0, y1)`` (clipped to the image) with
    ``colour`` (3 values)."""
    shape = tf.shape(image)
    xs = tf.range(shape[1])[None, :]
    ys = tf.range(shape[0])[:, None]
    box = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    colour = tf.reshape(tf.cast(colour, tf.uint8), [1, 1, 3])
    return tf.where(box[..., None], colour, image)
