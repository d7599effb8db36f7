"""The papers' training augmentations, in the order each paper's released code runs them.

Each pipeline maps a uint8 ``[H, W, 3]`` image, already resized to the training size by
:func:`keras_mld.data.pipeline.make_dataset` (the papers' first step, ``Resize``), and an
int64 ``[2]`` seed to a uint8 image of the same size. Normalisation (the papers' final
``ToTensor`` / ``Normalize``) is the model's own preprocessing, not part of these.

- ``"mldecoder"``: ML-Decoder (Ridnik et al., arXiv:2111.12933) and ASL (Ben-Baruch et al.,
  arXiv:2009.14119): CutoutPIL(0.5), always -> RandAugment; no flip.
- ``"aam"``: deep-object-reid (Prokofiev & Sovrasov, arXiv:2209.06585, the ``aam_*``
  recipes): RandAugment -> Cutout (probability 0.5, factor 0.4, random colour: CutoutPIL's
  box) -> horizontal flip (probability 0.5).
- ``"query2label"``: Query2Label (Liu et al., arXiv:2107.10834): RandAugment only (its
  cutout is off by default and, with its default hole length -1, draws no box).
- ``"ctran"``: C-Tran (Lanchantin et al., arXiv:2011.14027): from the image resized to
  640 a square random crop of side 640, 576, 512, 384 or 320 (chosen uniformly, at a
  uniform position), resized back (bilinear, antialiased), then a horizontal flip
  (probability 0.5). At a training size ``S`` other than 640 the crop sides scale by
  ``S / 640``; the paper's final 576 px is the training size of its recipe.

RandAugment is the ``randaugment`` package's policy and CutoutPIL ML-Decoder's
(:mod:`keras_mld.data.randaugment_policy`).
"""
import tensorflow as tf

from keras_mld.data.randaugment_policy import cutout_pil, randaugment

_CTRAN_CROPS = (640, 576, 512, 384, 320)


def _fold(seed, k):
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), k)


def _flip(image, seed):
    """Horizontal flip with probability 0.5 (``RandomHorizontalFlip``)."""
    return tf.image.stateless_random_flip_left_right(image, _fold(seed, 103))


def mldecoder(image, seed):
    """ML-Decoder / ASL: CutoutPIL(0.5) -> RandAugment."""
    image = cutout_pil(image, _fold(seed, 101), factor=0.5)
    return randaugment(image, _fold(seed, 102))


def aam(image, seed):
    """deep-object-reid: RandAugment -> Cutout(p 0.5, factor 0.4, random colour) -> flip."""
    image = randaugment(image, _fold(seed, 102))
    image = cutout_pil(image, _fold(seed, 101), factor=0.4, probability=0.5)
    return _flip(image, seed)


def query2label(image, seed):
    """Query2Label: RandAugment."""
    return randaugment(image, _fold(seed, 102))


def ctran(image, seed):
    """C-Tran: a random crop at one of five scales, resized back, then a flip."""
    image = tf.convert_to_tensor(image, tf.uint8)
    shape = tf.shape(image)
    choice = tf.random.stateless_uniform((), _fold(seed, 104), maxval=len(_CTRAN_CROPS),
                                         dtype=tf.int32)
    fraction = tf.gather(tf.constant(_CTRAN_CROPS, tf.float64) / 640.0, choice)
    crop_h = tf.maximum(1, tf.cast(tf.round(tf.cast(shape[0], tf.float64) * fraction),
                                   tf.int32))
    crop_w = tf.maximum(1, tf.cast(tf.round(tf.cast(shape[1], tf.float64) * fraction),
                                   tf.int32))
    crop = tf.image.stateless_random_crop(image, tf.stack([crop_h, crop_w, 3]),
                                          _fold(seed, 105))
    resized = tf.image.resize(crop, shape[:2], method="bilinear", antialias=True)
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
    return _flip(tf.ensure_shape(resized, image.shape), seed)


PIPELINES = {"mldecoder": mldecoder, "aam": aam, "query2label": query2label, "ctran": ctran}
