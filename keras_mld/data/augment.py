"""Seeded, stateless image augmentation for tf.data.

The papers' pipelines (``"mldecoder"``, ``"aam"``, ``"query2label"``, ``"ctran"``: the
``randaugment`` package's policy and ML-Decoder's CutoutPIL op for op, in each paper's
order) live in :mod:`keras_mld.data.paper_augment`; the zoo recipes name theirs. The
earlier pipelines, built from Keras 3 core preprocessing layers, stay available by name:

``"light"``: ``keras.layers.RandomFlip("horizontal")``.
``"randaugment"`` (Prokofiev & Sovrasov (arXiv:2209.06585) section 3.5: RandAugment,
Cutout factor 0.5, random flip): the flip,
then ``keras.layers.RandAugment`` (2 operations, factor 0.5; geometric operations at the
usual RandAugment M=9 ranges, see :class:`_SeededRandAugment`), then
``keras.layers.RandomErasing`` as Cutout: with probability 0.5 a box of 0.14-0.5 x the
image side is filled with clipped Gaussian noise.

Each image is augmented alone with randomness drawn *only* from its own seed tensor
(``[2]`` int64): the layers receive an :class:`_ElementSeeds` generator instead of their
stateful ``SeedGenerator``, so the result is a pure function of (image, seed), whatever
the thread order of a parallel ``map``. Runs in TensorFlow whatever ``KERAS_BACKEND`` is.
"""
import keras
import tensorflow as tf

from keras_mld.data.paper_augment import PIPELINES

AUGMENTS = (None, "light", "randaugment") + tuple(PIPELINES)


class _ElementSeeds(keras.random.SeedGenerator):
    """A seed stream for one dataset element, derived statelessly from a seed tensor.

    Keras random ops accept a ``SeedGenerator`` and call its ``next()``; this one returns
    ``stateless_fold_in(base, k)`` for the k-th draw instead of updating a variable, so a
    parallel ``map`` gives the same results whatever the thread order.
    """

    def __init__(self, base):  # no state variable: deliberately no super().__init__
        self.name = "element_seeds"
        self._base = base
        self._count = 0

    def next(self, ordered=True):
        self._count += 1
        return tf.random.experimental.stateless_fold_in(self._base, self._count)


class _TFEqualization(keras.layers.Equalization):
    """``keras.layers.Equalization`` whose histogram is one ``tf.math.bincount``: the core
    layer picks a 256-step Python loop whenever the *global* backend is JAX, even inside
    tf.data, which makes the augmentation graph 20x larger."""

    def _custom_histogram_fixed_width(self, values, value_range, nbins):
        low, high = (float(v) for v in value_range)
        indices = tf.cast((tf.cast(values, tf.float32) - low) * (nbins - 1) / (high - low),
                          tf.int32)
        indices = tf.reshape(tf.clip_by_value(indices, 0, nbins - 1), [-1])
        return tf.math.bincount(indices, minlength=nbins, maxlength=nbins)


