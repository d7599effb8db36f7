"""The ``randaugment`` package's policy and ML-Decoder's CutoutPIL, seeded, inside tf.data.

**Policy** (PyPI ``randaugment`` 1.0.2, the ``RandAugment`` transform that ML-Decoder
(Ridnik et al., arXiv:2111.12933), ASL (Ben-Baruch et al., arXiv:2009.14119), Query2Label
(Liu et al., arXiv:2107.10834) and deep-object-reid (Prokofiev & Sovrasov,
arXiv:2209.06585) import): the list of all pairs of sub-operations ``(0.5, op, m)`` for the
15 operations of :data:`OPS` and magnitudes ``m = 1..9`` is drawn from uniformly, i.e. two
independent uniform draws of (operation, magnitude); each sub-operation is then applied with
probability 0.5. Magnitude ``m`` indexes the package's 10-entry tables (:data:`MAGNITUDES`);
the enhancers use ``1 + magnitude * sign`` and shear / translate ``magnitude * sign`` with a
uniform random sign, rotate always turns counter-clockwise, Cutout fills a box of
``magnitude`` pixels with (125, 122, 113).

**CutoutPIL** (ML-Decoder's training code, also deep-object-reid's ``Cutout``): a box of
``int(factor * side + 0.5)`` pixels centred at a uniform random pixel, clipped to the image,
filled with one uniform random RGB colour; drawn as released, i.e. Pillow's inclusive
rectangle ``[x1, y1, x2, y2]`` whose horizontal extent is computed from the image height and
vertical extent from the width (the two coincide on the square images the papers train on).

Every function is a pure function of ``(image, seed)``: randomness comes from TensorFlow's
stateless ops on an int64 ``[2]`` seed (``stateless_fold_in`` per draw). Images are uint8
``[H, W, 3]``, any size.
"""
import numpy as np
import tensorflow as tf

import keras_mld.data.pil_ops as pil_ops
from keras_mld.validation import check_number

OPS = ("Invert", "Cutout", "Sharpness", "AutoContrast", "Posterize", "ShearX", "TranslateX",
       "TranslateY", "ShearY", "Rotate", "Equalize", "Contrast", "Color", "Solarize",
       "Brightness")
_ENHANCE = np.linspace(0.0, 0.9, 10)
MAGNITUDES = {  # the package's tables, indexed by the magnitude 0..9 (the policy uses 1..9)
    "ShearX": np.linspace(0, 0.3, 10), "ShearY": np.linspace(0, 0.3, 10),
    "TranslateX": np.linspace(0, 150 / 331, 10), "TranslateY": np.linspace(0, 150 / 331, 10),
    "Rotate": np.linspace(0, 30, 10), "Color": _ENHANCE, "Contrast": _ENHANCE,
    "Sharpness": _ENHANCE, "Brightness": _ENHANCE,
    "Posterize": np.round(np.linspace(8, 4, 10), 0).astype(int),
    "Solarize": np.linspace(256, 0, 10),
    "AutoContrast": np.zeros(10), "Equalize": np.zeros(10), "Invert": np.zeros(10),
    "Cutout": np.round(np.linspace(0, 20, 10), 0).astype(int),
}
NUM_OPS = 2
APPLY_PROBABILITY = 0.5
CUTOUT_COLOUR = (125, 122, 113)


def _fold(seed, k):
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), k)


def _randint(seed, k, maxval, minval=0, shape=()):
    """Uniform int32 in ``[minval, maxval)`` from draw ``k`` of ``seed``."""
    return tf.random.stateless_uniform(shape, _fold(seed, k), minval=minval, maxval=maxval,
                                       dtype=tf.int32)


