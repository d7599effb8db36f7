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
import numbers

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


def _chain_ends(step, rounds):
    """``step`` int32 ``[L]``: a forward pointer per position (a fixpoint ends a chain).
    Returns ``(ends, step)`` after ``rounds`` pointer doublings: ``ends[p]`` is the fixpoint
    that ``p``'s chain reaches when it is shorter than ``2 ** rounds`` steps."""
    def double(i, jump):
        return i + 1, tf.gather(jump, jump)
    return tf.while_loop(lambda i, jump: i < rounds, double, [0, step])[1]


def _gif_shape(image_bytes):
    """The canvas TensorFlow's GIF decoder allocates: the largest of the logical screen and
    of every frame (its ``DGifSlurp`` reads all frames), found by walking the GIF blocks.

    The walk is vectorised with pointer doubling (no loop step per block or sub-block, which
    cost about 2 s per MB of tiny frames or 1-byte comment sub-blocks): each position's next
    sub-block, then each block's successor, are followed ``log2(n)`` times over the whole
    array, and the blocks reached from the first one are marked the same way:
    ``O(n log n)`` work in about ``2 log2(n)`` array passes."""
    data = tf.cast(tf.io.decode_raw(image_bytes, tf.uint8), tf.int32)
    n = tf.size(data)
    data = tf.concat([data, tf.zeros([16], tf.int32)], 0)
    size = n + 1  # positions 0..n; n (the end of the file) is a fixpoint
    pos = tf.range(size)
    byte = data[:size]
    rounds = tf.cast(tf.math.ceil(tf.math.log(tf.cast(size, tf.float32) + 1.0)
                                  / tf.math.log(2.0)), tf.int32) + 1
    # data sub-blocks: a length byte then that many bytes, ended by a zero length
    sub_next = tf.minimum(tf.where(byte > 0, pos + byte + 1, pos), n)
    sub_next = tf.where(pos >= n, n, sub_next)
    after_sub = tf.minimum(_chain_ends(sub_next, rounds) + 1, n)  # past the zero length

    flags = tf.gather(data, pos + 9)
    table = tf.where(flags >= 128, 3 * tf.bitwise.left_shift(2, flags % 8), 0)
    image_next = tf.gather(after_sub, tf.minimum(pos + 11 + table, n))
    extension_next = tf.gather(after_sub, tf.minimum(pos + 2, n))
    is_image = tf.logical_and(byte == 0x2C, pos < n)
    block_next = tf.where(is_image, image_next,
                          tf.where(tf.logical_and(byte == 0x21, pos < n), extension_next, pos))

    screen_flags = data[10]
    screen_table = tf.where(screen_flags >= 128, 3 * tf.bitwise.left_shift(2, screen_flags % 8), 0)
    start = tf.minimum(13 + screen_table, n)

    def mark(i, visited, jump):
        # visited: the first 2**i blocks from start; jump: block_next applied 2**i times
        reached = tf.math.unsorted_segment_max(tf.cast(visited, tf.int32), jump, size) > 0
        return i + 1, tf.logical_or(visited, reached), tf.gather(jump, jump)

    _, visited, _ = tf.while_loop(lambda i, v, j: i < rounds, mark,
                                  [0, tf.equal(pos, start), block_next])
    frame = tf.logical_and(visited, is_image)
    w = tf.cast(tf.gather(data, pos + 5) + 256 * tf.gather(data, pos + 6), tf.int64)
    h = tf.cast(tf.gather(data, pos + 7) + 256 * tf.gather(data, pos + 8), tf.int64)
    zero = tf.zeros_like(w)
    max_w = tf.maximum(tf.cast(data[6] + 256 * data[7], tf.int64),
                       tf.reduce_max(tf.where(frame, w, zero)))
    max_h = tf.maximum(tf.cast(data[8] + 256 * data[9], tf.int64),
                       tf.reduce_max(tf.where(frame, h, zero)))
    frames = tf.reduce_sum(tf.where(frame, w * h, zero))
    # frames are slurped one buffer each besides the canvas: bound both
    side = tf.cast(tf.math.ceil(tf.sqrt(tf.cast(tf.maximum(max_w * max_h, frames),
                                                tf.float64))), tf.int64)
    return tf.where(frames > max_w * max_h, tf.stack([side, side]), tf.stack([max_h, max_w]))


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
