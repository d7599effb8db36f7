"""tf.data input pipeline: a labelled image source -> batches of ``(images, labels)``.

``images`` are float32 ``[B, H, W, 3]`` in [0, 255] (models normalise inside, the public API
section 1), decoded and resized by :mod:`keras_mld.data.image`, the same code an
exported model runs. ``labels`` are float32 multi-hot ``[B, N]`` (multilabel) or int32
class ids ``[B]`` (singlelabel).

Bad images are found before the pipeline is built by
:func:`keras_mld.data.checks.check_images` (the module says how, at what cost, and how
decompression bombs are caught), skipped, counted and reported in one
:class:`~keras_mld.data.checks.SkippedImagesWarning`. Whatever the check mode, the decode
step ends with ``ignore_errors(log_warning=True)``, so a file that goes bad after the check
is dropped and logged by TensorFlow instead of crashing the run; ``repeat().take(n)`` then
fills its place with an image of the next pass, so every epoch still has ``n`` images and
the dataset a known cardinality.

Determinism: with ``seed`` set, the same arguments give identical batches. Shuffling uses
seeded ``Dataset.shuffle``; augmentation is *stateless per element*: every element is
zipped with its own seed pair from ``Dataset.random(seed, rerandomize_each_iteration=True)``
and the Keras augmentation layers draw their randomness from that pair only
(:mod:`keras_mld.data.augment`), so results do not depend on the thread order of the
parallel map, and each epoch gets fresh (still reproducible) augmentations. As with any
TensorFlow op seed, the sequence also depends on TensorFlow's global seed when one is set
(``keras.utils.set_random_seed``).
"""
import dataclasses
import os
import warnings

import numpy as np
import tensorflow as tf

from keras_mld.data.augment import AUGMENTS, make_augmenter
# (check_images and SkippedImagesWarning stay importable from here, where they were first)
from keras_mld.data.checks import (CHECKS, SkippedImagesWarning, check_images,
                                   default_cache_file)
from keras_mld.data.image import DEFAULT_MAX_IMAGE_PIXELS, check_limit, decode_and_resize
from keras_mld.data.multi_hot import MultiHotLabels
from keras_mld.data.tfrecords import TFRecordSource, parse_record
from keras_mld.metadata import TASKS
from keras_mld.validation import check_choice, check_int


@dataclasses.dataclass(eq=False)
class LabelledImages:
    """A labelled image source: what the loaders return and :func:`make_dataset` reads.

    Attributes:
        paths: image file paths (tuple of str, absolute for the built-in loaders).
        labels: float32 multi-hot ``[M, N]`` (``task="multilabel"``: a dense array, or a
            :class:`keras_mld.data.multi_hot.MultiHotLabels` as the loaders return, which
            stores each row's class indices and reads like the dense array) or int32 class
            ids ``[M]`` (``task="singlelabel"``).
        class_names: the ``N`` class names, in label-column / class-id order.
        task: ``"multilabel"`` or ``"singlelabel"``.
    """

    paths: tuple
    labels: np.ndarray
    class_names: tuple
    task: str = "multilabel"

    def __post_init__(self):
        self.paths = tuple(str(p) for p in self.paths)
        self.class_names = tuple(str(c) for c in self.class_names)
        if self.task not in TASKS:
            raise ValueError(f"LabelledImages: task must be one of {TASKS}, got {self.task!r}")
        n, m = len(self.class_names), len(self.paths)
        if self.task == "multilabel" and isinstance(self.labels, MultiHotLabels):
            labels = self.labels
            if labels.shape != (m, n):
                raise ValueError(f"LabelledImages: labels must have shape [{m}, {n}] "
                                 f"(images, classes), got {labels.shape}")
        elif self.task == "multilabel":
            labels = np.asarray(self.labels, dtype=np.float32).reshape(-1, n)
            if labels.shape != (m, n):
                raise ValueError(f"LabelledImages: labels must have shape [{m}, {n}] "
                                 f"(images, classes), got {np.shape(self.labels)}")
        else:
            labels = np.asarray(self.labels)
            if labels.shape != (m,) or (m and not np.issubdtype(labels.dtype, np.integer)):
                raise ValueError(f"LabelledImages: singlelabel labels must be {m} integer "
                                 f"class ids, got shape {labels.shape} dtype {labels.dtype}")
            labels = labels.astype(np.int32)
            if m and (labels.min() < 0 or labels.max() >= n):
                raise ValueError(f"LabelledImages: class ids must be in [0, {n}), got "
                                 f"[{labels.min()}, {labels.max()}]")
        self.labels = labels

    def __len__(self):
        return len(self.paths)

    @property
    def num_classes(self):
        return len(self.class_names)

    def subset(self, indices):
        """A new source with the given images (int indices or boolean mask)."""
        indices = np.asarray(indices)
        idx = np.arange(len(self))[indices if indices.dtype == bool else indices.astype(int)]
        return LabelledImages(tuple(self.paths[i] for i in idx), self.labels[idx],
                              self.class_names, self.task)