class _SeededRandAugment(keras.layers.RandAugment):
    """``keras.layers.RandAugment`` that honours the ``seed`` argument (the core layer
    ignores it) and runs only the chosen operations (``tf.switch_case``) instead of all
    eleven for each of ``num_ops`` steps. tf.data (TensorFlow) only."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # The core layer hands its one-sided factor (0, 0.5) to every operation, which
        # means rotations of 0..180 degrees and one-way shifts of up to half the image.
        # Geometric operations get the symmetric RandAugment ranges at magnitude 9/10
        # (Cubuk et al. 2020; timm "rand-m9"); brightness and contrast become symmetric.
        common = dict(dtype=kwargs.get("dtype"), seed=self.seed)
        geometric = dict(common, interpolation=self.interpolation)
        self.random_rotation = keras.layers.RandomRotation(27.0 / 360.0, **geometric)
        self.random_shear = keras.layers.RandomShear(0.27, 0.27, **geometric)
        self.random_translation = keras.layers.RandomTranslation(0.27, 0.27, **geometric)
        self.random_brightness = keras.layers.RandomBrightness(0.3, self.value_range, **common)
        self.random_contrast = keras.layers.RandomContrast((0.5, 0.5), self.value_range,
                                                           **common)  # x0.5..x1.5
        self.equalization = _TFEqualization(value_range=self.value_range,
                                            dtype=kwargs.get("dtype"))

    def get_random_transformation(self, data, training=True, seed=None):
        if not training:
            return None
        idx = self.backend.random.randint((self.num_ops,), 0, len(self._AUGMENT_LAYERS),
                                          seed=seed)
        transforms = {name: getattr(self, name).get_random_transformation(
            data, training=True, seed=seed) for name in self._AUGMENT_LAYERS}
        return {"transforms": transforms, "layer_idxes": idx}

    def transform_images(self, images, transformation, training=True):
        images = tf.cast(images, self.compute_dtype)
        if not training:
            return images
        for i in range(self.num_ops):
            branches = [
                (lambda name=name, x=images: tf.cast(getattr(self, name).transform_images(
                    x, transformation["transforms"][name]), self.compute_dtype))
                for name in self._AUGMENT_LAYERS]
            images = tf.switch_case(transformation["layer_idxes"][i], branches)
        return images


def _augmentation_layers(augment):
    layers = [keras.layers.RandomFlip("horizontal", dtype="float32")]
    if augment == "randaugment":
        randaugment = _SeededRandAugment(value_range=(0, 255), num_ops=2, factor=0.5,
                                         dtype="float32")
        # Cutout-like erasing (factor 0.5, arXiv:2209.06585 section 3.5): with probability 0.5 a
        # box of
        # 0.14-0.5 x the image side is filled with clipped Gaussian noise.
        erasing = keras.layers.RandomErasing(factor=(0.5, 0.5), scale=(0.02, 0.25),
                                             value_range=(0, 255), dtype="float32")
        layers += [randaugment, erasing]
        for name in randaugment._AUGMENT_LAYERS:
            getattr(randaugment, name).backend.set_backend("tensorflow")
    for layer in layers:  # tf.data runs TensorFlow whatever KERAS_BACKEND is
        layer.backend.set_backend("tensorflow")
    return layers


_AUGMENTERS = {}  # (augment, image_size) -> tf.function, traced once per process


def make_augmenter(augment, image_size):
    """A ``tf.function`` ``(image float32 [H, W, 3] in [0, 255], seed int64 [2]) -> image``.

    ``augment``: ``"light"``, ``"randaugment"`` or a paper's pipeline (``"mldecoder"``,
    ``"aam"``, ``"query2label"``, ``"ctran"``: rounded to uint8, augmented as the paper's
    PIL code does, returned as float32); ``image_size``: ``(H, W)``. Functions are
    shared by all pipelines of the same kind: the RandAugment graph is big and tracing it
    costs seconds, so it is traced once per process and reused.
    """
    if augment not in AUGMENTS[1:]:
        raise ValueError(f"make_augmenter: augment must be one of {AUGMENTS[1:]}, "
                         f"got {augment!r}")
    key = (augment, tuple(int(v) for v in image_size))
    if key in _AUGMENTERS:
        return _AUGMENTERS[key]
    if augment in PIPELINES:
        pipeline = PIPELINES[augment]

        @tf.function(autograph=False)
        def apply(image, seed):
            pixels = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)
            x = tf.cast(pipeline(pixels, seed), tf.float32)
            x.set_shape(list(key[1]) + [3])
            return x

        _AUGMENTERS[key] = apply
        return apply
    layers = _augmentation_layers(augment)

    @tf.function(autograph=False)
    def apply(image, seed):
        seeds = _ElementSeeds(seed)
        x = image[None]
        for layer in layers:
            transformation = layer.get_random_transformation(x, training=True, seed=seeds)
            x = layer.transform_images(x, transformation, training=True)
        x = tf.clip_by_value(tf.cast(x[0], tf.float32), 0.0, 255.0)
        x.set_shape(list(key[1]) + [3])
        return x

    _AUGMENTERS[key] = apply
    return apply
