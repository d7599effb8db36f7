"""Which images of a source the input pipeline can use, found before it is built.

Bad images (a long run must never crash on one bad file) are found *before* the
pipeline is built by :func:`check_images`, which runs the very op training uses
(``tf.io.decode_image``) over every file once, in a parallel tf.data pass, and records
which files fail; those are skipped, counted and reported in one
:class:`SkippedImagesWarning`. Cost: one full decode of every image (no resize), on all
cores -- measured about 3 CPU-ms per 640x480 JPEG, i.e. about 5 CPU-minutes for COCO's
118k train images (under a minute on 16 cores) -- paid once: results are cached by
(path, size, mtime) in memory and in a JSON file, so later runs only ``stat`` the files.
``mode="header"`` (``make_dataset(check="header")``) only stats the files and reads their
headers (catches missing, empty, garbage, unsupported and too-large files, not truncated
ones); ``"none"`` skips the pass.

Decompression bombs: an image whose header declares more than ``max_image_pixels`` pixels
(default ``keras_mld.data.image.DEFAULT_MAX_IMAGE_PIXELS``, 40 megapixels) is skipped and
counted like a corrupt one, found from its header without decoding it (``"decode"``:
``keras_mld.data.image.image_shape_from_header``, the reader exported models use;
``"header"``: Pillow's lazy header parse, which reads only the header bytes), and
:func:`keras_mld.data.image.decode_and_resize` refuses it again at training time.
"""
import hashlib
import os
import warnings

import tensorflow as tf

from keras_mld.atomic import write_json
from keras_mld.data.image import DEFAULT_MAX_IMAGE_PIXELS, check_limit, image_shape_from_header
from keras_mld.untrusted import read_json

CHECKS = ("decode", "header", "none")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


class SkippedImagesWarning(UserWarning):
    """Some images of a source are missing or cannot be decoded; they were skipped."""


_MEMO = {}  # absolute path -> (size, mtime_ns, reason or None); valid for this process


def default_cache_file(paths):
    """The JSON cache :func:`check_images` keeps for one list of ``paths`` (under
    ``$KERAS_MLD_CACHE_DIR``, default ``~/.cache/keras_mld``)."""
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