# ---------------------------------------------------------------------------- dataset
def _image_size(image_size):
    size = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else image_size
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in size):
        return int(size[0]), int(size[1])
    raise ValueError("make_dataset: image_size must be an int >= 1 or a (height, width) "
                     f"pair of ints >= 1, got {image_size!r}")


def make_dataset(source, image_size, batch_size, training=False, augment=None, seed=None,
                 shuffle=None, cache=False, drop_remainder=None, shuffle_buffer=None,
                 check="decode", check_cache=True, num_parallel_calls=tf.data.AUTOTUNE,
                 max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """Builds the tf.data pipeline ``(images [B,H,W,3] float32 in [0,255], labels)``.

    Args:
        source: a :class:`LabelledImages` (from ``load_coco``, ``load_csv``,
            ``load_image_folder``).
        image_size: int or ``(height, width)``; every image is resized to it (bilinear,
            aspect ratio not kept) by ``keras_mld.data.image.decode_and_resize``.
        batch_size: int >= 1.
        training: enables augmentation (if ``augment``) and the training defaults of
            ``shuffle`` and ``drop_remainder``.
        augment: None, a paper's pipeline as its released code runs it (``"mldecoder"``:
            CutoutPIL then the ``randaugment`` package's RandAugment; ``"aam"``:
            RandAugment, Cutout p 0.5, flip; ``"query2label"``; ``"ctran"``; see
            :mod:`keras_mld.data.paper_augment`), ``"light"`` (random horizontal flip) or
            ``"randaugment"`` (flip, ``keras.layers.RandAugment``, Cutout-like
            ``keras.layers.RandomErasing``; see :mod:`keras_mld.data.augment`); only
            applied when ``training``. A zoo recipe names its paper's.
        seed: int for reproducible shuffling and augmentation, or None.
        shuffle: defaults to ``training``; reshuffled every epoch.
        cache: False, True (decoded, resized images kept in memory) or a file prefix for
            ``Dataset.cache``. With a cache the image order is shuffled once before
            caching and then by a buffer of ``shuffle_buffer`` decoded images (default
            ``min(len, 2048)``) every epoch; without, the full index list is reshuffled.
        drop_remainder: defaults to ``training`` (static batch shape for ``jit_compile``).
        check: bad-image check mode, see :func:`check_images`.
        check_cache: True (JSON under ``$KERAS_MLD_CACHE_DIR`` or
            ``~/.cache/keras_mld``), False, or a JSON file path.
        max_image_pixels: an image whose header declares more pixels is skipped and
            counted like a corrupt one (default 40,000,000; None: no limit).

    Returns:
        a ``tf.data.Dataset`` of ``ceil`` (or ``floor`` with ``drop_remainder``) of
        ``usable images / batch_size`` batches per epoch; its cardinality is known.
    """
    if not isinstance(source, (LabelledImages, TFRecordSource)):
        raise ValueError("make_dataset: source must be a LabelledImages (see load_coco, "
                         "load_csv, load_image_folder) or a TFRecordSource (load_tfrecords), "
                         f"got {type(source).__name__}")
    size = _image_size(image_size)
    batch_size = check_int("make_dataset", "batch_size", batch_size, minimum=1)
    check_choice("make_dataset", "augment", augment, AUGMENTS)
    check_choice("make_dataset", "check", check, CHECKS)
    seed = check_int("make_dataset", "seed", seed, minimum=0, allow_none=True)
    shuffle_buffer = check_int("make_dataset", "shuffle_buffer", shuffle_buffer, minimum=1,
                               allow_none=True)
    if not isinstance(cache, (bool, str, os.PathLike)):
        raise ValueError(f"make_dataset: cache must be True, False or a file prefix, "
                         f"got {cache!r}")
    shuffle = training if shuffle is None else bool(shuffle)
    drop_remainder = training if drop_remainder is None else bool(drop_remainder)
    if isinstance(source, TFRecordSource):
        try:
            max_image_pixels = check_limit(max_image_pixels)
        except ValueError as e:
            raise ValueError(f"make_dataset: {e}") from None
        return _records_dataset(source, size, batch_size, training, augment, seed, shuffle,
                                cache, drop_remainder, shuffle_buffer, num_parallel_calls,
                                max_image_pixels)

    cache_file = (default_cache_file(source.paths) if check_cache is True
                  else (os.fspath(check_cache) if check_cache else None))
    try:
        max_image_pixels = check_limit(max_image_pixels)
    except ValueError as e:
        raise ValueError(f"make_dataset: {e}") from None
    reasons = check_images(source.paths, check, cache_file, max_image_pixels)
    bad = [i for i, r in enumerate(reasons) if r is not None]
    if bad:
        names = ", ".join(f"{source.paths[i]!r} ({reasons[i]})" for i in bad[:5])
        warnings.warn(f"make_dataset: skipped {len(bad)} of {len(source)} images that are "
                      f"missing, cannot be decoded or are too large, e.g. {names}"
                      + (" ..." if len(bad) > 5 else ""), SkippedImagesWarning, stacklevel=2)
        source = source.subset([r is None for r in reasons])
    if len(source) == 0:
        raise ValueError("make_dataset: no usable images in source")

    n = len(source)
    if drop_remainder and n < batch_size:
        raise ValueError(f"make_dataset: only {n} usable images, fewer than batch_size="
                         f"{batch_size} with drop_remainder=True (no batch at all)")
    det = True if seed is not None else None
    labels = source.labels
    if isinstance(labels, MultiHotLabels):  # each row made dense when its image is read
        labels = tf.RaggedTensor.from_row_splits(labels.indices, labels.indptr)
    ds = tf.data.Dataset.from_tensor_slices((tf.constant(source.paths, tf.string), labels))
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=not cache)

    num_classes = source.num_classes

    def load(path, label):
        if isinstance(source.labels, MultiHotLabels):
            label = tf.scatter_nd(tf.cast(label, tf.int64)[:, None],
                                  tf.ones(tf.shape(label), tf.float32), [num_classes])
        return decode_and_resize(tf.io.read_file(path), size, max_image_pixels), label

    ds = ds.map(load, num_parallel_calls=num_parallel_calls, deterministic=det)
    # safety net: an image failing now is dropped (and logged) and replaced by the first
    # image of the next pass, so an epoch keeps n images and a known cardinality
    ds = ds.ignore_errors(log_warning=True).repeat().take(n)
    ds = _cache_and_reshuffle(ds, cache, shuffle, shuffle_buffer, n, seed)
    return _finish(ds, size, batch_size, training, augment, seed, drop_remainder,
                   num_parallel_calls, det)


