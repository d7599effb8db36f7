"""Time of the GIF header walk (``keras_mld.data.image.image_shape_from_header``, traced once
as a ``tf.function``, as in the served signatures) on hostile GIFs of growing size: tiny
frames (12 bytes each) and a comment of 1-byte sub-blocks. The cost should grow about
linearly with the bytes (pointer doubling: ~2 log2(n) array passes).

Run: ``python benchmarks/gif_header.py`` (TensorFlow backend, CPU); results in BENCHMARKS.md
("GIF header walk").
"""
import struct
import time

import tensorflow as tf

from keras_mld.data.image import image_shape_from_header

HEAD = b"GIF89a" + struct.pack("<HHBBB", 4, 4, 0, 0, 0)
FRAME = struct.pack("<BHHHHB", 0x2C, 0, 0, 1, 1, 0) + b"\x02\x01\x00\x00"


def gifs(megabytes):
    n = int(megabytes * 2 ** 20)
    yield "tiny frames", HEAD + FRAME * (n // len(FRAME)) + b";"
    yield "1-byte comment sub-blocks", HEAD + b"\x21\xfe" + b"\x01x" * (n // 2) + b"\0;"


def main():
    fn = tf.function(image_shape_from_header, input_signature=[tf.TensorSpec([], tf.string)])
    fn(tf.constant(HEAD + FRAME + b";"))  # trace
    for mb in (0.5, 1, 2, 4):
        for name, data in gifs(mb):
            best = min(_time(fn, data) for _ in range(3))
            print(f"{name:27s} {len(data) / 2 ** 20:5.2f} MiB  {best:6.3f} s  "
                  f"{best / (len(data) / 2 ** 20):6.3f} s/MiB")


def _time(fn, data):
    start = time.perf_counter()
    fn(tf.constant(data)).numpy()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
