"""The one image decode + resize used by training, evaluation and exported models.

Keeping a single definition guarantees that a served model sees exactly what the
model saw in training ("resize as in training", see docs/serving.md).

Bounded decoding: a small compressed file can describe a huge image (a 774 KB PNG of
16,000 x 16,000 pixels decodes to 768 MB of RGB, and more as float). Before any decode,
:func:`image_shape_from_header` reads the width and height from the file's header (JPEG
with ``tf.image.extract_jpeg_shape``, PNG/GIF/BMP/WebP from their header fields) and
:func:`decode_and_resize` refuses an image of more than ``max_image_pixels`` pixels
(default :data:`DEFAULT_MAX_IMAGE_PIXELS`, 40 megapixels: above the 12-24 MP of usual phone
and camera photos, 120 MB as decoded RGB; raise it for 45-61 MP camera files) with
``tf.errors.InvalidArgumentError`` naming the limit. Everything is in-graph
core TensorFlow, so exported SavedModels carry the guard.
"""
import math
import numbers
import re
import struct

import numpy as np
import tensorflow as tf

from keras_mld.untrusted import MAX_REQUEST_BYTES

RESIZE_METHOD = "bilinear"
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
DEFAULT_MAX_BATCH_SIZE = 256
DEFAULT_MAX_REQUEST_BYTES = MAX_REQUEST_BYTES  # encoded bytes of one served request
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WebP")
_HEAD = 32  # header bytes read for the fixed-offset formats


def resize(image, image_size):
    """``image`` uint8/float ``[H, W, 3]`` or ``[B, H, W, 3]`` -> float32 in [0, 255] at ``image_size``."""
    # ResizeBilinear reads uint8 directly (each value is converted to float exactly), so a
    # uint8 image is not cast first: same numbers, without a 4x float copy of a big image
    if image.dtype != tf.uint8:
        image = tf.cast(image, tf.float32)
    image = tf.image.resize(image, image_size, method=RESIZE_METHOD, antialias=False)
    return tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 255.0)


def _u(h, i):
    return tf.cast(h[i], tf.int64)


def _le(h, start, n):
    return sum(_u(h, start + k) * (256 ** k) for k in range(n))


def _be(h, start, n):
    return sum(_u(h, start + k) * (256 ** (n - 1 - k)) for k in range(n))


def _match(h, start, magic):
    return tf.reduce_all(tf.equal(h[start:start + len(magic)],
                                  tf.constant(list(magic), tf.int32)))


# The GIF block walk (GIF89a: after the header, logical screen and global colour table, a
# sequence of blocks: 0x2C image descriptor (10 bytes, local colour table, LZW code size) or
# 0x21 extension (label), each followed by data sub-blocks (a length byte then its bytes,
# ended by a zero length); any other byte ends the stream). Seen from the sub-block length
# bytes, it is one chain of "states": a nonzero length L at p leads to p + L + 1; a zero length
# at p ends the block, and the block at p + 1 leads to its own sub-blocks (p + 3 for an
# extension, p + 12 + table for an image) or ends the walk. Every step moves forward by 2 to
# 780 bytes.
GIF_CHUNK = 1024  # positions per chunk of the in-graph walk (more than the longest step)
GIF_ROUNDS = 10  # pointer doublings inside a chunk: 2 ** 10 >= GIF_CHUNK / 2 steps
_GIF_PAD = 1024  # zero bytes after the data: every block that starts in the data completes


def _colour_table(flags):
    """Bytes of the colour table that a packed-fields byte declares (bit 7 set: 3 * 2^(k+1))."""
    return tf.where(flags >= 128, 3 * tf.bitwise.left_shift(2, flags % 8), 0)


