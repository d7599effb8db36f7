"""The GIF header walks (in-graph ``image_shape_from_header`` / ``gif_walk``, and the Python
``gif_shape`` used by ``predict_labels``) against a plain-Python walker written from the
GIF89a specification (blocks: 0x2C image descriptor, 0x21 extension, anything else ends;
data sub-blocks: a length byte then its bytes, ended by a zero length), on Pillow's animated
GIFs and on random block streams (also with 8-byte chunks, so that the walk crosses many
chunks); a 1 MB GIF of 1-byte comment sub-blocks; and the walk's cost, counted: a fixed
number of array passes plus at most one loop step per chunk."""
import io
import struct

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from keras_mld.data.image import (GIF_CHUNK, GIF_ROUNDS, gif_shape, gif_walk,
                                   image_shape_from_header)


def reference_shape(data):
    """``(height, width)`` of the canvas and frames TensorFlow's decoder allocates."""
    data = bytes(data) + b"\0" * 16
    n = len(data) - 16

    def table(flags):
        return 3 * (2 << (flags % 8)) if flags >= 128 else 0

    def skip(q):
        while q < n and data[q] > 0:
            q += data[q] + 1
        return q + 1

    max_w, max_h = struct.unpack("<HH", data[6:10])
    frames, pos = 0, 13 + table(data[10])
    while pos < n:
        if data[pos] == 0x2C:
            w, h = struct.unpack("<HH", data[pos + 5:pos + 9])
            max_w, max_h, frames = max(max_w, w), max(max_h, h), frames + w * h
            pos = skip(pos + 11 + table(data[pos + 9]))
        elif data[pos] == 0x21:
            pos = skip(pos + 2)
        else:
            break
    if frames > max_w * max_h:
        side = int(np.ceil(np.sqrt(frames)))
        return side, side
    return max_h, max_w


def _shape(data):
    """The in-graph and the Python walks, which must agree."""
    graph = tuple(int(v) for v in image_shape_from_header(tf.constant(data)).numpy())
    if data[:4] == b"GIF8":
        assert gif_shape(data) == graph
    return graph


def _small_chunks(data):
    """``gif_walk`` with 8-byte chunks (2 doublings: 4 steps of >= 2 bytes), as a shape."""
    w, h, frames, screen_w, screen_h, _ = (int(v) for v in gif_walk(tf.constant(data), 8, 2))
    w, h = max(w, screen_w), max(h, screen_h)
    if frames > w * h:
        side = int(np.ceil(np.sqrt(frames)))
        return side, side
    return h, w


def test_pillow_animations_match_the_reference():
    frames = [Image.fromarray(np.full((5 + i, 9 + 2 * i, 3), 40 * i, np.uint8)) for i in range(4)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], comment=b"x" * 300)
    data = buf.getvalue()
    assert _shape(data) == reference_shape(data)


BLOCK = st.one_of(
    st.tuples(st.just(0x2C), st.integers(0, 2 ** 16 - 1), st.integers(0, 2 ** 16 - 1),
              st.integers(0, 255), st.lists(st.binary(min_size=1, max_size=6), max_size=3)),
    st.tuples(st.just(0x21), st.just(0), st.just(0), st.integers(0, 255),
              st.lists(st.binary(min_size=1, max_size=6), max_size=3)))


@settings(max_examples=40, deadline=None, database=None, derandomize=True)
@given(st.integers(0, 255), st.lists(BLOCK, max_size=6), st.binary(max_size=8),
       st.integers(0, 80))
def test_random_block_streams_match_the_reference(screen_flags, blocks, tail, cut):
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", 3, 2, screen_flags, 0, 0))
    out += bytes(3 * (2 << (screen_flags % 8)) if screen_flags >= 128 else 0)
    for kind, w, h, flags, subs in blocks:
        if kind == 0x2C:
            out += struct.pack("<BHHHHB", 0x2C, 0, 0, w, h, flags % 128) + b"\x02"
        else:
            out += bytes([0x21, flags])
        for sub in subs:
            out += bytes([len(sub)]) + sub
        out += b"\0"
    out += tail
    data = bytes(out[:max(len(out) - cut, 4)])  # keep the magic: a GIF cut anywhere after it
    assert _shape(data) == reference_shape(data) == _small_chunks(data)


def test_a_megabyte_of_one_byte_comment_sub_blocks():
    # 500,000 one-byte sub-blocks, then a 7000 x 9000 frame: read through, in one pass each
    data = (b"GIF89a" + struct.pack("<HHBBB", 4, 4, 0, 0, 0) + b"\x21\xfe"
            + b"\x01x" * 500_000 + b"\0"
            + struct.pack("<BHHHHB", 0x2C, 0, 0, 9000, 7000, 0) + b"\x02\x01\x00\x00;")
    assert _shape(data) == reference_shape(data) == (7000, 9000)


def test_the_walk_is_linear():
    """Work of ``gif_walk``: GIF_ROUNDS (a constant) doublings over the n positions, then one
    loop step per chunk that the walk enters: at most n / GIF_CHUNK + 2 steps. Counted on
    hostile GIFs of 16 KiB to 256 KiB: the loop steps grow with n / GIF_CHUNK, not faster."""
    assert GIF_CHUNK <= 2 * 2 ** GIF_ROUNDS  # a step moves >= 2 bytes: a chunk is covered
    head = b"GIF89a" + struct.pack("<HHBBB", 4, 4, 0, 0, 0)
    frame = struct.pack("<BHHHHB", 0x2C, 0, 0, 1, 1, 0) + b"\x02\x01\x00\x00"
    for n in (2 ** 14, 2 ** 16, 2 ** 18):
        for data in (head + frame * (n // len(frame)) + b";",
                     head + b"\x21\xfe" + b"\x01x" * (n // 2) + b"\0;"):
            steps = int(gif_walk(tf.constant(data))[-1])
            assert len(data) // GIF_CHUNK <= steps <= len(data) // GIF_CHUNK + 2
    data = head + frame * (2 ** 18 // len(frame)) + b";"  # 18724 frames of 1 pixel
    assert gif_shape(data) == reference_shape(data) == (137, 137)  # ceil(sqrt(18724))


def test_predict_labels_walks_a_gif_in_python(tmp_path):
    """``predict_labels`` reads a GIF's size with ``gif_shape`` (the in-graph check is then
    skipped): a GIF whose second frame declares 7000 x 9000 is refused naming the file and
    the limit (a square of the frames' total pixels, over the canvas of 7000 x 9000); a
    small animated GIF is classified as the decoder reads it."""
    import keras_mld

    frames = [Image.fromarray(np.full((6, 8, 3), 60 * i, np.uint8)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    ok = buf.getvalue()
    second = ok.find(b"\x2c\x00\x00\x00\x00", ok.find(b"\x2c\x00\x00\x00\x00") + 1)
    big = bytearray(ok)
    big[second + 5:second + 9] = struct.pack("<HH", 9000, 7000)
    (tmp_path / "big.gif").write_bytes(bytes(big))
    height, width = reference_shape(bytes(big))
    assert gif_shape(bytes(big)) == (height, width) and height * width > 7000 * 9000
    model = keras_mld.build("small_convnet", head="gap", class_names=["a", "b"],
                            input_shape=(16, 16, 3))
    assert len(model.predict_labels([ok])) == 1
    with pytest.raises(ValueError,
                       match=rf"big\.gif.*{height} x {width} pixels.*max_image_pixels"):
        model.predict_labels([str(tmp_path / "big.gif")])