def _cache_and_reshuffle(ds, cache, shuffle, shuffle_buffer, n, seed):
    """``cache``: False, True (memory) or a file prefix; after a cache the decoded images
    are reshuffled every epoch (the order before the cache is fixed by it)."""
    if cache is False:
        return ds
    prefix = "" if cache is True else os.fspath(cache)
    if prefix:
        os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    ds = ds.cache(prefix)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer or min(n, 2048), seed=None if seed is None else seed + 1,
                        reshuffle_each_iteration=True)
    return ds


def _finish(ds, size, batch_size, training, augment, seed, drop_remainder, num_parallel_calls,
            det):
    if training and augment is not None:
        apply = make_augmenter(augment, size)
        seeds = tf.data.Dataset.random(seed=None if seed is None else seed + 2,
                                       rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda element, seed_pair: (apply(element[0], seed_pair), element[1]),
            num_parallel_calls=num_parallel_calls, deterministic=det)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


def _records_dataset(source, size, batch_size, training, augment, seed, shuffle, cache,
                     drop_remainder, shuffle_buffer, num_parallel_calls, max_image_pixels):
    """make_dataset over TFRecord shards: the file list (reshuffled every epoch when
    ``shuffle``) feeds an ``interleave`` whose function reads one shard with
    ``TFRecordDataset`` (records shuffled within the shard by a buffer of undecoded
    records), decodes and resizes as the file list's images are, and drops a bad image
    (logged). Everything per record happens inside the interleave so that
    ``tf.distribute``'s FILE auto-sharding, which walks back from the output to the file
    list, finds it (it cannot walk through ``ignore_errors``)."""
    n = len(source)
    if drop_remainder and n < batch_size:
        raise ValueError(f"make_dataset: only {n} records, fewer than batch_size="
                         f"{batch_size} with drop_remainder=True (no batch at all)")
    det = True if seed is not None else None
    num_classes, task = source.num_classes, source.task
    per_file = shuffle_buffer or max(1, min(2048, -(-n // len(source.files))))

    def load(record):
        data, label = parse_record(record, num_classes, task)
        return decode_and_resize(data, size, max_image_pixels), label

    def read(path):
        records = tf.data.TFRecordDataset(path)
        if shuffle and cache is False:
            records = records.shuffle(per_file, seed=None if seed is None else seed + 1)
        return records.map(load, num_parallel_calls=num_parallel_calls,
                           deterministic=det).ignore_errors(log_warning=True)

    files = tf.data.Dataset.from_tensor_slices(tf.constant(source.files, tf.string))
    if shuffle:
        files = files.shuffle(len(source.files), seed=seed, reshuffle_each_iteration=True)
    ds = files.interleave(read, cycle_length=min(len(source.files), 16),
                          num_parallel_calls=num_parallel_calls, deterministic=det)
    ds = _cache_and_reshuffle(ds, cache, shuffle, shuffle_buffer, n, seed)
    return _finish(ds, size, batch_size, training, augment, seed, drop_remainder,
                   num_parallel_calls, det)