def gif_walk(image_bytes, chunk=GIF_CHUNK, rounds=GIF_ROUNDS):
    """``(width, height, frame_pixels, canvas_w, canvas_h, iterations)`` of a GIF's walk:
    the largest frame width and height, the sum of the frames' pixels, the logical screen,
    and how many steps the sequential part took.

    Linear in the bytes: the chain of states (see above) is split into chunks of ``chunk``
    positions. For every position at once, ``rounds`` pointer doublings confined to its
    chunk (``rounds * n`` work: a step never stays in a chunk more than ``chunk / 2`` times)
    give where its walk leaves the chunk and what it met there (largest frame width and
    height, sum of frame pixels). A ``tf.while_loop`` then follows the real walk one chunk
    per step (at most ``n / chunk + 1`` steps of a few scalar ops), adding up what it met.
    Pointer doubling over the whole file instead costs ``log2(n)`` passes: ``n log n``."""
    data = tf.cast(tf.io.decode_raw(image_bytes, tf.uint8), tf.int32)
    n = tf.size(data)
    data = tf.concat([data, tf.zeros([16], tf.int32)], 0)
    start = tf.minimum(13 + _colour_table(data[10]), n)
    # x[0]: a virtual zero length (the walk starts with a block); states 0..size-1 are the
    # positions before the end of the file; index `size` is the end of the walk
    x = tf.concat([tf.zeros([1], tf.int32), data[start:n], tf.zeros([_GIF_PAD], tf.int32)], 0)
    size = n - start + 1
    pos = tf.range(size)
    length, block = x[:size], x[1:size + 1]
    image = tf.logical_and(length == 0, block == 0x2C)
    after_image = pos + 12 + _colour_table(tf.gather(x, pos + 10))
    step = tf.where(length > 0, pos + length + 1, tf.where(
        image, after_image, tf.where(tf.logical_and(length == 0, block == 0x21), pos + 3,
                                     size)))
    step = tf.minimum(step, size)
    # within a chunk: step, or the sink `size` where the step leaves the chunk
    inside = tf.logical_and(step < size, step // chunk == pos // chunk)
    jump = tf.concat([tf.where(inside, step, size), [size]], 0)
    width = tf.where(image, tf.gather(x, pos + 6) + 256 * tf.gather(x, pos + 7), 0)
    height = tf.where(image, tf.gather(x, pos + 8) + 256 * tf.gather(x, pos + 9), 0)
    exits = tf.where(inside, -1, step)  # where the walk leaves the chunk (size: it ends)
    most = tf.concat([tf.stack([width, height, exits], 1), [[0, 0, -1]]], 0)
    pixels = tf.concat([tf.cast(width, tf.int64) * tf.cast(height, tf.int64), [0]], 0)
    for _ in range(rounds):  # most/pixels[p]: over p's next 2**i states in its chunk
        most = tf.maximum(most, tf.gather(most, jump))
        pixels = pixels + tf.gather(pixels, jump)
        jump = tf.gather(jump, jump)

    def follow(i, p, w, h, total):
        row = most[p]
        return i + 1, row[2], tf.maximum(w, row[0]), tf.maximum(h, row[1]), total + pixels[p]

    zero = tf.constant(0, tf.int32)
    i, _, w, h, total = tf.while_loop(
        lambda i, p, w, h, total: p < size, follow,
        (zero, zero, zero, zero, tf.constant(0, tf.int64)),
        maximum_iterations=size // chunk + 2)
    return (tf.cast(w, tf.int64), tf.cast(h, tf.int64), total,
            tf.cast(data[6] + 256 * data[7], tf.int64),
            tf.cast(data[8] + 256 * data[9], tf.int64), i)


def _gif_shape(image_bytes):
    """The canvas TensorFlow's GIF decoder allocates: the largest of the logical screen and
    of every frame (its ``DGifSlurp`` reads all frames), found by :func:`gif_walk` in
    linear time; when the frames together hold more pixels, a square of their total."""
    w, h, frames, screen_w, screen_h, _ = gif_walk(image_bytes)
    return _bound_shape(tf.maximum(w, screen_w), tf.maximum(h, screen_h), frames)


def _bound_shape(max_w, max_h, frames):
    # frames are slurped one buffer each besides the canvas: bound both
    side = tf.cast(tf.math.ceil(tf.sqrt(tf.cast(tf.maximum(max_w * max_h, frames),
                                                tf.float64))), tf.int64)
    return tf.where(frames > max_w * max_h, tf.stack([side, side]), tf.stack([max_h, max_w]))


def _gif_token_pattern():
    """One token per image frame of the walk above, as a bytes regular expression: the
    sub-blocks and extensions before it (a possessive repeat), then the image descriptor
    (its 8 size bytes captured), its colour table and LZW byte; or, where the walk ends,
    the rest of the data. Every alternative starts with its own byte, so nothing is
    retried: the match is linear in the bytes."""
    def byte(b):
        return re.escape(bytes([b]))

    sub_blocks = b"|".join(byte(k) + b".{%d}" % k for k in range(1, 256))
    tables = [b"[\x00-\x7f]"] + [
        b"[" + b"".join(byte(f) for f in range(128 + k, 256, 8)) + b"].{%d}" % (3 << (k + 1))
        for k in range(8)]
    return re.compile(b"(?s)(?:\x00\x21.|(?!\x00)(?:" + sub_blocks + b"))*+"
                      b"(?:\x00\x2c(........)(?:" + b"|".join(tables) + b").|\x00.*)")


_GIF_TOKEN = _gif_token_pattern()


def gif_shape(data):
    """``(height, width)`` of the GIF ``data`` (bytes) as :func:`image_shape_from_header`
    reads it in-graph, computed in Python by one regular-expression pass (about 0.02-0.04 s
    per MiB of hostile GIF, see BENCHMARKS.md): used by ``predict_labels``."""
    data = bytes(data)
    padded = data + bytes(16)
    screen_w, screen_h = struct.unpack("<HH", padded[6:10])
    flags = padded[10]
    start = min(13 + (3 * (2 << (flags % 8)) if flags >= 128 else 0), len(data))
    sizes = b"".join(size for size in _GIF_TOKEN.findall(
        b"\0" + data[start:] + bytes(_GIF_PAD)) if size)
    frames = np.frombuffer(sizes, "<u2").reshape(-1, 4)[:, 2:].astype(np.int64)
    max_w = max(screen_w, int(frames[:, 0].max(initial=0)))
    max_h = max(screen_h, int(frames[:, 1].max(initial=0)))
    pixels = int((frames[:, 0] * frames[:, 1]).sum())
    if pixels > max_w * max_h:
        side = int(math.ceil(math.sqrt(pixels)))
        return side, side
    return max_h, max_w


def image_shape_from_header(image_bytes):
    """``(height, width)`` int64 ``[2]`` of encoded image bytes, read from the header only.

    JPEG: ``tf.image.extract_jpeg_shape`` (libjpeg's header reader). PNG: the IHDR fields.
    GIF: the largest of the logical screen and every frame descriptor, the size TensorFlow's
    decoder allocates (when the frames together hold more pixels than that, a square of
    their total: an upper bound for the guard). BMP: the info
    header's width and ``|height|``. WebP: the VP8 / VP8L / VP8X header. ``[-2, -2]`` for
    JPEG XL (which ``tf.io.decode_image`` decodes too, but whose bit-packed size header is
    not read here), ``[-1, -1]`` for any other format (which ``tf.io.decode_image`` does not
    decode either). A JPEG whose header cannot be parsed raises ``InvalidArgumentError``.
    """
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    head = tf.strings.substr(tf.strings.join([tf.strings.substr(image_bytes, 0, _HEAD),
                                              tf.constant(b"\0" * _HEAD)]), 0, _HEAD)
    h = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int32)

    def jpeg():
        return tf.cast(tf.image.extract_jpeg_shape(image_bytes)[:2], tf.int64)

    def png():
        return tf.stack([_be(h, 20, 4), _be(h, 16, 4)])

    def gif():
        return _gif_shape(image_bytes)

    def bmp():
        def signed(v):
            return tf.abs(tf.where(v >= 2 ** 31, v - 2 ** 32, v))
        return tf.stack([signed(_le(h, 22, 4)), signed(_le(h, 18, 4))])

    def webp():
        lossy = tf.stack([_le(h, 28, 2) % 16384, _le(h, 26, 2) % 16384])
        b = _le(h, 21, 4)  # VP8L: 14 bits width - 1, 14 bits height - 1
        lossless = tf.stack([(b // 16384) % 16384 + 1, b % 16384 + 1])
        extended = tf.stack([_le(h, 27, 3) + 1, _le(h, 24, 3) + 1])
        unknown = tf.constant([-1, -1], tf.int64)
        return tf.where(_match(h, 12, b"VP8 "), lossy, tf.where(
            _match(h, 12, b"VP8L"), lossless, tf.where(_match(h, 12, b"VP8X"), extended,
                                                       unknown)))

    def jpeg_xl():
        return tf.constant([-2, -2], tf.int64)

    def unknown():
        return tf.constant([-1, -1], tf.int64)

    kinds = tf.stack([_match(h, 0, b"\xff\xd8\xff"), _match(h, 0, b"\x89PNG\r\n\x1a\n"),
                      _match(h, 0, b"GIF8"), _match(h, 0, b"BM"),
                      tf.logical_and(_match(h, 0, b"RIFF"), _match(h, 8, b"WEBP")),
                      tf.logical_or(_match(h, 0, b"\xff\x0a"),
                                    _match(h, 0, b"\0\0\0\x0cJXL \r\n\x87\n")),
                      tf.constant(True)])
    index = tf.cast(tf.argmax(tf.cast(kinds, tf.int32)), tf.int32)
    return tf.switch_case(index, [jpeg, png, gif, bmp, webp, jpeg_xl, unknown])


def check_limit(max_image_pixels, what="max_image_pixels"):
    if max_image_pixels is None:
        return None
    if isinstance(max_image_pixels, bool) or not isinstance(max_image_pixels, numbers.Integral) \
            or max_image_pixels < 1:
        raise ValueError(f"{what} must be a positive int or None, got {max_image_pixels!r}")
    return int(max_image_pixels)


def assert_image_size(image_bytes, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """An assert op (None when eager or without a limit): the image's header declares at most
    ``max_image_pixels`` pixels, else ``InvalidArgumentError`` naming the limit. JPEG XL is
    refused (its size is not read); an unknown format passes (``tf.io.decode_image`` then
    rejects it without allocating anything)."""
    limit = check_limit(max_image_pixels)
    if limit is None:
        return None
    shape = image_shape_from_header(image_bytes)
    jpeg_xl = tf.debugging.Assert(shape[0] != -2, [tf.constant(
        f"JPEG XL images are not accepted with max_image_pixels={limit}: their size is not "
        "read before decoding; send JPEG, PNG, GIF, BMP or WebP")])
    msg = tf.strings.format("image of {} x {} pixels (height x width, from its header) "
                            f"exceeds max_image_pixels={limit}", [shape[0], shape[1]])
    with tf.control_dependencies([] if jpeg_xl is None else [jpeg_xl]):
        return tf.debugging.Assert(shape[0] * shape[1] <= limit, [msg])


def decode_and_resize(image_bytes, image_size, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """Encoded JPEG/PNG/GIF/BMP/WebP bytes (scalar string) -> float32 ``[H, W, 3]`` in [0, 255].

    The width and height are read from the header first (:func:`image_shape_from_header`);
    an image of more than ``max_image_pixels`` pixels (None: no limit) or of an unknown
    format raises ``tf.errors.InvalidArgumentError`` before anything is decoded.
    Grey-scale and RGBA images are converted to RGB; other invalid bytes raise
    ``InvalidArgumentError`` from ``tf.io.decode_image``.
    """
    check = assert_image_size(image_bytes, max_image_pixels)
    with tf.control_dependencies([] if check is None else [check]):
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return resize(image, image_size)


def decode_batch(image_bytes, image_size, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
                 max_batch_size=DEFAULT_MAX_BATCH_SIZE,
                 max_request_bytes=DEFAULT_MAX_REQUEST_BYTES):
    """``image_bytes`` string ``[B]`` -> float32 ``[B, H, W, 3]`` via :func:`decode_and_resize`;
    more than ``max_batch_size`` images, or more than ``max_request_bytes`` encoded bytes in
    all (None: no limit), raise ``InvalidArgumentError`` before any header is read."""
    limit = check_limit(max_batch_size, "max_batch_size")
    byte_limit = check_limit(max_request_bytes, "max_request_bytes")
    height, width = image_size
    checks = []
    if limit is not None:
        count = tf.size(image_bytes)
        check = tf.debugging.Assert(count <= limit, [tf.strings.format(
            "request of {} images exceeds max_batch_size=" + str(limit), [count])])
        checks += [] if check is None else [check]
    if byte_limit is not None:
        total = tf.reduce_sum(tf.strings.length(image_bytes, unit="BYTE"))
        check = tf.debugging.Assert(total <= byte_limit, [tf.strings.format(
            "request of {} bytes exceeds max_request_bytes=" + str(byte_limit), [total])])
        checks += [] if check is None else [check]
    with tf.control_dependencies(checks):
        return tf.map_fn(lambda b: decode_and_resize(b, (height, width), max_image_pixels),
                         image_bytes,
                         fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32))
