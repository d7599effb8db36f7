"""Time of the GIF header walk on hostile GIFs of growing size (tiny frames, 12-14 bytes
each; a comment of 1-byte sub-blocks; empty extensions, 3 bytes each): in-graph
(``keras_mld.data.image.image_shape_from_header``, traced once as a ``tf.function``, as in
the served signatures) and in Python (``keras_mld.data.image.gif_shape``, used by
``predict_labels``). Both should cost about the same per MiB at every size (linear).

Run: ``python benchmarks/gif_header.py [--before REV]`` (TensorFlow backend, CPU); with
``--before``, the in-graph walk of ``keras_mld/data/image.py`` at git revision REV is timed
in the same run. Results in BENCHMARKS.md ("GIF header walk").
"""
import argparse
import importlib.util
import os
import struct
import subprocess
import tempfile
import time

import tensorflow as tf

from keras_mld.data.image import gif_shape, image_shape_from_header

HEAD = b"GIF89a" + struct.pack("<HHBBB", 4, 4, 0, 0, 0)
FRAME = struct.pack("<BHHHHB", 0x2C, 0, 0, 1, 1, 0) + b"\x02\x01\x00\x00"


def gifs(megabytes):
    n = int(megabytes * 2 ** 20)
    yield "tiny frames", HEAD + FRAME * (n // len(FRAME)) + b";"
    yield "1-byte comment sub-blocks", HEAD + b"\x21\xfe" + b"\x01x" * (n // 2) + b"\0;"
    yield "empty extensions", HEAD + b"\x21\xfe\x00" * (n // 3) + b";"


def _module_at(rev):
    source = subprocess.run(["git", "show", f"{rev}:keras_mld/data/image.py"], check=True,
                            capture_output=True).stdout
    path = os.path.join(tempfile.mkdtemp(), "image_before.py")
    with open(path, "wb") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("image_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", help="git revision whose in-graph walk is timed too")
    parser.add_argument("--sizes", default="0.5,1,2,4", help="MiB, comma-separated")
    args = parser.parse_args()
    walks = {"graph": image_shape_from_header}
    if args.before:
        walks = {"graph before": _module_at(args.before).image_shape_from_header, **walks}
    fns = {}
    for name, walk in walks.items():
        fns[name] = tf.function(walk, input_signature=[tf.TensorSpec([], tf.string)])
        fns[name](tf.constant(HEAD + FRAME + b";"))  # trace
    fns["python"] = gif_shape
    for mb in (float(s) for s in args.sizes.split(",")):
        for case, data in gifs(mb):
            mib = len(data) / 2 ** 20
            cells = []
            for name, fn in fns.items():
                arg = data if name == "python" else tf.constant(data)
                best = min(_time(fn, arg) for _ in range(3))
                cells.append(f"{name} {best:6.3f} s ({best / mib:6.3f} s/MiB)")
            print(f"{case:26s} {mib:5.2f} MiB  " + "  ".join(cells), flush=True)


def _time(fn, data):
    start = time.perf_counter()
    out = fn(data)
    if hasattr(out, "numpy"):
        out.numpy()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