def sample_policy(seed):
    """The policy's random choices for one image: a dict of ``[2]`` tensors ``op``
    (index into :data:`OPS`), ``magnitude`` (1..9), ``apply`` (bool, probability 0.5),
    ``sign`` (+-1) and ``[2, 2]`` ``centre`` (uniform floats in [0, 1) for Cutout's box)."""
    return {
        "op": _randint(seed, 1, len(OPS), shape=(NUM_OPS,)),
        "magnitude": _randint(seed, 2, 10, minval=1, shape=(NUM_OPS,)),
        "apply": tf.random.stateless_uniform((NUM_OPS,), _fold(seed, 3)) < APPLY_PROBABILITY,
        "sign": tf.cast(_randint(seed, 4, 2, shape=(NUM_OPS,)) * 2 - 1, tf.float64),
        "centre": tf.random.stateless_uniform((NUM_OPS, 2), _fold(seed, 5), dtype=tf.float64),
    }


def _package_cutout(image, size, centre):
    """The package's Cutout: ``size`` pixels square (``size // 2`` each side, clipped)
    around a uniform pixel, filled with (125, 122, 113)."""
    shape = tf.shape(image)
    cx = tf.cast(tf.floor(centre[0] * tf.cast(shape[1], tf.float64)), tf.int32)
    cy = tf.cast(tf.floor(centre[1] * tf.cast(shape[0], tf.float64)), tf.int32)
    half = tf.cast(size, tf.int32) // 2
    return pil_ops.fill_box(image, tf.maximum(0, cx - half), tf.maximum(0, cy - half),
                            cx + half, cy + half, CUTOUT_COLOUR)


def apply_op(image, op, magnitude, sign=1.0, centre=(0.5, 0.5)):
    """Sub-operation ``OPS[op]`` at magnitude index ``magnitude`` (0..9) with the random
    ``sign`` (+-1) and Cutout ``centre`` (fractions of width, height) fixed: what the
    package's ``SubPolicy`` operation does for the same draws. ``op`` may be a tensor."""
    image = tf.convert_to_tensor(image, tf.uint8)
    magnitude = tf.cast(magnitude, tf.int32)
    sign = tf.cast(sign, tf.float64)
    centre = tf.cast(centre, tf.float64)
    shape = tf.shape(image)
    width, height = tf.cast(shape[1], tf.float64), tf.cast(shape[0], tf.float64)

    def table(name):
        return tf.gather(tf.constant(MAGNITUDES[name], tf.float64), magnitude)

    def enhance(name):
        return 1.0 + table(name) * sign

    branches = {
        "Invert": lambda: pil_ops.invert(image),
        "Cutout": lambda: _package_cutout(image, table("Cutout"), centre),
        "Sharpness": lambda: pil_ops.sharpness(image, enhance("Sharpness")),
        "AutoContrast": lambda: pil_ops.autocontrast(image),
        "Posterize": lambda: pil_ops.posterize(image, table("Posterize")),
        "ShearX": lambda: pil_ops.shear_x(image, table("ShearX") * sign),
        "TranslateX": lambda: pil_ops.translate_x(image, table("TranslateX") * width * sign),
        "TranslateY": lambda: pil_ops.translate_y(image, table("TranslateY") * height * sign),
        "ShearY": lambda: pil_ops.shear_y(image, table("ShearY") * sign),
        "Rotate": lambda: pil_ops.rotate(image, table("Rotate")),
        "Equalize": lambda: pil_ops.equalize(image),
        "Contrast": lambda: pil_ops.contrast(image, enhance("Contrast")),
        "Color": lambda: pil_ops.color(image, enhance("Color")),
        "Solarize": lambda: pil_ops.solarize(image, table("Solarize")),
        "Brightness": lambda: pil_ops.brightness(image, enhance("Brightness")),
    }
    if isinstance(op, (int, np.integer)):
        return branches[OPS[op]]()
    out = tf.switch_case(tf.cast(op, tf.int32), [branches[name] for name in OPS])
    return tf.ensure_shape(out, image.shape)


