"""tf.data input pipeline: a labelled image source -> batches of ``(images, labels)``.

``images`` are float32 ``[B, H, W, 3]`` in [0, 255] (models normalise inside, the public API
section 1), decoded and resized by :mod:`keras_mld.data.image`, the same code an
exported model runs. ``labels`` are float32 multi-hot ``[B, N]`` (multilabel) or int32
class ids ``[B]`` (singlelabel).

Bad images (a long run must never crash on one bad file) are found *before* the
pipeline is built by :func:`check_images`, which runs the very op training uses
(``tf.io.decode_image``) over every file once, in a parallel tf.data pass, and records
which files fail; those are skipped, counted and reported in one
:class:`SkippedImagesWarning`. Cost: one full decode of every image (no resize), on all
cores -- measured about 3 CPU-ms per 640x480 JPEG, i.e. about 5 CPU-minutes for COCO's
118k train images (under a minute on 16 cores) -- paid once: results are cached by
(path, size, mtime) in memory and in a JSON file, so later runs only ``stat`` the files.
``check="header"`` only stats the files and reads their headers (catches missing,
empty, garbage, unsupported and too-large files, not truncated ones); ``check="none"``
skips the pass.

Decompression bombs: an image whose header declares more than ``max_image_pixels`` pixels
(default ``keras_mld.data.image.DEFAULT_MAX_IMAGE_PIXELS``, 40 megapixels) is skipped and
counted like a corrupt one, found from its header without decoding it (``"decode"``:
``keras_mld.data.image.image_shape_from_header``, the reader exported models use;
``"header"``: Pillow's lazy header parse, which reads only the header bytes), and
:func:`keras_mld.data.image.decode_and_resize` refuses it again at training time. Whatever the mode, the decode step ends with ``ignore_errors(log_warning=True)``,
so a file that goes bad after the check is dropped and logged by TensorFlow instead of
crashing the run; ``repeat().take(n)`` then fills its place with an image of the next
pass, so every epoch still has ``n`` images and the dataset a known cardinality.

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
import hashlib
import os
import warnings

import numpy as np
import tensorflow as tf

from keras_mld.data.augment import AUGMENTS, make_augmenter
from keras_mld.data.multi_hot import MultiHotLabels
from keras_mld.data.image import (DEFAULT_MAX_IMAGE_PIXELS, check_limit, decode_and_resize,
                                   image_shape_from_header)
from keras_mld.atomic import write_json
from keras_mld.data.tfrecords import TFRecordSource, parse_record
from keras_mld.metadata import TASKS
from keras_mld.untrusted import read_json
from keras_mld.validation import check_choice, check_int

CHECKS = ("decode", "header", "none")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


class SkippedImagesWarning(UserWarning):
    """Some images of a source are missing or cannot be decoded; they were skipped."""


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


# --------------------------------------------------------------------------- checking
_MEMO = {}  # absolute path -> (size, mtime_ns, reason or None); valid for this process


def _default_cache_file(paths):
    root = os.environ.get("KERAS_MLD_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "keras_mld")
    digest = hashlib.sha1("\n".join(sorted(paths)).encode("utf-8")).hexdigest()[:20]
    return os.path.join(root, "image_checks", digest + ".json")


def _read_cache(cache_file):
    try:  # a damaged cache only costs time: it is made again
        entries = read_json(cache_file, "check_images cache")["entries"]
        return {p: tuple(v) for p, v in entries.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


def _write_cache(cache_file, entries):
    try:
        write_json(cache_file, {"version": 1, "entries": {k: list(v) for k, v in entries.items()}})
    except OSError as e:  # a cache that cannot be written only costs time
        warnings.warn(f"check_images: cannot write cache {cache_file!r}: {e}", stacklevel=3)


def _too_large(height, width, max_image_pixels):
    return (f"larger than max_image_pixels={max_image_pixels} "
            f"({height} x {width} pixels in its header)")


def _header_reason(path, max_image_pixels=None):
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return "empty file"
    if not (head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")):
        return "not a JPEG/PNG/GIF/BMP/WebP file"
    if max_image_pixels is None:
        return None
    from PIL import Image

    # Image.open parses the header only (pixels are read on load()); its own bomb check
    # (an error above 2 x Image.MAX_IMAGE_PIXELS) is caught: the file is too large either way
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        return f"larger than max_image_pixels={max_image_pixels} (Pillow: decompression bomb)"
    except (OSError, ValueError, SyntaxError):
        return "unreadable image header"
    if width * height > max_image_pixels:
        return _too_large(height, width, max_image_pixels)
    return None


def _decode_failures(paths, max_image_pixels=None):
    """``{index: reason}`` for the ``paths`` that ``tf.io.decode_image`` (the training op)
    cannot decode or whose header declares more than ``max_image_pixels`` pixels (those are
    not decoded)."""
    limit = -1 if max_image_pixels is None else max_image_pixels

    def probe(i, path):
        data = tf.io.read_file(path)
        shape = image_shape_from_header(data)
        too_large = tf.logical_and(limit > 0, shape[0] * shape[1] > limit)

        def decode():
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            return tf.cast(tf.reduce_prod(tf.shape(image)[:2]), tf.int64)

        pixels = tf.cond(too_large, lambda: tf.constant(-1, tf.int64), decode)
        return i, pixels, shape

    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64),
                                             tf.constant(paths)))
    ds = ds.map(probe, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    ds = ds.ignore_errors().batch(4096)
    failures = {i: "cannot be decoded by tf.io.decode_image" for i in range(len(paths))}
    for idx, pixels, shapes in ds.as_numpy_iterator():
        for i, n, (height, width) in zip(idx.tolist(), pixels.tolist(), shapes.tolist()):
            if n > 0:
                del failures[i]
            elif n == -1:
                failures[i] = _too_large(height, width, max_image_pixels)
    return failures


def check_images(paths, mode="decode", cache_file=None,
                 max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """Finds the images of ``paths`` that the pipeline cannot use.

    Args:
        paths: image file paths.
        mode: ``"decode"`` (decode every file once with ``tf.io.decode_image``, the op the
            pipeline runs), ``"header"`` (file exists and starts with an image signature)
            or ``"none"``.
        cache_file: JSON file remembering results by (path, size, mtime), or None.
        max_image_pixels: images whose header declares more pixels are reported (and not
            decoded); None: no limit.

    Returns:
        a list with, for each path, None (usable) or a short reason string.
    """
    if mode not in CHECKS:
        raise ValueError(f"check_images: mode must be one of {CHECKS}, got {mode!r}")
    try:
        max_image_pixels = check_limit(max_image_pixels)
    except ValueError as e:
        raise ValueError(f"check_images: {e}") from None
    paths = [str(p) for p in paths]
    if mode == "none":
        return [None] * len(paths)
    disk = _read_cache(cache_file) if cache_file else {}
    suffix = ("" if mode == "decode" else "\0header") + (
        "" if max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS else f"\0max{max_image_pixels}")
    reasons, keys, fresh, todo = [None] * len(paths), {}, {}, []
    for i, path in enumerate(paths):
        try:
            st = os.stat(path)
        except OSError as e:
            reasons[i] = "missing" if isinstance(e, FileNotFoundError) else f"unreadable ({e})"
            continue
        keys[i], stat = os.path.abspath(path) + suffix, (st.st_size, st.st_mtime_ns)
        known = _MEMO.get(keys[i]) or disk.get(keys[i])
        if known is not None and tuple(known[:2]) == stat:
            reasons[i] = known[2]
            _MEMO[keys[i]] = tuple(known)
            continue
        try:
            reasons[i] = _header_reason(path, max_image_pixels if mode == "header" else None)
        except OSError as e:
            reasons[i] = f"unreadable ({e})"
        fresh[i] = stat
        if reasons[i] is None and mode == "decode":
            todo.append(i)
    failures = _decode_failures([paths[i] for i in todo], max_image_pixels) if todo else {}
    for j, reason in failures.items():
        reasons[todo[j]] = reason
    for i, stat in fresh.items():
        _MEMO[keys[i]] = stat + (reasons[i],)
    if cache_file and (fresh or any(k not in disk for k in keys.values())):
        disk.update({k: list(_MEMO[k]) for k in keys.values()})
        _write_cache(cache_file, disk)
    return reasons


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

    cache_file = (_default_cache_file(source.paths) if check_cache is True
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