def randaugment(image, seed):
    """The package's ``RandAugment()`` on one uint8 image, drawn from ``seed`` (int64
    ``[2]``): two sub-operations from :func:`sample_policy`, each applied with probability
    0.5.

    Examples:
        >>> import tensorflow as tf
        >>> from keras_mld.data.randaugment_policy import apply_op, randaugment
        >>> image = tf.fill([4, 6, 3], tf.constant(100, tf.uint8))
        >>> int(apply_op(image, 0, 5)[0, 0, 0])       # Invert: 255 - 100
        155
        >>> out = randaugment(image, tf.constant([0, 1], tf.int64))
        >>> out.shape, out.dtype.name                   # same size, uint8
        (TensorShape([4, 6, 3]), 'uint8')
    """
    image = tf.convert_to_tensor(image, tf.uint8)
    draws = sample_policy(seed)

    def step(k, x):  # one loop body: the 15-branch graph is built once, not per step
        x = tf.cond(draws["apply"][k],
                    lambda: apply_op(x, draws["op"][k], draws["magnitude"][k],
                                     draws["sign"][k], draws["centre"][k]),
                    lambda: tf.identity(x))
        return k + 1, x

    _, image = tf.while_loop(lambda k, x: k < NUM_OPS, step, (tf.constant(0), image))
    return image


def cutout_pil_box(height, width, factor, y_c, x_c):
    """CutoutPIL's inclusive box ``(x1, y1, x2, y2)`` as released: ``y_c`` uniform in
    ``[0, width)``, ``x_c`` in ``[0, height)``, half-extents ``int(factor * side + 0.5)
    // 2``."""
    h, w = tf.cast(width, tf.int32), tf.cast(height, tf.int32)  # the code's h, w = size
    h_cut = tf.cast(factor * tf.cast(h, tf.float64) + 0.5, tf.int32)
    w_cut = tf.cast(factor * tf.cast(w, tf.float64) + 0.5, tf.int32)
    y1 = tf.clip_by_value(y_c - h_cut // 2, 0, h)
    y2 = tf.clip_by_value(y_c + h_cut // 2, 0, h)
    x1 = tf.clip_by_value(x_c - w_cut // 2, 0, w)
    x2 = tf.clip_by_value(x_c + w_cut // 2, 0, w)
    return x1, y1, x2, y2


def cutout_pil_apply(image, factor, y_c, x_c, colour):
    """CutoutPIL with its random draws given: the box of :func:`cutout_pil_box` filled
    with ``colour``."""
    shape = tf.shape(image)
    x1, y1, x2, y2 = cutout_pil_box(shape[0], shape[1], factor, y_c, x_c)
    return pil_ops.fill_box(image, x1, y1, x2 + 1, y2 + 1, colour)


def sample_cutout_pil(image_shape, seed):
    """CutoutPIL's draws for an image of ``image_shape`` ``[H, W, 3]``: ``(y_c, x_c,
    colour)``, ``y_c`` uniform in ``[0, W)``, ``x_c`` in ``[0, H)``, colour uniform
    ``0..255`` per channel."""
    y_c = _randint(seed, 11, image_shape[1])
    x_c = _randint(seed, 12, image_shape[0])
    colour = _randint(seed, 13, 256, shape=(3,))
    return y_c, x_c, colour


def cutout_pil(image, seed, factor=0.5, probability=1.0):
    """ML-Decoder's ``CutoutPIL(cutout_factor=factor)`` (``probability`` 1) or
    deep-object-reid's ``Cutout(cutout_factor=factor, fill_color="random", p=probability)``
    on one uint8 image, drawn from ``seed``."""
    factor = check_number("cutout_pil", "factor", factor, low=0.0, high=1.0)
    probability = check_number("cutout_pil", "probability", probability, low=0.0, high=1.0)
    image = tf.convert_to_tensor(image, tf.uint8)
    y_c, x_c, colour = sample_cutout_pil(tf.shape(image), seed)
    if probability >= 1.0:
        return cutout_pil_apply(image, factor, y_c, x_c, colour)
    happens = tf.random.stateless_uniform((), _fold(seed, 14)) <= probability
    return tf.cond(happens, lambda: cutout_pil_apply(image, factor, y_c, x_c, colour),
                   lambda: tf.identity(image))
